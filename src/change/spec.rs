//! How a change table reads its topic: the `[change]` section of its
//! definition and where each column's value comes from.
//!
//! ```toml
//! [change]
//! format = "debezium"                  # or "rows": every value is a plain row image
//! tombstones = "silver.order_lines_tombstones"
//! key_text = "transaction_no"          # a Kafka key that is not JSON is this column's value
//! sequence_by = [                      # the first alternative whose first field is present
//!   { fields = ["source.seq"] },
//!   { fields = ["source.lsn"] },
//!   { fields = ["source.file", "source.pos", "source.row"], bits = [20, 32, 11] },
//! ]
//! row_sequence_by = [{ fields = ["_seq"] }]   # plain rows (else the Kafka offset)
//! apply_as_deletes = "__deleted = 'true'"     # optional: rows that are deletes
//! on_new_column = "evolve"             # (default) or "ignore" or "quarantine"
//! ```
//!
//! A column is read from the row image (`from`, default its name), derived
//! by a SQL expression (`expr`), or filled from the record (`meta`).

use deltalake::arrow::datatypes::DataType;
use regex::Regex;
use serde::Deserialize;

/// Where a column of a change table gets its value.
#[derive(Debug, Clone)]
pub enum ColumnSource {
    /// A field of the row image.
    Field(FieldSource),
    /// A SQL expression over the other columns, evaluated per batch by DataFusion.
    Derived(String),
    /// Filled from the record or the event.
    Meta(Meta),
}

