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
//! table maintenance; an event older than that retention can no longer be told
//! apart from a re-insert.

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
use deltalake::arrow::datatypes::{DataType, Int32Type, Int64Type};
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

/// Tombstones of the owned partitions: key -> (seq of the delete, Kafka partition).
#[derive(Default, Debug)]
pub struct Tombstones {
    by_key: HashMap<LineKey, (i64, i32)>,
}

impl Tombstones {
    pub fn seq(&self, key: &LineKey) -> Option<i64> {
        self.by_key.get(key).map(|(s, _)| *s)
    }

    pub fn record(&mut self, key: LineKey, seq: i64, partition: i32) {
        let entry = self.by_key.entry(key).or_insert((seq, partition));
        if seq > entry.0 {
            *entry = (seq, partition);
        }
    }

    pub fn forget_partitions(&mut self, partitions: &[i32]) {
        self.by_key.retain(|_, (_, p)| !partitions.contains(p));
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
            .with_columns(["transaction_no", "line_no", "_seq", "_kafka_partition"])
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
            let (tx, line) = (tx.as_string::<i32>(), line.as_primitive::<Int32Type>());
            let (seq, part) = (seq.as_primitive::<Int64Type>(), part.as_primitive::<Int32Type>());
            for i in 0..b.num_rows() {
                if tx.is_null(i) || !partitions.contains(&part.value(i)) {
                    continue;
                }
                let key = LineKey { transaction_no: tx.value(i).to_string(), line_no: line.value(i) };
                self.record(key, seq.value(i), part.value(i));
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
