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
        FieldError {
            kind,
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}
/// Builders that write `message` as the API server's `ErrorBody()` does
/// (`Invalid value: "x": detail`), so `Display` prints the real
/// `field: Invalid value: "x": detail` line.
impl FieldError {
    /// `Invalid value: <value>: <detail>`.
    pub fn invalid(field: impl Into<String>, value: &serde_json::Value, detail: &str) -> Self {
        FieldError::new(
            FieldErrorKind::Invalid,
            field,
            with_detail(format!("Invalid value: {}", go_value(value)), detail),
        )
    }

    /// `Required value[: <detail>]`.
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        FieldError::new(
            FieldErrorKind::Required,
            field,
            with_detail("Required value".to_string(), detail),
        )
    }

    /// `Unsupported value: <value>: supported values: "a", "b"`.
    pub fn not_supported(
        field: impl Into<String>,
        value: &serde_json::Value,
        supported: &[&str],
    ) -> Self {
        let quoted: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
        let detail = if quoted.is_empty() {
            String::new()
        } else {
            format!("supported values: {}", quoted.join(", "))
        };
        FieldError::new(
            FieldErrorKind::NotSupported,
            field,
            with_detail(format!("Unsupported value: {}", go_value(value)), &detail),
        )
    }

    /// `Duplicate value: <value>`.
    pub fn duplicate(field: impl Into<String>, value: &serde_json::Value) -> Self {
        FieldError::new(
            FieldErrorKind::Duplicate,
            field,
            format!("Duplicate value: {}", go_value(value)),
        )
    }

    /// `Duplicate value: <value as already rendered>` (for Go structs the
    /// real server prints with `%#v`).
    pub fn duplicate_rendered(field: impl Into<String>, rendered: &str) -> Self {
        FieldError::new(
            FieldErrorKind::Duplicate,
            field,
            format!("Duplicate value: {rendered}"),
        )
    }

    /// `Forbidden: <detail>`.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        FieldError::new(
            FieldErrorKind::Forbidden,
            field,
            with_detail("Forbidden".to_string(), detail),
        )
    }

    /// `Invalid value: <value>: <detail>` with reason `FieldValueTypeInvalid`.
    pub fn type_invalid(field: impl Into<String>, value: &serde_json::Value, detail: &str) -> Self {
        FieldError::new(
            FieldErrorKind::TypeInvalid,
            field,
            with_detail(format!("Invalid value: {}", go_value(value)), detail),
        )
    }

    /// `Too long: may not be more than N bytes` (reason reported as
    /// `FieldValueInvalid`: the kind enum has no `TooLong`).
    pub fn too_long(field: impl Into<String>, max_bytes: usize) -> Self {
        let unit = if max_bytes == 1 { "byte" } else { "bytes" };
        FieldError::new(
            FieldErrorKind::Invalid,
            field,
            format!("Too long: may not be more than {max_bytes} {unit}"),
        )
    }

    /// `Too many: N: must have at most M items` (reason reported as
    /// `FieldValueInvalid`: the kind enum has no `TooMany`).
    pub fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Self {
        let unit = if max == 1 { "item" } else { "items" };
        FieldError::new(
            FieldErrorKind::Invalid,
            field,
            format!("Too many: {actual}: must have at most {max} {unit}"),
        )
    }
}

fn with_detail(mut body: String, detail: &str) -> String {
    if !detail.is_empty() {
        body.push_str(": ");
        body.push_str(detail);
    }
    body
}

/// A string quoted as Go's `%q` prints it (close enough: JSON escaping).
pub fn go_quote(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A JSON value printed as the API server prints a bad value: strings
/// quoted, numbers and booleans bare, `null`, string lists as
/// `[]string{"a", "b"}`, anything else as compact JSON.
pub fn go_value(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Null => "null".to_string(),
        Value::String(s) => go_quote(s),
        Value::Bool(_) | Value::Number(_) => value.to_string(),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            let quoted: Vec<String> = items.iter().map(go_value).collect();
            if quoted.is_empty() {
                "[]string(nil)".to_string()
            } else {
                format!("[]string{{{}}}", quoted.join(", "))
            }
        }
        _ => value.to_string(),
    }
}

