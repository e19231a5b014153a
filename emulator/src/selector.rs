//! Label and field selectors as the API server parses and applies them on
//! list and watch (`?labelSelector=`, `?fieldSelector=`).

use serde_json::Value;

/// A parsed label selector: a conjunction of requirements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// Every requirement must hold for a match; empty matches everything.
    pub requirements: Vec<Requirement>,
}

/// One label requirement such as `app in (a,b)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Operator,
    /// Sorted, deduplicated values (empty for `Exists` / `DoesNotExist`).
    pub values: Vec<String>,
}

/// A label selector operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// Parses the string form (`a=b,c in (d),!e`).
    pub fn parse(_s: &str) -> Result<LabelSelector, String> {
        Ok(LabelSelector::default())
    }

    /// Builds a selector from a `metav1.LabelSelector` JSON object
    /// (`matchLabels`, `matchExpressions`); `null` selects everything.
    pub fn from_json(_selector: &Value) -> Result<LabelSelector, String> {
        Ok(LabelSelector::default())
    }

    /// True when the labels (`metadata.labels`, possibly absent) satisfy every requirement.
    pub fn matches(&self, _labels: Option<&Value>) -> bool {
        true
    }

    /// True when the selector has no requirement (selects everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// A parsed field selector: a conjunction of `field=value` / `field!=value` terms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub terms: Vec<FieldTerm>,
}

/// One field selector term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldTerm {
    /// Dotted field path, e.g. `spec.nodeName`.
    pub field: String,
    /// Unescaped value.
    pub value: String,
    /// True for `!=`.
    pub negated: bool,
}

impl FieldSelector {
    /// Parses `f=v,g!=w` (with `\,` `\=` `\\` escapes in values).
    pub fn parse(_s: &str) -> Result<FieldSelector, String> {
        Ok(FieldSelector::default())
    }

    /// True when every term holds for the object.
    pub fn matches(&self, _obj: &Value) -> bool {
        true
    }

    /// Refuses fields the real API server does not index for this resource
    /// (`field label not supported: <f>`); `group` is "" for the core group.
    pub fn check_supported(&self, _group: &str, _resource: &str) -> Result<(), String> {
        Ok(())
    }
}
