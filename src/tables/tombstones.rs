//! Tombstones of deleted order lines, at `<lake>/silver/order_lines_tombstones`.
//!
//! Silver really deletes a row on `op:"d"` (so the change feed shows a
//! `delete`), which leaves nothing to compare a late event against. This side
//! table remembers, per deleted key, the `seq` of the delete: an event for that
//! key with a `seq` not above it is older than the delete and is dropped, so a
//! late or re-delivered event never resurrects a deleted line. A genuinely
//! newer event (a re-insert) still applies.
//!
//! The writer keeps the tombstones of the partitions it owns in memory (deletes
//! are rare: ~1 % of events with `--mutations 0.05`) and loads them when a
//! partition is assigned. Tombstones older than the retention are pruned by
//! table maintenance, and from memory by the writer (hourly); an event older
//! than that retention can no longer be told apart from a re-insert.

use crate::change_event::{ChangeEvent, LineKey};
use crate::source::record::KafkaRecord;
use crate::tables::delta::TableError;
use crate::tables::definition::{self, TableDefinition};
use crate::tables::{LakeTable, TableSpec};
use chrono::{DateTime, Utc};
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use deltalake::arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use std::collections::HashMap;
use std::sync::Arc;

pub const NAME: &str = "silver.order_lines_tombstones";

/// The table, as `tables/silver_order_lines_tombstones.toml` defines it.
pub fn definition() -> &'static TableDefinition {
    definition::get(NAME)
}

pub fn spec() -> TableSpec {
    definition().spec()
}

/// One deleted key: the seq of its delete, its Kafka partition, and when the
/// tombstone was written (microseconds since the epoch, the `deleted_at` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tombstone {
    seq: i64,
    partition: i32,
    deleted_at: i64,
}

/// Tombstones of the owned partitions, by key.
#[derive(Default, Debug)]
pub struct Tombstones {
    by_key: HashMap<LineKey, Tombstone>,
}

impl Tombstones {
    pub fn seq(&self, key: &LineKey) -> Option<i64> {
        self.by_key.get(key).map(|t| t.seq)
    }

    /// Remembers a delete; of two deletes of a key the newer (by seq) counts.
    pub fn record(&mut self, key: LineKey, seq: i64, partition: i32, deleted_at: DateTime<Utc>) {
        let new = Tombstone { seq, partition, deleted_at: deleted_at.timestamp_micros() };
        let entry = self.by_key.entry(key).or_insert(new);
        if seq > entry.seq {
            *entry = new;
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

    /// Loads the tombstones of `partitions` from the table.
    pub async fn load(&mut self, table: &LakeTable, partitions: &[i32]) -> Result<(), TableError> {
        if table.version().is_none_or(|v| v < 1) {
            return Ok(()); // only the creation commit: empty
        }
        let (_, stream) = table
            .delta()
            .scan_table()
            .with_columns(["transaction_no", "line_no", "_seq", "_kafka_partition", "deleted_at"])
            .await
            .map_err(|e| table.wrap_error(e))?;
        let batches: Vec<RecordBatch> = stream
            .try_collect()
            .await
            .map_err(|e| table.wrap_error(deltalake::DeltaTableError::Generic(e.to_string())))?;
        let generic = |e: deltalake::arrow::error::ArrowError| table.wrap_error(deltalake::DeltaTableError::Generic(e.to_string()));
        for b in batches {
            // The scan may hand back view or dictionary encodings: normalise first.
            let tx = cast(b.column(0), &DataType::Utf8).map_err(generic)?;
            let line = cast(b.column(1), &DataType::Int32).map_err(generic)?;
            let seq = cast(b.column(2), &DataType::Int64).map_err(generic)?;
            let part = cast(b.column(3), &DataType::Int32).map_err(generic)?;
            let at = cast(b.column(4), &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))).map_err(generic)?;
            let (tx, line) = (tx.as_string::<i32>(), line.as_primitive::<Int32Type>());
            let (seq, part) = (seq.as_primitive::<Int64Type>(), part.as_primitive::<Int32Type>());
            let at = at.as_primitive::<TimestampMicrosecondType>();
            for i in 0..b.num_rows() {
                if tx.is_null(i) || !partitions.contains(&part.value(i)) {
                    continue;
                }
                let key = LineKey { transaction_no: tx.value(i).to_string(), line_no: line.value(i) };
                let deleted_at = DateTime::from_timestamp_micros(at.value(i)).unwrap_or_else(Utc::now);
                self.record(key, seq.value(i), part.value(i), deleted_at);
            }
        }
        Ok(())
    }
}

/// Rows for the delete events of a batch.
pub fn rows<'a>(deletes: impl Iterator<Item = (&'a KafkaRecord, &'a ChangeEvent)>, now: DateTime<Utc>) -> RecordBatch {
    try_rows(deletes, now).expect("tombstone columns match tables/silver_order_lines_tombstones.toml (checked at start)")
}

/// The same, or why the columns do not fit the definition.
pub fn try_rows<'a>(
    deletes: impl Iterator<Item = (&'a KafkaRecord, &'a ChangeEvent)>,
    now: DateTime<Utc>,
) -> Result<RecordBatch, String> {
    let mut n = 0;
    let mut tx = StringBuilder::new();
    let mut line = Int32Builder::new();
    let mut seq = Int64Builder::new();
    let mut part = Int32Builder::new();
    let mut offset = Int64Builder::new();
    let mut at = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    for (r, e) in deletes {
        tx.append_value(&e.key.transaction_no);
        line.append_value(e.key.line_no);
        seq.append_value(e.seq);
        part.append_value(r.partition);
        offset.append_value(r.offset);
        at.append_value(now.timestamp_micros());
        n += 1;
    }
    let columns: Vec<(&'static str, ArrayRef)> = vec![
        ("transaction_no", Arc::new(tx.finish())),
        ("line_no", Arc::new(line.finish())),
        ("_seq", Arc::new(seq.finish())),
        ("_kafka_partition", Arc::new(part.finish())),
        ("_kafka_offset", Arc::new(offset.finish())),
        ("deleted_at", Arc::new(at.finish())),
    ];
    definition().batch(columns, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_delete_counts_and_old_tombstones_expire() {
        let key = |t: &str| LineKey { transaction_no: t.into(), line_no: 1 };
        let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 11, d).unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc();
        let mut t = Tombstones::default();
        t.record(key("1"), 5, 0, day(1));
        t.record(key("1"), 3, 0, day(20)); // older delete delivered late: seq and age stay
        t.record(key("2"), 7, 1, day(10));
        t.record(key("2"), 9, 1, day(21)); // newer delete: its time counts
        assert_eq!((t.seq(&key("1")), t.seq(&key("2"))), (Some(5), Some(9)));
        assert_eq!(t.expire(day(15)), 1);
        assert_eq!((t.seq(&key("1")), t.seq(&key("2"))), (None, Some(9)));
        t.forget_partitions(&[1]);
        assert!(t.is_empty());
    }
}
