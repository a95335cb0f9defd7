//! Bronze: every Kafka record, raw and append-only, at `<lake>/bronze/orders`.
//!
//! Raw means raw: the value is stored as it came, JSON or not. A key or value
//! that is not valid UTF-8 is stored in `value`/`key` with replacement
//! characters *and* byte for byte in `value_bytes`/`key_bytes`, so nothing is
//! lost; those two columns are null for the (normal) UTF-8 case.
//! Partitioned by `ingest_date`: bronze is read by ingestion time (replays,
//! audits), and a day is a sensible unit for retention.

use crate::source::record::KafkaRecord;
use crate::tables::definition::{self, TableDefinition};
use crate::tables::TableSpec;
use chrono::{DateTime, Utc};
use deltalake::arrow::array::{
    ArrayRef, BinaryBuilder, Date32Builder, Int32Builder, Int64Builder, MapBuilder, MapFieldNames, StringBuilder,
    TimestampMicrosecondBuilder,
};
use deltalake::arrow::record_batch::RecordBatch;
use std::sync::Arc;

pub const NAME: &str = "bronze.orders";

fn map_field_names() -> MapFieldNames {
    MapFieldNames { entry: "key_value".into(), key: "key".into(), value: "value".into() }
}


/// The table, as `tables/bronze_orders.toml` defines it.
pub fn definition() -> &'static TableDefinition {
    definition::get(NAME)
}

pub fn spec() -> TableSpec {
    definition().spec()
}

/// Bronze rows are built and appended this many records at a time (see
/// [`LakeTable::append`](crate::tables::LakeTable::append)): ~5 MB of the
/// order records' values, where a whole batch built at once held all of its
/// values in Arrow and again in delta-rs' copy of it by partition.
pub const PART_ROWS: usize = 16_384;

/// Bronze rows for `records`, built [`PART_ROWS`] records at a time as the
/// append takes them.
pub fn parts<'a>(records: &'a [&'a KafkaRecord], ingested_at: DateTime<Utc>) -> impl Iterator<Item = RecordBatch> + Send + 'a {
    records.chunks(PART_ROWS).map(move |part| rows(part, ingested_at))
}

/// Builds bronze rows for `records`, all stamped with `ingested_at`.
pub fn rows(records: &[&KafkaRecord], ingested_at: DateTime<Utc>) -> RecordBatch {
    try_rows(records, ingested_at).expect("bronze columns match tables/bronze_orders.toml (checked at start)")
}

/// The same, or why the columns do not fit the definition.
///
/// The text columns are sized to the batch before the first row: a builder
/// that grows by doubling copies a batch's values over and over, each time
/// into memory the process has not touched yet.
pub fn try_rows(records: &[&KafkaRecord], ingested_at: DateTime<Utc>) -> Result<RecordBatch, String> {
    let n = records.len();
    let len = |b: &Option<Vec<u8>>| b.as_ref().map_or(0, Vec::len);
    let (topic_bytes, key_bytes_total, value_bytes_total) =
        records.iter().fold((0, 0, 0), |(t, k, v), r| (t + r.topic.len(), k + len(&r.key), v + len(&r.value)));
    let mut topic = StringBuilder::with_capacity(n, topic_bytes);
    let mut partition = Int32Builder::with_capacity(n);
    let mut offset = Int64Builder::with_capacity(n);
    let mut key = StringBuilder::with_capacity(n, key_bytes_total);
    let mut value = StringBuilder::with_capacity(n, value_bytes_total);
    let mut headers = MapBuilder::new(Some(map_field_names()), StringBuilder::new(), StringBuilder::new());
    let mut kafka_ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut ingested = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut ingest_date = Date32Builder::with_capacity(n);
    let mut key_bytes = BinaryBuilder::new();
    let mut value_bytes = BinaryBuilder::new();
    let ingested_us = ingested_at.timestamp_micros();
    let ingest_day = days_since_epoch(ingested_at);
    for r in records {
        topic.append_value(&r.topic);
        partition.append_value(r.partition);
        offset.append_value(r.offset);
        append_text(&mut key, &mut key_bytes, r.key.as_deref());
        append_text(&mut value, &mut value_bytes, r.value.as_deref());
        if r.headers.is_empty() {
            headers.append(false).expect("map builder");
        } else {
            for (k, v) in &r.headers {
                headers.keys().append_value(k);
                match v {
                    Some(v) => headers.values().append_value(String::from_utf8_lossy(v)),
                    None => headers.values().append_null(),
                }
            }
            headers.append(true).expect("map builder");
        }
        kafka_ts.append_option(r.timestamp_ms.map(|ms| ms * 1000));
        ingested.append_value(ingested_us);
        ingest_date.append_value(ingest_day);
    }
    let columns: Vec<(&'static str, ArrayRef)> = vec![
        ("topic", Arc::new(topic.finish())),
        ("partition", Arc::new(partition.finish())),
        ("offset", Arc::new(offset.finish())),
        ("key", Arc::new(key.finish())),
        ("value", Arc::new(value.finish())),
        ("headers", Arc::new(headers.finish())),
        ("kafka_timestamp", Arc::new(kafka_ts.finish())),
        ("ingested_at", Arc::new(ingested.finish())),
        ("ingest_date", Arc::new(ingest_date.finish())),
        ("key_bytes", Arc::new(key_bytes.finish())),
        ("value_bytes", Arc::new(value_bytes.finish())),
    ];
    definition().batch(columns, n)
}

/// Text column plus a bytes column that is only filled when the text is not UTF-8.
fn append_text(text: &mut StringBuilder, bytes: &mut BinaryBuilder, raw: Option<&[u8]>) {
    match raw {
        None => {
            text.append_null();
            bytes.append_null();
        }
        Some(raw) => match std::str::from_utf8(raw) {
            Ok(s) => {
                text.append_value(s);
                bytes.append_null();
            }
            Err(_) => {
                text.append_value(String::from_utf8_lossy(raw));
                bytes.append_value(raw);
            }
        },
    }
}

pub fn days_since_epoch(t: DateTime<Utc>) -> i32 {
    t.date_naive().signed_duration_since(chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_values_survive_byte_for_byte() {
        let r = KafkaRecord {
            topic: "orders".into(),
            partition: 2,
            offset: 9,
            key: Some(b"k".to_vec()),
            value: Some(vec![0xff, b'a']),
            headers: vec![("h".into(), Some(b"v".to_vec())), ("n".into(), None)],
            timestamp_ms: Some(1_000),
        };
        let tomb = KafkaRecord { value: None, headers: vec![], ..r.clone() };
        let batch = rows(&[&r, &tomb], Utc::now());
        assert_eq!(batch.num_rows(), 2);
        let bytes = batch.column_by_name("value_bytes").unwrap();
        assert!(!bytes.is_null(0) && bytes.is_null(1));
        assert!(batch.column_by_name("value").unwrap().is_null(1));
        assert!(batch.column_by_name("key_bytes").unwrap().is_null(0));
    }
}
