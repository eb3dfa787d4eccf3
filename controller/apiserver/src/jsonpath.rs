//! The kubectl flavour of JSONPath (client-go `util/jsonpath`), as far as CRD
//! `additionalPrinterColumns` and `selectableFields` need it.
//!
//! Supported: `.field`, `.*`, `..field` (recursive descent), `[n]`, `[-n]`,
//! `[start:end:step]`, `[*]`, unions `[a,b]`, quoted keys `['a.b/c']` and
//! `["a.b/c"]`, backslash escapes in dotted names (`.app\.kubernetes\.io/name`),
//! and filters `[?(@.type=="Ready")]` with `==`, `!=`, `<`, `<=`, `>`, `>=`
//! against string, number, boolean and null literals or other `@` paths, or
//! `[?(@.field)]` for existence. The path may be wrapped in `{...}` and may
//! start with `$` or `@`.
//!
//! Deviations from kubectl, all on the lenient side: a quoted bracket key is one
//! key (kubectl re-parses `['a.b']` as `.a.b`), double-quoted keys are accepted,
//! and evaluation never fails: what kubectl reports as an error (index out of
//! range, comparing a string with a number) yields no match here. kubectl's
//! `range`/`end` templates and literal text outside the action are not supported.

use std::cmp::Ordering;
use std::fmt;

use serde_json::Value;

#[cfg(test)]
mod tests;

/// A JSONPath expression that did not parse, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSONPath {path:?}: {reason}")]
pub struct JsonPathError {
    /// The expression as given.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A parsed kubectl-style JSONPath expression.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    source: String,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// A map key.
    Field(String),
    /// Every value of a map or element of a list.
    Wildcard,
    /// The current node and every non-empty map or list below it.
    Recursive,
    /// List elements by index or range.
    Slice(Slice),
    /// Alternatives whose results are concatenated.
    Union(Vec<Vec<Step>>),
    /// List elements for which the filter holds.
    Filter(Box<Filter>),
}

/// `[start:end:step]`; `[n]` is `start = n` with a derived end of `n + 1`.
#[derive(Debug, Clone, PartialEq)]
struct Slice {
    start: Option<i64>,
    end: Option<i64>,
    /// The end came from a single index, so an end of 0 (`[-1]`) means "to the end".
    end_derived: bool,
    step: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    left: Vec<Step>,
    /// `None` tests only that `left` exists.
    comparison: Option<(CmpOp, Operand)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Literal(Value),
    Path(Vec<Step>),
}

impl JsonPath {
    /// Parses an expression such as `.status.conditions[?(@.type=="Ready")].status`.
    pub fn parse(s: &str) -> Result<JsonPath, JsonPathError> {
        let fail = |reason: String| JsonPathError {
            path: s.to_string(),
            reason,
        };
        let trimmed = s.trim();
        if trimmed.is_empty() {
            return Err(fail("the path is empty".into()));
        }
        let inner = match trimmed.strip_prefix('{') {
            Some(rest) => rest
                .strip_suffix('}')
                .ok_or_else(|| fail("unclosed action: '{' without '}'".into()))?,
            None => trimmed,
        };
        let steps = parse_steps(inner).map_err(fail)?;
        Ok(JsonPath {
            source: s.to_string(),
            steps,
        })
    }

    /// The expression as it was given to [`JsonPath::parse`].
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the path names one field per step (`.a.b.c`), as CRD `selectableFields` require.
    pub fn is_simple_field_path(&self) -> bool {
        !self.steps.is_empty() && self.steps.iter().all(|s| matches!(s, Step::Field(_)))
    }

    /// The field names of a simple field path (see [`JsonPath::is_simple_field_path`]).
    pub fn field_names(&self) -> Option<Vec<&str>> {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Field(name) => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    /// All values the path selects in `v`, in document order; empty when nothing matches.
    pub fn evaluate<'a>(&self, v: &'a Value) -> Vec<&'a Value> {
        eval_steps(&self.steps, vec![v])
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Prints one value as kubectl's JSONPath printer does (Go's `%v`): strings raw,
/// numbers and booleans plainly, lists as `[a b]`, maps as `map[k:v]` with sorted
/// keys, and a JSON null as `<no value>` at the top and `<nil>` inside.
pub fn to_text(value: &Value) -> String {
    match value {
        Value::Null => "<no value>".to_string(),
        other => {
            let mut out = String::new();
            go_format(other, &mut out);
            out
        }
    }
}

