//! Expanding an OnboardingBatch into the Devices it creates.

use std::collections::{BTreeMap, HashSet};

use devplane_api::constants::labels;
use devplane_api::v1alpha1::{
    BatchItem, Connection, DataKind, DeviceSpec, ItemFailure, OnboardingBatchSpec,
};
use serde_json::Value;

use crate::naming::{NameError, label_value_problem, object_name_problem};
use crate::value;

/// Most items one batch may hold.
pub const MAX_ITEMS: usize = 1_000_000;

/// A device the batch will create.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedDevice {
    /// Name of the Device.
    pub name: String,
    /// Its labels: the template's, the item's, site, asset and batch.
    pub labels: BTreeMap<String, String>,
    /// Its annotations: the template's.
    pub annotations: BTreeMap<String, String>,
    /// Its spec: the template's with the item's values.
    pub spec: DeviceSpec,
}

/// The devices of a batch and the items that could not become one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expansion {
    /// Devices to create, in item order.
    pub devices: Vec<PlannedDevice>,
    /// Items that failed, in item order.
    pub failures: Vec<ItemFailure>,
}

impl Expansion {
    /// Items in the batch, planned or failed.
    pub fn total(&self) -> usize {
        self.devices.len() + self.failures.len()
    }
}

/// Why a whole batch cannot be expanded.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BatchError {
    /// Not exactly one of list, csv and generate.
    #[error("spec.items takes exactly one of list, csv and generate; {0} given")]
    ItemSources(usize),
    /// A bad name pattern.
    #[error("spec.items.generate.namePattern {pattern:?}: {reason}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A count out of range.
    #[error("spec.items.generate.count {0} is out of range 1..={MAX_ITEMS}")]
    BadCount(i64),
    /// CSV without a usable header.
    #[error("spec.items.csv: {0}")]
    Csv(String),
    /// More items than [`MAX_ITEMS`].
    #[error("batch has {0} items, at most {MAX_ITEMS} allowed")]
    TooMany(usize),
    /// A site or asset that is not a valid label value.
    #[error("spec.{field}: Invalid value: {value:?}: {problem}")]
    BadLabel {
        /// `site` or `asset`.
        field: &'static str,
        /// The value.
        value: String,
        /// What is wrong with it.
        problem: NameError,
    },
}

