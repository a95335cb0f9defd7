//! The exactly-once core, in process, against a `file://` lake and no
//! broker: the writer's skip, conflict-and-retry, hand-over after a revoke
//! and held (deferred) offsets, through the same `Writer::write` and
//! `Writer::settle` the run loop calls. (The
//! end-to-end tests do the same through Kafka, crashes and the chaos harness.)

use lakestream::config::Config;
use lakestream::offsets::{OffsetRange, TopicPartition};
use lakestream::pipeline::decoded::Decoded;
use lakestream::tables::lake::open_tables;
use lakestream::pipeline::writer::{held_offsets, Writer, MAX_DEFER};
use lakestream::source::record::KafkaRecord;
use lakestream::tables::registry::TableRole;
use std::collections::BTreeMap;
use std::time::Duration;

const TOPIC: &str = "orders";

fn config(lake: &str) -> Config {
    let env = vec![
        ("LAKESTREAM_LAKE__URI".to_string(), lake.to_string()),
        ("LAKESTREAM_KAFKA__TOPIC".to_string(), TOPIC.to_string()),
    ];
    Config::load(None, env).unwrap()
}

fn event(offset: i64, seq: i64, qty: i64) -> KafkaRecord {
    let line = 1 + offset % 5;
    let value = serde_json::json!({"op": "c", "ts_ms": 1_700_000_000_000i64, "source": {"table": "order_lines", "seq": seq},
        "after": {"transaction_no": "700001", "line_no": line, "order_date": "2019-12-09", "product_no": "P",
                  "product_name": "Tin", "price": "1.50", "quantity": qty, "customer_no": null, "country": "UK"}});
    KafkaRecord {
        topic: TOPIC.into(),
        partition: 0,
        offset,
        key: Some(b"700001".to_vec()),
        value: Some(value.to_string().into_bytes()),
        headers: vec![],
        timestamp_ms: Some(1_700_000_000_000),
    }
}

fn batch(range: std::ops::Range<i64>) -> (Vec<KafkaRecord>, BTreeMap<TopicPartition, OffsetRange>) {
    let records: Vec<KafkaRecord> = range.clone().map(|o| event(o, o, o)).collect();
    let ranges = BTreeMap::from([(TopicPartition::new(TOPIC, 0), OffsetRange { partition: 0, first: range.start, last: range.end - 1 })]);
    (records, ranges)
}

async fn writer(config: &Config) -> Writer {
    let mut w = Writer::new(TOPIC, open_tables(config).await.unwrap());
    w.assigned(&[TopicPartition::new(TOPIC, 0)]).await.unwrap();
    w
}

async fn write(w: &mut Writer, range: std::ops::Range<i64>) -> Vec<&'static str> {
    let (records, ranges) = batch(range);
    let decoded = Decoded::new(records, &w.readers, 1 << 20);
    w.write(&std::sync::Arc::new(decoded), &std::sync::Arc::new(ranges)).await.unwrap().iter().map(|c| c.table).collect()
}

/// Commits every table's offsets held in memory only (the run loop does at a
/// hand-over, at the end of a run and once they are `MAX_DEFER` old).
async fn settle(w: &mut Writer) -> Vec<&'static str> {
    w.settle(Duration::ZERO).await.unwrap().iter().map(|c| c.table).collect()
}

/// What the table's log says it holds of partition 0 (not the writer's memory).
async fn logged(w: &Writer, table: &str) -> Option<i64> {
    let sink = w.sinks.iter().find(|s| s.table.name() == table).unwrap();
    let tp = TopicPartition::new(TOPIC, 0);
    held_offsets(&sink.table, std::slice::from_ref(&tp)).await.unwrap()[&tp]
}

const HELD_BACK: [&str; 2] = ["quarantine.orders", "silver.order_lines_tombstones"];
const WITH_ROWS: [&str; 2] = ["bronze.orders", "silver.order_lines"];

fn bronze_offsets(w: &Writer) -> Option<i64> {
    w.committed(&TopicPartition::new(TOPIC, 0))
}

