//! Server-side printing: the `meta.k8s.io/v1` `Table` that `kubectl get` asks for.
//!
//! Custom resources print `Name` plus their CRD version's `additionalPrinterColumns`
//! (or an implicit `Age` when none are defined), as apiextensions' table convertor
//! does. Built-in kinds print the columns kubectl users know from upstream's
//! printers. Like kube-apiserver, rows always carry the wide (`priority > 0`) cells;
//! kubectl hides those columns unless asked for `-o wide`.

use std::str::FromStr;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceColumnDefinition;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::jsonpath::{self, JsonPath, JsonPathError};

#[cfg(test)]
mod tests;

/// A column header as it appears in `Table.columnDefinitions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ColumnDefinition {
    /// Header text, e.g. `Name` or `Ready`.
    pub name: String,
    /// OpenAPI type of the cells: `string`, `integer`, `number`, `boolean` or `date`.
    #[serde(rename = "type")]
    pub type_: String,
    /// OpenAPI format; `name` marks the column holding the object's name.
    pub format: String,
    /// Human-readable description.
    pub description: String,
    /// 0 for default columns; higher values appear only with `kubectl get -o wide`.
    pub priority: i32,
}

/// One column: its header and how each row's cell is computed.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// The header.
    pub def: ColumnDefinition,
    /// Where the cell comes from.
    pub source: CellSource,
}

impl Column {
    /// The JSONPath of a printer column, if the cell comes from one.
    pub fn path(&self) -> Option<&JsonPath> {
        match &self.source {
            CellSource::JsonPath(path) => Some(path),
            _ => None,
        }
    }
}

/// How a column's cells are computed.
#[derive(Debug, Clone, PartialEq)]
pub enum CellSource {
    /// `metadata.name`.
    Name,
    /// A printer column's JSONPath, converted according to the column type.
    JsonPath(JsonPath),
    /// A value computed the way upstream's printer for a built-in kind computes it.
    Computed(Computed),
}

/// Cells of built-in kinds that are computed rather than read from one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Computed {
    /// Relative age of `metadata.creationTimestamp`.
    Age,
    /// `metadata.creationTimestamp` as RFC 3339 in UTC (the generic "Created At" column).
    CreatedAt,
    /// ConfigMap: number of `data` plus `binaryData` keys.
    ConfigMapData,
    /// Secret: `type`.
    SecretType,
    /// Secret: number of `data` keys.
    SecretData,
    /// Namespace: `status.phase`.
    NamespaceStatus,
    /// Lease: `spec.holderIdentity`.
    LeaseHolder,
    /// Event: age of the last occurrence (series, lastTimestamp, else first seen).
    EventLastSeen,
    /// Event: `type`.
    EventType,
    /// Event: `reason`.
    EventReason,
    /// Event: `<kind>/<name>` of the involved object, kind lower-cased.
    EventObject,
    /// Event: `involvedObject.fieldPath`.
    EventSubobject,
    /// Event: `component, host` of the source or reporting controller.
    EventSource,
    /// Event: the message, trimmed.
    EventMessage,
    /// Event: age of the first occurrence (firstTimestamp, else eventTime).
    EventFirstSeen,
    /// Event: occurrence count (series count, count, else 1).
    EventCount,
}

/// Which object a row carries (query parameter `includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object.
    None,
    /// A `PartialObjectMetadata` (the default; kubectl reads namespaces and labels from it).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

/// An `includeObject` value the server does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("includeObject: Invalid value: {0:?}: must be 'Metadata', 'Object', 'None', or empty")]
pub struct InvalidIncludeObject(pub String);

impl IncludeObject {
    /// The value of query parameter `includeObject`; absent, empty or unknown means `Metadata`.
    /// Use [`IncludeObject::try_parse`] to reject unknown values as kube-apiserver does.
    pub fn parse(value: Option<&str>) -> IncludeObject {
        IncludeObject::try_parse(value).unwrap_or_default()
    }

    /// Like [`IncludeObject::parse`], but an unknown value is an error (400 upstream).
    pub fn try_parse(value: Option<&str>) -> Result<IncludeObject, InvalidIncludeObject> {
        value.unwrap_or_default().parse()
    }
}

