//! Quarantine: one row per record that could not be decoded into a change
//! event, with the reason, at `<lake>/quarantine/orders`.
//!
//! A quarantined record is also in bronze (bronze takes every record), so
//! `(topic, partition, offset)` finds its exact bytes there. The value kept
//! here is the text of the record, cut at 64 KiB for oversized records.

use crate::change::DecodeError;
use crate::source::record::KafkaRecord;
use crate::tables::definition::{self, TableDefinition};
use crate::tables::TableSpec;
use chrono::{DateTime, Utc};
use deltalake::arrow::array::{ArrayRef, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use deltalake::arrow::record_batch::RecordBatch;
use std::sync::Arc;

pub const NAME: &str = "quarantine.orders";
/// How much of a value the quarantine row keeps.
pub const MAX_VALUE_CHARS: usize = 64 * 1024;

/// The table, as `tables/quarantine_orders.toml` defines it.
pub fn definition() -> &'static TableDefinition {
    definition::get(NAME)
}

pub fn spec() -> TableSpec {
    definition().spec()
}

pub fn rows<'a>(
    rejected: impl ExactSizeIterator<Item = (&'a KafkaRecord, &'a DecodeError)>,
    at: DateTime<Utc>,
) -> RecordBatch {
    try_rows(rejected, at).expect("quarantine columns match tables/quarantine_orders.toml (checked at start)")
}

/// The same, or why the columns do not fit the definition.
pub fn try_rows<'a>(
    rejected: impl ExactSizeIterator<Item = (&'a KafkaRecord, &'a DecodeError)>,
    at: DateTime<Utc>,
) -> Result<RecordBatch, String> {
    let n = rejected.len();
    let mut topic = StringBuilder::new();
    let mut partition = Int32Builder::with_capacity(n);
    let mut offset = Int64Builder::with_capacity(n);
    let mut key = StringBuilder::new();
    let mut value = StringBuilder::new();
    let mut kind = StringBuilder::new();
    let mut error = StringBuilder::new();
    let mut kafka_ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut quarantined = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    for (r, e) in rejected {
        topic.append_value(&r.topic);
        partition.append_value(r.partition);
        offset.append_value(r.offset);
        key.append_option(r.key.as_deref().map(String::from_utf8_lossy));
        value.append_option(r.value.as_deref().map(|v| {
            let cut = &v[..v.len().min(MAX_VALUE_CHARS)];
            String::from_utf8_lossy(cut)
        }));
        kind.append_value(e.kind.as_str());
        error.append_value(&e.message);
        kafka_ts.append_option(r.timestamp_ms.map(|ms| ms * 1000));
        quarantined.append_value(at.timestamp_micros());
    }
    let columns: Vec<(&'static str, ArrayRef)> = vec![
        ("topic", Arc::new(topic.finish())),
        ("partition", Arc::new(partition.finish())),
        ("offset", Arc::new(offset.finish())),
        ("key", Arc::new(key.finish())),
        ("value", Arc::new(value.finish())),
        ("error_kind", Arc::new(kind.finish())),
        ("error", Arc::new(error.finish())),
        ("kafka_timestamp", Arc::new(kafka_ts.finish())),
        ("quarantined_at", Arc::new(quarantined.finish())),
    ];
    definition().batch(columns, n)
}
