//! Validating one JSON value against a model data type.

use std::fmt;

use devplane_api::v1alpha1::{DataKind, DataType, ElementType, EnumValue, ScalarType, StructField};
use serde_json::Value;

/// A data type seen uniformly, whichever of [`DataType`], [`ElementType`] or [`ScalarType`]
/// declared it.
#[derive(Clone, Copy, Debug)]
pub struct TypeView<'a> {
    /// Kind of the value.
    pub kind: DataKind,
    /// Unit symbol.
    pub unit: Option<&'a str>,
    /// Inclusive lower bound of a number.
    pub min: Option<f64>,
    /// Inclusive upper bound of a number.
    pub max: Option<f64>,
    /// Longest string in bytes.
    pub max_length: Option<u32>,
    /// Allowed enum values.
    pub enum_values: &'a [EnumValue],
    /// Fields of a struct.
    pub fields: &'a [StructField],
    /// Element type of an array.
    pub items: Option<&'a ElementType>,
    /// Most elements of an array.
    pub max_items: Option<u32>,
}

impl<'a> From<&'a DataType> for TypeView<'a> {
    fn from(t: &'a DataType) -> Self {
        TypeView {
            kind: t.kind,
            unit: t.unit.as_deref(),
            min: t.min,
            max: t.max,
            max_length: t.max_length,
            enum_values: &t.enum_values,
            fields: &t.fields,
            items: t.items.as_ref(),
            max_items: t.max_items,
        }
    }
}

impl<'a> From<&'a ElementType> for TypeView<'a> {
    fn from(t: &'a ElementType) -> Self {
        TypeView {
            kind: t.kind,
            unit: t.unit.as_deref(),
            min: t.min,
            max: t.max,
            max_length: t.max_length,
            enum_values: &t.enum_values,
            fields: &t.fields,
            items: None,
            max_items: None,
        }
    }
}

impl<'a> From<&'a ScalarType> for TypeView<'a> {
    fn from(t: &'a ScalarType) -> Self {
        TypeView {
            kind: t.kind,
            unit: t.unit.as_deref(),
            min: t.min,
            max: t.max,
            max_length: t.max_length,
            enum_values: &t.enum_values,
            fields: &[],
            items: None,
            max_items: None,
        }
    }
}

/// The JSON kind of a value, for error messages.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Optional bounds, printed as an interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds {
    /// Inclusive lower bound.
    pub min: Option<f64>,
    /// Inclusive upper bound.
    pub max: Option<f64>,
}

impl fmt::Display for Bounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.min, self.max) {
            (Some(min), Some(max)) => write!(f, "[{min}, {max}]"),
            (Some(min), None) => write!(f, "at least {min}"),
            (None, Some(max)) => write!(f, "at most {max}"),
            (None, None) => f.write_str("any"),
        }
    }
}

/// What is wrong with a value, measured against its data type.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ValueError {
    /// The JSON kind does not fit the data type.
    #[error("expected {expected}, found {found}")]
    WrongType {
        /// The declared kind.
        expected: DataKind,
        /// The JSON kind found.
        found: &'static str,
    },
    /// A number outside `min`/`max` (or outside what the kind can hold).
    #[error("{value} is out of range: allowed {bounds}")]
    OutOfRange {
        /// The value.
        value: f64,
        /// The allowed bounds.
        bounds: Bounds,
    },
    /// A string that is not one of the enum values.
    #[error("{value:?} is not one of {allowed:?}")]
    NotInEnum {
        /// The value.
        value: String,
        /// The enum values.
        allowed: Vec<String>,
    },
    /// A string longer than `maxLength`.
    #[error("string of {length} bytes is longer than the maximum {max}")]
    TooLong {
        /// Length in bytes.
        length: usize,
        /// The maximum.
        max: u32,
    },
    /// An array longer than `maxItems`.
    #[error("{length} elements, at most {max} allowed")]
    TooManyItems {
        /// Number of elements.
        length: usize,
        /// The maximum.
        max: u32,
    },
    /// A timestamp that is neither epoch milliseconds nor RFC 3339.
    #[error("{value} is not a timestamp (epoch milliseconds or an RFC 3339 string)")]
    BadTimestamp {
        /// The value as text.
        value: String,
    },
    /// A struct with a field the type does not declare.
    #[error("unknown field {field:?}")]
    UnknownField {
        /// The field.
        field: String,
    },
    /// A struct without one of its required fields.
    #[error("required field {field:?} is missing")]
    MissingField {
        /// The field.
        field: String,
    },
    /// A struct field or array element is invalid.
    #[error("{element}: {source}")]
    BadElement {
        /// `.field` or `[index]`.
        element: String,
        /// What is wrong with it.
        source: Box<ValueError>,
    },
}