fn go_format(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::String(s) => out.push_str(s),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (None, Some(u), _) => out.push_str(&u.to_string()),
            (None, None, Some(f)) => out.push_str(&go_float(f)),
            _ => out.push_str(&n.to_string()),
        },
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                go_format(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push_str("map[");
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(key);
                out.push(':');
                if let Some(v) = map.get(key) {
                    go_format(v, out);
                }
            }
            out.push(']');
        }
    }
}

/// Go's `%v` for a float64 (`strconv` "g" format, shortest digits): plain decimals
/// for exponents -4..=5, otherwise `1.2345675e+06` style.
fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // `{:e}` gives the shortest round-tripping mantissa, e.g. "1.2345675e6".
    let sci = format!("{f:e}");
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (sci.as_str(), 0),
    };
    if (-4..6).contains(&exp) {
        format!("{f}")
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

// ---------------------------------------------------------------------------
// Parsing

fn is_terminator(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\r' | '\n' | '.' | ',' | '[' | ']' | '$' | '@' | '{' | '}'
    )
}

fn parse_steps(text: &str) -> Result<Vec<Step>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut pos = 0;
    let mut steps = Vec::new();
    while pos < chars.len() {
        let c = chars[pos];
        if c == ' ' || c == '\t' {
            pos += 1;
            continue;
        }
        if c == '.' && chars.get(pos + 1) == Some(&'.') {
            if matches!(steps.last(), Some(Step::Recursive)) {
                return Err("invalid multiple recursive descent".into());
            }
            steps.push(Step::Recursive);
            pos += 2;
            // `..name` names a field directly; `..[0]` and `..*` continue normally.
            if chars
                .get(pos)
                .is_some_and(|c| c.is_alphanumeric() || *c == '_')
            {
                let (name, next) = read_name(&chars, pos);
                steps.push(Step::Field(name));
                pos = next;
            }
            continue;
        }
        match c {
            '@' | '$' => pos += 1,
            '.' => {
                let (name, next) = read_name(&chars, pos + 1);
                pos = next;
                match name.as_str() {
                    // A bare `.` (the whole path, or before `[`) is the current node.
                    "" => {}
                    "*" => steps.push(Step::Wildcard),
                    _ => steps.push(Step::Field(name)),
                }
            }
            '[' => {
                let (step, next) = parse_bracket(&chars, pos)?;
                steps.push(step);
                pos = next;
            }
            c if c.is_alphanumeric() || c == '_' => {
                let (word, _) = read_name(&chars, pos);
                return Err(format!(
                    "unexpected {word:?} at position {pos}: fields start with '.' (e.g. \".{word}\")"
                ));
            }
            other => {
                return Err(format!(
                    "unrecognized character {other:?} at position {pos}"
                ));
            }
        }
    }
    Ok(steps)
}

/// Reads a dotted field name from `start` up to the next unescaped terminator;
/// a backslash takes the next character literally.
fn read_name(chars: &[char], start: usize) -> (String, usize) {
    let mut name = String::new();
    let mut pos = start;
    while pos < chars.len() {
        let c = chars[pos];
        if c == '\\' {
            if let Some(next) = chars.get(pos + 1) {
                name.push(*next);
                pos += 2;
                continue;
            }
            pos += 1;
            continue;
        }
        if is_terminator(c) {
            break;
        }
        name.push(c);
        pos += 1;
    }
    (name, pos)
}

/// Finds the index of `target` at or after `from`, skipping quoted strings.
fn find_unquoted(chars: &[char], from: usize, target: char) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut pos = from;
    while pos < chars.len() {
        let c = chars[pos];
        match quote {
            Some(q) => {
                if c == '\\' {
                    pos += 1;
                } else if c == q {
                    quote = None;
                }
            }
            None => {
                if c == target {
                    return Some(pos);
                }
                if c == '\'' || c == '"' {
                    quote = Some(c);
                }
            }
        }
        pos += 1;
    }
    None
}

