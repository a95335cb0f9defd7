//! Tombstones of deleted rows: a change table's side table (its `[change]`
//! names it, e.g. `silver.order_lines_tombstones`).
//!
//! A change table really deletes a row on a delete (so the change feed shows
//! a `delete`), which leaves nothing to compare a late event against. The
//! tombstones table remembers, per deleted key, the sequence of the delete:
//! an event for that key with a sequence not above it is older than the
//! delete and is dropped, so a late or re-delivered event never resurrects a
//! deleted row. A genuinely newer event (a re-insert) still applies.
//!
//! Its columns: the change table's key columns, and `meta` columns
//! (`sequence`, `kafka_partition`, `kafka_offset`, `written_at`…).
//!
//! The writer keeps the tombstones of the partitions it owns in memory
//! (deletes are rare) and loads them when a partition is assigned.
//! Tombstones older than the retention are pruned by table maintenance, and
//! from memory by the writer (hourly); an event older than that retention
//! can no longer be told apart from a re-insert.

use crate::change::spec::{ColumnSource, Meta};
use crate::change::value::scalar_at;
use crate::change::{Key, Scalar, Seq};
use crate::source::record::KafkaRecord;
use crate::tables::definition::TableDefinition;
use crate::tables::delta::TableError;
use crate::tables::silver::meta_array;
use crate::tables::LakeTable;
use chrono::{DateTime, Utc};
use deltalake::arrow::array::{ArrayRef, RecordBatch};
use futures::TryStreamExt;
use std::collections::HashMap;

/// One deleted key: the sequence of its delete, its Kafka partition, and when
/// the tombstone was written (microseconds since the epoch).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Tombstone {
    seq: Seq,
    partition: i32,
    deleted_at: i64,
}

/// Tombstones of the owned partitions, by key (looked up for every change
/// of a batch: hashed with foldhash, randomly seeded per process, several
/// times faster than std's SipHash on these short keys).
#[derive(Default, Debug)]
pub struct Tombstones {
    by_key: HashMap<Key, Tombstone, foldhash::fast::RandomState>,
}

/// The column of `definition` with `meta`.
pub fn meta_column(definition: &TableDefinition, meta: Meta) -> Option<&str> {
    definition
        .columns
        .iter()
        .find(|c| matches!(c.source, Some(ColumnSource::Meta(m)) if m == meta))
        .map(|c| c.name.as_str())
}

impl Tombstones {
    pub fn seq(&self, key: &Key) -> Option<Seq> {
        self.by_key.get(key).map(|t| t.seq.clone())
    }

    /// Remembers a delete; of two deletes of a key the newer (by sequence) counts.
    pub fn record(&mut self, key: Key, seq: Seq, partition: i32, deleted_at: DateTime<Utc>) {
        let new = Tombstone { seq, partition, deleted_at: deleted_at.timestamp_micros() };
        match self.by_key.get_mut(&key) {
            Some(entry) if new.seq > entry.seq => *entry = new,
            Some(_) => {}
            None => {
                self.by_key.insert(key, new);
            }
        }
    }

    pub fn forget_partitions(&mut self, partitions: &[i32]) {
        self.by_key.retain(|_, t| !partitions.contains(&t.partition));
    }

