//! The table definitions of `tables/*.toml`: the one place that says what
//! each table is (columns, types, nullability, partitioning, key, properties,
//! source). They are compiled into the binary, checked when lakestream starts,
//! and everything else is built from them: the Arrow schemas of the batches,
//! the Delta tables `migrate` creates (checked against `migrations/`), and the
//! schema check of `run`.
//!
//! The writer's row builders fill columns *by name*; [`TableDefinition::batch`]
//! puts them in the definition's order and checks every type, so a definition
//! and the code that fills it cannot drift apart silently: `registry::check_all` runs
//! every builder on no rows at start and names the file and the column.

use crate::change::spec::{self as change_spec, ChangeSpec, ColumnSource, Meta, RawChange, RawColumnSource, TimestampUnit};
use deltalake::arrow::array::{new_null_array, ArrayRef};
use deltalake::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use deltalake::arrow::record_batch::RecordBatch;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};

/// The definitions, as compiled in: (file, text). `--tables DIR` (or
/// `LAKESTREAM_TABLES`) reads a directory instead: see [`use_dir`].
const FILES: [(&str, &str); 4] = [
    ("tables/bronze_orders.toml", include_str!("../../tables/bronze_orders.toml")),
    ("tables/quarantine_orders.toml", include_str!("../../tables/quarantine_orders.toml")),
    ("tables/silver_order_lines_tombstones.toml", include_str!("../../tables/silver_order_lines_tombstones.toml")),
    ("tables/silver_order_lines.toml", include_str!("../../tables/silver_order_lines.toml")),
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct DefinitionError {
    pub file: String,
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct ColumnDefinition {
    pub name: String,
    /// The type as written (`decimal(10,2)`), in the SQL of `migrations/`.
    pub type_text: String,
    pub data_type: DataType,
    pub nullable: bool,
    pub comment: Option<String>,
    /// Where the value comes from, in a change table (or a tombstones table).
    pub source: Option<ColumnSource>,
    /// The line of its `name` in the definition file, for messages.
    pub line: usize,
}

#[derive(Debug, Clone)]
pub struct TableDefinition {
    pub file: &'static str,
    /// Used in app ids, logs and metrics, e.g. `silver.order_lines`.
    pub name: String,
    /// The table's name in `migrations/` and Databricks, e.g. `silver_order_lines`.
    pub sql_name: String,
    /// Below the lake root, e.g. `silver/order_lines`.
    pub path: String,
    pub description: String,
    pub columns: Vec<ColumnDefinition>,
    pub partition_by: Vec<String>,
    pub primary_key: Vec<String>,
    pub sequence_column: Option<String>,
    pub source: TableSource,
    /// How a change table reads its topic (`[change]`).
    pub change: Option<ChangeSpec>,
    pub properties: BTreeMap<String, String>,
    pub schema: SchemaRef,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    name: toml::Spanned<String>,
    sql_name: toml::Spanned<String>,
    path: toml::Spanned<String>,
    description: String,
    partition_by: toml::Spanned<Vec<String>>,
    #[serde(default)]
    primary_key: Option<toml::Spanned<Vec<String>>>,
    #[serde(default)]
    sequence_column: Option<toml::Spanned<String>>,
    source: TableSource,
    #[serde(default)]
    change: Option<toml::Spanned<RawChange>>,
    #[serde(default)]
    properties: BTreeMap<String, String>,
    columns: Vec<RawColumn>,
}

/// Where a table's rows come from (documentation for the reader of the file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSource {
    /// The Kafka topic setting that feeds it (`kafka.topic`).
    pub topic: String,
    /// Which records of the topic the table takes.
    pub takes: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawColumn {
    name: toml::Spanned<String>,
    #[serde(rename = "type")]
    data_type: toml::Spanned<String>,
    #[serde(default = "yes")]
    nullable: bool,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    expr: Option<String>,
    #[serde(default)]
    meta: Option<Meta>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    null_if: Vec<String>,
    #[serde(default)]
    pattern: Option<String>,
    #[serde(default)]
    min: Option<i64>,
    #[serde(default)]
    unit: Option<TimestampUnit>,
    #[serde(default)]
    numbers_as_text: bool,
}

impl RawColumn {
    fn source(&self) -> RawColumnSource {
        RawColumnSource {
            from: self.from.clone(),
            expr: self.expr.clone(),
            meta: self.meta,
            required: self.required,
            null_if: self.null_if.clone(),
            pattern: self.pattern.clone(),
            min: self.min,
            unit: self.unit,
            numbers_as_text: self.numbers_as_text,
        }
    }
}

fn yes() -> bool {
    true
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Parses a Databricks/Delta type name: string, int, bigint, smallint,
/// boolean, double, date, timestamp (UTC instants), binary, decimal(p,s),
/// map<string,string>. Case does not matter.
pub fn parse_type(text: &str) -> Result<DataType, String> {
    let t: String = text.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase();
    Ok(match t.as_str() {
        "string" => DataType::Utf8,
        "int" | "integer" => DataType::Int32,
        "bigint" | "long" => DataType::Int64,
        "smallint" | "short" => DataType::Int16,
        "boolean" => DataType::Boolean,
        "double" => DataType::Float64,
        "date" => DataType::Date32,
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "binary" => DataType::Binary,
        "map<string,string>" => DataType::Map(
            Arc::new(Field::new(
                "key_value",
                DataType::Struct(Fields::from(vec![Field::new("key", DataType::Utf8, false), Field::new("value", DataType::Utf8, true)])),
                false,
            )),
            false,
        ),
        "timestamp_ntz" => {
            return Err("timestamp_ntz is not allowed: Power BI cannot read it; use timestamp (UTC)".into());
        }
        other => {
            let inner = other.strip_prefix("decimal(").and_then(|r| r.strip_suffix(')'));
            let Some((p, s)) = inner.and_then(|i| i.split_once(',')) else {
                return Err(format!(
                    "unknown type `{text}` (string, int, bigint, smallint, boolean, double, date, timestamp, binary, decimal(p,s), map<string,string>)"
                ));
            };
            let (p, s): (u8, i8) = (p.parse().map_err(|_| format!("decimal precision in `{text}`"))?, s.parse().map_err(|_| format!("decimal scale in `{text}`"))?);
            if !(1..=38).contains(&p) || s < 0 || s as u8 > p {
                return Err(format!("`{text}`: precision must be 1..38 and scale 0..precision"));
            }
            DataType::Decimal128(p, s)
        }
    })
}

/// Parses and checks one definition file.
pub fn parse(file: &'static str, text: &str) -> Result<TableDefinition, DefinitionError> {
    let err = |offset: usize, reason: String| DefinitionError { file: file.to_string(), line: line_of(text, offset), reason };
    let raw: RawTable = toml::from_str(text).map_err(|e| err(e.span().map_or(0, |s| s.start), e.message().to_string()))?;
    let mut columns = Vec::new();
    let mut seen = BTreeSet::new();
    for c in &raw.columns {
        let name = c.name.get_ref().trim();
        if name.is_empty() || !name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
            return Err(err(c.name.span().start, format!("column name `{name}`: use letters, digits and _")));
        }
        if !seen.insert(name.to_string()) {
            return Err(err(c.name.span().start, format!("column `{name}` is defined twice")));
        }
        let data_type = parse_type(c.data_type.get_ref()).map_err(|r| err(c.data_type.span().start, format!("column `{name}`: {r}")))?;
        let raw_source = c.source();
        let source = if raw.change.is_some() || !raw_source.is_empty() {
            Some(raw_source.build(name, &data_type).map_err(|r| err(c.name.span().start, r))?)
        } else {
            None
        };
        columns.push(ColumnDefinition {
            name: name.to_string(),
            type_text: c.data_type.get_ref().to_ascii_lowercase(),
            data_type,
            nullable: c.nullable,
            comment: c.comment.clone(),
            source,
            line: line_of(text, c.name.span().start),
        });
    }
    if columns.is_empty() {
        return Err(err(0, "no [[columns]]".into()));
    }
    let column = |name: &str| columns.iter().find(|c| c.name == name);
    for p in raw.partition_by.get_ref() {
        match column(p) {
            None => return Err(err(raw.partition_by.span().start, format!("partition column `{p}` is not a column"))),
            Some(c) if !matches!(c.data_type, DataType::Date32 | DataType::Utf8 | DataType::Int32 | DataType::Int64) => {
                return Err(err(raw.partition_by.span().start, format!("partition column `{p}` must be a date, string, int or bigint")))
            }
            Some(_) => {}
        }
    }
    if let Some(pk) = &raw.primary_key {
        if let Some(missing) = pk.get_ref().iter().find(|k| column(k).is_none()) {
            return Err(err(pk.span().start, format!("primary key column `{missing}` is not a column")));
        }
    }
    if let Some(seq) = &raw.sequence_column {
        match column(seq.get_ref()) {
            Some(c) if matches!(c.data_type, DataType::Int64 | DataType::Utf8) => {}
            Some(_) => return Err(err(seq.span().start, format!("sequence column `{}` must be a bigint or a string", seq.get_ref()))),
            None => return Err(err(seq.span().start, format!("sequence column `{}` is not a column", seq.get_ref()))),
        }
    }
    let change = match &raw.change {
        Some(c) => Some(change_table(&raw, c, &columns).map_err(|(offset, reason)| err(offset, reason))?),
        None => None,
    };
    for (field, value) in [(&raw.name, "name"), (&raw.sql_name, "sql_name"), (&raw.path, "path")] {
        if field.get_ref().trim().is_empty() {
            return Err(err(field.span().start, format!("{value} is empty")));
        }
    }
    let schema = Arc::new(Schema::new(
        columns.iter().map(|c| Field::new(&c.name, c.data_type.clone(), c.nullable)).collect::<Vec<_>>(),
    ));
    Ok(TableDefinition {
        file,
        name: raw.name.into_inner(),
        sql_name: raw.sql_name.into_inner(),
        path: raw.path.into_inner(),
        description: raw.description,
        columns,
        partition_by: raw.partition_by.into_inner(),
        primary_key: raw.primary_key.map(|p| p.into_inner()).unwrap_or_default(),
        sequence_column: raw.sequence_column.map(|s| s.into_inner()),
        source: raw.source,
        change,
        properties: raw.properties,
        schema,
    })
}

/// Checks a change table's `[change]` section against its columns.
fn change_table(raw: &RawTable, spanned: &toml::Spanned<RawChange>, columns: &[ColumnDefinition]) -> Result<ChangeSpec, (usize, String)> {
    let at = spanned.span().start;
    let c = spanned.get_ref();
    let column = |name: &str| columns.iter().find(|c| c.name == name);
    let is_field = |name: &str| matches!(column(name).and_then(|c| c.source.as_ref()), Some(ColumnSource::Field(_)));
    let pk = raw.primary_key.as_ref().ok_or((at, "a change table needs a primary_key".to_string()))?;
    if pk.get_ref().is_empty() {
        return Err((pk.span().start, "primary_key is empty".into()));
    }
    if let Some(k) = pk.get_ref().iter().find(|k| !is_field(k)) {
        return Err((pk.span().start, format!("primary key column `{k}` must be read from the row image (not expr or meta)")));
    }
    let seq = raw.sequence_column.as_ref().ok_or((at, "a change table needs a sequence_column (a column with meta = \"sequence\")".to_string()))?;
    let seq_column = column(seq.get_ref()).ok_or((seq.span().start, format!("sequence column `{}` is not a column", seq.get_ref())))?;
    if !matches!(seq_column.source, Some(ColumnSource::Meta(Meta::Sequence))) {
        return Err((seq.span().start, format!("sequence column `{}` must have meta = \"sequence\"", seq.get_ref())));
    }
    let bigint = seq_column.data_type == DataType::Int64;
    let span_of = |s: &Option<toml::Spanned<Vec<change_spec::RawAlternative>>>| s.as_ref().map_or(at, |s| s.span().start);
    let sequence_by = change_spec::alternatives(c.sequence_by.as_ref().map(|s| s.get_ref().as_slice()).unwrap_or(&[]), bigint, "sequence_by")
        .map_err(|r| (span_of(&c.sequence_by), r))?;
    if sequence_by.is_empty() && c.format.get_ref() == &change_spec::Format::Debezium {
        return Err((at, "sequence_by: a debezium table needs at least one alternative (e.g. { fields = [\"source.lsn\"] })".into()));
    }
    let row_sequence_by = change_spec::alternatives(c.row_sequence_by.as_ref().map(|s| s.get_ref().as_slice()).unwrap_or(&[]), bigint, "row_sequence_by")
        .map_err(|r| (span_of(&c.row_sequence_by), r))?;
    if let Some(t) = &c.key_text {
        if !pk.get_ref().contains(t.get_ref()) {
            return Err((t.span().start, format!("key_text `{}` is not a primary key column", t.get_ref())));
        }
    }
    for p in raw.partition_by.get_ref() {
        if matches!(column(p).and_then(|c| c.source.as_ref()), Some(ColumnSource::Meta(_))) {
            return Err((raw.partition_by.span().start, format!("partition column `{p}` cannot be a meta column")));
        }
    }
    if let Some(expr) = &c.apply_as_deletes {
        if crate::change::derive::identifiers(expr.get_ref()).is_empty() {
            return Err((expr.span().start, format!("apply_as_deletes `{}` reads no field", expr.get_ref())));
        }
    }
    Ok(ChangeSpec {
        format: *c.format.get_ref(),
        tombstones: c.tombstones.as_ref().map(|t| t.get_ref().clone()),
        key_text: c.key_text.as_ref().map(|t| t.get_ref().clone()),
        sequence_by,
        row_sequence_by,
        apply_as_deletes: c.apply_as_deletes.as_ref().map(|a| a.get_ref().clone()),
        on_new_column: c.on_new_column,
        ignore_fields: c.ignore_fields.clone(),
    })
}

/// The definition files to use instead of the compiled ones, set once at start.
static DIR_FILES: std::sync::OnceLock<Result<Vec<(&'static str, &'static str)>, DefinitionError>> = std::sync::OnceLock::new();

/// Reads the table definitions from `dir` (every `*.toml`, by name) instead
/// of the compiled ones: a new table is a file, not a build. Call before
/// anything reads a definition; the first call wins.
pub fn use_dir(dir: &std::path::Path) {
    DIR_FILES.get_or_init(|| {
        let unreadable = |reason: String| DefinitionError { file: dir.display().to_string(), line: 1, reason };
        let mut files = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|e| unreadable(format!("cannot read the tables directory: {e}")))?;
        let mut paths: Vec<std::path::PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "toml")).collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|e| unreadable(format!("cannot read {}: {e}", path.display())))?;
            let file: &'static str = Box::leak(path.display().to_string().into_boxed_str());
            files.push((file, &*Box::leak(text.into_boxed_str())));
        }
        if files.is_empty() {
            return Err(unreadable("no *.toml table definitions".into()));
        }
        Ok(files)
    });
}

