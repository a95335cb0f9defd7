//! Silver: a change table's current state, one row per primary key (SCD
//! type 1), with the Delta change data feed.
//!
//! Each batch's changes are applied in one commit by [`super::upsert`]:
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
//! A change's stored row is searched in the partition of the row *before*
//! the change (the event's `before` image when it has a full one), so an
//! update that moves a row to another partition finds the old row. A delete
//! without a full image (a Kafka tombstone, a key-only `before`) cannot name
//! its partition: it is searched for in every file its key may be in.

use crate::change::decode::Reader;
use crate::change::derive::TableRows;
use crate::change::spec::{ColumnSource, Meta};
use crate::change::value::{scalar_at, Scalar};
use crate::change::{ChangeEvent, Key, Op, Seq};
use crate::source::record::KafkaRecord;
use crate::tables::delta::TableError;
use crate::tables::tombstones::Tombstones;
use crate::tables::upsert::{self, Changes};
use crate::tables::{CommitOutcome, LakeTable};
use chrono::{DateTime, Utc};
use deltalake::arrow::array::{Array, ArrayRef, BooleanArray, StringBuilder, UInt32Array};
use deltalake::arrow::compute::{filter_record_batch, lexsort_to_indices, take, SortColumn};
use deltalake::arrow::datatypes::DataType;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::Transaction;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// One change chosen for the upsert, with the record it came from (and its
/// position in the batch) and the sequence it is applied at.
pub struct Chosen<'a> {
    pub event: &'a ChangeEvent,
    pub record: &'a KafkaRecord,
    pub at: usize,
    pub seq: Seq,
}

/// The effective sequence of each Kafka tombstone of the batch (by partition and offset).
pub type Resolved = HashMap<(i32, i64), Seq, foldhash::fast::RandomState>;

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
    let (mut resolved, unknown) = resolve_known(events, tombstone_seq);
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

/// The Kafka tombstones resolved by the batch itself or by `tombstone_seq`,
/// and those left for the table to resolve (see [`resolve_kafka_tombstones`]).
#[allow(clippy::type_complexity)]
fn resolve_known<'a>(
    events: impl Iterator<Item = (&'a KafkaRecord, &'a ChangeEvent)>,
    tombstone_seq: impl Fn(&Key) -> Option<Seq>,
) -> (Resolved, Vec<((i32, i64), &'a Key)>) {
    let mut events: Vec<_> = events.collect();
    // Every change of the batch passes through `latest`: foldhash, sized up front.
    let mut latest: HashMap<&Key, Seq, foldhash::fast::RandomState> = HashMap::with_capacity_and_hasher(events.len(), Default::default());
    let mut resolved = Resolved::default();
    let mut unknown: Vec<((i32, i64), &Key)> = Vec::new();
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
    (resolved, unknown)
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
/// tombstone. Deletes stay: the upsert applies them only to an older row.
/// Each event comes with its record and the record's position in the batch.
pub fn newest_per_key<'a>(
    events: impl Iterator<Item = (usize, &'a KafkaRecord, &'a ChangeEvent)>,
    resolved: &Resolved,
    tombstone_seq: impl Fn(&Key) -> Option<Seq>,
) -> Vec<Chosen<'a>> {
    // foldhash: one lookup per change of the batch (~10^5), where SipHash
    // made this function cost as much as half of delta-rs' MERGE. Sized for
    // the batch up front: most keys of a batch are new, and a map grown from
    // small rehashes every key it holds at each doubling.
    let room = events.size_hint().1.unwrap_or(1024);
    let mut newest: HashMap<&Key, Chosen<'a>, foldhash::fast::RandomState> = HashMap::with_capacity_and_hasher(room, Default::default());
    for (at, record, event) in events {
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
            newest.insert(&event.key, Chosen { event, record, at, seq });
        }
    }
    // In no particular order: [`source_rows`] sorts the rows by key, on
    // columns (sorting ~10^5 `Key`s here chases two pointers per compare).
    newest.into_values().collect()
}

