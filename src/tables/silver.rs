//! Silver: a change table's current state, one row per primary key (SCD
//! type 1), with the Delta change data feed.
//!
//! Each batch's changes are applied in one commit: a plain append when no
//! key of the batch can be in the table yet (by the files' key statistics,
//! see [`only_new_keys`]), else one MERGE:
//! - within a batch only the newest change per key (by sequence) counts; on
//!   a tie the later record, except that a delete wins a tie;
//! - a new key is inserted (unless the change is a delete);
//! - an existing row is updated only by a change with a higher sequence, and
//!   deleted by a delete with a sequence at least its own: late and
//!   re-delivered events never overwrite newer data;
//! - a deleted key leaves a tombstone (see [`super::tombstones`]) so that a
//!   late event older than the delete cannot bring the row back.
//!
//! A Kafka tombstone has no sequence of its own: it deletes the row written
//! from an earlier record of its partition (log-compaction semantics), so
//! the writer gives it the sequence of the state it deletes (the newest
//! earlier change of the key in the batch, else the key's tombstone, else
//! the row in the table: [`resolve_kafka_tombstones`]).
//!
//! The MERGE joins on the partition of the row *before* the change (the
//! event's `before` image when it has a full one), so an update that moves
//! a row to another partition finds the old row, and the join prunes to the
//! partitions the batch touches. A delete without a full image (a Kafka
//! tombstone, a key-only `before`) cannot name its partition: a batch holding
//! one merges without partition pruning.

use crate::change::decode::Reader;
use crate::change::derive::TableRows;
use crate::change::spec::{ColumnSource, Meta};
use crate::change::value::{self, scalar_at, Scalar};
use crate::change::{ChangeEvent, Key, Op, Seq};
use crate::source::record::KafkaRecord;
use crate::tables::delta::TableError;
use crate::tables::{CommitOutcome, LakeTable};
use chrono::{DateTime, Utc};
use deltalake::arrow::array::{Array, ArrayRef, RecordBatch, StringBuilder, UInt32Array};
use deltalake::arrow::compute::{lexsort_to_indices, take, take_record_batch, SortColumn};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// A column name in the MERGE's SQL: bare when it is a plain lower-case
/// name (as delta-rs' partition pruning expects), else quoted.
fn ident(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    let keyword = matches!(name, "and" | "or" | "not" | "is" | "null" | "true" | "false" | "in" | "between" | "like" | "case" | "when" | "then" | "else" | "end" | "select" | "from" | "where" | "order" | "group" | "by" | "offset" | "partition" | "limit" | "value" | "key" | "timestamp" | "date" | "interval");
    if plain && !keyword {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// The MERGE source's operation column (not a table column).
const OP: &str = "__lakestream_op";

fn match_column(partition: &str) -> String {
    format!("__lakestream_match_{partition}")
}

/// One change chosen for the MERGE, with the record it came from and the
/// sequence it is applied at.
pub struct Chosen<'a> {
    pub event: &'a ChangeEvent,
    pub record: &'a KafkaRecord,
    pub seq: Seq,
}

/// The effective sequence of each Kafka tombstone of the batch (by partition and offset).
pub type Resolved = HashMap<(i32, i64), Seq>;

/// Gives each Kafka tombstone the sequence of the state it deletes: the
/// newest earlier change of its key in the batch (same partition, lower
/// offset), else the key's remembered tombstone, else the row in the table
/// (looked up with one query for the keys still unknown).
pub async fn resolve_kafka_tombstones<'a>(
    table: &LakeTable,
    reader: &Reader,
    events: impl Iterator<Item = (&'a KafkaRecord, &'a ChangeEvent)>,
    tombstone_seq: impl Fn(&Key) -> Option<Seq>,
) -> Result<Resolved, TableError> {
    let mut latest: HashMap<&Key, Seq> = HashMap::new();
    let mut resolved = Resolved::new();
    let mut unknown: Vec<((i32, i64), &Key)> = Vec::new();
    let mut events: Vec<_> = events.collect();
    events.sort_by_key(|(r, _)| (r.partition, r.offset));
    for (r, e) in events {
        if e.kafka_tombstone {
            match latest.get(&e.key).cloned().or_else(|| tombstone_seq(&e.key)) {
                Some(s) => {
                    resolved.insert((r.partition, r.offset), s);
                }
                None => unknown.push(((r.partition, r.offset), &e.key)),
            }
        } else {
            let entry = latest.entry(&e.key).or_insert_with(|| e.seq.clone());
            if e.seq > *entry {
                *entry = e.seq.clone();
            }
        }
    }
    if !unknown.is_empty() {
        let keys: Vec<&Key> = unknown.iter().map(|(_, k)| *k).collect();
        let stored = stored_sequences(table, reader, &keys).await?;
        for (at, key) in unknown {
            // Nothing known of the key: the tombstone deletes nothing and protects nothing.
            let s = stored.get(key).cloned().unwrap_or_else(|| crate::change::sequence::lowest(reader.bigint_sequence()));
            resolved.insert(at, s);
        }
    }
    Ok(resolved)
}