static DEFINITIONS: LazyLock<Result<Vec<TableDefinition>, DefinitionError>> = LazyLock::new(|| {
    let files: Vec<(&'static str, &'static str)> = match DIR_FILES.get() {
        Some(Ok(files)) => files.clone(),
        Some(Err(e)) => return Err(e.clone()),
        None => FILES.to_vec(),
    };
    let mut out: Vec<TableDefinition> = Vec::new();
    for (file, text) in files {
        let d = parse(file, text)?;
        if let Some(other) = out.iter().find(|o| o.name == d.name || o.sql_name == d.sql_name || o.path == d.path) {
            return Err(DefinitionError {
                file: file.into(),
                line: 1,
                reason: format!("name, sql_name or path also used by {} (two tables on one path?)", other.file),
            });
        }
        out.push(d);
    }
    check_references(&out)?;
    Ok(out)
});

/// Cross-file checks: the roles every lake needs, and each change table's tombstones table.
fn check_references(all: &[TableDefinition]) -> Result<(), DefinitionError> {
    let at = |d: &TableDefinition, needle: &str, reason: String| DefinitionError {
        file: d.file.to_string(),
        line: d_line(d, needle),
        reason,
    };
    for d in all.iter().filter(|d| d.change.is_some()) {
        let spec = d.change.as_ref().expect("filtered");
        if let Some(t) = &spec.tombstones {
            let Some(tomb) = all.iter().find(|o| &o.name == t) else {
                return Err(at(d, "tombstones", format!("tombstones table `{t}` is not defined in tables/")));
            };
            for k in &d.primary_key {
                let (want, have) = (d.column(k).map(|c| &c.data_type), tomb.column(k).map(|c| &c.data_type));
                if want != have {
                    return Err(at(tomb, "[[columns]]", format!("tombstones of {}: needs key column `{k}` of the same type as {}", d.name, d.file)));
                }
            }
            let seq_type = d.sequence_column.as_deref().and_then(|s| d.column(s)).map(|c| &c.data_type);
            let has_seq = tomb.columns.iter().any(|c| matches!(c.source, Some(ColumnSource::Meta(Meta::Sequence))) && Some(&c.data_type) == seq_type);
            if !has_seq {
                return Err(at(tomb, "[[columns]]", format!("tombstones of {}: needs a column with meta = \"sequence\" of the sequence column's type", d.name)));
            }
        }
    }
    Ok(())
}