/// A change table's changes in a batch, built from the whole batch on a
/// thread of their own while the tables before it commit (its tombstones
/// table, and bronze beside them), rather than after them: building them
/// took a third of silver's time. Built with no delete remembered: the
/// commit uses them only when the table holds none of the batch yet (else it
/// builds the changes of the records still missing), and drops the changes
/// older than a remembered delete ([`Prepared::after_tombstones`]).
pub struct Prepared {
    changes: Changes,
    /// Per row of `changes`: the position in the batch of its record.
    records: Vec<u32>,
}

/// The changes of `events` (one per record of the batch, None where the
/// table has none), as [`newest_per_key`] and [`source_rows`] make them;
/// None when a Kafka tombstone needs the table's state to get its sequence.
pub fn prepare(reader: &Reader, records: &[KafkaRecord], events: &[Option<ChangeEvent>], rows: &TableRows, now: DateTime<Utc>) -> Option<Prepared> {
    let all = || records.iter().zip(events).enumerate().filter_map(|(at, (r, e))| e.as_ref().map(|e| (at, r, e)));
    let mut resolved = Resolved::default();
    if events.iter().flatten().any(|e| e.kafka_tombstone) {
        let unknown;
        (resolved, unknown) = resolve_known(all().map(|(_, r, e)| (r, e)), |_| None);
        if !unknown.is_empty() {
            return None;
        }
    }
    let chosen = newest_per_key(all(), &resolved, |_| None);
    let (changes, order) = source_rows(reader, rows, &chosen, now).expect("change table columns match their definition (checked at start)");
    let records = order.iter().map(|i| chosen[*i as usize].at as u32).collect();
    Some(Prepared { changes, records })
}

impl Prepared {
    /// The changes without those a remembered delete makes stale: the same
    /// as choosing without them. A stale change that was its key's newest
    /// hides only older deletes of the key, which find no row (a row stored
    /// after the remembered delete is newer than it) and insert none.
    pub fn after_tombstones(&self, events: &[Option<ChangeEvent>], tombstones: &Tombstones) -> Cow<'_, Changes> {
        if tombstones.is_empty() {
            return Cow::Borrowed(&self.changes);
        }
        let keep: Vec<bool> = self
            .records
            .iter()
            .zip(&self.changes.deletes)
            .map(|(at, delete)| {
                let e = events[*at as usize].as_ref().expect("a prepared change has its event");
                *delete || tombstones.seq(&e.key).is_none_or(|t| e.seq > t)
            })
            .collect();
        if keep.iter().all(|k| *k) {
            return Cow::Borrowed(&self.changes);
        }
        let rows = filter_record_batch(&self.changes.rows, &BooleanArray::from(keep.clone())).expect("a mask as long as the rows");
        Cow::Owned(Changes { rows, deletes: kept(&keep, &self.changes.deletes), search: kept(&keep, &self.changes.search) })
    }
}

fn kept<T: Clone>(keep: &[bool], values: &[T]) -> Vec<T> {
    keep.iter().zip(values).filter(|(k, _)| **k).map(|(_, v)| v.clone()).collect()
}

/// The values a meta column takes for the changes, built straight into an
/// Arrow array (no per-row allocation: a batch has ~10^5 changes).
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