impl FromStr for IncludeObject {
    type Err = InvalidIncludeObject;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "Metadata" => Ok(IncludeObject::Metadata),
            "None" => Ok(IncludeObject::None),
            "Object" => Ok(IncludeObject::Object),
            other => Err(InvalidIncludeObject(other.to_string())),
        }
    }
}

const NAME_DESCRIPTION: &str = "Name of the object (metadata.name), unique within its namespace.";
const AGE_DESCRIPTION: &str = "Time since the object was created (metadata.creationTimestamp).";

fn definition(
    name: &str,
    type_: &str,
    format: &str,
    priority: i32,
    description: &str,
) -> ColumnDefinition {
    ColumnDefinition {
        name: name.to_string(),
        type_: type_.to_string(),
        format: format.to_string(),
        description: description.to_string(),
        priority,
    }
}

fn name_column() -> Column {
    Column {
        def: definition("Name", "string", "name", 0, NAME_DESCRIPTION),
        source: CellSource::Name,
    }
}

fn computed(name: &str, type_: &str, priority: i32, description: &str, cell: Computed) -> Column {
    Column {
        def: definition(name, type_, "", priority, description),
        source: CellSource::Computed(cell),
    }
}

/// Columns for a CRD version's `additionalPrinterColumns`: `Name` first, then the printer
/// columns; when none are defined, `Name` and an implicit `Age` (`.metadata.creationTimestamp`,
/// type `date`). A column whose `jsonPath` does not parse is an error.
pub fn crd_columns(
    printer_columns: &[CustomResourceColumnDefinition],
) -> Result<Vec<Column>, JsonPathError> {
    let mut columns = vec![name_column()];
    if printer_columns.is_empty() {
        columns.push(Column {
            def: definition("Age", "date", "", 0, AGE_DESCRIPTION),
            source: CellSource::JsonPath(JsonPath::parse(".metadata.creationTimestamp")?),
        });
        return Ok(columns);
    }
    for column in printer_columns {
        let path = JsonPath::parse(&column.json_path)?;
        let description = match column.description.as_deref() {
            Some(d) if !d.is_empty() => d.to_string(),
            _ => format!("Custom resource column (JSONPath {})", column.json_path),
        };
        columns.push(Column {
            def: ColumnDefinition {
                name: column.name.clone(),
                type_: column.type_.clone(),
                format: column.format.clone().unwrap_or_default(),
                description,
                priority: column.priority.unwrap_or(0),
            },
            source: CellSource::JsonPath(path),
        });
    }
    Ok(columns)
}

/// Columns of a built-in kind as upstream prints them: ConfigMap `Name,Data,Age`; Secret
/// `Name,Type,Data,Age`; Namespace `Name,Status,Age`; Lease `Name,Holder,Age`; Event
/// `Last Seen,Type,Reason,Object,Message` plus the wide `Subobject,Source,First Seen,Count,Name`
/// (in upstream's order). Any other kind (CustomResourceDefinition included) gets the generic
/// `Name,Created At`.
pub fn builtin_columns(kind: &str) -> Vec<Column> {
    use Computed::*;
    let age = || computed("Age", "string", 0, AGE_DESCRIPTION, Age);
    match kind {
        "ConfigMap" => vec![
            name_column(),
            computed(
                "Data",
                "string",
                0,
                "Number of keys in data and binaryData.",
                ConfigMapData,
            ),
            age(),
        ],
        "Secret" => vec![
            name_column(),
            computed(
                "Type",
                "string",
                0,
                "Type of the secret data (type).",
                SecretType,
            ),
            computed("Data", "string", 0, "Number of keys in data.", SecretData),
            age(),
        ],
        "Namespace" => vec![
            name_column(),
            computed(
                "Status",
                "string",
                0,
                "Lifecycle phase of the namespace (status.phase).",
                NamespaceStatus,
            ),
            age(),
        ],
        "Lease" => vec![
            name_column(),
            computed(
                "Holder",
                "string",
                0,
                "Identity of the current holder (spec.holderIdentity).",
                LeaseHolder,
            ),
            age(),
        ],
        "Event" => vec![
            computed(
                "Last Seen",
                "string",
                0,
                "Time since the event was last observed.",
                EventLastSeen,
            ),
            computed(
                "Type",
                "string",
                0,
                "Type of the event (Normal, Warning).",
                EventType,
            ),
            computed(
                "Reason",
                "string",
                0,
                "Short machine-readable reason for the event.",
                EventReason,
            ),
            computed(
                "Object",
                "string",
                0,
                "The object the event is about.",
                EventObject,
            ),
            computed(
                "Subobject",
                "string",
                1,
                "The part of the object the event is about (fieldPath).",
                EventSubobject,
            ),
            computed(
                "Source",
                "string",
                1,
                "The component that reported the event.",
                EventSource,
            ),
            computed(
                "Message",
                "string",
                0,
                "Human-readable description of the event.",
                EventMessage,
            ),
            computed(
                "First Seen",
                "string",
                1,
                "Time since the event was first observed.",
                EventFirstSeen,
            ),
            computed(
                "Count",
                "string",
                1,
                "How often the event occurred.",
                EventCount,
            ),
            Column {
                def: definition("Name", "string", "name", 1, NAME_DESCRIPTION),
                source: CellSource::Name,
            },
        ],
        _ => vec![
            name_column(),
            computed(
                "Created At",
                "date",
                0,
                "When the object was created (metadata.creationTimestamp).",
                CreatedAt,
            ),
        ],
    }
}

