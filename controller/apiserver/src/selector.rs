//! Label and field selectors (`labelSelector=` / `fieldSelector=` on lists, watches and
//! `deletecollection`), with apimachinery's grammar, validation and matching rules.

use std::borrow::Cow;
use std::fmt;

use devplane_naming as naming;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as ApiLabelSelector;
use serde_json::{Map, Value};

#[cfg(test)]
mod tests;

/// A selector that did not parse or validate. The message follows kube-apiserver's
/// wording, prefixes included (`unable to parse requirement: …`, `invalid selector: …`,
/// `invalid field selector: …`), so it can be returned as a 400 message as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A malformed or invalid label selector.
    #[error("{0}")]
    Label(String),
    /// A malformed field selector.
    #[error("{0}")]
    Field(String),
}

// ---------------------------------------------------------------------------
// Label selectors

/// The operator of one label requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `k in (a,b)`: the label exists with one of the values.
    In,
    /// `k notin (a,b)`: the label is absent or has none of the values.
    NotIn,
    /// `k=v`.
    Equals,
    /// `k==v` (same as `=`).
    DoubleEquals,
    /// `k!=v`: the label is absent or has another value.
    NotEquals,
    /// `k`: the label exists.
    Exists,
    /// `!k`: the label is absent.
    DoesNotExist,
    /// `k>n`: the label is an integer greater than n.
    GreaterThan,
    /// `k<n`: the label is an integer less than n.
    LessThan,
}

/// One comma-separated term of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    /// Sorted and deduplicated, as upstream keeps them.
    values: Vec<String>,
}

impl Requirement {
    /// Builds and validates a requirement the way apimachinery's `NewRequirement` does.
    pub fn new(
        key: &str,
        operator: Operator,
        values: Vec<String>,
    ) -> Result<Requirement, SelectorError> {
        let mut errors = Vec::new();
        let key_errors = qualified_name_errors(key);
        if !key_errors.is_empty() {
            errors.push(invalid("key", key, &key_errors.join("; ")));
        }
        let mut values = values;
        values.sort();
        values.dedup();
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                errors.push(invalid_list(
                    "values",
                    &values,
                    "for 'in', 'notin' operators, values set can't be empty",
                ));
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                errors.push(invalid_list(
                    "values",
                    &values,
                    "exact-match compatibility requires one single value",
                ));
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                errors.push(invalid_list(
                    "values",
                    &values,
                    "values set must be empty for exists and does not exist",
                ));
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errors.push(invalid_list(
                        "values",
                        &values,
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errors.push(invalid(
                            &format!("values[{i}]"),
                            v,
                            "for 'Gt', 'Lt' operators, the value must be an integer",
                        ));
                    }
                }
            }
            _ => {}
        }
        for (i, v) in values.iter().enumerate() {
            let value_errors = label_value_errors(v);
            if !value_errors.is_empty() {
                errors.push(invalid(
                    &format!("values[{i}][{key}]"),
                    v,
                    &value_errors.join("; "),
                ));
            }
        }
        match errors.len() {
            0 => Ok(Requirement {
                key: key.to_string(),
                operator,
                values,
            }),
            1 => Err(SelectorError::Label(errors.remove(0))),
            // apimachinery's error aggregate prints several errors as a bracketed list.
            _ => Err(SelectorError::Label(format!("[{}]", errors.join(", ")))),
        }
    }

    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values, sorted (empty for `Exists`/`DoesNotExist`).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    fn matches_with<'a>(&self, get: &impl Fn(&str) -> Option<Cow<'a, str>>) -> bool {
        let value = get(&self.key);
        let has = |v: &str| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                value.is_some_and(|v| has(&v))
            }
            // Absent labels satisfy negative requirements.
            Operator::NotIn | Operator::NotEquals => value.is_none_or(|v| !has(&v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(actual), [bound]) = (value, self.values.as_slice()) else {
                    return false;
                };
                match (actual.parse::<i64>(), bound.parse::<i64>()) {
                    (Ok(actual), Ok(bound)) => {
                        if self.operator == Operator::GreaterThan {
                            actual > bound
                        } else {
                            actual < bound
                        }
                    }
                    _ => false,
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = self.values.join(",");
        match self.operator {
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::Equals => write!(f, "{}={values}", self.key),
            Operator::DoubleEquals => write!(f, "{}=={values}", self.key),
            Operator::NotEquals => write!(f, "{}!={values}", self.key),
            Operator::GreaterThan => write!(f, "{}>{values}", self.key),
            Operator::LessThan => write!(f, "{}<{values}", self.key),
            Operator::In => write!(f, "{} in ({values})", self.key),
            Operator::NotIn => write!(f, "{} notin ({values})", self.key),
        }
    }
}

