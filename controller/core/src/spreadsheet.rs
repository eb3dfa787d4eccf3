//! Rows of a spreadsheet export checked before anything is applied: the CSV of an
//! OnboardingBatch (devices) or of a ProvisioningPolicy's allow-list. Every problem of every row
//! is reported with the line it is on, so a person fixes the file once instead of once per
//! problem.

use std::collections::HashMap;
use std::fmt;

use devplane_api::v1alpha1::{
    Attestation, BatchItem, DataKind, PreRegistered, PreRegisteredItem, ProvisioningPolicySpec,
};

use crate::naming::{label_value_problem, object_name_problem};
use crate::onboarding::{MAX_ITEMS, parse_csv_lines, read_row};
use crate::provisioning::{EntryProblem, Rules, parse_allow_csv};

/// A problem with the file, on a line when it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowProblem {
    /// The 1-based line, when the problem is on one.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RowProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for RowProblem {}

/// The data kind of each attribute of a model, by identifier (None: no such attribute).
pub type AttributeKinds<'a> = &'a dyn Fn(&str) -> Option<DataKind>;

fn at(line: usize, message: impl Into<String>) -> RowProblem {
    RowProblem {
        line: Some(line),
        message: message.into(),
    }
}

fn sorted(mut problems: Vec<RowProblem>) -> Vec<RowProblem> {
    // Stable: problems of one line keep the order they were found in (column order).
    problems.sort_by_key(|p| p.line.unwrap_or(0));
    problems
}

/// Check a batch CSV (header `name`, optional `serialNumber`, `label:<key>` and attribute
/// columns) row by row, as the OnboardingBatch controller will read it: a wrong cell count, a
/// name that is not a valid object name or is used on an earlier line, a label value that is
/// not valid, an attribute cell that does not parse as its type. `attribute_kind` is the type
/// of each attribute of the template's model, when the model is known; then a column that is
/// not one of its attributes is a problem too. Returns the items, or every problem sorted by
/// line.
pub fn check_batch_csv(
    text: &str,
    attribute_kind: Option<AttributeKinds<'_>>,
) -> Result<Vec<BatchItem>, Vec<RowProblem>> {
    let rows = parse_csv_lines(text).map_err(|e| {
        vec![RowProblem {
            line: None,
            message: e,
        }]
    })?;
    let mut rows = rows.into_iter();
    let Some((header_line, header)) = rows.next() else {
        return Err(vec![RowProblem {
            line: None,
            message: "the file is empty: a header row and one row per device expected".into(),
        }]);
    };
    let header: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
    let mut problems = header_problems(header_line, &header, attribute_kind);
    if !header.iter().any(|h| h == "name") {
        return Err(problems);
    }
    let rows: Vec<(usize, Vec<String>)> = rows.collect();
    if rows.is_empty() {
        problems.push(at(header_line, "no rows below the header"));
    }
    if rows.len() > MAX_ITEMS {
        problems.push(RowProblem {
            line: None,
            message: format!("{} rows, at most {MAX_ITEMS} allowed", rows.len()),
        });
    }
    let untyped = |_: &str| None;
    let kind: AttributeKinds<'_> = attribute_kind.unwrap_or(&untyped);
    let mut first_line_of: HashMap<String, usize> = HashMap::new();
    let mut items = Vec::with_capacity(rows.len());
    for (line, row) in rows {
        let item = match read_row(&header, row, kind) {
            Ok((item, cells)) => {
                problems.extend(cells.into_iter().map(|message| at(line, message)));
                item
            }
            Err(unreadable) => {
                problems.push(at(line, unreadable));
                continue;
            }
        };
        if let Some(problem) = object_name_problem(&item.name) {
            problems.push(at(
                line,
                format!("name: Invalid value: {:?}: {problem}", item.name),
            ));
        } else if let Some(first) = first_line_of.get(&item.name) {
            problems.push(at(
                line,
                format!("name {} is used on line {first} already", item.name),
            ));
        } else {
            first_line_of.insert(item.name.clone(), line);
        }
        for (key, value) in &item.labels {
            if let Some(problem) = label_value_problem(value) {
                problems.push(at(
                    line,
                    format!("label {key}: Invalid value: {value:?}: {problem}"),
                ));
            }
        }
        items.push(item);
    }
    if problems.is_empty() {
        Ok(items)
    } else {
        Err(sorted(problems))
    }
}