/// Cells of one object of a built-in kind (see [`builtin_columns`]).
pub fn builtin_cells(kind: &str, object: &Value, now: Timestamp) -> Vec<Value> {
    cells(&builtin_columns(kind), object, now)
}

/// The cells of one row. Printer columns follow apiextensions: the first JSONPath match
/// is used; `string` cells hold the printed text, `integer` an i64, `number` an f64,
/// `boolean` a bool, `date` a relative age; a missing value or a value of the wrong type
/// is null.
pub fn cells(columns: &[Column], object: &Value, now: Timestamp) -> Vec<Value> {
    columns
        .iter()
        .map(|column| cell(column, object, now))
        .collect()
}

fn cell(column: &Column, object: &Value, now: Timestamp) -> Value {
    match &column.source {
        CellSource::Name => Value::String(str_at(object, &["metadata", "name"]).to_string()),
        CellSource::JsonPath(path) => {
            // Like upstream, only the first match counts ("simple" paths have one).
            let first = path.evaluate(object).into_iter().next();
            match first {
                Some(value) => typed_cell(&column.def.type_, value, now),
                None => Value::Null,
            }
        }
        CellSource::Computed(computed) => computed_cell(*computed, object, now),
    }
}

fn typed_cell(type_: &str, value: &Value, now: Timestamp) -> Value {
    if type_ == "string" {
        return Value::String(jsonpath::to_text(value));
    }
    match (type_, value) {
        (_, Value::Null) => Value::Null,
        ("integer", Value::Number(n)) => match n.as_i64() {
            Some(i) => Value::from(i),
            // Go truncates a float64 to int64 the same way (saturating here).
            None => n
                .as_f64()
                .map(|f| Value::from(f as i64))
                .unwrap_or(Value::Null),
        },
        ("number", Value::Number(n)) => n.as_f64().map(Value::from).unwrap_or(Value::Null),
        ("boolean", Value::Bool(b)) => Value::Bool(*b),
        ("date", Value::String(s)) => Value::String(date_cell(s, now)),
        _ => Value::Null,
    }
}

/// A `date` printer-column cell: empty (or "null") is a zero time, shown as `<unknown>`;
/// anything that is not RFC 3339 is `<invalid>`.
fn date_cell(s: &str, now: Timestamp) -> String {
    if s.is_empty() || s == "null" {
        return "<unknown>".to_string();
    }
    match s.parse::<Timestamp>() {
        Ok(ts) => age_since(Some(ts), now),
        Err(_) => "<invalid>".to_string(),
    }
}

