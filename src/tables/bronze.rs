//! Bronze: every Kafka record, raw and append-only, at `<lake>/bronze/orders`.
//!
//! Raw means raw: the value is stored as it came, JSON or not. A key or value
//! that is not valid UTF-8 is stored in `value`/`key` with replacement
//! characters *and* byte for byte in `value_bytes`/`key_bytes`, so nothing is
//! lost; those two columns are null for the (normal) UTF-8 case.
//! Partitioned by `ingest_date`: bronze is read by ingestion time (replays,
//! audits), and a day is a sensible unit for retention.

use crate::source::record::KafkaRecord;
use crate::tables::TableSpec;
use chrono::{DateTime, Utc};
use deltalake::arrow::array::{
    ArrayRef, BinaryBuilder, Date32Builder, Int32Builder, Int64Builder, MapBuilder, MapFieldNames, StringBuilder,
    TimestampMicrosecondBuilder,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use deltalake::arrow::record_batch::RecordBatch;
use std::sync::{Arc, LazyLock};

pub const NAME: &str = "bronze.orders";
pub const PATH: &str = "bronze/orders";

fn map_field_names() -> MapFieldNames {
    MapFieldNames { entry: "key_value".into(), key: "key".into(), value: "value".into() }
}

pub fn utc_timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

static SCHEMA: LazyLock<Arc<Schema>> = LazyLock::new(|| {
    let headers = DataType::Map(
        Arc::new(Field::new(
            "key_value",
            DataType::Struct(
                vec![Field::new("key", DataType::Utf8, false), Field::new("value", DataType::Utf8, true)].into(),
            ),
            false,
        )),
        false,
    );
    Arc::new(Schema::new(vec![
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("key", DataType::Utf8, true),
        Field::new("value", DataType::Utf8, true),
        Field::new("headers", headers, true),
        Field::new("kafka_timestamp", utc_timestamp(), true),
        Field::new("ingested_at", utc_timestamp(), false),
        Field::new("ingest_date", DataType::Date32, false),
        Field::new("key_bytes", DataType::Binary, true),
        Field::new("value_bytes", DataType::Binary, true),
    ]))
});

pub fn spec() -> TableSpec {
    TableSpec {
        name: NAME,
        path: PATH,
        schema: SCHEMA.clone(),
        partition_columns: vec!["ingest_date"],
        properties: vec![("delta.appendOnly", "true")],
    }
}

/// Builds bronze rows for `records`, all stamped with `ingested_at`.
pub fn rows<'a>(records: impl ExactSizeIterator<Item = &'a KafkaRecord>, ingested_at: DateTime<Utc>) -> RecordBatch {
    let n = records.len();
    let mut topic = StringBuilder::with_capacity(n, n * 8);
    let mut partition = Int32Builder::with_capacity(n);
    let mut offset = Int64Builder::with_capacity(n);
    let mut key = StringBuilder::with_capacity(n, n * 8);
    let mut value = StringBuilder::with_capacity(n, n * 300);
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
    let columns: Vec<ArrayRef> = vec![
        Arc::new(topic.finish()),
        Arc::new(partition.finish()),
        Arc::new(offset.finish()),
        Arc::new(key.finish()),
        Arc::new(value.finish()),
        Arc::new(headers.finish()),
        Arc::new(kafka_ts.finish()),
        Arc::new(ingested.finish()),
        Arc::new(ingest_date.finish()),
        Arc::new(key_bytes.finish()),
        Arc::new(value_bytes.finish()),
    ];
    RecordBatch::try_new(SCHEMA.clone(), columns).expect("bronze columns match the bronze schema")
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
        let batch = rows([r, tomb].iter(), Utc::now());
        assert_eq!(batch.num_rows(), 2);
        let bytes = batch.column_by_name("value_bytes").unwrap();
        assert!(!bytes.is_null(0) && bytes.is_null(1));
        assert!(batch.column_by_name("value").unwrap().is_null(1));
        assert!(batch.column_by_name("key_bytes").unwrap().is_null(0));
    }
}