impl ValueError {
    /// The innermost error, following [`ValueError::BadElement`].
    pub fn innermost(&self) -> &ValueError {
        match self {
            ValueError::BadElement { source, .. } => source.innermost(),
            other => other,
        }
    }
}

/// Largest magnitude a `float` (IEEE 754 single precision) holds.
const FLOAT_MAX: f64 = f32::MAX as f64;

/// Check `value` against `ty`. Returns the first problem found.
pub fn validate(ty: TypeView<'_>, value: &Value) -> Result<(), ValueError> {
    let wrong_type = || ValueError::WrongType {
        expected: ty.kind,
        found: json_kind(value),
    };
    match ty.kind {
        DataKind::Bool => value.as_bool().map(|_| ()).ok_or_else(wrong_type),
        DataKind::Int => {
            let n = integer(value).ok_or_else(wrong_type)?;
            check_bounds(ty, n as f64)
        }
        DataKind::Float | DataKind::Double => {
            let n = value.as_f64().ok_or_else(wrong_type)?;
            if ty.kind == DataKind::Float && n.abs() > FLOAT_MAX {
                return Err(ValueError::OutOfRange {
                    value: n,
                    bounds: Bounds {
                        min: Some(-FLOAT_MAX),
                        max: Some(FLOAT_MAX),
                    },
                });
            }
            check_bounds(ty, n)
        }
        DataKind::String => {
            let s = value.as_str().ok_or_else(wrong_type)?;
            match ty.max_length {
                Some(max) if s.len() > max as usize => Err(ValueError::TooLong {
                    length: s.len(),
                    max,
                }),
                _ => Ok(()),
            }
        }
        DataKind::Enum => {
            let s = value.as_str().ok_or_else(wrong_type)?;
            if ty.enum_values.iter().any(|e| e.value == s) {
                Ok(())
            } else {
                Err(ValueError::NotInEnum {
                    value: s.to_string(),
                    allowed: ty.enum_values.iter().map(|e| e.value.clone()).collect(),
                })
            }
        }
        DataKind::Timestamp => match value {
            Value::Number(_) => integer(value)
                .filter(|ms| *ms >= 0)
                .map(|_| ())
                .ok_or_else(|| ValueError::BadTimestamp {
                    value: value.to_string(),
                }),
            Value::String(s) => s
                .parse::<jiff::Timestamp>()
                .map(|_| ())
                .map_err(|_| ValueError::BadTimestamp { value: s.clone() }),
            _ => Err(wrong_type()),
        },
        DataKind::Struct => {
            let object = value.as_object().ok_or_else(wrong_type)?;
            for (key, field_value) in object {
                let field = ty
                    .fields
                    .iter()
                    .find(|f| &f.identifier == key)
                    .ok_or_else(|| ValueError::UnknownField { field: key.clone() })?;
                validate((&field.data_type).into(), field_value).map_err(|e| {
                    ValueError::BadElement {
                        element: format!(".{key}"),
                        source: Box::new(e),
                    }
                })?;
            }
            match ty
                .fields
                .iter()
                .find(|f| f.required && !object.contains_key(&f.identifier))
            {
                Some(missing) => Err(ValueError::MissingField {
                    field: missing.identifier.clone(),
                }),
                None => Ok(()),
            }
        }
        DataKind::Array => {
            let elements = value.as_array().ok_or_else(wrong_type)?;
            if let Some(max) = ty.max_items.filter(|max| elements.len() > *max as usize) {
                return Err(ValueError::TooManyItems {
                    length: elements.len(),
                    max,
                });
            }
            let Some(items) = ty.items else {
                return Ok(());
            };
            for (i, element) in elements.iter().enumerate() {
                validate(items.into(), element).map_err(|e| ValueError::BadElement {
                    element: format!("[{i}]"),
                    source: Box::new(e),
                })?;
            }
            Ok(())
        }
    }
}