/// Expand `spec` of batch `batch_name` into devices. `attribute_kind` gives the data kind of an
/// attribute identifier (from the template's resolved model) so CSV cells become typed values;
/// cells of unknown attributes stay strings.
pub fn expand(
    batch_name: &str,
    spec: &OnboardingBatchSpec,
    attribute_kind: &dyn Fn(&str) -> Option<DataKind>,
) -> Result<Expansion, BatchError> {
    for (field, value) in [("site", &spec.site), ("asset", &spec.asset)] {
        if let Some(value) = value
            && let Some(problem) = label_value_problem(value)
        {
            return Err(BatchError::BadLabel {
                field,
                value: value.clone(),
                problem,
            });
        }
    }
    let items = &spec.items;
    let sources = [
        items.list.is_some(),
        items.csv.is_some(),
        items.generate.is_some(),
    ];
    let given = sources.iter().filter(|s| **s).count();
    if given != 1 {
        return Err(BatchError::ItemSources(given));
    }

    let mut expansion = Expansion::default();
    let mut seen = HashSet::new();
    let mut add = |position: usize, item: Result<BatchItem, String>| {
        let item = match item {
            Ok(item) => item,
            Err(reason) => {
                expansion.failures.push(ItemFailure {
                    item: format!("#{}", position + 1),
                    reason,
                });
                return;
            }
        };
        if let Some(problem) = object_name_problem(&item.name) {
            expansion.failures.push(ItemFailure {
                item: item.name.clone(),
                reason: format!("name: Invalid value: {:?}: {problem}", item.name),
            });
        } else if !seen.insert(item.name.clone()) {
            expansion.failures.push(ItemFailure {
                item: item.name.clone(),
                reason: "name is used by an earlier item".into(),
            });
        } else if let Some((key, value, problem)) = item
            .labels
            .iter()
            .find_map(|(k, v)| label_value_problem(v).map(|p| (k, v, p)))
        {
            expansion.failures.push(ItemFailure {
                item: item.name.clone(),
                reason: format!("label {key}: Invalid value: {value:?}: {problem}"),
            });
        } else {
            expansion.devices.push(plan(batch_name, spec, item));
        }
    };

    if let Some(list) = &items.list {
        if list.len() > MAX_ITEMS {
            return Err(BatchError::TooMany(list.len()));
        }
        for (i, item) in list.iter().enumerate() {
            add(i, Ok(item.clone()));
        }
    } else if let Some(csv) = &items.csv {
        let rows = parse_csv_lines(csv).map_err(BatchError::Csv)?;
        let mut rows = rows.into_iter();
        let (_, header) = rows
            .next()
            .ok_or_else(|| BatchError::Csv("no header row".into()))?;
        let header: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
        if !header.iter().any(|h| h == "name") {
            return Err(BatchError::Csv(format!(
                "header {header:?} has no `name` column"
            )));
        }
        let rows: Vec<(usize, Vec<String>)> = rows.collect();
        if rows.len() > MAX_ITEMS {
            return Err(BatchError::TooMany(rows.len()));
        }
        for (i, (line, row)) in rows.into_iter().enumerate() {
            add(
                i,
                item_from_row(&header, row, attribute_kind)
                    .map_err(|e| format!("CSV line {line}: {e}")),
            );
        }
    } else if let Some(generate) = &items.generate {
        let count = usize::try_from(generate.count)
            .ok()
            .filter(|c| (1..=MAX_ITEMS).contains(c))
            .ok_or(BatchError::BadCount(generate.count))?;
        let pattern = NamePattern::parse(&generate.name_pattern)?;
        if count > 1 && !pattern.has_index() {
            return Err(BatchError::BadPattern {
                pattern: generate.name_pattern.clone(),
                reason: "needs {index} (or {index:N}) so the names differ".into(),
            });
        }
        for i in 0..count {
            let index = generate.start + i as i64;
            add(
                i,
                Ok(BatchItem {
                    name: pattern.render(index),
                    ..BatchItem::default()
                }),
            );
        }
    }
    Ok(expansion)
}

fn plan(batch_name: &str, spec: &OnboardingBatchSpec, item: BatchItem) -> PlannedDevice {
    let template = &spec.template;
    let mut labels = template.metadata.labels.clone();
    labels.extend(item.labels);
    if let Some(site) = &spec.site {
        labels.insert(labels::SITE.into(), site.clone());
    }
    if let Some(asset) = &spec.asset {
        labels.insert(labels::ASSET.into(), asset.clone());
    }
    // A batch name longer than a label value is shortened (the owner reference names it).
    labels.insert(
        labels::BATCH.into(),
        crate::naming::owner_label_value(batch_name),
    );
    let mut device_spec = template.spec.clone();
    device_spec.attributes.extend(item.attributes);
    if item.serial_number.is_some() {
        device_spec.serial_number = item.serial_number;
    }
    if let Some(gateway) = &spec.gateway_ref {
        device_spec.connection = Connection {
            direct: None,
            gateway_ref: Some(gateway.clone()),
        };
    }
    PlannedDevice {
        name: item.name,
        labels,
        annotations: template.metadata.annotations.clone(),
        spec: device_spec,
    }
}

fn item_from_row(
    header: &[String],
    row: Vec<String>,
    attribute_kind: &dyn Fn(&str) -> Option<DataKind>,
) -> Result<BatchItem, String> {
    match read_row(header, row, attribute_kind)? {
        (item, problems) if problems.is_empty() => Ok(item),
        (_, problems) => Err(problems.join("; ")),
    }
}