/// Maximum length of a DNS-1123 / DNS-1035 label.
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// Maximum length of a DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_ERR: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// `must be no more than N characters`.
pub fn max_len_error(max: usize) -> String {
    format!("must be no more than {max} characters")
}

/// The apimachinery `RegexError` text: message, examples, regex.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let mut out = format!("{msg} (e.g. ");
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push('\'');
        out.push_str(example);
        out.push_str("', ");
    }
    out.push_str("regex used for validation is '");
    out.push_str(fmt);
    out.push_str("')");
    out
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn matches_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
}

fn matches_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(matches_dns1123_label)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
}

/// Messages for a value that is not a DNS-1123 label (63 chars, `[a-z0-9]([-a-z0-9]*[a-z0-9])?`).
pub fn validate_dns1123_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !matches_dns1123_label(value) {
        if matches_dns1123_subdomain(value) {
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_ERR,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// Messages for a value that is not a DNS-1123 subdomain (253 chars, dotted labels).
pub fn validate_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !matches_dns1123_subdomain(value) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_ERR,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// Messages for a value that is not a DNS-1035 label (63 chars, starts with a letter).
pub fn validate_dns1035_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    let starts_with_letter = value.as_bytes().first().is_some_and(u8::is_ascii_lowercase);
    if !(starts_with_letter && matches_dns1123_label(value)) {
        errs.push(regex_error(
            DNS1035_LABEL_ERR,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// Messages for a value that is not a qualified name (`[prefix/]name`), the rule for label and annotation keys.
pub fn validate_qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                for msg in validate_dns1123_subdomain(prefix) {
                    errs.push(format!("prefix part {msg}"));
                }
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(format!(
            "name part {}",
            max_len_error(DNS1123_LABEL_MAX_LENGTH)
        ));
    }
    if !matches_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// Messages for a value that is not a valid label value (63 chars, may be empty).
pub fn validate_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !value.is_empty() && !matches_qualified_name_part(value) {
        errs.push(regex_error(
            LABEL_VALUE_ERR,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// Field errors for a label map (`metadata.labels`, `spec.selector`) at
/// `field`; a value that is not a string is a type error.
pub fn validate_labels(labels: &serde_json::Value, field: &str) -> Vec<FieldError> {
    use serde_json::Value;
    let mut errs = Vec::new();
    let map = match labels {
        Value::Null => return errs,
        Value::Object(map) => map,
        other => {
            errs.push(FieldError::type_invalid(
                field,
                other,
                "must be a map of string keys to string values",
            ));
            return errs;
        }
    };
    for (key, value) in map {
        for msg in validate_qualified_name(key) {
            errs.push(FieldError::invalid(
                field,
                &Value::String(key.clone()),
                &msg,
            ));
        }
        match value {
            Value::String(v) => {
                for msg in validate_label_value(v) {
                    errs.push(FieldError::invalid(field, value, &msg));
                }
            }
            other => errs.push(FieldError::type_invalid(
                format!("{field}.{key}"),
                other,
                "must be a string",
            )),
        }
    }
    errs
}

/// How a built-in resource's names are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain (253 chars): most resources and custom resources.
    Dns1123Subdomain,
    /// DNS-1123 label (63 chars): Namespaces.
    Dns1123Label,
    /// DNS-1035 label (63 chars, starts with a letter): Services.
    Dns1035Label,
    /// Any name usable as a path segment (not `.`/`..`, no `/` or `%`): RBAC objects.
    PathSegment,
}

/// The name rule of a resource (`plural` or `plural.group`).
pub fn name_rule(resource: &str) -> NameRule {
    let plural = resource.split('.').next().unwrap_or(resource);
    match plural {
        "services" => NameRule::Dns1035Label,
        "namespaces" => NameRule::Dns1123Label,
        "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings" => NameRule::PathSegment,
        _ => NameRule::Dns1123Subdomain,
    }
}

/// Field errors (`metadata.name`) for an object name under the rule its
/// resource uses; `resource` is the plural, optionally `plural.group`.
/// An empty name is `Required value: name or generateName is required`.
pub fn validate_object_name(resource: &str, name: &str) -> Vec<FieldError> {
    const FIELD: &str = "metadata.name";
    if name.is_empty() {
        return vec![FieldError::required(
            FIELD,
            "name or generateName is required",
        )];
    }
    let msgs = match name_rule(resource) {
        NameRule::Dns1123Subdomain => validate_dns1123_subdomain(name),
        NameRule::Dns1123Label => validate_dns1123_label(name),
        NameRule::Dns1035Label => validate_dns1035_label(name),
        NameRule::PathSegment => validate_path_segment_name(name),
    };
    let value = serde_json::Value::String(name.to_string());
    msgs.iter()
        .map(|msg| FieldError::invalid(FIELD, &value, msg))
        .collect()
}

/// The apimachinery `IsValidPathSegmentName` messages.
pub fn validate_path_segment_name(name: &str) -> Vec<String> {
    if name == "." || name == ".." {
        return vec![format!("may not be '{name}'")];
    }
    let mut errs = Vec::new();
    for illegal in ["/", "%"] {
        if name.contains(illegal) {
            errs.push(format!("may not contain '{illegal}'"));
        }
    }
    errs
}

#[cfg(test)]
mod name_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dns1123_label_accepts_and_refuses() {
        assert!(validate_dns1123_label("my-name").is_empty());
        assert!(validate_dns1123_label("123-abc").is_empty());
        assert!(validate_dns1123_label(&"a".repeat(63)).is_empty());
        assert_eq!(
            validate_dns1123_label(&"a".repeat(64)),
            vec!["must be no more than 63 characters"]
        );
        assert_eq!(validate_dns1123_label("a.b"), vec!["must not contain dots"]);
        let errs = validate_dns1123_label("My_Name");
        assert_eq!(
            errs,
            vec![
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            ]
        );
        assert_eq!(validate_dns1123_label("-a").len(), 1);
        assert_eq!(validate_dns1123_label("a-").len(), 1);
        assert_eq!(validate_dns1123_label("").len(), 1);
    }

    #[test]
    fn dns1123_subdomain_accepts_dots_and_253_chars() {
        assert!(validate_dns1123_subdomain("example.com").is_empty());
        assert!(validate_dns1123_subdomain("links.mc.dev").is_empty());
        let long = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61)
        );
        assert_eq!(long.len(), 253);
        assert!(validate_dns1123_subdomain(&long).is_empty());
        let too_long = format!("{long}e");
        assert_eq!(
            validate_dns1123_subdomain(&too_long),
            vec!["must be no more than 253 characters"]
        );
        assert_eq!(validate_dns1123_subdomain("a..b").len(), 1);
        assert_eq!(validate_dns1123_subdomain(".a").len(), 1);
        assert!(
            validate_dns1123_subdomain("Upper")
                .iter()
                .any(|m| m.contains("'example.com', regex"))
        );
    }

    #[test]
    fn dns1035_label_must_start_with_letter() {
        assert!(validate_dns1035_label("backend-east").is_empty());
        let errs = validate_dns1035_label("1backend");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character"));
        assert!(errs[0].ends_with("(e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"));
        assert_eq!(
            validate_dns1035_label(&"a".repeat(64)),
            vec!["must be no more than 63 characters"]
        );
        assert_eq!(validate_dns1035_label("a.b").len(), 1);
    }

    #[test]
    fn qualified_names_for_label_keys() {
        assert!(validate_qualified_name("app").is_empty());
        assert!(validate_qualified_name("mc.dev/exported").is_empty());
        assert!(validate_qualified_name("app.kubernetes.io/Name_1").is_empty());
        assert_eq!(
            validate_qualified_name("/app"),
            vec!["prefix part must be non-empty"]
        );
        assert_eq!(
            validate_qualified_name("Bad_Prefix/app")[0],
            format!(
                "prefix part {}",
                validate_dns1123_subdomain("Bad_Prefix")[0]
            )
        );
        assert_eq!(
            validate_qualified_name(&"a".repeat(64)),
            vec!["name part must be no more than 63 characters"]
        );
        let errs = validate_qualified_name("a/b/c");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("a qualified name must consist of alphanumeric characters"));
        assert!(errs[0].ends_with(
            "with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ));
        let errs = validate_qualified_name("-app");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("name part must consist of alphanumeric characters"));
        assert!(
            validate_qualified_name("mc.dev/").contains(&"name part must be non-empty".to_string())
        );
    }

    #[test]
    fn label_values_may_be_empty() {
        assert!(validate_label_value("").is_empty());
        assert!(validate_label_value("true").is_empty());
        assert!(validate_label_value("My.Value_1").is_empty());
        assert_eq!(
            validate_label_value(&"v".repeat(64)),
            vec!["must be no more than 63 characters"]
        );
        let errs = validate_label_value("has space");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with(
            "a valid label must be an empty string or consist of alphanumeric characters"
        ));
    }

    #[test]
    fn label_maps_report_key_and_value_at_the_map_path() {
        assert!(validate_labels(&json!({"mc.dev/exported": "true"}), "metadata.labels").is_empty());
        assert!(validate_labels(&json!(null), "metadata.labels").is_empty());
        let errs = validate_labels(
            &json!({"bad key": "ok", "k": "bad value"}),
            "metadata.labels",
        );
        assert_eq!(errs.len(), 2);
        assert!(
            errs.iter()
                .all(|e| e.field == "metadata.labels" && e.kind == FieldErrorKind::Invalid)
        );
        assert!(errs.iter().any(|e| {
            e.message
                .starts_with("Invalid value: \"bad key\": name part must consist")
        }));
        assert!(errs.iter().any(|e| {
            e.message
                .starts_with("Invalid value: \"bad value\": a valid label must")
        }));
        let errs = validate_labels(&json!({"k": 1}), "spec.selector");
        assert_eq!(errs[0].kind, FieldErrorKind::TypeInvalid);
    }

    #[test]
    fn object_names_follow_each_resource_rule() {
        let long_label = "a".repeat(64);
        assert!(validate_object_name("services", "backend-east").is_empty());
        let errs = validate_object_name("services", "1backend");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "metadata.name");
        assert!(
            errs[0]
                .to_string()
                .starts_with("metadata.name: Invalid value: \"1backend\": a DNS-1035 label")
        );
        assert_eq!(
            validate_object_name("services", &long_label)[0].message,
            format!("Invalid value: \"{long_label}\": must be no more than 63 characters")
        );
        assert!(validate_object_name("namespaces", "1ns").is_empty());
        assert_eq!(validate_object_name("namespaces", &long_label).len(), 1);
        assert_eq!(validate_object_name("namespaces", "a.b").len(), 1);
        assert!(validate_object_name("configmaps", "a.b").is_empty());
        assert!(validate_object_name("configmaps", &long_label).is_empty());
        assert!(validate_object_name("links.mc.dev", "east").is_empty());
        assert!(validate_object_name("clusterroles", "system:controller:foo").is_empty());
        assert_eq!(
            validate_object_name("roles", "a/b")[0].message,
            "Invalid value: \"a/b\": may not contain '/'"
        );
        assert_eq!(validate_object_name("configmaps", "Bad").len(), 1);
        let empty = validate_object_name("pods", "");
        assert_eq!(empty[0].kind, FieldErrorKind::Required);
        assert_eq!(
            empty[0].to_string(),
            "metadata.name: Required value: name or generateName is required"
        );
    }

    #[test]
    fn error_bodies_print_like_the_api_server() {
        assert_eq!(
            FieldError::not_supported("spec.type", &json!("Foo"), &["ClusterIP", "ExternalName"])
                .to_string(),
            "spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\""
        );
        assert_eq!(
            FieldError::required("spec.ports", "").to_string(),
            "spec.ports: Required value"
        );
        assert_eq!(
            FieldError::invalid("spec.clusterIPs", &json!(["10.0.0.5"]), "x").message,
            "Invalid value: []string{\"10.0.0.5\"}: x"
        );
        assert_eq!(
            FieldError::invalid("a", &json!(70000), "x").message,
            "Invalid value: 70000: x"
        );
        assert_eq!(
            FieldError::forbidden("a", "nope").message,
            "Forbidden: nope"
        );
        assert_eq!(
            FieldError::too_long("a", 5).message,
            "Too long: may not be more than 5 bytes"
        );
        assert_eq!(
            FieldError::too_many("a", 3, 2).message,
            "Too many: 3: must have at most 2 items"
        );
    }
}