    /// Forgets the tombstones written before `cutoff`, as maintenance deletes
    /// them from the table: without this the map of a long-running writer
    /// would only grow. Returns how many were forgotten.
    pub fn expire(&mut self, cutoff: DateTime<Utc>) -> usize {
        let before = self.by_key.len();
        let cutoff = cutoff.timestamp_micros();
        self.by_key.retain(|_, t| t.deleted_at >= cutoff);
        before - self.by_key.len()
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Loads the tombstones of `partitions` from the table, whose key columns are `key`.
    pub async fn load(&mut self, table: &LakeTable, definition: &TableDefinition, key: &[String], partitions: &[i32]) -> Result<(), TableError> {
        if table.version().is_none_or(|v| v < 1) {
            return Ok(()); // only the creation commit: empty
        }
        let generic = |e: String| table.wrap_error(deltalake::DeltaTableError::Generic(e));
        let seq = meta_column(definition, Meta::Sequence).ok_or_else(|| generic(format!("{}: no meta = \"sequence\" column", definition.file)))?;
        let part = meta_column(definition, Meta::KafkaPartition);
        let at = meta_column(definition, Meta::WrittenAt);
        let mut columns: Vec<&str> = key.iter().map(String::as_str).collect();
        columns.push(seq);
        columns.extend(part);
        columns.extend(at);
        let (_, stream) = table.delta().scan_table().with_columns(columns.clone()).await.map_err(|e| table.wrap_error(e))?;
        let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(|e| generic(e.to_string()))?;
        for b in batches {
            let column = |name: &str| b.column_by_name(name).cloned();
            let (Some(seq_array), part_array, at_array) = (column(seq), part.and_then(column), at.and_then(column)) else { continue };
            let key_arrays: Vec<ArrayRef> = key.iter().filter_map(|k| column(k)).collect();
            if key_arrays.len() != key.len() {
                continue;
            }
            for i in 0..b.num_rows() {
                let p = part_array.as_ref().map(|a| scalar_at(a.as_ref(), i));
                let p = match p {
                    Some(Scalar::Int(p)) => p as i32,
                    Some(_) => continue,
                    None => -1, // no partition column: kept for every partition
                };
                if p >= 0 && !partitions.contains(&p) {
                    continue;
                }
                let k: Key = key_arrays.iter().map(|a| scalar_at(a.as_ref(), i)).collect();
                let s = match scalar_at(seq_array.as_ref(), i) {
                    Scalar::Int(v) => Seq::Int(v),
                    Scalar::Text(t) => Seq::Text(t),
                    _ => continue,
                };
                let deleted_at = match at_array.as_ref().map(|a| scalar_at(a.as_ref(), i)) {
                    Some(Scalar::Micros(m)) => DateTime::from_timestamp_micros(m).unwrap_or_else(Utc::now),
                    _ => Utc::now(),
                };
                self.record(k, s, p, deleted_at);
            }
        }
        Ok(())
    }
}

/// Rows for the deletes of a batch: (record, key, sequence of the delete).
pub fn rows(definition: &TableDefinition, key_columns: &[String], key_types: &[deltalake::arrow::datatypes::DataType], deletes: &[(&KafkaRecord, &Key, Seq)], now: DateTime<Utc>) -> Result<RecordBatch, String> {
    let mut columns: Vec<(&str, ArrayRef)> = Vec::new();
    let meta_input: Vec<_> = deletes.iter().map(|(r, _, s)| (*r, crate::change::Op::Delete, None, s)).collect();
    for c in &definition.columns {
        let array = match &c.source {
            Some(ColumnSource::Meta(m)) => meta_array(*m, &c.data_type, &meta_input, now)?,
            _ => {
                let position = key_columns
                    .iter()
                    .position(|k| *k == c.name)
                    .ok_or_else(|| format!("{}: column `{}` is neither a key column nor a meta column", definition.file, c.name))?;
                let values: Vec<&Scalar> = deletes.iter().map(|(_, k, _)| &k[position]).collect();
                crate::change::value::array(&key_types[position], &values)?
            }
        };
        columns.push((c.name.as_str(), array));
    }
    definition.batch(columns, deletes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_delete_counts_and_old_tombstones_expire() {
        let key = |t: &str| vec![Scalar::Text(t.into()), Scalar::Int(1)];
        let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 11, d).unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc();
        let mut t = Tombstones::default();
        t.record(key("1"), Seq::Int(5), 0, day(1));
        t.record(key("1"), Seq::Int(3), 0, day(20)); // older delete delivered late: seq and age stay
        t.record(key("2"), Seq::Int(7), 1, day(10));
        t.record(key("2"), Seq::Int(9), 1, day(21)); // newer delete: its time counts
        assert_eq!((t.seq(&key("1")), t.seq(&key("2"))), (Some(Seq::Int(5)), Some(Seq::Int(9))));
        assert_eq!(t.expire(day(15)), 1);
        assert_eq!((t.seq(&key("1")), t.seq(&key("2"))), (None, Some(Seq::Int(9))));
        t.forget_partitions(&[1]);
        assert!(t.is_empty());
    }
}