/// Splits on `sep` outside quotes.
fn split_unquoted(text: &str, sep: char) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut parts = Vec::new();
    let mut start = 0;
    while let Some(i) = find_unquoted(&chars, start, sep) {
        parts.push(chars[start..i].iter().collect());
        start = i + 1;
    }
    parts.push(chars[start..].iter().collect());
    parts
}

/// Parses `[...]` starting at `open` (the `[`); returns the step and the index after `]`.
fn parse_bracket(chars: &[char], open: usize) -> Result<(Step, usize), String> {
    if chars.get(open + 1) == Some(&'?') {
        return parse_filter(chars, open);
    }
    let close = find_unquoted(chars, open + 1, ']').ok_or("unterminated array: '[' without ']'")?;
    let content: String = chars[open + 1..close].iter().collect();
    Ok((parse_bracket_content(content.trim())?, close + 1))
}

fn parse_bracket_content(content: &str) -> Result<Step, String> {
    if content.is_empty() {
        return Err("empty brackets '[]'".into());
    }
    if content == "*" {
        return Ok(Step::Slice(Slice {
            start: None,
            end: None,
            end_derived: false,
            step: None,
        }));
    }
    let parts = split_unquoted(content, ',');
    if parts.len() > 1 {
        let alternatives = parts
            .iter()
            .map(|p| parse_bracket_content(p.trim()).map(|s| vec![s]))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Step::Union(alternatives));
    }
    if content.starts_with('\'') || content.starts_with('"') {
        let (key, rest) = parse_quoted(content)?;
        if !rest.trim().is_empty() {
            return Err(format!("unexpected {rest:?} after quoted key"));
        }
        return Ok(Step::Field(key));
    }
    parse_slice(content).map(Step::Slice)
}

fn parse_slice(content: &str) -> Result<Slice, String> {
    let parts: Vec<&str> = content.split(':').collect();
    if parts.len() > 3 {
        return Err(format!("invalid array index {content}"));
    }
    let number = |s: &str| -> Result<Option<i64>, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        let digits = s.strip_prefix('-').unwrap_or(s);
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("invalid array index {content}"));
        }
        s.parse::<i64>()
            .map(Some)
            .map_err(|_| format!("array index {s} is not a number"))
    };
    let start = number(parts[0])?;
    let (end, end_derived) = match parts.get(1) {
        Some(e) => (number(e)?, false),
        // A single index selects one element: the end is derived from the start.
        None => (Some(start.unwrap_or(0) + 1), true),
    };
    let step = match parts.get(2) {
        Some(s) => number(s)?,
        None => None,
    };
    Ok(Slice {
        start,
        end,
        end_derived,
        step,
    })
}

/// Parses a quoted string at the start of `s`; returns it and the remaining text.
fn parse_quoted(s: &str) -> Result<(String, &str), String> {
    let mut chars = s.char_indices();
    let quote = match chars.next() {
        Some((_, q @ ('\'' | '"'))) => q,
        _ => return Err(format!("expected a quoted string, found {s:?}")),
    };
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        if c == quote {
            return Ok((out, &s[i + c.len_utf8()..]));
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some((_, escaped)) = chars.next() else {
            break;
        };
        match escaped {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            '\\' | '\'' | '"' | '/' => out.push(escaped),
            'u' => {
                let hex: String = chars.by_ref().take(4).map(|(_, c)| c).collect();
                let code = u32::from_str_radix(&hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("invalid escape \\u{hex} in {s:?}"))?;
                out.push(code);
            }
            other => return Err(format!("invalid escape \\{other} in {s:?}")),
        }
    }
    Err(format!("unterminated quoted string {s:?}"))
}