fn computed_cell(computed: Computed, object: &Value, now: Timestamp) -> Value {
    use Computed::*;
    let text = |s: &str| Value::String(s.to_string());
    match computed {
        Age => Value::String(age_since(
            timestamp_at(object, &["metadata", "creationTimestamp"]),
            now,
        )),
        CreatedAt => {
            let ts = timestamp_at(object, &["metadata", "creationTimestamp"]);
            Value::String(ts.map_or_else(|| "0001-01-01T00:00:00Z".to_string(), rfc3339_seconds))
        }
        ConfigMapData => Value::from(map_len(object, "data") + map_len(object, "binaryData")),
        SecretType => text(str_at(object, &["type"])),
        SecretData => Value::from(map_len(object, "data")),
        NamespaceStatus => text(str_at(object, &["status", "phase"])),
        LeaseHolder => text(str_at(object, &["spec", "holderIdentity"])),
        EventLastSeen => Value::String(event_last_seen(object, now)),
        EventType => text(str_at(object, &["type"])),
        EventReason => text(str_at(object, &["reason"])),
        EventObject => {
            let kind = event_str(object, &["involvedObject", "kind"], &["regarding", "kind"])
                .to_lowercase();
            let name = event_str(object, &["involvedObject", "name"], &["regarding", "name"]);
            Value::String(if name.is_empty() {
                kind
            } else {
                format!("{kind}/{name}")
            })
        }
        EventSubobject => text(event_str(
            object,
            &["involvedObject", "fieldPath"],
            &["regarding", "fieldPath"],
        )),
        EventSource => {
            let component = first_non_empty(&[
                str_at(object, &["source", "component"]),
                str_at(object, &["deprecatedSource", "component"]),
                str_at(object, &["reportingComponent"]),
                str_at(object, &["reportingController"]),
            ]);
            let host = first_non_empty(&[
                str_at(object, &["source", "host"]),
                str_at(object, &["deprecatedSource", "host"]),
                str_at(object, &["reportingInstance"]),
            ]);
            Value::String(match (component, host) {
                ("", _) => "<unknown>".to_string(),
                (c, "") => c.to_string(),
                (c, h) => format!("{c}, {h}"),
            })
        }
        EventMessage => text(event_str(object, &["message"], &["note"]).trim()),
        EventFirstSeen => Value::String(event_first_seen(object, now)),
        EventCount => Value::from(event_count(object)),
    }
}

/// First seen: `firstTimestamp`, else `eventTime` (events written through events.k8s.io).
fn event_first_seen(object: &Value, now: Timestamp) -> String {
    let first = event_timestamp(object, "firstTimestamp", "deprecatedFirstTimestamp");
    match first {
        Some(ts) => age_since(Some(ts), now),
        None => age_since(timestamp_at(object, &["eventTime"]), now),
    }
}

/// Last seen: the series' last observation, else `lastTimestamp`, else first seen.
fn event_last_seen(object: &Value, now: Timestamp) -> String {
    if object.get("series").is_some_and(Value::is_object) {
        return age_since(timestamp_at(object, &["series", "lastObservedTime"]), now);
    }
    match event_timestamp(object, "lastTimestamp", "deprecatedLastTimestamp") {
        Some(ts) => age_since(Some(ts), now),
        None => event_first_seen(object, now),
    }
}

/// The series count, else `count`, else 1 (events.k8s.io singletons carry no count).
fn event_count(object: &Value) -> i64 {
    if let Some(series) = object.get("series").filter(|s| s.is_object()) {
        return series.get("count").and_then(Value::as_i64).unwrap_or(0);
    }
    let count = object
        .get("count")
        .or_else(|| object.get("deprecatedCount"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if count == 0 { 1 } else { count }
}

fn event_timestamp(object: &Value, core: &str, events_v1: &str) -> Option<Timestamp> {
    timestamp_at(object, &[core]).or_else(|| timestamp_at(object, &[events_v1]))
}

/// Reads a string from the stored core/v1 Event shape, falling back to the
/// events.k8s.io/v1 name so either view prints the same.
fn event_str<'a>(object: &'a Value, core: &[&str], events_v1: &[&str]) -> &'a str {
    match str_at(object, core) {
        "" => str_at(object, events_v1),
        s => s,
    }
}

fn first_non_empty<'a>(candidates: &[&'a str]) -> &'a str {
    candidates
        .iter()
        .copied()
        .find(|s| !s.is_empty())
        .unwrap_or("")
}

fn value_at<'a>(object: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(object, |v, key| v.get(key))
}

fn str_at<'a>(object: &'a Value, path: &[&str]) -> &'a str {
    value_at(object, path).and_then(Value::as_str).unwrap_or("")
}