/// A JSON number holding a whole number, as i64 (integral floats such as `5.0` count).
fn integer(value: &Value) -> Option<i64> {
    if let Some(n) = value.as_i64() {
        return Some(n);
    }
    let f = value.as_f64()?;
    (f.fract() == 0.0 && f >= i64::MIN as f64 && f <= i64::MAX as f64).then_some(f as i64)
}

fn check_bounds(ty: TypeView<'_>, n: f64) -> Result<(), ValueError> {
    let below = ty.min.is_some_and(|min| n < min);
    let above = ty.max.is_some_and(|max| n > max);
    if below || above {
        Err(ValueError::OutOfRange {
            value: n,
            bounds: Bounds {
                min: ty.min,
                max: ty.max,
            },
        })
    } else {
        Ok(())
    }
}

/// Parse a text cell (from CSV) into a JSON value of the given kind. Kinds without a text form
/// (struct, array) are read as JSON.
pub fn parse_text(kind: DataKind, text: &str) -> Result<Value, ValueError> {
    let bad = || ValueError::WrongType {
        expected: kind,
        found: "string",
    };
    match kind {
        DataKind::Bool => match text.trim() {
            "true" | "TRUE" | "True" | "1" => Ok(Value::Bool(true)),
            "false" | "FALSE" | "False" | "0" => Ok(Value::Bool(false)),
            _ => Err(bad()),
        },
        DataKind::Int => text
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| bad()),
        DataKind::Float | DataKind::Double => {
            let n = text.trim().parse::<f64>().map_err(|_| bad())?;
            serde_json::Number::from_f64(n)
                .map(Value::Number)
                .ok_or_else(bad)
        }
        DataKind::Timestamp => match text.trim().parse::<i64>() {
            Ok(ms) => Ok(Value::from(ms)),
            Err(_) => Ok(Value::String(text.trim().to_string())),
        },
        DataKind::String | DataKind::Enum => Ok(Value::String(text.to_string())),
        DataKind::Struct | DataKind::Array => serde_json::from_str(text).map_err(|_| bad()),
    }
}

/// A valid value of `ty`, placed at `position` (0.0 to 1.0) of its range where it has one: what
/// a simulated device reports. Enums take the value at that position of their list.
pub fn sample(ty: TypeView<'_>, position: f64, now_ms: i64) -> Value {
    let position = position.clamp(0.0, 1.0);
    let (low, high) = match (ty.min, ty.max) {
        (Some(min), Some(max)) => (min, max),
        (Some(min), None) => (min, min + 100.0),
        (None, Some(max)) => (max - 100.0, max),
        (None, None) => (0.0, 100.0),
    };
    let number = low + (high - low) * position;
    match ty.kind {
        DataKind::Bool => Value::Bool(position >= 0.5),
        DataKind::Int => {
            // Round inward so the value stays inside the bounds.
            let n = number.round().clamp(low.ceil(), high.floor());
            Value::from(n as i64)
        }
        DataKind::Float | DataKind::Double => serde_json::Number::from_f64(
            (number * 1000.0).round().clamp(low * 1000.0, high * 1000.0) / 1000.0,
        )
        .map(Value::Number)
        .unwrap_or(Value::from(0)),
        DataKind::String => {
            let max = ty.max_length.map(|m| m as usize).unwrap_or(16);
            Value::String("simulated".chars().take(max).collect())
        }
        DataKind::Enum => ty
            .enum_values
            .get(((ty.enum_values.len().saturating_sub(1)) as f64 * position).round() as usize)
            .map(|e| Value::String(e.value.clone()))
            .unwrap_or(Value::Null),
        DataKind::Timestamp => Value::from(now_ms.max(0)),
        DataKind::Struct => Value::Object(
            ty.fields
                .iter()
                .map(|f| {
                    (
                        f.identifier.clone(),
                        sample((&f.data_type).into(), position, now_ms),
                    )
                })
                .collect(),
        ),
        DataKind::Array => {
            let count = ty.max_items.unwrap_or(3).min(3) as usize;
            let items = ty
                .items
                .map(|element| vec![sample(element.into(), position, now_ms); count])
                .unwrap_or_default();
            Value::Array(items)
        }
    }
}

#[cfg(test)]
mod tests;