/// Parses `[?( ... )]` starting at `open`.
fn parse_filter(chars: &[char], open: usize) -> Result<(Step, usize), String> {
    if chars.get(open + 2) != Some(&'(') {
        return Err("a filter must look like [?(...)]".into());
    }
    let body_start = open + 3;
    let close = find_unquoted(chars, body_start, ')').ok_or("unterminated filter: missing ')'")?;
    if chars.get(close + 1) != Some(&']') {
        return Err("unclosed filter: expected ']' after ')'".into());
    }
    let body: Vec<char> = chars[body_start..close].to_vec();
    let body_text: String = body.iter().collect();

    // The operator is the first run of comparison characters outside quotes.
    let op_start = first_operator_char(&body);
    let filter = match op_start {
        None => {
            let left = parse_operand_path(body_text.trim())?;
            Filter {
                left,
                comparison: None,
            }
        }
        Some(start) => {
            let mut end = start;
            while end < body.len() && matches!(body[end], '!' | '<' | '>' | '=') {
                end += 1;
            }
            let op_text: String = body[start..end].iter().collect();
            let op = match op_text.as_str() {
                "==" => CmpOp::Eq,
                "!=" => CmpOp::Ne,
                "<" => CmpOp::Lt,
                "<=" => CmpOp::Le,
                ">" => CmpOp::Gt,
                ">=" => CmpOp::Ge,
                other => {
                    return Err(format!(
                        "unrecognized filter operator {other:?} (use ==, !=, <, <=, >, >=)"
                    ));
                }
            };
            let left_text: String = body[..start].iter().collect();
            let right_text: String = body[end..].iter().collect();
            if left_text.trim().is_empty() {
                return Err(format!("filter {body_text:?} has no left operand"));
            }
            let left = parse_operand_path(left_text.trim())?;
            let right = parse_operand(right_text.trim())?;
            Filter {
                left,
                comparison: Some((op, right)),
            }
        }
    };
    Ok((Step::Filter(Box::new(filter)), close + 2))
}

fn first_operator_char(chars: &[char]) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut pos = 0;
    while pos < chars.len() {
        let c = chars[pos];
        match quote {
            Some(_) if c == '\\' => pos += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if matches!(c, '!' | '<' | '>' | '=') => return Some(pos),
            None => {}
        }
        pos += 1;
    }
    None
}

fn parse_operand_path(text: &str) -> Result<Vec<Step>, String> {
    if !(text.starts_with('@') || text.starts_with('$') || text.starts_with('.')) {
        return Err(format!(
            "filter operand {text:?} must be a path starting with '@'"
        ));
    }
    parse_steps(text)
}

fn parse_operand(text: &str) -> Result<Operand, String> {
    if text.is_empty() {
        return Err("filter has no right operand".into());
    }
    if text.starts_with('\'') || text.starts_with('"') {
        let (s, rest) = parse_quoted(text)?;
        if !rest.trim().is_empty() {
            return Err(format!("unexpected {rest:?} after string literal"));
        }
        return Ok(Operand::Literal(Value::String(s)));
    }
    match text {
        "true" => return Ok(Operand::Literal(Value::Bool(true))),
        "false" => return Ok(Operand::Literal(Value::Bool(false))),
        "null" => return Ok(Operand::Literal(Value::Null)),
        _ => {}
    }
    if text.starts_with('@') || text.starts_with('$') || text.starts_with('.') {
        return parse_steps(text).map(Operand::Path);
    }
    if let Ok(i) = text.parse::<i64>() {
        return Ok(Operand::Literal(Value::from(i)));
    }
    if let Ok(f) = text.parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        return Ok(Operand::Literal(Value::Number(n)));
    }
    Err(format!(
        "filter operand {text:?} is neither a quoted string, number, boolean, null nor a '@' path"
    ))
}

// ---------------------------------------------------------------------------
// Evaluation

fn eval_steps<'a>(steps: &[Step], mut current: Vec<&'a Value>) -> Vec<&'a Value> {
    for step in steps {
        if current.is_empty() {
            break;
        }
        current = eval_step(step, current);
    }
    current
}