#[derive(Debug, Clone)]
pub struct FieldSource {
    /// Path in the row image, e.g. `["order_date"]` or `["address", "city"]`.
    pub path: Vec<String>,
    /// A missing or null value is an error (`missing_field`): the row is
    /// quarantined instead of written with a null.
    pub required: bool,
    /// Values that mean null (e.g. `NA`).
    pub null_if: Vec<String>,
    /// A string value must match this (anchored by the writer of the file).
    pub pattern: Option<Regex>,
    /// An integer value must be at least this.
    pub min: Option<i64>,
    /// The unit of an integer timestamp when the record carries no Connect
    /// schema: `millis`, `micros` or `nanos`.
    pub unit: Option<TimestampUnit>,
    /// A string column also takes a JSON number, as its text (else a number is `wrong_type`).
    pub numbers_as_text: bool,
    /// Added by `on_new_column = "evolve"` (not in the definition file).
    pub evolved: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimestampUnit {
    Millis,
    Micros,
    Nanos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Meta {
    /// The operation: c, u, r or d.
    Op,
    /// The event's sequence (`sequence_by`).
    Sequence,
    /// The event time: the envelope's `ts_ms`, else `source.ts_ms`, else the Kafka timestamp.
    SourceTs,
    KafkaTopic,
    KafkaPartition,
    KafkaOffset,
    KafkaTimestamp,
    /// When lakestream wrote the row.
    WrittenAt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Debezium envelopes (`op`, `before`, `after`, `source`), with or without
    /// Kafka Connect's `{"schema":…,"payload":…}` wrapper; an object without
    /// `op` is a plain row (an upsert); a null value is a Kafka tombstone.
    Debezium,
    /// Every value is a plain row image (an upsert); a null value deletes.
    Rows,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnNewColumn {
    /// Add a nullable column to the table (recorded in its properties as
    /// `lakestream.evolved.<column>`; old rows read null), then write the values.
    #[default]
    Evolve,
    /// Drop the field's value, count it (`lakestream_columns_ignored_total`) and log it once.
    Ignore,
    /// Quarantine the record (`unknown_column`).
    Quarantine,
}

/// One way of ordering a key's changes: fields compared in order.
#[derive(Debug, Clone)]
pub struct Alternative {
    pub fields: Vec<Vec<String>>,
    /// For a bigint sequence column: the bits each field takes when the fields
    /// are packed into one number (a string field gives its trailing digits).
    pub bits: Option<Vec<u8>>,
}

impl Alternative {
    pub fn describe(&self) -> String {
        self.fields.iter().map(|f| f.join(".")).collect::<Vec<_>>().join(" + ")
    }
}

#[derive(Debug, Clone)]
pub struct ChangeSpec {
    pub format: Format,
    /// The tombstones table of this table (its name), if deletes are remembered.
    pub tombstones: Option<String>,
    pub key_text: Option<String>,
    pub sequence_by: Vec<Alternative>,
    pub row_sequence_by: Vec<Alternative>,
    pub apply_as_deletes: Option<String>,
    pub on_new_column: OnNewColumn,
    /// Fields of the row image that are not columns and are not new either.
    pub ignore_fields: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChange {
    pub format: toml::Spanned<Format>,
    #[serde(default)]
    pub tombstones: Option<toml::Spanned<String>>,
    #[serde(default)]
    pub key_text: Option<toml::Spanned<String>>,
    #[serde(default)]
    pub sequence_by: Option<toml::Spanned<Vec<RawAlternative>>>,
    #[serde(default)]
    pub row_sequence_by: Option<toml::Spanned<Vec<RawAlternative>>>,
    #[serde(default)]
    pub apply_as_deletes: Option<toml::Spanned<String>>,
    #[serde(default)]
    pub on_new_column: OnNewColumn,
    #[serde(default)]
    pub ignore_fields: Vec<String>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawAlternative {
    pub fields: Vec<String>,
    #[serde(default)]
    pub bits: Option<Vec<u8>>,
}

/// The column attributes of a change table's column, as written.
#[derive(Deserialize, Default, Clone)]
pub struct RawColumnSource {
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub expr: Option<String>,
    #[serde(default)]
    pub meta: Option<Meta>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub null_if: Vec<String>,
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub min: Option<i64>,
    #[serde(default)]
    pub unit: Option<TimestampUnit>,
    #[serde(default)]
    pub numbers_as_text: bool,
}

impl RawColumnSource {
    pub fn is_empty(&self) -> bool {
        self.from.is_none()
            && self.expr.is_none()
            && self.meta.is_none()
            && !self.required
            && self.null_if.is_empty()
            && self.pattern.is_none()
            && self.min.is_none()
            && self.unit.is_none()
            && !self.numbers_as_text
    }

    /// Checks the attributes against the column's type; `Err` is the reason.
    pub fn build(&self, name: &str, data_type: &DataType) -> Result<ColumnSource, String> {
        let kinds = [self.from.is_some(), self.expr.is_some(), self.meta.is_some()].iter().filter(|b| **b).count();
        if kinds > 1 {
            return Err(format!("column `{name}`: give one of from, expr and meta"));
        }
        if let Some(expr) = &self.expr {
            if expr.trim().is_empty() {
                return Err(format!("column `{name}`: expr is empty"));
            }
            return Ok(ColumnSource::Derived(expr.clone()));
        }
        if let Some(meta) = self.meta {
            let want: &[DataType] = match meta {
                Meta::Op | Meta::KafkaTopic => &[DataType::Utf8],
                Meta::Sequence => &[DataType::Int64, DataType::Utf8],
                Meta::KafkaPartition => &[DataType::Int32],
                Meta::KafkaOffset => &[DataType::Int64],
                Meta::SourceTs | Meta::KafkaTimestamp | Meta::WrittenAt => &[super::value::timestamp_type()],
            };
            if !want.contains(data_type) {
                return Err(format!("column `{name}`: meta = {meta:?} needs type {}", type_names(want)));
            }
            return Ok(ColumnSource::Meta(meta));
        }
        let path: Vec<String> = self.from.as_deref().unwrap_or(name).split('.').map(str::to_string).collect();
        if path.iter().any(String::is_empty) {
            return Err(format!("column `{name}`: from = `{}` is not a field path", self.from.as_deref().unwrap_or("")));
        }
        let pattern = match &self.pattern {
            Some(p) => Some(Regex::new(p).map_err(|e| format!("column `{name}`: pattern: {e}"))?),
            None => None,
        };
        if pattern.is_some() && *data_type != DataType::Utf8 {
            return Err(format!("column `{name}`: pattern applies to string columns"));
        }
        if self.min.is_some() && !matches!(data_type, DataType::Int16 | DataType::Int32 | DataType::Int64) {
            return Err(format!("column `{name}`: min applies to integer columns"));
        }
        if self.numbers_as_text && *data_type != DataType::Utf8 {
            return Err(format!("column `{name}`: numbers_as_text applies to string columns"));
        }
        if self.unit.is_some() && *data_type != super::value::timestamp_type() {
            return Err(format!("column `{name}`: unit applies to timestamp columns"));
        }
        if !super::value::supported(data_type) {
            return Err(format!("column `{name}`: a change table cannot read a {data_type} from a row image"));
        }
        Ok(ColumnSource::Field(FieldSource {
            path,
            required: self.required,
            null_if: self.null_if.clone(),
            pattern,
            min: self.min,
            unit: self.unit,
            numbers_as_text: self.numbers_as_text,
            evolved: false,
        }))
    }
}

fn type_names(types: &[DataType]) -> String {
    types
        .iter()
        .map(|t| match t {
            DataType::Utf8 => "string",
            DataType::Int32 => "int",
            DataType::Int64 => "bigint",
            _ => "timestamp",
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Builds the alternatives of `sequence_by` / `row_sequence_by`; `bigint`
/// says whether the sequence column is a bigint (one number per event).
pub fn alternatives(raw: &[RawAlternative], bigint: bool, what: &str) -> Result<Vec<Alternative>, String> {
    let mut out = Vec::new();
    for a in raw {
        if a.fields.is_empty() {
            return Err(format!("{what}: an alternative has no fields"));
        }
        let fields: Vec<Vec<String>> = a.fields.iter().map(|f| f.split('.').map(str::to_string).collect()).collect();
        if fields.iter().flatten().any(String::is_empty) {
            return Err(format!("{what}: `{}` is not a field path", a.fields.join(", ")));
        }
        if let Some(bits) = &a.bits {
            if bits.len() != a.fields.len() {
                return Err(format!("{what}: {} fields but {} bits", a.fields.len(), bits.len()));
            }
            if bits.iter().any(|b| *b == 0) || bits.iter().map(|b| u32::from(*b)).sum::<u32>() > 63 {
                return Err(format!("{what}: bits must be at least 1 each and 63 in all (a bigint is signed)"));
            }
            if !bigint {
                return Err(format!("{what}: bits pack fields into a bigint sequence column; this one is a string"));
            }
        } else if bigint && a.fields.len() > 1 {
            return Err(format!(
                "{what}: `{}` has {} fields, a bigint sequence column holds one number: give `bits` to pack them, or make the sequence column a string",
                a.fields.join(", "),
                a.fields.len()
            ));
        }
        out.push(Alternative { fields, bits: a.bits.clone() });
    }
    Ok(out)
}