fn map_len(object: &Value, key: &str) -> i64 {
    object
        .get(key)
        .and_then(Value::as_object)
        .map_or(0, |m| i64::try_from(m.len()).unwrap_or(i64::MAX))
}

/// A timestamp field; missing, empty, unparsable and Go's zero time all count as unset.
fn timestamp_at(object: &Value, path: &[&str]) -> Option<Timestamp> {
    let ts = value_at(object, path)?
        .as_str()?
        .parse::<Timestamp>()
        .ok()?;
    (!is_go_zero_time(ts)).then_some(ts)
}

fn is_go_zero_time(ts: Timestamp) -> bool {
    // Go's zero time.Time is 0001-01-01T00:00:00Z.
    ts.as_second() == -62_135_596_800
}

fn rfc3339_seconds(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The age of `ts` at `now` as kubectl prints it; `<unknown>` for an unset time.
fn age_since(ts: Option<Timestamp>, now: Timestamp) -> String {
    match ts {
        None => "<unknown>".to_string(),
        Some(ts) => human_signed_duration(now.duration_since(ts)),
    }
}

/// Like [`human_duration`], for a signed span: up to a second in the future reads `0s`
/// (clock skew), further in the future `<invalid>`.
fn human_signed_duration(d: SignedDuration) -> String {
    // Go truncates toward zero: -1.9s counts as -1s.
    let seconds = d.as_secs();
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    human_duration(d.unsigned_abs())
}

/// A duration as apimachinery's `duration.HumanDuration` prints it, with about two
/// significant figures: `Ns` below 2 minutes, `XmYs` below 10 minutes (`Xm` when the
/// seconds are 0), `Nm` below 3 hours, `XhYm` below 8 hours (`Xh` when the minutes are 0),
/// `Nh` below 2 days, `XdYh` below 8 days (`Xd`), `Nd` below 2 years, `XyYd` below 8 years
/// (`Xy`), else `Ny`. Years are 365 days; lower units are truncated, never rounded.
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return with_remainder(minutes, "m", seconds % 60, "s");
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        return with_remainder(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return with_remainder(hours / 24, "d", hours % 24, "h");
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = hours / 24;
        return with_remainder(days / 365, "y", days % 365, "d");
    }
    format!("{}y", hours / 24 / 365)
}

fn with_remainder(major: u64, major_unit: &str, minor: u64, minor_unit: &str) -> String {
    if minor == 0 {
        format!("{major}{major_unit}")
    } else {
        format!("{major}{major_unit}{minor}{minor_unit}")
    }
}

/// A `Table` of `objects`:
/// `{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{"resourceVersion","continue"},
/// "columnDefinitions":[..],"rows":[{"cells":[..],"object":..}]}`.
///
/// `include` picks the row object: the full object, a `PartialObjectMetadata`
/// (`{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{..}}`), or none
/// (the key is omitted). Empty `resource_version` and `continue_token` are omitted like
/// upstream's `omitempty`. Without `with_column_definitions` (watch events after the first),
/// `columnDefinitions` is an empty list.
pub fn table(
    columns: &[Column],
    objects: &[Value],
    include: IncludeObject,
    resource_version: &str,
    continue_token: Option<&str>,
    with_column_definitions: bool,
    now: Timestamp,
) -> Value {
    let mut metadata = Map::new();
    if !resource_version.is_empty() {
        metadata.insert(
            "resourceVersion".into(),
            Value::String(resource_version.to_string()),
        );
    }
    if let Some(token) = continue_token.filter(|t| !t.is_empty()) {
        metadata.insert("continue".into(), Value::String(token.to_string()));
    }
    let definitions: Vec<&ColumnDefinition> = if with_column_definitions {
        columns.iter().map(|c| &c.def).collect()
    } else {
        Vec::new()
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut row = Map::new();
            row.insert("cells".into(), Value::Array(cells(columns, object, now)));
            match include {
                IncludeObject::None => {}
                IncludeObject::Object => {
                    row.insert("object".into(), object.clone());
                }
                IncludeObject::Metadata => {
                    row.insert(
                        "object".into(),
                        json!({
                            "kind": "PartialObjectMetadata",
                            "apiVersion": "meta.k8s.io/v1",
                            "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
                        }),
                    );
                }
            }
            Value::Object(row)
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}
