//! Field errors, as the API server reports them in a 422 `Invalid` Status
//! (`details.causes[]`), and the name rules shared by every resource.

use std::fmt;

/// Why a field was refused; maps to a cause `reason` of a 422 Status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// `FieldValueRequired`
    Required,
    /// `FieldValueInvalid`
    Invalid,
    /// `FieldValueNotSupported` (e.g. not one of an enum)
    NotSupported,
    /// `FieldValueDuplicate`
    Duplicate,
    /// `FieldValueForbidden` (e.g. changing an immutable field)
    Forbidden,
    /// `FieldValueTypeInvalid`
    TypeInvalid,
}

impl FieldErrorKind {
    /// The cause `reason` string of the real API server.
    pub fn reason(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TypeInvalid => "FieldValueTypeInvalid",
        }
    }
}

/// One refused field: `field` is a path like `spec.ports[0].port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub kind: FieldErrorKind,
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(kind: FieldErrorKind, field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { kind, field: field.into(), message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Messages for a value that is not a DNS-1123 label (63 chars, `[a-z0-9]([-a-z0-9]*[a-z0-9])?`).
pub fn validate_dns1123_label(_value: &str) -> Vec<String> {
    Vec::new()
}

/// Messages for a value that is not a DNS-1123 subdomain (253 chars, dotted labels).
pub fn validate_dns1123_subdomain(_value: &str) -> Vec<String> {
    Vec::new()
}

/// Messages for a value that is not a DNS-1035 label (63 chars, starts with a letter).
pub fn validate_dns1035_label(_value: &str) -> Vec<String> {
    Vec::new()
}

/// Messages for a value that is not a qualified name (`[prefix/]name`), the rule for label and annotation keys.
pub fn validate_qualified_name(_value: &str) -> Vec<String> {
    Vec::new()
}

/// Messages for a value that is not a valid label value (63 chars, may be empty).
pub fn validate_label_value(_value: &str) -> Vec<String> {
    Vec::new()
}

/// Field errors for a label map (`metadata.labels`, `spec.selector`) at `field`.
pub fn validate_labels(_labels: &serde_json::Value, _field: &str) -> Vec<FieldError> {
    Vec::new()
}

/// Field errors (`metadata.name`) for an object name under the rule its
/// resource uses; `resource` is the plural, optionally `plural.group`.
pub fn validate_object_name(_resource: &str, _name: &str) -> Vec<FieldError> {
    Vec::new()
}