/// Problems of the header row: no `name` column, a column named twice or not at all, an empty
/// label key, and (with a known model) a column that is none of its attributes.
fn header_problems(
    line: usize,
    header: &[String],
    attribute_kind: Option<AttributeKinds<'_>>,
) -> Vec<RowProblem> {
    let mut problems = Vec::new();
    if !header.iter().any(|h| h == "name") {
        problems.push(at(
            line,
            format!("the header {header:?} has no `name` column"),
        ));
    }
    let mut seen = HashMap::new();
    for (index, column) in header.iter().enumerate() {
        let number = index + 1;
        if let Some(first) = seen.insert(column.as_str(), number) {
            problems.push(at(
                line,
                format!("column {column:?} is both column {first} and column {number}"),
            ));
        }
        if column.is_empty() {
            problems.push(at(line, format!("column {number} has no name")));
        } else if column == "label:" {
            problems.push(at(line, format!("column {number}: label: needs a key")));
        } else if column != "name"
            && column != "serialNumber"
            && !column.starts_with("label:")
            && let Some(kind) = attribute_kind
            && kind(column).is_none()
        {
            problems.push(at(
                line,
                format!("column {column:?} is not an attribute of the template's model"),
            ));
        }
    }
    problems
}

/// Check an allow-list CSV (header `serialNumber`, optional `deviceId` and `token`) for the
/// policy `spec`: the rows [`parse_allow_csv`] accepts, and then for each the Device name the
/// policy will give it (prefix and id, a valid object name), the id pattern, and ids that two
/// rows share. Returns the entries in file order, or every problem sorted by line.
pub fn check_allow_csv(
    text: &str,
    spec: &ProvisioningPolicySpec,
) -> Result<Vec<PreRegisteredItem>, Vec<RowProblem>> {
    let items =
        parse_allow_csv(text).map_err(|p| sorted(p.into_iter().map(from_entry).collect()))?;
    // parse_allow_csv keeps every data row, in order: pair each entry with its row's line.
    let lines: Vec<usize> = parse_csv_lines(text)
        .map_err(|e| {
            vec![RowProblem {
                line: None,
                message: e,
            }]
        })?
        .into_iter()
        .skip(1)
        .map(|(line, _)| line)
        .collect();
    if items.is_empty() {
        return Err(vec![at(1, "no rows below the header")]);
    }
    // The naming rules alone, compiled the way the front door compiles them.
    let naming_only = ProvisioningPolicySpec {
        attestation: Attestation {
            pre_registered: Some(PreRegistered {
                items: Some(Vec::new()),
                csv: None,
            }),
            ..Attestation::default()
        },
        ..spec.clone()
    };
    let rules = Rules::compile(&naming_only).map_err(|e| {
        vec![RowProblem {
            line: None,
            message: e.to_string(),
        }]
    })?;
    let mut problems = Vec::new();
    let mut first_line_of: HashMap<&str, usize> = HashMap::new();
    for (item, line) in items.iter().zip(lines) {
        let id = item.device_id.as_deref().unwrap_or(&item.serial_number);
        if let Some(pattern) = rules.id_pattern.as_ref().filter(|p| !p.is_match(id)) {
            problems.push(at(
                line,
                format!(
                    "device id {id} does not match the policy's idPattern {}",
                    pattern.as_str()
                ),
            ));
        }
        let name = format!("{}{id}", rules.prefix);
        if let Some(problem) = object_name_problem(&name) {
            problems.push(at(
                line,
                format!("device name: Invalid value: {name:?}: {problem}"),
            ));
        }
        if let Some(first) = first_line_of.get(id) {
            problems.push(at(
                line,
                format!("device id {id} is used on line {first} already"),
            ));
        } else {
            first_line_of.insert(id, line);
        }
    }
    if problems.is_empty() {
        Ok(items)
    } else {
        Err(sorted(problems))
    }
}

/// [`parse_allow_csv`] names a row `csv line N`.
fn from_entry(problem: EntryProblem) -> RowProblem {
    let line = problem
        .at
        .strip_prefix("csv line ")
        .and_then(|n| n.parse().ok());
    let message = if line.is_some() {
        problem.message
    } else {
        problem.to_string()
    };
    RowProblem { line, message }
}

#[cfg(test)]
mod tests;