/// A parsed label selector: requirements that must all hold. Empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the `labelSelector` syntax: comma-separated requirements `k`, `!k`, `k=v`,
    /// `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k>n`, `k<n`, with optional whitespace.
    /// Keys must be qualified names and values valid label values.
    pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        let tokens = lex(s);
        let mut parser = Parser { tokens, pos: 0 };
        let mut requirements = parser.parse().map_err(SelectorError::Label)?;
        // Sorted by key like upstream, so the canonical form is deterministic.
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// Converts a `metav1.LabelSelector` (`matchLabels` plus `matchExpressions` with
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`). An empty selector selects everything.
    pub fn from_label_selector(sel: &ApiLabelSelector) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in sel.match_labels.iter().flatten() {
            requirements.push(Requirement::new(
                key,
                Operator::Equals,
                vec![value.clone()],
            )?);
        }
        for expression in sel.match_expressions.iter().flatten() {
            let operator = match expression.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError::Label(format!(
                        "{other:?} is not a valid label selector operator"
                    )));
                }
            };
            let values = expression.values.clone().unwrap_or_default();
            requirements.push(Requirement::new(&expression.key, operator, values)?);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// Whether an object with these `metadata.labels` matches (`None`: no labels).
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |key: &str| -> Option<Cow<'_, str>> {
            labels.and_then(|l| l.get(key)).map(|v| match v {
                Value::String(s) => Cow::Borrowed(s.as_str()),
                // Labels are strings; anything else is compared by its JSON text.
                other => Cow::Owned(other.to_string()),
            })
        };
        self.requirements.iter().all(|r| r.matches_with(&get))
    }

    /// Whether the selector has no requirements (and so selects everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

impl fmt::Display for LabelSelector {
    /// The canonical form, e.g. `app=web,!legacy,tier in (a,b)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    End,
    Comma,
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
    Open,
    Close,
    In,
    NotIn,
    Identifier(String),
}