/// The line of a definition's file where `needle` first appears (1 if not found).
fn d_line(d: &TableDefinition, needle: &str) -> usize {
    let text = match DIR_FILES.get() {
        Some(Ok(files)) => files.iter().find(|(f, _)| *f == d.file).map(|(_, t)| *t),
        _ => FILES.iter().find(|(f, _)| *f == d.file).map(|(_, t)| *t),
    };
    text.and_then(|t| t.find(needle).map(|o| line_of(t, o))).unwrap_or(1)
}

/// Every definition, or the first error (file, line, reason).
pub fn all() -> Result<&'static [TableDefinition], DefinitionError> {
    DEFINITIONS.as_ref().map(Vec::as_slice).map_err(Clone::clone)
}

/// The definition named `name` (e.g. `silver.order_lines`). Definitions are
/// checked at start (`registry::check_all`); a missing one is a build error.
pub fn get(name: &str) -> &'static TableDefinition {
    all()
        .expect("table definitions are checked at start")
        .iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("no table definition named {name} in tables/"))
}

impl TableDefinition {
    pub fn column(&self, name: &str) -> Option<&ColumnDefinition> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The columns a row builder filled, in the definition's order. Every
    /// column must be filled with the defined type, except nullable ones
    /// (null), and nothing undefined may be filled.
    pub fn batch(&self, filled: Vec<(&str, ArrayRef)>, rows: usize) -> Result<RecordBatch, String> {
        let mut by_name: BTreeMap<&str, ArrayRef> = BTreeMap::new();
        for (name, array) in filled {
            if self.column(name).is_none() {
                return Err(format!("{}: lakestream fills column `{name}`, which the definition does not have", self.file));
            }
            by_name.insert(name, array);
        }
        let mut arrays = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            let array = match by_name.remove(c.name.as_str()) {
                Some(a) if a.data_type() == &c.data_type => a,
                Some(a) => {
                    return Err(format!(
                        "{}: column `{}` is defined as {} but lakestream fills it with {}",
                        self.file,
                        c.name,
                        c.type_text,
                        a.data_type()
                    ))
                }
                None if c.nullable => new_null_array(&c.data_type, rows),
                None => return Err(format!("{}: column `{}` is NOT NULL but lakestream has nothing to fill it with", self.file, c.name)),
            };
            arrays.push(array);
        }
        RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| format!("{}: {e}", self.file))
    }

    /// The change tables (those with a `[change]` section).
    pub fn is_change_table(&self) -> bool {
        self.change.is_some()
    }

    pub fn spec(&'static self) -> crate::tables::TableSpec {
        crate::tables::TableSpec {
            name: &self.name,
            path: &self.path,
            schema: self.schema.clone(),
            partition_columns: self.partition_by.iter().map(String::as_str).collect(),
            properties: self.properties.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_definitions_are_valid_and_match_the_row_builders() {
        crate::tables::registry::check_all().unwrap();
        let silver = get("silver.order_lines");
        assert_eq!(silver.primary_key, ["transaction_no", "line_no"]);
        assert_eq!(silver.sequence_column.as_deref(), Some("_seq"));
        assert_eq!(silver.properties["delta.enableChangeDataFeed"], "true");
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let base = include_str!("../../tables/quarantine_orders.toml");
        let bad_type = base.replacen("type = \"bigint\"", "type = \"bigint64\"", 1);
        let e = parse("tables/x.toml", &bad_type).unwrap_err();
        let line = bad_type.lines().position(|l| l.contains("bigint64")).unwrap() + 1;
        assert_eq!((e.file.as_str(), e.line), ("tables/x.toml", line), "{e}");
        assert!(e.reason.contains("unknown type `bigint64`"), "{e}");

        let ntz = base.replacen("type = \"timestamp\"", "type = \"timestamp_ntz\"", 1);
        assert!(parse("t", &ntz).unwrap_err().reason.contains("Power BI"));
        let bad_partition = base.replacen("partition_by = []", "partition_by = [\"nope\"]", 1);
        assert!(parse("t", &bad_partition).unwrap_err().reason.contains("partition column `nope`"));
        let typo = base.replacen("nullable = false", "nulable = false", 1);
        let e = parse("t", &typo).unwrap_err();
        assert!(e.reason.contains("nulable") && e.line > 1, "{e}");
        let syntax = format!("{base}\n[[columns]\n");
        assert!(parse("t", &syntax).unwrap_err().line >= base.lines().count(), "syntax errors have a line too");
    }

    #[test]
    fn types_follow_databricks_names() {
        assert_eq!(parse_type("DECIMAL(18, 2)").unwrap(), DataType::Decimal128(18, 2));
        assert_eq!(parse_type("TIMESTAMP").unwrap(), DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())));
        assert!(parse_type("decimal(40,2)").is_err());
        assert!(parse_type("varchar").is_err());
    }
}