/// One CSV row as an item with the problems of its cells (each attribute cell that does not
/// parse as its type, in column order; such cells are left out of the item), or why the row
/// cannot be read at all (a wrong cell count).
pub(crate) fn read_row(
    header: &[String],
    row: Vec<String>,
    attribute_kind: &dyn Fn(&str) -> Option<DataKind>,
) -> Result<(BatchItem, Vec<String>), String> {
    if row.len() != header.len() {
        return Err(format!(
            "{} cells, the header has {}",
            row.len(),
            header.len()
        ));
    }
    let mut item = BatchItem::default();
    let mut problems = Vec::new();
    for (column, cell) in header.iter().zip(row) {
        if column == "name" {
            item.name = cell.trim().to_string();
        } else if column == "serialNumber" {
            item.serial_number = Some(cell.trim().to_string()).filter(|s| !s.is_empty());
        } else if let Some(key) = column.strip_prefix("label:") {
            item.labels.insert(key.to_string(), cell.trim().to_string());
        } else if !cell.is_empty() {
            let value = match attribute_kind(column) {
                Some(kind) => match value::parse_text(kind, &cell) {
                    Ok(value) => value,
                    Err(e) => {
                        problems.push(format!("column {column}: {e}"));
                        continue;
                    }
                },
                None => Value::String(cell),
            };
            item.attributes.insert(column.clone(), value);
        }
    }
    Ok((item, problems))
}

/// A name pattern: literal text with `{index}` or `{index:N}` placeholders.
#[derive(Clone, Debug, PartialEq)]
pub struct NamePattern(Vec<PatternPart>);

#[derive(Clone, Debug, PartialEq)]
enum PatternPart {
    Literal(String),
    Index { width: usize },
}

impl NamePattern {
    /// Parse a pattern.
    pub fn parse(pattern: &str) -> Result<Self, BatchError> {
        let bad = |reason: &str| BatchError::BadPattern {
            pattern: pattern.to_string(),
            reason: reason.to_string(),
        };
        let mut parts = Vec::new();
        let mut rest = pattern;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(PatternPart::Literal(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| bad("'{' without '}'"))?
                + open;
            let placeholder = &rest[open + 1..close];
            let width = match placeholder.strip_prefix("index") {
                Some("") => 0,
                Some(spec) => spec
                    .strip_prefix(':')
                    .and_then(|w| w.parse::<usize>().ok())
                    .filter(|w| *w <= 20)
                    .ok_or_else(|| {
                        bad("placeholders are {index} or {index:N} with N at most 20")
                    })?,
                None => return Err(bad("placeholders are {index} or {index:N}")),
            };
            parts.push(PatternPart::Index { width });
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err(bad("'}' without '{'"));
        }
        if !rest.is_empty() {
            parts.push(PatternPart::Literal(rest.to_string()));
        }
        Ok(NamePattern(parts))
    }

    /// Whether the pattern has an index placeholder.
    pub fn has_index(&self) -> bool {
        self.0
            .iter()
            .any(|p| matches!(p, PatternPart::Index { .. }))
    }

    /// The name for one index.
    pub fn render(&self, index: i64) -> String {
        self.0
            .iter()
            .map(|part| match part {
                PatternPart::Literal(text) => text.clone(),
                PatternPart::Index { width } => format!("{index:0width$}"),
            })
            .collect()
    }
}

/// Parse CSV text (RFC 4180: comma separated, double-quoted fields with `""` escapes, LF or
/// CRLF line ends). Blank lines are skipped.
pub fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    Ok(parse_csv_lines(text)?
        .into_iter()
        .map(|(_, row)| row)
        .collect())
}

/// [`parse_csv`], with the line each row starts on (1-based), so problems can name it.
pub fn parse_csv_lines(text: &str) -> Result<Vec<(usize, Vec<String>)>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut in_quotes = false;
    let mut line = 1;
    let mut row_line = 1;
    let mut field_started_quoted = false;
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !field_started_quoted => {
                in_quotes = true;
                field_started_quoted = true;
            }
            '"' => return Err(format!("line {line}: '\"' inside an unquoted field")),
            ',' => {
                row.push(std::mem::take(&mut field));
                field_started_quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                line += 1;
                row.push(std::mem::take(&mut field));
                field_started_quoted = false;
                if !(row.len() == 1 && row[0].trim().is_empty()) {
                    rows.push((row_line, std::mem::take(&mut row)));
                } else {
                    row.clear();
                }
                row_line = line;
            }
            _ if field_started_quoted => {
                return Err(format!("line {line}: text after a closing quote"));
            }
            _ => field.push(c),
        }
    }
    if in_quotes {
        return Err(format!("line {line}: quoted field is not closed"));
    }
    if !field.is_empty() || !row.is_empty() || field_started_quoted {
        row.push(field);
        if !(row.len() == 1 && row[0].trim().is_empty()) {
            rows.push((row_line, row));
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests;