fn eval_step<'a>(step: &Step, input: Vec<&'a Value>) -> Vec<&'a Value> {
    let mut out = Vec::new();
    match step {
        Step::Field(name) => {
            for v in input {
                if let Some(found) = v.as_object().and_then(|m| m.get(name)) {
                    out.push(found);
                }
            }
        }
        Step::Wildcard => {
            for v in input {
                match v {
                    Value::Object(m) => out.extend(m.values()),
                    Value::Array(items) => out.extend(items.iter()),
                    _ => {}
                }
            }
        }
        Step::Recursive => {
            for v in input {
                collect_recursive(v, &mut out);
            }
        }
        Step::Slice(slice) => {
            for v in input {
                if let Value::Array(items) = v {
                    out.extend(slice_items(slice, items));
                }
            }
        }
        Step::Union(alternatives) => {
            for alternative in alternatives {
                out.extend(eval_steps(alternative, input.clone()));
            }
        }
        Step::Filter(filter) => {
            for v in input {
                if let Value::Array(items) = v {
                    out.extend(items.iter().filter(|item| filter_holds(filter, item)));
                }
            }
        }
    }
    out
}

/// The node itself and every non-empty map or list below it, in pre-order;
/// kubectl applies the step after `..` to each of them.
fn collect_recursive<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    let children: Vec<&Value> = match v {
        Value::Object(m) => m.values().collect(),
        Value::Array(items) => items.iter().collect(),
        _ => return,
    };
    if children.is_empty() {
        return;
    }
    out.push(v);
    for child in children {
        collect_recursive(child, out);
    }
}

fn slice_items<'a>(slice: &Slice, items: &'a [Value]) -> Vec<&'a Value> {
    let len = i64::try_from(items.len()).unwrap_or(i64::MAX);
    let mut start = slice.start.unwrap_or(0);
    if start < 0 {
        start += len;
    }
    let mut end = slice.end.unwrap_or(len);
    if end < 0 || (end == 0 && slice.end_derived) {
        end += len;
    }
    if end == start {
        return Vec::new();
    }
    // kubectl reports out-of-range indexes as errors; here they simply match nothing.
    if start < 0 || start >= len || end < 0 || end > len || start > end {
        return Vec::new();
    }
    let step = match slice.step {
        Some(s) if s <= 0 => return Vec::new(),
        Some(s) => usize::try_from(s).unwrap_or(1),
        None => 1,
    };
    let (Ok(start), Ok(end)) = (usize::try_from(start), usize::try_from(end)) else {
        return Vec::new();
    };
    items[start..end].iter().step_by(step).collect()
}

fn filter_holds(filter: &Filter, item: &Value) -> bool {
    let lefts = eval_steps(&filter.left, vec![item]);
    let Some((op, operand)) = &filter.comparison else {
        return !lefts.is_empty();
    };
    // Like kubectl, a filter compares exactly one value on each side.
    let [left] = lefts.as_slice() else {
        return false;
    };
    let right: &Value = match operand {
        Operand::Literal(v) => v,
        Operand::Path(steps) => {
            let rights = eval_steps(steps, vec![item]);
            match rights.as_slice() {
                [only] => only,
                _ => return false,
            }
        }
    };
    compare(left, right, *op)
}

fn compare(left: &Value, right: &Value, op: CmpOp) -> bool {
    let ordering = match (left, right) {
        (Value::Number(l), Value::Number(r)) => match (l.as_i64(), r.as_i64()) {
            (Some(l), Some(r)) => Some(l.cmp(&r)),
            _ => match (l.as_f64(), r.as_f64()) {
                (Some(l), Some(r)) => l.partial_cmp(&r),
                _ => None,
            },
        },
        (Value::String(l), Value::String(r)) => Some(l.cmp(r)),
        (Value::Bool(l), Value::Bool(r)) => {
            // Booleans only compare for equality.
            return match op {
                CmpOp::Eq => l == r,
                CmpOp::Ne => l != r,
                _ => false,
            };
        }
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        // Values of different kinds do not compare (kubectl reports an error).
        _ => None,
    };
    let Some(ordering) = ordering else {
        return false;
    };
    match op {
        CmpOp::Eq => ordering == Ordering::Equal,
        CmpOp::Ne => ordering != Ordering::Equal,
        CmpOp::Lt => ordering == Ordering::Less,
        CmpOp::Le => ordering != Ordering::Greater,
        CmpOp::Gt => ordering == Ordering::Greater,
        CmpOp::Ge => ordering != Ordering::Less,
    }
}