impl Token {
    /// The text quoted in error messages.
    fn literal(&self) -> &str {
        match self {
            Token::End => "",
            Token::Comma => ",",
            Token::Not => "!",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::GreaterThan => ">",
            Token::LessThan => "<",
            Token::Open => "(",
            Token::Close => ")",
            Token::In => "in",
            Token::NotIn => "notin",
            Token::Identifier(s) => s,
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn lex(s: &str) -> Vec<Token> {
    let chars: Vec<char> = s.chars().collect();
    let mut tokens = Vec::new();
    let mut pos = 0;
    loop {
        while pos < chars.len() && is_space(chars[pos]) {
            pos += 1;
        }
        let Some(&c) = chars.get(pos) else {
            tokens.push(Token::End);
            return tokens;
        };
        let next_is_eq = chars.get(pos + 1) == Some(&'=');
        let (token, width) = match c {
            '!' if next_is_eq => (Token::NotEquals, 2),
            '!' => (Token::Not, 1),
            '=' if next_is_eq => (Token::DoubleEquals, 2),
            '=' => (Token::Equals, 1),
            '>' => (Token::GreaterThan, 1),
            '<' => (Token::LessThan, 1),
            '(' => (Token::Open, 1),
            ')' => (Token::Close, 1),
            ',' => (Token::Comma, 1),
            _ => {
                let start = pos;
                let mut end = pos;
                while end < chars.len() && !is_special(chars[end]) && !is_space(chars[end]) {
                    end += 1;
                }
                let word: String = chars[start..end].iter().collect();
                let token = match word.as_str() {
                    "in" => Token::In,
                    "notin" => Token::NotIn,
                    _ => Token::Identifier(word),
                };
                (token, end - start)
            }
        };
        tokens.push(token);
        pos += width;
    }
}

/// Recursive-descent parser over the token list, following apimachinery's grammar:
/// `in`/`notin` are keywords only where an operator is expected, identifiers elsewhere.
struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    /// The current token in "values" context, where `in`/`notin` are plain identifiers.
    fn peek_value(&self) -> Token {
        match self.tokens.get(self.pos) {
            Some(Token::In) => Token::Identifier("in".into()),
            Some(Token::NotIn) => Token::Identifier("notin".into()),
            Some(t) => t.clone(),
            None => Token::End,
        }
    }

    fn next_value(&mut self) -> Token {
        let t = self.peek_value();
        self.pos += 1;
        t
    }

    fn next_operator_token(&mut self) -> Token {
        let t = self.tokens.get(self.pos).cloned().unwrap_or(Token::End);
        self.pos += 1;
        t
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut requirements = Vec::new();
        loop {
            match self.peek_value() {
                Token::Identifier(_) | Token::Not => {
                    let requirement = self
                        .parse_requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(requirement);
                    match self.next_value() {
                        Token::End => return Ok(requirements),
                        Token::Comma => match self.peek_value() {
                            Token::Identifier(_) | Token::Not => {}
                            other => {
                                return Err(format!(
                                    "found '{}', expected: identifier after ','",
                                    other.literal()
                                ));
                            }
                        },
                        other => {
                            return Err(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                other.literal()
                            ));
                        }
                    }
                }
                Token::End => return Ok(requirements),
                other => {
                    return Err(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        other.literal()
                    ));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let mut token = self.next_value();
        let negated = token == Token::Not;
        if negated {
            token = self.next_value();
        }
        let Token::Identifier(key) = token else {
            return Err(format!("found '{}', expected: identifier", token.literal()));
        };
        let key_errors = qualified_name_errors(&key);
        if !key_errors.is_empty() {
            return Err(invalid("key", &key, &key_errors.join("; ")));
        }
        // `!k` takes no operator (whatever follows is the caller's problem, as upstream);
        // `k` alone means Exists.
        if negated || matches!(self.peek_value(), Token::End | Token::Comma) {
            let operator = if negated {
                Operator::DoesNotExist
            } else {
                Operator::Exists
            };
            return Requirement::new(&key, operator, Vec::new()).map_err(|e| e.to_string());
        }
        let operator = match self.next_operator_token() {
            Token::In => Operator::In,
            Token::NotIn => Operator::NotIn,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::NotEquals => Operator::NotEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            other => {
                return Err(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    other.literal()
                ));
            }
        };
        let values = match operator {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(&key, operator, values).map_err(|e| e.to_string())
    }

    /// `( v1, v2, … )`; empty entries (`(a,,b)`, `()`) stand for the empty value.
    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let open = self.next_value();
        if open != Token::Open {
            return Err(format!("found '{}' expected: '('", open.literal()));
        }
        match self.peek_value() {
            Token::Close => {
                self.pos += 1;
                Ok(vec![String::new()])
            }
            Token::Identifier(_) | Token::Comma => {
                let values = self.parse_identifier_list()?;
                let close = self.next_value();
                if close != Token::Close {
                    return Err(format!("found '{}', expected: ')'", close.literal()));
                }
                Ok(values)
            }
            other => Err(format!(
                "found '{}', expected: ',', ')' or identifier",
                other.literal()
            )),
        }
    }

    fn parse_identifier_list(&mut self) -> Result<Vec<String>, String> {
        let mut values = Vec::new();
        loop {
            match self.next_value() {
                Token::Identifier(v) => {
                    values.push(v);
                    match self.peek_value() {
                        Token::Comma => {}
                        Token::Close => return Ok(values),
                        other => {
                            return Err(format!(
                                "found '{}', expected: ',' or ')'",
                                other.literal()
                            ));
                        }
                    }
                }
                Token::Comma => {
                    // A comma with nothing before or after it contributes an empty value.
                    if values.is_empty() {
                        values.push(String::new());
                    }
                    match self.peek_value() {
                        Token::Close => {
                            values.push(String::new());
                            return Ok(values);
                        }
                        Token::Comma => {
                            self.pos += 1;
                            values.push(String::new());
                        }
                        _ => {}
                    }
                }
                other => {
                    return Err(format!(
                        "found '{}', expected: ',', or identifier",
                        other.literal()
                    ));
                }
            }
        }
    }

    /// The single value after `=`, `==`, `!=`, `>`, `<`; nothing at all means "".
    fn parse_exact_value(&mut self) -> Result<Vec<String>, String> {
        match self.peek_value() {
            Token::End | Token::Comma => Ok(vec![String::new()]),
            _ => match self.next_value() {
                Token::Identifier(v) => Ok(vec![v]),
                other => Err(format!("found '{}', expected: identifier", other.literal())),
            },
        }
    }
}

// ---------------------------------------------------------------------------
// Validation of label keys and values (Kubernetes' name rules, from devplane-naming)

/// `field: Invalid value: "value": detail`, as apimachinery's field errors print.
fn invalid(field: &str, value: &str, detail: &str) -> String {
    format!("{field}: Invalid value: {value:?}: {detail}")
}

fn invalid_list(field: &str, values: &[String], detail: &str) -> String {
    format!("{field}: Invalid value: {values:?}: {detail}")
}

/// Problems with a label key (`[prefix/]name`); empty when valid.
fn qualified_name_errors(value: &str) -> Vec<String> {
    naming::qualified_name_problems(value)
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Problems with a label value (empty or a qualified-name part, at most 63 characters).
fn label_value_errors(value: &str) -> Vec<String> {
    naming::label_value_problems(value)
        .iter()
        .map(ToString::to_string)
        .collect()
}

// ---------------------------------------------------------------------------
// Field selectors

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldTerm {
    field: String,
    value: String,
    /// `!=` rather than `=`/`==`.
    negated: bool,
}

/// A parsed field selector: `field=value`, `field==value` or `field!=value` terms that
/// must all hold. Empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses the `fieldSelector` syntax. Terms are separated by unescaped commas; values
    /// may escape `\,`, `\=` and `\\`; an unescaped `,` or `=` in a value, or any other
    /// escape, is an error. Field names are taken verbatim (no whitespace trimming), so
    /// the caller can reject unknown ones.
    pub fn parse(s: &str) -> Result<FieldSelector, SelectorError> {
        let mut parts = split_terms(s);
        // Sorted like upstream, which gives a deterministic canonical form.
        parts.sort();
        let mut terms = Vec::new();
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            let Some((field, operator, raw)) = split_term(part) else {
                return Err(SelectorError::Field(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            terms.push(FieldTerm {
                field: field.to_string(),
                value: unescape_value(raw)?,
                negated: operator == "!=",
            });
        }
        Ok(FieldSelector { terms })
    }

    /// The field names the selector mentions, in order (repeats included).
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(|t| t.field.as_str())
    }

    /// Whether an object matches; `get` returns the object's value for a field
    /// (see [`field_value`]). A missing field counts as the empty string, as upstream.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.terms.iter().all(|term| {
            let actual = get(&term.field).unwrap_or_default();
            (actual == term.value) != term.negated
        })
    }