async fn rows(config: &Config, table: &str) -> usize {
    let w = Writer::new(TOPIC, open_tables(config).await.unwrap());
    let sink = w.sinks.iter().find(|s| s.table.name() == table).unwrap();
    let (_, stream) = sink.table.delta().scan_table().await.unwrap();
    use futures::TryStreamExt;
    let batches: Vec<_> = stream.try_collect().await.unwrap();
    batches.iter().map(|b| b.num_rows()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_written_twice_is_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&format!("file://{}", dir.path().display()));
    let mut w = writer(&config).await;
    assert_eq!(write(&mut w, 0..10).await, WITH_ROWS, "quarantine and tombstones have nothing to add: their offsets wait");
    assert_eq!(bronze_offsets(&w), Some(9));
    assert!(write(&mut w, 0..10).await.is_empty(), "the tables hold the batch: nothing to commit");
    assert_eq!(write(&mut w, 5..15).await, WITH_ROWS);
    assert_eq!(settle(&mut w).await, HELD_BACK);
    assert_eq!(rows(&config, "bronze.orders").await, 15, "the overlap is skipped");
    assert_eq!(rows(&config, "silver.order_lines").await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_writer_loses_the_race_and_writes_only_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&format!("file://{}", dir.path().display()));
    let mut a = writer(&config).await;
    let mut b = writer(&config).await; // read the offsets before A's commit: stale
    assert_eq!(write(&mut a, 0..10).await, WITH_ROWS);
    assert_eq!(settle(&mut a).await, HELD_BACK);
    // B's commits conflict on the partition's app id; B reloads, sees 0..9 held, commits 10..11 only.
    assert_eq!(write(&mut b, 0..12).await, WITH_ROWS);
    assert_eq!(settle(&mut b).await, HELD_BACK);
    assert_eq!(logged(&b, "quarantine.orders").await, Some(11));
    assert_eq!(rows(&config, "bronze.orders").await, 12);
    assert_eq!(bronze_offsets(&b), Some(11));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_revoke_the_next_owner_resumes_and_the_old_one_cannot_write_twice() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&format!("file://{}", dir.path().display()));
    let mut a = writer(&config).await;
    assert_eq!(write(&mut a, 0..10).await, WITH_ROWS);
    assert_eq!(settle(&mut a).await, HELD_BACK, "a hand-over writes the held offsets first");
    a.revoked(&[TopicPartition::new(TOPIC, 0)]);
    let mut b = writer(&config).await;
    assert_eq!(bronze_offsets(&b), Some(9), "the next owner reads the offsets from the tables");
    assert_eq!(write(&mut b, 10..20).await, WITH_ROWS);
    // The old owner, late, writes a batch it had: it reads the offsets again and skips what is held.
    assert!(write(&mut a, 10..20).await.is_empty());
    assert_eq!(rows(&config, "bronze.orders").await, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_tables_leaves_the_later_tables_to_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&format!("file://{}", dir.path().display()));
    let mut full = writer(&config).await;
    assert_eq!(write(&mut full, 0..10).await, WITH_ROWS);
    assert_eq!(settle(&mut full).await, HELD_BACK);
    // A writer that only got bronze through (the others crashed before committing).
    let tables: Vec<_> = open_tables(&config).await.unwrap().into_iter().filter(|(r, _)| *r == TableRole::Bronze).collect();
    let mut bronze_only = Writer::new(TOPIC, tables);
    bronze_only.assigned(&[TopicPartition::new(TOPIC, 0)]).await.unwrap();
    assert_eq!(write(&mut bronze_only, 10..20).await, vec!["bronze.orders"]);
    // On restart the partition resumes after the lowest version: 9; bronze skips, the others write.
    let mut restarted = writer(&config).await;
    assert_eq!(restarted.committed(&TopicPartition::new(TOPIC, 0)), Some(9));
    assert_eq!(write(&mut restarted, 10..20).await, vec!["silver.order_lines"]);
    assert_eq!(settle(&mut restarted).await, HELD_BACK);
    assert_eq!(rows(&config, "bronze.orders").await, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_held_in_memory_are_read_again_after_a_crash_and_written_when_settled_or_with_rows() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&format!("file://{}", dir.path().display()));
    let mut w = writer(&config).await;
    assert_eq!(write(&mut w, 0..10).await, WITH_ROWS);
    assert_eq!(bronze_offsets(&w), Some(9), "the writer knows every table holds 0..9");
    assert_eq!(logged(&w, "quarantine.orders").await, None, "the quarantine's log does not say so yet");
    assert!(w.deferred(Duration::ZERO) && !w.deferred(MAX_DEFER));
    assert!(w.settle(MAX_DEFER).await.unwrap().is_empty(), "not old enough to be written alone");

    // A crash now: the next writer resumes at the lowest logged offset and
    // reads 0..9 again; nothing of it is written twice.
    let mut next = writer(&config).await;
    assert_eq!(next.committed(&TopicPartition::new(TOPIC, 0)), None);
    assert!(write(&mut next, 0..10).await.is_empty());
    assert_eq!(rows(&config, "bronze.orders").await, 10);
    assert_eq!(rows(&config, "silver.order_lines").await, 5);

    // A record for the quarantine: its commit carries its rows and the held offsets.
    let (mut records, mut ranges) = batch(10..12);
    let mut bad = event(12, 12, 12);
    bad.value = Some(b"{not json".to_vec());
    records.push(bad);
    ranges.get_mut(&TopicPartition::new(TOPIC, 0)).unwrap().last = 12;
    let decoded = Decoded::new(records, &w.readers, 1 << 20);
    let tables: Vec<_> = w.write(&std::sync::Arc::new(decoded), &std::sync::Arc::new(ranges)).await.unwrap().iter().map(|c| c.table).collect();
    assert_eq!(tables, vec!["bronze.orders", "quarantine.orders", "silver.order_lines"]);
    assert_eq!(logged(&w, "quarantine.orders").await, Some(12));
    assert_eq!(rows(&config, "quarantine.orders").await, 1);
    assert_eq!(logged(&w, "silver.order_lines_tombstones").await, None, "no deletes: still held");
    assert_eq!(settle(&mut w).await, vec!["silver.order_lines_tombstones"]);
    assert_eq!(logged(&w, "silver.order_lines_tombstones").await, Some(12));
    assert!(!w.deferred(Duration::ZERO));
    assert!(settle(&mut w).await.is_empty(), "settled: nothing left to write");
}
