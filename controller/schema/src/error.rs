//! Field errors in the shape the Kubernetes API server reports them.

use std::fmt;

use serde_json::Value;

/// The kind of a field error; `reason()` gives the `StatusCause` reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    /// The value is not valid.
    Invalid,
    /// A required field is missing.
    Required,
    /// The value is not one of the supported values.
    NotSupported,
    /// A list holds a value twice.
    Duplicate,
    /// A string is too long.
    TooLong,
    /// A list or map has too many entries.
    TooMany,
    /// The field may not be set or changed.
    Forbidden,
    /// The field is not in the schema (strict field validation).
    Unknown,
}

impl ErrorType {
    /// The `reason` of a Kubernetes `StatusCause`.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::Required => "FieldValueRequired",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::TooMany => "FieldValueTooMany",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::Unknown => "FieldValueInvalid",
        }
    }

    fn label(self) -> &'static str {
        match self {
            ErrorType::Invalid => "Invalid value",
            ErrorType::Required => "Required value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::TooLong => "Too long",
            ErrorType::TooMany => "Too many",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::Unknown => "Unknown field",
        }
    }
}

/// One problem with one field, e.g. `spec.size: Invalid value: "x": spec.size in body must be
/// of type integer: "string"`.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    /// Path of the field, e.g. `spec.items[2].name`.
    pub field: String,
    /// The kind of problem.
    pub kind: ErrorType,
    /// The offending value, when it helps to show it.
    pub value: Option<Value>,
    /// The detail.
    pub detail: String,
}

impl FieldError {
    /// A new error.
    pub fn new(
        field: impl Into<String>,
        kind: ErrorType,
        value: Option<&Value>,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            field: field.into(),
            kind,
            value: value.cloned(),
            detail: detail.into(),
        }
    }

    /// The message without the field path, as a `StatusCause` message carries it.
    pub fn message(&self) -> String {
        let mut out = self.kind.label().to_string();
        if let Some(value) = &self.value {
            out.push_str(": ");
            out.push_str(&short_json(value));
        }
        if !self.detail.is_empty() {
            out.push_str(": ");
            out.push_str(&self.detail);
        }
        out
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == ErrorType::Unknown {
            return write!(f, "unknown field \"{}\"", self.field);
        }
        write!(f, "{}: {}", self.field, self.message())
    }
}

/// A value as JSON, shortened for messages.
fn short_json(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        let cut: String = text.chars().take(77).collect();
        format!("{cut}...")
    } else {
        text
    }
}