    /// Whether the selector has no terms (and so selects everything).
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The value a field selector requires for `field` with `=`/`==`, if any (lets the
    /// server narrow `metadata.name=x` lists to one key).
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| !t.negated && t.field == field)
            .map(|t| t.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    /// The canonical form with values re-escaped, e.g. `metadata.name=a\,b,type!=x`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, term) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let operator = if term.negated { "!=" } else { "=" };
            write!(f, "{}{operator}{}", term.field, escape_value(&term.value))?;
        }
        Ok(())
    }
}

/// Splits on commas that are not escaped; escapes stay in the terms.
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits a term at the first operator; `!=` and `==` win over `=` at the same position.
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for operator in ["!=", "==", "="] {
            if let Some(value) = rest.strip_prefix(operator) {
                return Some((&term[..i], operator, value));
            }
        }
    }
    None
}

fn unescape_value(raw: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(raw.len());
    let mut escaped = false;
    for c in raw.chars() {
        if escaped {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(SelectorError::Field(format!(
                    "invalid field selector: invalid escape sequence: \\{c}"
                )));
            }
            out.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            ',' | '=' => {
                return Err(SelectorError::Field(format!(
                    "invalid field selector: unescaped character in value: {c}"
                )));
            }
            _ => out.push(c),
        }
    }
    if escaped {
        return Err(SelectorError::Field(
            "invalid field selector: invalid escape sequence: \\".to_string(),
        ));
    }
    Ok(out)
}

fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------
// Field values of objects

/// Field selector labels of core/v1 Events (beyond `metadata.name`/`metadata.namespace`).
const EVENT_FIELDS: &[&str] = &[
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
];

/// The field selector labels kube-apiserver accepts for a built-in kind (core/v1 names for
/// Events). Custom resources accept `metadata.name`, `metadata.namespace` and their CRD
/// version's `selectableFields`.
pub fn builtin_field_labels(kind: &str) -> &'static [&'static str] {
    match kind {
        "Event" => EVENT_FIELDS,
        "Secret" => &["metadata.name", "metadata.namespace", "type"],
        "Namespace" => &["metadata.name", "metadata.namespace", "status.phase"],
        _ => &["metadata.name", "metadata.namespace"],
    }
}

/// Maps a field selector label of the events.k8s.io/v1 view to the stored core/v1 name
/// (`regarding.kind` → `involvedObject.kind`, `reportingController` → `reportingComponent`);
/// `None` if that view does not support the label (400 `field label not supported`).
pub fn events_v1_field_label(field: &str) -> Option<&'static str> {
    Some(match field {
        "metadata.name" => "metadata.name",
        "metadata.namespace" => "metadata.namespace",
        "reason" => "reason",
        "type" => "type",
        "reportingController" => "reportingComponent",
        "regarding.kind" => "involvedObject.kind",
        "regarding.namespace" => "involvedObject.namespace",
        "regarding.name" => "involvedObject.name",
        "regarding.uid" => "involvedObject.uid",
        "regarding.apiVersion" => "involvedObject.apiVersion",
        "regarding.resourceVersion" => "involvedObject.resourceVersion",
        "regarding.fieldPath" => "involvedObject.fieldPath",
        _ => return None,
    })
}

/// The value of `field` in `object` for field selectors: `metadata.name` and
/// `metadata.namespace` for every kind; for Events (stored core/v1 shape; events.k8s.io
/// names are read as a fallback) `source` is `source.component`, else the reporting
/// component; every other field is read as a dotted JSON path (`type`, `status.phase`,
/// `involvedObject.uid`, CRD `selectableFields` such as `spec.modelRef.name`). Scalars
/// print as text (`true`, `3`), null as ""; missing fields and maps or lists give `None`.
pub fn field_value(object: &Value, field: &str) -> Option<String> {
    if is_event(object)
        && let Some(value) = event_field_value(object, field)
    {
        return value;
    }
    path_text(object, field)
}

fn is_event(object: &Value) -> bool {
    match object.get("kind").and_then(Value::as_str) {
        Some(kind) => kind == "Event",
        None => object.get("involvedObject").is_some() || object.get("regarding").is_some(),
    }
}

/// Event fields whose value is not simply the JSON at that path; `None` for the others.
fn event_field_value(object: &Value, field: &str) -> Option<Option<String>> {
    let first_of = |paths: &[&str]| -> Option<String> {
        paths
            .iter()
            .filter_map(|p| path_text(object, p))
            .find(|v| !v.is_empty())
    };
    if let Some(rest) = field.strip_prefix("involvedObject.") {
        return Some(
            path_text(object, field).or_else(|| path_text(object, &format!("regarding.{rest}"))),
        );
    }
    match field {
        "source" => Some(first_of(&[
            "source.component",
            "deprecatedSource.component",
            "reportingComponent",
            "reportingController",
        ])),
        "reportingComponent" => Some(first_of(&["reportingComponent", "reportingController"])),
        _ => None,
    }
}

fn path_text(object: &Value, path: &str) -> Option<String> {
    let value = path.split('.').try_fold(object, |v, key| v.get(key))?;
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null => Some(String::new()),
        Value::Array(_) | Value::Object(_) => None,
    }
}
