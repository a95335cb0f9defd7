//! Quarantine: one row per record that could not be decoded into a change
//! event, with the reason, at `<lake>/quarantine/orders`.
//!
//! A quarantined record is also in bronze (bronze takes every record), so
//! `(topic, partition, offset)` finds its exact bytes there. The value kept
//! here is the text of the record, cut at 64 KiB for oversized records.

use crate::change_event::DecodeError;
use crate::source::record::KafkaRecord;
use crate::tables::bronze::utc_timestamp;
use crate::tables::TableSpec;
use chrono::{DateTime, Utc};
use deltalake::arrow::array::{ArrayRef, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::arrow::record_batch::RecordBatch;
use std::sync::{Arc, LazyLock};

pub const NAME: &str = "quarantine.orders";
pub const PATH: &str = "quarantine/orders";
/// How much of a value the quarantine row keeps.
pub const MAX_VALUE_CHARS: usize = 64 * 1024;

static SCHEMA: LazyLock<Arc<Schema>> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("key", DataType::Utf8, true),
        Field::new("value", DataType::Utf8, true),
        Field::new("error_kind", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, false),
        Field::new("kafka_timestamp", utc_timestamp(), true),
        Field::new("quarantined_at", utc_timestamp(), false),
    ]))
});

pub fn spec() -> TableSpec {
    TableSpec {
        name: NAME,
        path: PATH,
        schema: SCHEMA.clone(),
        partition_columns: vec![],
        properties: vec![("delta.appendOnly", "true")],
    }
}

pub fn rows<'a>(
    rejected: impl ExactSizeIterator<Item = (&'a KafkaRecord, &'a DecodeError)>,
    at: DateTime<Utc>,
) -> RecordBatch {
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
    let columns: Vec<ArrayRef> = vec![
        Arc::new(topic.finish()),
        Arc::new(partition.finish()),
        Arc::new(offset.finish()),
        Arc::new(key.finish()),
        Arc::new(value.finish()),
        Arc::new(kind.finish()),
        Arc::new(error.finish()),
        Arc::new(kafka_ts.finish()),
        Arc::new(quarantined.finish()),
    ];
    RecordBatch::try_new(SCHEMA.clone(), columns).expect("quarantine columns match the quarantine schema")
}
