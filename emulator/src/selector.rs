//! Label and field selectors as the API server parses and applies them on
//! list and watch (`?labelSelector=`, `?fieldSelector=`).

use serde_json::Value;

use crate::validation::{FieldError, go_quote, validate_label_value, validate_qualified_name};

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
    /// `k=v` or `k==v`
    Equals,
    /// `k!=v` (also true when the label is absent)
    NotEquals,
    /// `k in (a,b)`
    In,
    /// `k notin (a,b)` (also true when the label is absent)
    NotIn,
    /// `k`
    Exists,
    /// `!k`
    DoesNotExist,
    /// `k>n` (label value parsed as an integer)
    GreaterThan,
    /// `k<n`
    LessThan,
}

impl Requirement {
    /// Builds a requirement, checking key and values like apimachinery's
    /// `NewRequirement` (errors are field errors under `key` / `values`).
    pub fn new(key: &str, op: Operator, values: Vec<String>) -> Result<Requirement, String> {
        let mut errs: Vec<FieldError> = Vec::new();
        let key_msgs = validate_qualified_name(key);
        if !key_msgs.is_empty() {
            errs.push(FieldError::invalid(
                "key",
                &Value::String(key.to_string()),
                &key_msgs.join("; "),
            ));
        }
        let list = Value::Array(values.iter().cloned().map(Value::String).collect());
        match op {
            Operator::In | Operator::NotIn if values.is_empty() => errs.push(FieldError::invalid(
                "values",
                &list,
                "for 'in', 'notin' operators, values set can't be empty",
            )),
            Operator::Equals | Operator::NotEquals if values.len() != 1 => {
                errs.push(FieldError::invalid(
                    "values",
                    &list,
                    "exact-match compatibility requires one single value",
                ))
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                errs.push(FieldError::invalid(
                    "values",
                    &list,
                    "values set must be empty for exists and does not exist",
                ))
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(FieldError::invalid(
                        "values",
                        &list,
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errs.push(FieldError::invalid(
                            format!("values[{i}]"),
                            &Value::String(v.clone()),
                            "for 'Gt', 'Lt' operators, the value must be an integer",
                        ));
                    }
                }
            }
            _ => {}
        }
        if !matches!(op, Operator::GreaterThan | Operator::LessThan) {
            for (i, v) in values.iter().enumerate() {
                let msgs = validate_label_value(v);
                if !msgs.is_empty() {
                    errs.push(FieldError::invalid(
                        format!("values[{i}][{key}]"),
                        &Value::String(v.clone()),
                        &msgs.join("; "),
                    ));
                }
            }
        }
        if !errs.is_empty() {
            return Err(aggregate(&errs));
        }
        let mut values = values;
        values.sort();
        values.dedup();
        Ok(Requirement {
            key: key.to_string(),
            op,
            values,
        })
    }