/// The sequence of the rows `keys` name, as the table holds them.
async fn stored_sequences(table: &LakeTable, reader: &Reader, keys: &[&Key]) -> Result<HashMap<Key, Seq>, TableError> {
    let d = reader.definition;
    let seq_column = d.sequence_column.as_deref().expect("change tables have a sequence column");
    let generic = |e: String| table.wrap_error(deltalake::DeltaTableError::Generic(e));
    let key_columns: Vec<&str> = d.primary_key.iter().map(String::as_str).collect();
    let mut out = HashMap::new();
    if table.version().is_none_or(|v| v < 1) {
        return Ok(out);
    }
    let ctx = SessionContext::new();
    table.delta().update_datafusion_session(&ctx.state()).map_err(|e| table.wrap_error(e))?;
    let provider = table.delta().table_provider().await.map_err(|e| generic(e.to_string()))?;
    ctx.register_table("t", provider).map_err(|e| generic(e.to_string()))?;
    for chunk in keys.chunks(500) {
        let predicate = chunk
            .iter()
            .map(|k| {
                let parts: Vec<String> = key_columns.iter().zip(k.iter()).map(|(c, v)| format!("\"{c}\" = {}", sql_literal(v))).collect();
                format!("({})", parts.join(" AND "))
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        let columns: Vec<String> = key_columns.iter().chain(std::iter::once(&seq_column)).map(|c| format!("\"{c}\"")).collect();
        let sql = format!("SELECT {} FROM t WHERE {predicate}", columns.join(", "));
        let batches = ctx.sql(&sql).await.map_err(|e| generic(e.to_string()))?.collect().await.map_err(|e| generic(e.to_string()))?;
        for b in batches {
            for row in 0..b.num_rows() {
                let key: Key = (0..key_columns.len()).map(|i| scalar_at(b.column(i).as_ref(), row)).collect();
                let seq = match scalar_at(b.column(key_columns.len()).as_ref(), row) {
                    Scalar::Int(i) => Seq::Int(i),
                    Scalar::Text(t) => Seq::Text(t),
                    _ => continue,
                };
                out.insert(key, seq);
            }
        }
    }
    Ok(out)
}

fn sql_literal(v: &Scalar) -> String {
    match v {
        Scalar::Null => "NULL".into(),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(f) => format!("{f:?}"),
        Scalar::Text(s) => format!("'{}'", s.replace('\'', "''")),
        Scalar::Decimal(d) => d.to_string(),
        Scalar::Date(d) => format!("CAST({d} AS DATE)"),
        Scalar::Micros(m) => format!("to_timestamp_micros({m})"),
        Scalar::Bytes(b) => format!("X'{}'", b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
    }
}

/// Keeps, per key, the newest change by sequence (on a tie the later record,
/// but a delete wins a tie), dropping changes not newer than the key's
/// tombstone. Deletes stay: the MERGE applies them only to an older row.
pub fn newest_per_key<'a>(
    events: impl Iterator<Item = (&'a KafkaRecord, &'a ChangeEvent)>,
    resolved: &Resolved,
    tombstone_seq: impl Fn(&Key) -> Option<Seq>,
) -> Vec<Chosen<'a>> {
    // foldhash: one lookup per change of the batch (~10^5), where SipHash
    // made this function cost as much as half the MERGE.
    let mut newest: HashMap<&Key, Chosen<'a>, foldhash::fast::RandomState> = HashMap::with_capacity_and_hasher(1024, Default::default());
    for (record, event) in events {
        let seq = if event.kafka_tombstone {
            match resolved.get(&(record.partition, record.offset)) {
                Some(s) => s.clone(),
                None => continue, // deletes nothing the writer could know of
            }
        } else {
            event.seq.clone()
        };
        if event.op != Op::Delete && tombstone_seq(&event.key).is_some_and(|t| seq <= t) {
            continue; // older than a delete: must not resurrect the row
        }
        let replace = match newest.get(&event.key) {
            None => true,
            Some(kept) => seq > kept.seq || (seq == kept.seq && (event.op == Op::Delete || kept.event.op != Op::Delete)),
        };
        if replace {
            newest.insert(&event.key, Chosen { event, record, seq });
        }
    }
    // In no particular order: [`source_rows`] sorts the rows by key, on
    // columns (sorting ~10^5 `Key`s here chases two pointers per compare).
    newest.into_values().collect()
}

/// The values a meta column takes for the changes, built straight into an
/// Arrow array (no per-row allocation: the MERGE source of a batch has ~10^5 rows).
pub fn meta_array(meta: Meta, data_type: &DataType, chosen: &[(&KafkaRecord, Op, Option<i64>, &Seq)], now: DateTime<Utc>) -> Result<ArrayRef, String> {
    use deltalake::arrow::array::{Int32Builder, Int64Builder, TimestampMicrosecondBuilder};
    let n = chosen.len();
    let micros = |f: &dyn Fn(&(&KafkaRecord, Op, Option<i64>, &Seq)) -> Option<i64>| -> ArrayRef {
        let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        for c in chosen {
            b.append_option(f(c));
        }
        Arc::new(b.finish())
    };
    let array: ArrayRef = match meta {
        Meta::Op => {
            let mut b = StringBuilder::with_capacity(n, n);
            for (_, op, _, _) in chosen {
                b.append_value(op.code());
            }
            Arc::new(b.finish())
        }
        Meta::Sequence if *data_type == DataType::Int64 => {
            let mut b = Int64Builder::with_capacity(n);
            for (_, _, _, seq) in chosen {
                match seq {
                    Seq::Int(i) => b.append_value(*i),
                    Seq::Text(t) => return Err(format!("sequence `{t}` in a bigint column")),
                }
            }
            Arc::new(b.finish())
        }
        Meta::Sequence => {
            let mut b = StringBuilder::with_capacity(n, n * 24);
            for (_, _, _, seq) in chosen {
                match seq {
                    Seq::Text(t) => b.append_value(t),
                    Seq::Int(i) => b.append_value(i.to_string()),
                }
            }
            Arc::new(b.finish())
        }
        Meta::SourceTs => micros(&|(r, _, ts, _)| ts.or(r.timestamp_ms).map(|ms| ms * 1000)),
        Meta::KafkaTimestamp => micros(&|(r, _, _, _)| r.timestamp_ms.map(|ms| ms * 1000)),
        Meta::WrittenAt => micros(&|_| Some(now.timestamp_micros())),
        Meta::KafkaTopic => {
            let mut b = StringBuilder::with_capacity(n, n * 16);
            for (r, _, _, _) in chosen {
                b.append_value(&r.topic);
            }
            Arc::new(b.finish())
        }
        Meta::KafkaPartition => {
            let mut b = Int32Builder::with_capacity(n);
            for (r, _, _, _) in chosen {
                b.append_value(r.partition);
            }
            Arc::new(b.finish())
        }
        Meta::KafkaOffset => {
            let mut b = Int64Builder::with_capacity(n);
            for (r, _, _, _) in chosen {
                b.append_value(r.offset);
            }
            Arc::new(b.finish())
        }
    };
    if array.data_type() != data_type {
        return Err(format!("meta = {meta:?} fills {}, the column is {data_type}", array.data_type()));
    }
    Ok(array)
}

/// The MERGE source: one row per key, the table's columns plus the
/// operation and, per partition column, the partition the target row lives in.
pub fn source_rows(reader: &Reader, rows: &TableRows, chosen: &[Chosen<'_>], now: DateTime<Utc>) -> Result<RecordBatch, String> {
    let d = reader.definition;
    let indices = UInt32Array::from(chosen.iter().map(|c| c.event.row as u32).collect::<Vec<_>>());
    let meta_input: Vec<_> = chosen.iter().map(|c| (c.record, c.event.op, c.event.source_ts_ms, &c.seq)).collect();
    let mut columns: Vec<(&'static str, ArrayRef)> = Vec::new();
    for c in &d.columns {
        let array = match &c.source {
            Some(ColumnSource::Meta(m)) => meta_array(*m, &c.data_type, &meta_input, now)?,
            _ => {
                let source = rows.rows.column_by_name(&c.name).ok_or_else(|| format!("{}: no column `{}` in the rows", d.file, c.name))?;
                take(source.as_ref(), &indices, None).map_err(|e| e.to_string())?
            }
        };
        columns.push((c.name.as_str(), array));
    }
    let table_rows = d.batch(columns, chosen.len())?;
    let mut fields: Vec<Field> = table_rows.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut arrays: Vec<ArrayRef> = table_rows.columns().to_vec();
    let mut op = StringBuilder::new();
    for c in chosen {
        op.append_value(c.event.op.code());
    }
    fields.push(Field::new(OP, DataType::Utf8, false));
    arrays.push(Arc::new(op.finish()));
    for p in &d.partition_by {
        let column = d.column(p).expect("partition columns are columns");
        let own = table_rows.column_by_name(p).expect("partition column in the rows");
        let before = rows.before.column_by_name(p);
        let values: Vec<Scalar> = chosen
            .iter()
            .enumerate()
            .map(|(i, c)| match (c.event.before_row, before) {
                (Some(b), Some(array)) => scalar_at(array.as_ref(), b),
                _ if c.event.full_image => scalar_at(own.as_ref(), i),
                _ => Scalar::Null,
            })
            .collect();
        let refs: Vec<&Scalar> = values.iter().collect();
        fields.push(Field::new(match_column(p), column.data_type.clone(), true));
        arrays.push(value::array(&column.data_type, &refs)?);
    }
    let source = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(|e| format!("{}: MERGE source: {e}", d.file))?;
    by_key(d, source)
}

/// `source` in primary-key order: the MERGE writes new rows in it, so files
/// hold narrow key ranges and the next MERGEs skip them by their statistics.
fn by_key(d: &crate::tables::definition::TableDefinition, source: RecordBatch) -> Result<RecordBatch, String> {
    if source.num_rows() < 2 {
        return Ok(source);
    }
    let keys: Vec<SortColumn> = d
        .primary_key
        .iter()
        .map(|k| SortColumn { values: source.column_by_name(k).expect("key columns are columns").clone(), options: None })
        .collect();
    let order = lexsort_to_indices(&keys, None).map_err(|e| format!("{}: sorting the MERGE source: {e}", d.file))?;
    take_record_batch(&source, &order).map_err(|e| format!("{}: sorting the MERGE source: {e}", d.file))
}

/// Applies `source` (one row per key) to the table in one MERGE commit carrying `txns`.
/// An empty source commits the offsets alone.
///
/// The MERGE rewrites the files it matches, so it carries the layout lock of
/// [`crate::maintenance::compaction`]: it conflicts with a compaction that
/// overlaps it instead of committing next to it.
pub async fn merge(table: &mut LakeTable, reader: &Reader, source: RecordBatch, mut txns: Vec<Transaction>) -> Result<CommitOutcome, TableError> {
    let d = reader.definition;
    let rows = source.num_rows();
    if rows == 0 {
        return table.append(None, txns).await;
    }
    if let Some(rows) = only_new_keys(table, reader, &source).map_err(|e| table.wrap_error(deltalake::DeltaTableError::Generic(e)))? {
        // Nothing to update or delete: an append, which rewrites no file and so
        // takes no layout lock (writers of the same months do not queue).
        tracing::debug!(table = table.name(), rows = rows.num_rows(), "only new keys: appended without a MERGE");
        return table.append(Some(rows), txns).await;
    }
    let offsets = txns.clone();
    let before = table.version();
    let touched = touched_partitions(reader, &source);
    txns.extend(crate::maintenance::compaction::layout_txns(table.name(), touched.as_deref()));
    let month_known = !d.partition_by.is_empty()
        && d.partition_by.iter().all(|p| source.column_by_name(&match_column(p)).is_some_and(|c| c.null_count() == 0));
    let mut conditions: Vec<String> = Vec::new();
    if month_known {
        conditions.extend(d.partition_by.iter().map(|p| format!("target.{} = source.{}", ident(p), ident(&match_column(p)))));
    }
    conditions.extend(d.primary_key.iter().map(|k| format!("target.{k} = source.{k}", k = ident(k))));
    let predicate = conditions.join(" AND ");
    let seq = d.sequence_column.as_deref().expect("change tables have a sequence column");
    let ctx = SessionContext::new();
    let frame = ctx
        .read_batch(source)
        .map_err(|e| table.wrap_error(deltalake::DeltaTableError::Generic(format!("{} source: {e}", d.name))))?;
    let seq = ident(seq);
    let newer = format!("source.{seq} > target.{seq}");
    let not_older = format!("source.{seq} >= target.{seq}");
    let columns = || d.columns.iter().map(|c| c.name.as_str());
    let (merged, metrics) = table
        .delta()
        .clone()
        .merge(frame, predicate)
        .with_source_alias("source")
        .with_target_alias("target")
        .with_commit_properties(CommitProperties::default().with_application_transactions(txns))
        .when_matched_delete(|del| del.predicate(format!("source.{OP} = 'd' AND {not_older}")))
        .and_then(|m| {
            m.when_matched_update(|u| {
                columns().fold(u.predicate(format!("source.{OP} <> 'd' AND {newer}")), |u, c| u.update(c, format!("source.{}", ident(c))))
            })
        })
        .and_then(|m| m.when_not_matched_insert(|i| columns().fold(i.predicate(format!("source.{OP} <> 'd'")), |i, c| i.set(c, format!("source.{}", ident(c))))))
        .map_err(|e| table.wrap_error(e))?
        .await
        .map_err(|e| table.wrap_error(e))?;
    table.set_delta(merged);
    if table.version() == before {
        // Nothing to change (re-deliveries, late older changes): delta-rs then
        // commits nothing, so the offsets go in a commit of their own.
        return table.append(None, offsets).await.map(|o| CommitOutcome { rows, ..o });
    }
    // What the MERGE read and rewrote: the figures that show whether a batch's
    // cost follows the batch or the table (tests/bench/flat.sh reads them).
    // Data in JSON logs, detail in a terminal.
    macro_rules! merged {
        ($level:expr) => {
            tracing::event!(
                $level,
                table = table.name(),
                months = touched.as_ref().map_or(-1, |t| t.len() as i64),
                files_scanned = metrics.num_target_files_scanned,
                files_skipped = metrics.num_target_files_skipped_during_scan,
                files_added = metrics.num_target_files_added,
                files_removed = metrics.num_target_files_removed,
                rows_copied = metrics.num_target_rows_copied,
                rows_inserted = metrics.num_target_rows_inserted,
                rows_updated = metrics.num_target_rows_updated,
                rows_deleted = metrics.num_target_rows_deleted,
                scan_ms = metrics.scan_time_ms,
                rewrite_ms = metrics.rewrite_time_ms,
                execution_ms = metrics.execution_time_ms,
                "merged"
            )
        };
    }
    if crate::logs::json_logs() {
        merged!(tracing::Level::INFO);
    } else {
        merged!(tracing::Level::DEBUG);
    }
    Ok(CommitOutcome { version: table.version().unwrap_or(-1), rows })
}

/// The table's rows of `source` when the MERGE would only insert: no change
/// is a delete and no key can be in the table already, by the statistics of
/// the files of the partition the row lives in (every file when that
/// partition is unknown). None when some row may match a stored one.
///
/// A row whose partition no file names is checked against every file.
/// The check reads the first primary-key column's min and max per file: a
/// file without them (no statistics, a type other than integer or string)
/// may hold any key. Bounds are only ever wide (a truncated string maximum
/// is an upper bound, as Delta writers make it), so a row found new is new.
/// A concurrent writer of the same Kafka partition is caught as for any
/// commit, by its txn versions; other partitions never hold the same keys.
fn only_new_keys(table: &LakeTable, reader: &Reader, source: &RecordBatch) -> Result<Option<RecordBatch>, String> {
    use deltalake::arrow::array::{AsArray, Int64Array};
    use deltalake::arrow::datatypes::Int64Type;
    let d = reader.definition;
    let ops = source.column_by_name(OP).expect("the MERGE source has an operation column").as_string::<i32>();
    if ops.iter().any(|op| op == Some("d")) {
        return Ok(None);
    }
    let key = &d.primary_key[0];
    let key_column = source.column_by_name(key).expect("key columns are columns");
    // The key as i64 or as text; any other type is not checked.
    let as_int: Option<Int64Array> = match key_column.data_type() {
        DataType::Int64 => Some(key_column.as_primitive::<Int64Type>().clone()),
        DataType::Int32 | DataType::Int16 | DataType::Int8 => {
            deltalake::arrow::compute::cast(key_column, &DataType::Int64).ok().map(|a| a.as_primitive::<Int64Type>().clone())
        }
        DataType::Utf8 => None,
        _ => return Ok(None),
    };
    let as_text = (key_column.data_type() == &DataType::Utf8).then(|| key_column.as_string::<i32>());
    // Per partition path, the files' key bounds (None: unknown, may hold any key).
    let sorted = sorted_partitions(d);
    let mut files: HashMap<String, Vec<Option<(serde_json::Value, serde_json::Value)>>> = HashMap::new();
    if table.version().is_some_and(|v| v >= 0) {
        let snapshot = table.delta().snapshot().map_err(|e| e.to_string())?;
        for file in snapshot.log_data().iter() {
            let values = file.partition_values_map();
            let path: Vec<String> = sorted.iter().map(|p| format!("{p}={}", values.get(*p).cloned().flatten().unwrap_or_default())).collect();
            let bounds = file.stats().and_then(|s| {
                let stats: serde_json::Value = serde_json::from_str(&s).ok()?;
                Some((stats.get("minValues")?.get(key)?.clone(), stats.get("maxValues")?.get(key)?.clone()))
            });
            files.entry(path.join("/")).or_default().push(bounds);
        }
    }
    if !files.is_empty() {
        let match_columns: Vec<Option<&ArrayRef>> = sorted.iter().map(|p| source.column_by_name(&match_column(p))).collect();
        let everywhere: Vec<&Option<(serde_json::Value, serde_json::Value)>> = files.values().flatten().collect();
        for row in 0..source.num_rows() {
            let partition = row_partition(&sorted, &match_columns, row);
            let within = |b: &Option<(serde_json::Value, serde_json::Value)>| match (b, &as_int, as_text) {
                (Some((min, max)), Some(ints), _) if !ints.is_null(row) => match (min.as_i64(), max.as_i64()) {
                    (Some(lo), Some(hi)) => (lo..=hi).contains(&ints.value(row)),
                    _ => true,
                },
                (Some((min, max)), None, Some(texts)) if !texts.is_null(row) => match (min.as_str(), max.as_str()) {
                    (Some(lo), Some(hi)) => lo <= texts.value(row) && texts.value(row) <= hi,
                    _ => true,
                },
                _ => true,
            };
            // A partition no file names (a new month, or a value written in
            // another form than ours) is checked against every file: a key
            // is only ever taken for new when no file may hold it.
            let may_exist = match partition.and_then(|p| files.get(&p)) {
                Some(list) => list.iter().any(within),
                None => everywhere.iter().any(|b| within(b)),
            };
            if may_exist {
                return Ok(None);
            }
        }
    }
    let columns: Vec<usize> = d.columns.iter().map(|c| source.schema().index_of(&c.name).expect("table columns are in the source")).collect();
    source.project(&columns).map(Some).map_err(|e| format!("{}: the appended rows: {e}", d.file))
}

/// The partitions (`col=value/…` paths, as compaction names them) a MERGE of
/// `source` may rewrite: those rows live in and move to. None when a row's
/// partition is unknown (a key-only delete) or the table is unpartitioned:
/// the MERGE may touch any file, so it takes the table lock.
fn touched_partitions(reader: &Reader, source: &RecordBatch) -> Option<Vec<String>> {
    let d = reader.definition;
    if d.partition_by.is_empty() {
        return None;
    }
    let sorted = sorted_partitions(d);
    let columns = |name: &dyn Fn(&str) -> String| -> Option<Vec<Option<&ArrayRef>>> {
        sorted.iter().map(|p| source.column_by_name(&name(p)).map(Some)).collect()
    };
    let (targets, owns) = (columns(&|p| match_column(p))?, columns(&|p| p.to_string())?);
    let mut out = BTreeSet::new();
    for row in 0..source.num_rows() {
        // A row whose partition is unknown may touch any file.
        out.insert(row_partition(&sorted, &targets, row)?);
        if let Some(moved_to) = row_partition(&sorted, &owns, row) {
            out.insert(moved_to); // none for a delete
        }
    }
    Some(out.into_iter().collect())
}

/// The table's partition columns in the order partition paths name them.
fn sorted_partitions(d: &crate::tables::definition::TableDefinition) -> Vec<&String> {
    let mut sorted: Vec<&String> = d.partition_by.iter().collect();
    sorted.sort();
    sorted
}

/// The `col=value/…` path of `row` in `columns` (one per column of
/// `sorted`); None when a column is missing or a value is null.
fn row_partition(sorted: &[&String], columns: &[Option<&ArrayRef>], row: usize) -> Option<String> {
    let mut parts = Vec::with_capacity(sorted.len());
    for (p, column) in sorted.iter().zip(columns) {
        let array = column.filter(|c| !c.is_null(row))?;
        parts.push(format!("{p}={}", partition_value(&scalar_at(array.as_ref(), row))));
    }
    Some(parts.join("/"))
}

/// A partition value as Delta writes it in the log.
fn partition_value(v: &Scalar) -> String {
    match v {
        Scalar::Text(s) => s.clone(),
        Scalar::Date(_) => v.to_string(),
        Scalar::Int(i) => i.to_string(),
        Scalar::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}