/// The batch's changes for [`upsert::apply`]: one row per key with the
/// table's columns, in key order (the upsert writes new rows in it, so files
/// hold narrow key ranges and later batches skip them by their statistics),
/// and for each row the position in `chosen` of its change.
pub fn source_rows(reader: &Reader, rows: &TableRows, chosen: &[Chosen<'_>], now: DateTime<Utc>) -> Result<(Changes, Vec<u32>), String> {
    let d = reader.definition;
    // The changes at `at` (positions in `chosen`), in that order: a taker of
    // any column's values for them.
    let at = |at: &[u32]| {
        let indices = UInt32Array::from(at.iter().map(|i| chosen[*i as usize].event.row as u32).collect::<Vec<_>>());
        let meta: Vec<_> = at.iter().map(|i| &chosen[*i as usize]).map(|c| (c.record, c.event.op, c.event.source_ts_ms, &c.seq)).collect();
        move |c: &crate::tables::definition::ColumnDefinition| -> Result<ArrayRef, String> {
            match &c.source {
                Some(ColumnSource::Meta(m)) => meta_array(*m, &c.data_type, &meta, now),
                _ => {
                    let source = rows.rows.column_by_name(&c.name).ok_or_else(|| format!("{}: no column `{}` in the rows", d.file, c.name))?;
                    take(source.as_ref(), &indices, None).map_err(|e| e.to_string())
                }
            }
        }
    };
    // Key order from the key columns alone, so that every column is taken
    // once, already sorted (sorting ~10^5 `Key`s instead chases two pointers per compare).
    let unsorted: Vec<u32> = (0..chosen.len() as u32).collect();
    let order: Vec<u32> = if chosen.len() < 2 {
        unsorted
    } else {
        let key_column = at(&unsorted);
        let keys: Vec<SortColumn> = d
            .primary_key
            .iter()
            .map(|k| Ok(SortColumn { values: key_column(d.column(k).expect("key columns are columns"))?, options: None }))
            .collect::<Result<_, String>>()?;
        lexsort_to_indices(&keys, None).map_err(|e| format!("{}: sorting the changes: {e}", d.file))?.values().to_vec()
    };
    let column = at(&order);
    let mut columns: Vec<(&'static str, ArrayRef)> = Vec::new();
    for c in &d.columns {
        columns.push((c.name.as_str(), column(c)?));
    }
    let table_rows = d.batch(columns, chosen.len())?;
    // Where each change's stored row lives: the partition of its before image
    // when it has one, else of its own row when the change carries the full
    // row, else unknown.
    let sorted = sorted_partitions(d);
    let own: Vec<Option<&ArrayRef>> = sorted.iter().map(|p| table_rows.column_by_name(p)).collect();
    let before: Vec<Option<&ArrayRef>> = sorted.iter().map(|p| rows.before.column_by_name(p)).collect();
    let own_paths = partition_paths(&sorted, &own, table_rows.num_rows());
    let before_paths = before.iter().all(Option::is_some).then(|| partition_paths(&sorted, &before, rows.before.num_rows()));
    let search: Vec<Option<Arc<str>>> = order
        .iter()
        .enumerate()
        .map(|(i, at)| {
            let c = &chosen[*at as usize];
            match c.event.before_row {
                Some(b) if before_paths.is_some() => before_paths.as_ref().and_then(|paths| paths[b].clone()),
                _ if c.event.full_image => own_paths[i].clone(),
                _ => None,
            }
        })
        .collect();
    let deletes: Vec<bool> = order.iter().map(|at| chosen[*at as usize].event.op == Op::Delete).collect();
    Ok((Changes { rows: table_rows, deletes, search }, order))
}

/// Applies `changes` to the table in one commit carrying `txns` (see
/// [`upsert`]). No changes commit the offsets alone.
pub async fn apply(table: &mut LakeTable, reader: &Reader, changes: &Changes, txns: Vec<Transaction>) -> Result<CommitOutcome, TableError> {
    let rows = changes.rows.num_rows();
    if rows == 0 {
        return table.append(None, txns).await;
    }
    let started = std::time::Instant::now();
    let done = upsert::apply(table, reader.definition, changes, txns).await?;
    // What the upsert read and rewrote: the figures that show whether a
    // batch's cost follows the batch or the table (tests/bench/flat.sh reads
    // them). Data in JSON logs, detail in a terminal.
    macro_rules! merged {
        ($level:expr) => {
            tracing::event!(
                $level,
                table = table.name(),
                version = done.version,
                partitions = done.partitions,
                files_scanned = done.files_read,
                files_left = done.files_left,
                files_added = done.files_added,
                files_removed = done.files_rewritten,
                rows_copied = done.rows_copied,
                rows_inserted = done.inserted,
                rows_updated = done.updated,
                rows_deleted = done.deleted,
                scan_ms = done.read_ms,
                rewrite_ms = done.write_ms,
                races = done.races,
                execution_ms = started.elapsed().as_millis() as u64,
                "merged"
            )
        };
    }
    if crate::logs::json_logs() {
        merged!(tracing::Level::INFO);
    } else {
        merged!(tracing::Level::DEBUG);
    }
    Ok(done.outcome(rows))
}

/// The table's partition columns in the order partition paths name them.
fn sorted_partitions(d: &crate::tables::definition::TableDefinition) -> Vec<&String> {
    let mut sorted: Vec<&String> = d.partition_by.iter().collect();
    sorted.sort();
    sorted
}

/// Per row of some partition columns (one per column of `sorted`): its
/// partition path (see [`row_partition`]), each distinct partition written
/// once and shared, grouped as silver's change files are
/// ([`upsert::by_partition`]). A missing column or a null value: no path.
fn partition_paths(sorted: &[&String], columns: &[Option<&ArrayRef>], rows: usize) -> Vec<Option<Arc<str>>> {
    let Some(present) = columns.iter().map(|c| c.cloned()).collect::<Option<Vec<ArrayRef>>>() else {
        return vec![None; rows];
    };
    let Ok(groups) = upsert::by_partition(&present, rows) else {
        // A type the row format lacks: row by row.
        return (0..rows).map(|row| row_partition(sorted, columns, row).map(Arc::from)).collect();
    };
    let mut paths = vec![None; rows];
    for (values, at) in groups {
        let parts: Option<Vec<String>> = sorted.iter().zip(&values).map(|(p, v)| v.as_ref().map(|v| format!("{p}={v}"))).collect();
        let path: Option<Arc<str>> = parts.map(|parts| Arc::from(parts.join("/")));
        for row in at {
            paths[row as usize] = path.clone();
        }
    }
    paths
}

/// The `col=value/…` path of `row` in `columns` (one per column of
/// `sorted`), as the log names a file's partition; None when a column is
/// missing or a value is null.
fn row_partition(sorted: &[&String], columns: &[Option<&ArrayRef>], row: usize) -> Option<String> {
    let mut parts = Vec::with_capacity(sorted.len());
    for (p, column) in sorted.iter().zip(columns) {
        let value = upsert::partition_value(column.as_ref()?.as_ref(), row)?;
        parts.push(format!("{p}={value}"));
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Date32Array, StringArray};

    #[test]
    fn remembered_partition_paths_are_the_paths_written_row_by_row() {
        let (month, region) = ("month".to_string(), "region".to_string());
        let sorted = vec![&month, &region];
        let months: ArrayRef = Arc::new(Date32Array::from(vec![Some(18_262), Some(18_293), None, Some(18_262), Some(-1)]));
        let regions: ArrayRef = Arc::new(StringArray::from(vec![Some("eu"), Some("us"), Some("eu"), Some("us"), None]));
        let columns = vec![Some(&months), Some(&regions)];
        let paths = partition_paths(&sorted, &columns, 5);
        for row in [0, 1, 2, 3, 4, 0, 3, 2] {
            assert_eq!(paths[row].as_deref(), row_partition(&sorted, &columns, row).as_deref(), "row {row}");
        }
        let only_months = vec![Some(&months)];
        let paths = partition_paths(&sorted[..1], &only_months, 5);
        for row in [0, 1, 2, 3, 0, 4] {
            assert_eq!(paths[row].as_deref(), row_partition(&sorted[..1], &only_months, row).as_deref(), "row {row}");
        }
        assert_eq!(paths[0].as_deref(), Some("month=2020-01-01"));
        assert!(Arc::ptr_eq(paths[0].as_ref().unwrap(), paths[3].as_ref().unwrap()), "one path per partition, shared");
        assert_eq!(partition_paths(&sorted, &[Some(&months), None], 5)[0], None, "a missing column: no path");
        let unpartitioned = partition_paths(&sorted[..0], &[], 5);
        assert_eq!(unpartitioned[3].as_deref(), row_partition(&sorted[..0], &[], 3).as_deref());
    }
}