    /// True when the label map satisfies this requirement.
    pub fn matches(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        let value = labels
            .and_then(|l| l.get(&self.key))
            .and_then(Value::as_str);
        match self.op {
            Operator::Equals | Operator::In => {
                value.is_some_and(|v| self.values.iter().any(|x| x == v))
            }
            Operator::NotEquals | Operator::NotIn => {
                !value.is_some_and(|v| self.values.iter().any(|x| x == v))
            }
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(have), Some(want)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.op == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

/// The apimachinery aggregate error text: one message bare, several in brackets.
fn aggregate(errs: &[FieldError]) -> String {
    let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
    if msgs.len() == 1 {
        msgs.into_iter().next().unwrap_or_default()
    } else {
        format!("[{}]", msgs.join(", "))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    End,
    ClosedPar,
    Comma,
    Bang,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
    Error,
}

fn is_special(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn symbol_token(s: &str) -> Option<Token> {
    Some(match s {
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        "!" => Token::Bang,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

/// Splits a selector into tokens exactly as apimachinery's lexer does
/// (longest known symbol, identifiers end at a symbol or whitespace).
fn lex(input: &str) -> Vec<(Token, String)> {
    let b = input.as_bytes();
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        while pos < b.len() && is_space(b[pos]) {
            pos += 1;
        }
        if pos >= b.len() {
            out.push((Token::End, String::new()));
            return out;
        }
        if is_special(b[pos]) {
            let start = pos;
            let mut last: Option<(Token, usize)> = None;
            while pos < b.len() && is_special(b[pos]) {
                pos += 1;
                match symbol_token(&input[start..pos]) {
                    Some(tok) => last = Some((tok, pos)),
                    None if last.is_some() => {
                        pos -= 1;
                        break;
                    }
                    None => {}
                }
            }
            match last {
                Some((tok, end)) => {
                    pos = end;
                    out.push((tok, input[start..end].to_string()));
                }
                None => {
                    out.push((
                        Token::Error,
                        format!("error expected: keyword found '{}'", &input[start..pos]),
                    ));
                }
            }
        } else {
            let start = pos;
            while pos < b.len() && !is_special(b[pos]) && !is_space(b[pos]) {
                pos += 1;
            }
            let word = &input[start..pos];
            let tok = match word {
                "in" => Token::In,
                "notin" => Token::NotIn,
                _ => Token::Identifier,
            };
            out.push((tok, word.to_string()));
        }
    }
}

/// Whether `in`/`notin` read as plain identifiers (they do in value position).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser {
    items: Vec<(Token, String)>,
    position: usize,
}

impl Parser {
    fn item(&self, context: Context, at: usize) -> (Token, String) {
        let (tok, lit) = self
            .items
            .get(at)
            .cloned()
            .unwrap_or((Token::End, String::new()));
        let tok = match tok {
            Token::In | Token::NotIn if context == Context::Values => Token::Identifier,
            other => other,
        };
        (tok, lit)
    }

    fn lookahead(&self, context: Context) -> (Token, String) {
        self.item(context, self.position)
    }

    fn consume(&mut self, context: Context) -> (Token, String) {
        let item = self.item(context, self.position);
        if self.position < self.items.len() {
            self.position += 1;
        }
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut requirements = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Context::Values);
            match tok {
                Token::Identifier | Token::Bang => {
                    let r = self
                        .parse_requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(r);
                    let (t, l) = self.consume(Context::Values);
                    match t {
                        Token::End => return Ok(requirements),
                        Token::Comma => {
                            let (t2, l2) = self.lookahead(Context::Values);
                            if t2 != Token::Identifier && t2 != Token::Bang {
                                return Err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => return Err(format!("found '{l}', expected: ',' or 'end of string'")),
                    }
                }
                Token::End => return Ok(requirements),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let mut op: Option<Operator> = None;
        let (mut tok, mut lit) = self.consume(Context::Values);
        if tok == Token::Bang {
            op = Some(Operator::DoesNotExist);
            (tok, lit) = self.consume(Context::Values);
        }
        if tok != Token::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        let key = lit;
        let key_msgs = validate_qualified_name(&key);
        if !key_msgs.is_empty() {
            return Err(FieldError::invalid(
                "key",
                &Value::String(key.clone()),
                &key_msgs.join("; "),
            )
            .to_string());
        }
        let (next, _) = self.lookahead(Context::Values);
        if op == Some(Operator::DoesNotExist) {
            return Requirement::new(&key, Operator::DoesNotExist, Vec::new());
        }
        if matches!(next, Token::End | Token::Comma) {
            return Requirement::new(&key, Operator::Exists, Vec::new());
        }
        let (tok, lit) = self.consume(Context::KeyAndOperator);
        let op = match tok {
            Token::In => Operator::In,
            Token::Equals | Token::DoubleEquals => Operator::Equals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => {
                return Err(format!(
                    "found '{lit}', expected: '=', '!=', '==', 'in', notin'"
                ));
            }
        };
        let values = match op {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(&key, op, values)
    }

    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let (tok, lit) = self.consume(Context::Values);
        if tok != Token::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(Context::Values);
        match tok {
            Token::Identifier | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                let (tok, _) = self.consume(Context::Values);
                if tok != Token::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(values)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(vec![String::new()])
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, String> {
        let mut values: Vec<String> = Vec::new();
        loop {
            let (tok, lit) = self.consume(Context::Values);
            match tok {
                Token::Identifier => {
                    values.push(lit);
                    let (tok2, lit2) = self.lookahead(Context::Values);
                    match tok2 {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(values),
                        _ => return Err(format!("found '{lit2}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.push(String::new());
                    }
                    let (tok2, _) = self.lookahead(Context::Values);
                    if tok2 == Token::ClosedPar {
                        values.push(String::new());
                        return Ok(values);
                    }
                    if tok2 == Token::Comma {
                        self.consume(Context::Values);
                        values.push(String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Vec<String>, String> {
        let (tok, _) = self.lookahead(Context::Values);
        if matches!(tok, Token::End | Token::Comma) {
            return Ok(vec![String::new()]);
        }
        let (tok, lit) = self.consume(Context::Values);
        if tok == Token::Identifier {
            Ok(vec![lit])
        } else {
            Err(format!("found '{lit}', expected: identifier"))
        }
    }
}

impl LabelSelector {
    /// Parses the string form (`a=b,c in (d),!e`); errors carry the API
    /// server's text (`unable to parse requirement: ...`, `found ',', ...`).
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let mut parser = Parser {
            items: lex(s),
            position: 0,
        };
        let mut requirements = parser.parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// Builds a selector from a `metav1.LabelSelector` JSON object
    /// (`matchLabels`, `matchExpressions` with operators `In`, `NotIn`,
    /// `Exists`, `DoesNotExist`); `null` or `{}` selects everything.
    pub fn from_json(selector: &Value) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        if selector.is_null() {
            return Ok(LabelSelector { requirements });
        }
        let obj = selector
            .as_object()
            .ok_or_else(|| "label selector must be an object".to_string())?;
        if let Some(labels) = obj.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in labels {
                let v = v
                    .as_str()
                    .ok_or_else(|| format!("matchLabels[{k}] must be a string"))?;
                requirements.push(Requirement::new(k, Operator::Equals, vec![v.to_string()])?);
            }
        }
        if let Some(exprs) = obj.get("matchExpressions").and_then(Value::as_array) {
            for expr in exprs {
                let key = expr.get("key").and_then(Value::as_str).unwrap_or_default();
                let op_name = expr
                    .get("operator")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let op = match op_name {
                    "In" => Operator::In,
                    "NotIn" => Operator::NotIn,
                    "Exists" => Operator::Exists,
                    "DoesNotExist" => Operator::DoesNotExist,
                    other => {
                        return Err(format!(
                            "{} is not a valid label selector operator",
                            go_quote(other)
                        ));
                    }
                };
                let values: Vec<String> = expr
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|vs| {
                        vs.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                requirements.push(Requirement::new(key, op, values)?);
            }
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// True when the labels (`metadata.labels`, possibly absent) satisfy every requirement.
    pub fn matches(&self, labels: Option<&Value>) -> bool {
        let map = labels.and_then(Value::as_object);
        self.requirements.iter().all(|r| r.matches(map))
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

/// Splits on commas not preceded by a backslash escape.
fn split_terms(s: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            current.push(c);
            escaped = true;
        } else if c == ',' {
            terms.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    terms.push(current);
    terms
}

/// Finds the first `!=`, `==` or `=` (tried in that order at each position).
fn split_term(term: &str) -> Option<(&str, &str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for op in ["!=", "==", "="] {
            if rest.starts_with(op) {
                return Some((&term[..i], op, &term[i + op.len()..]));
            }
        }
    }
    None
}

fn unescape_value(s: &str) -> Result<String, String> {
    if !s.contains(['\\', '=', ',']) {
        return Ok(s.to_string());
    }
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                _ => {
                    return Err(format!(
                        "invalid field selector: invalid escape sequence: {s}"
                    ));
                }
            },
            ',' | '=' => {
                return Err(format!(
                    "invalid field selector: unescaped character in value: {s}"
                ));
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// The value of a selectable field, as the API server's field set renders
/// it: strings as they are, booleans and numbers as text, absent as "".
pub fn field_value(obj: &Value, field: &str) -> String {
    let path = match field {
        // core Events index `source` as the reporting component's name
        "source" => "source.component",
        other => other,
    };
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(next) => cur = next,
            None => {
                return match field {
                    "spec.unschedulable" | "spec.hostNetwork" => "false".to_string(),
                    _ => String::new(),
                };
            }
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(_) | Value::Number(_) => cur.to_string(),
        other => other.to_string(),
    }
}

impl FieldSelector {
    /// Parses `f=v,g!=w` (with `\,` `\=` `\\` escapes in values); errors
    /// carry the API server's text (`invalid selector: '...'; can't understand '...'`).
    pub fn parse(s: &str) -> Result<FieldSelector, String> {
        let mut parts = split_terms(s);
        parts.sort();
        let mut terms = Vec::new();
        for part in parts.iter().filter(|p| !p.is_empty()) {
            let Some((field, op, value)) = split_term(part) else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            terms.push(FieldTerm {
                field: field.to_string(),
                value: unescape_value(value)?,
                negated: op == "!=",
            });
        }
        Ok(FieldSelector { terms })
    }

    /// True when every term holds for the object.
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms
            .iter()
            .all(|t| (field_value(obj, &t.field) == t.value) != t.negated)
    }

    /// True when the selector has no term (selects everything).
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Refuses fields the real API server does not index for this resource;
    /// `group` is "" for the core group. Built-ins with their own field list
    /// answer `field label not supported: <f>`; everything else (custom
    /// resources included) answers `"<f>" is not a known field selector:
    /// only "metadata.name", "metadata.namespace"`.
    pub fn check_supported(&self, group: &str, resource: &str) -> Result<(), String> {
        for term in &self.terms {
            let f = term.field.as_str();
            match supported_fields(group, resource) {
                Some(list) => {
                    if !list.contains(&f) {
                        return Err(format!("field label not supported: {f}"));
                    }
                }
                None => {
                    if f != "metadata.name" && f != "metadata.namespace" {
                        return Err(format!(
                            "{} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
                            go_quote(f)
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The fields a built-in resource registers a field-label conversion for.
fn supported_fields(group: &str, resource: &str) -> Option<&'static [&'static str]> {
    Some(match (group, resource) {
        ("", "pods") => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "secrets") => &["metadata.name", "metadata.namespace", "type"],
        ("", "events") => &[
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("events.k8s.io", "events") => &[
            "metadata.name",
            "metadata.namespace",
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        ],
        ("", "namespaces") => &["metadata.name", "status.phase"],
        ("", "nodes") => &["metadata.name", "spec.unschedulable"],
        ("", "replicationcontrollers") => {
            &["metadata.name", "metadata.namespace", "status.replicas"]
        }
        ("certificates.k8s.io", "certificatesigningrequests") => {
            &["metadata.name", "spec.signerName"]
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels() -> Value {
        json!({"app": "backend", "tier": "web", "mc.dev/exported": "true", "n": "5"})
    }

    fn sel(s: &str) -> LabelSelector {
        match LabelSelector::parse(s) {
            Ok(sel) => sel,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    #[test]
    fn equality_forms_match() {
        let l = labels();
        assert!(sel("app=backend").matches(Some(&l)));
        assert!(sel("app==backend").matches(Some(&l)));
        assert!(!sel("app=frontend").matches(Some(&l)));
        assert!(sel("app!=frontend").matches(Some(&l)));
        assert!(!sel("app!=backend").matches(Some(&l)));
        assert!(
            sel("missing!=x").matches(Some(&l)),
            "!= holds when the label is absent"
        );
        assert!(sel("mc.dev/exported=true").matches(Some(&l)));
    }

    #[test]
    fn set_forms_match() {
        let l = labels();
        assert!(sel("app in (frontend, backend)").matches(Some(&l)));
        assert!(!sel("app in (frontend)").matches(Some(&l)));
        assert!(sel("app notin (frontend)").matches(Some(&l)));
        assert!(!sel("app notin (backend,x)").matches(Some(&l)));
        assert!(sel("missing notin (a)").matches(Some(&l)));
        assert!(!sel("missing in (a)").matches(Some(&l)));
        assert_eq!(sel("k in (b,a,b)").requirements[0].values, vec!["a", "b"]);
    }

    #[test]
    fn existence_forms_match() {
        let l = labels();
        assert!(sel("app").matches(Some(&l)));
        assert!(!sel("missing").matches(Some(&l)));
        assert!(sel("!missing").matches(Some(&l)));
        assert!(!sel("!app").matches(Some(&l)));
        assert!(sel("!app").matches(None), "absent labels satisfy !k");
        assert!(!sel("app").matches(None));
    }

    #[test]
    fn conjunction_and_whitespace() {
        let l = labels();
        assert!(sel(" app = backend , tier in ( web ) ,!gone ").matches(Some(&l)));
        assert!(!sel("app=backend,tier=db").matches(Some(&l)));
        assert!(sel("").matches(Some(&l)));
        assert!(sel("").is_empty());
        assert!(sel("").matches(None));
        assert!(sel("n>3,n<6").matches(Some(&l)));
        assert!(!sel("n>5").matches(Some(&l)));
    }

    #[test]
    fn empty_values() {
        let l = json!({"a": ""});
        assert!(sel("a=").matches(Some(&l)));
        assert!(sel("a in ()").matches(Some(&l)));
        assert!(!sel("a=,b").matches(Some(&l)));
    }

    #[test]
    fn syntax_errors_read_like_the_api_server() {
        assert_eq!(
            LabelSelector::parse("app=a b"),
            Err("found 'b', expected: ',' or 'end of string'".to_string())
        );
        assert_eq!(
            LabelSelector::parse("app in (a"),
            Err("unable to parse requirement: found '', expected: ',' or ')'".to_string())
        );
        assert_eq!(
            LabelSelector::parse("app in a"),
            Err("unable to parse requirement: found 'a' expected: '('".to_string())
        );
        assert_eq!(
            LabelSelector::parse("app,"),
            Err("found '', expected: identifier after ','".to_string())
        );
        assert_eq!(
            LabelSelector::parse("!app=x"),
            Err("found '=', expected: ',' or 'end of string'".to_string())
        );
        assert_eq!(
            LabelSelector::parse("=a"),
            Err("found '=', expected: !, identifier, or 'end of string'".to_string())
        );
        assert_eq!(
            LabelSelector::parse("app foo"),
            Err(
                "unable to parse requirement: found 'foo', expected: '=', '!=', '==', 'in', notin'"
                    .to_string()
            )
        );
    }

    #[test]
    fn invalid_keys_and_values_are_refused() {
        let err = LabelSelector::parse("-app=x").err().unwrap_or_default();
        assert!(
            err.starts_with("unable to parse requirement: key: Invalid value: \"-app\": name part must consist of"),
            "{err}"
        );
        let err = LabelSelector::parse("app=-x").err().unwrap_or_default();
        assert!(
            err.starts_with("unable to parse requirement: values[0][app]: Invalid value: \"-x\": a valid label must be"),
            "{err}"
        );
        assert!(LabelSelector::parse(&format!("app={}", "v".repeat(64))).is_err());
    }

    #[test]
    fn metav1_selectors_from_json() {
        let l = labels();
        let s = LabelSelector::from_json(&json!({
            "matchLabels": {"app": "backend"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["web", "db"]},
                {"key": "gone", "operator": "DoesNotExist"}
            ]
        }));
        assert!(s.as_ref().is_ok_and(|s| s.matches(Some(&l))), "{s:?}");
        let s = LabelSelector::from_json(&json!({"matchLabels": {"app": "x"}}));
        assert!(s.is_ok_and(|s| !s.matches(Some(&l))));
        assert!(LabelSelector::from_json(&json!(null)).is_ok_and(|s| s.is_empty()));
        assert!(
            LabelSelector::from_json(
                &json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]})
            )
            .is_err()
        );
        assert!(
            LabelSelector::from_json(
                &json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]})
            )
            .is_err()
        );
    }

    fn pod() -> Value {
        json!({
            "metadata": {"name": "p1", "namespace": "default"},
            "spec": {"nodeName": "node-1", "serviceAccountName": "default"},
            "status": {"phase": "Running", "podIP": "10.1.0.5"}
        })
    }

    #[test]
    fn field_selectors_match_dotted_paths() {
        let p = pod();
        let fs = |s: &str| FieldSelector::parse(s).unwrap_or_default();
        assert!(fs("spec.nodeName=node-1").matches(&p));
        assert!(fs("spec.nodeName==node-1,metadata.namespace=default").matches(&p));
        assert!(!fs("spec.nodeName!=node-1").matches(&p));
        assert!(fs("status.phase!=Pending").matches(&p));
        assert!(fs("metadata.name=p1").matches(&p));
        assert!(!fs("metadata.name=p2").matches(&p));
        assert!(
            fs("spec.schedulerName=").matches(&p),
            "absent fields read as empty"
        );
        assert!(fs("").matches(&p));
        let node = json!({"metadata": {"name": "n"}, "spec": {}});
        assert!(fs("spec.unschedulable=false").matches(&node));
        let node = json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}});
        assert!(fs("spec.unschedulable=true").matches(&node));
        let ev = json!({"involvedObject": {"kind": "Pod"}, "source": {"component": "kubelet"}});
        assert!(fs("involvedObject.kind=Pod,source=kubelet").matches(&ev));
    }

    #[test]
    fn field_selector_escapes_and_errors() {
        let fs = FieldSelector::parse("metadata.name=a\\,b\\=c");
        assert_eq!(
            fs.map(|f| f.terms[0].value.clone()),
            Ok("a,b=c".to_string())
        );
        assert_eq!(
            FieldSelector::parse("metadata.name"),
            Err("invalid selector: 'metadata.name'; can't understand 'metadata.name'".to_string())
        );
        assert!(FieldSelector::parse("metadata.name=a\\b").is_err());
        assert!(FieldSelector::parse("a=b=c").is_err());
    }

    #[test]
    fn supported_fields_per_resource() {
        let check = |s: &str, g: &str, r: &str| {
            FieldSelector::parse(s).and_then(|f| f.check_supported(g, r))
        };
        assert!(check("metadata.name=a,metadata.namespace=b", "", "services").is_ok());
        assert_eq!(
            check("spec.clusterIP=1", "", "services"),
            Err("\"spec.clusterIP\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\"".to_string())
        );
        assert!(
            check(
                "spec.nodeName=a,status.phase=Running,status.podIP=1",
                "",
                "pods"
            )
            .is_ok()
        );
        assert!(check("spec.serviceAccountName=a", "", "pods").is_ok());
        assert_eq!(
            check("spec.foo=a", "", "pods"),
            Err("field label not supported: spec.foo".to_string())
        );
        assert!(check("type=kubernetes.io/tls", "", "secrets").is_ok());
        assert!(check("involvedObject.uid=x,reason=y,type=Warning", "", "events").is_ok());
        assert!(check("regarding.name=x", "events.k8s.io", "events").is_ok());
        assert!(check("involvedObject.name=x", "events.k8s.io", "events").is_err());
        assert!(
            check(
                "spec.signerName=mc.dev/issuer",
                "certificates.k8s.io",
                "certificatesigningrequests"
            )
            .is_ok()
        );
        assert!(check("spec.unschedulable=false", "", "nodes").is_ok());
        assert!(check("status.phase=Active", "", "namespaces").is_ok());
        assert!(check("metadata.name=x", "mc.dev", "links").is_ok());
        assert!(check("spec.targetCluster=x", "mc.dev", "links").is_err());
    }
}
