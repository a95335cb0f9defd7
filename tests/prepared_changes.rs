//! Silver's changes built from the whole batch before its tombstones are
//! known (`silver::prepare`, on a thread of their own while the tables
//! before silver commit), then cut by the remembered deletes, are the
//! changes chosen with those deletes known. In process, no services.

use chrono::Utc;
use lakestream::change::decode::Reader;
use lakestream::change::Seq;
use lakestream::pipeline::decoded::{Decoded, TableReader};
use lakestream::source::record::KafkaRecord;
use lakestream::tables::silver::{newest_per_key, prepare, source_rows, Resolved};
use lakestream::tables::tombstones::Tombstones;
use std::borrow::Cow;

fn record(offset: i64, line: i64, op: &str, seq: i64, qty: i64) -> KafkaRecord {
    let row = serde_json::json!({"transaction_no": "700001", "line_no": line, "order_date": "2019-12-09", "product_no": "P",
              "product_name": "Tin", "price": "1.50", "quantity": qty, "customer_no": null, "country": "UK"});
    let envelope = |before: serde_json::Value, after: serde_json::Value| {
        serde_json::json!({"op": op, "ts_ms": 1_700_000_000_000i64, "source": {"table": "order_lines", "seq": seq}, "before": before, "after": after})
    };
    let value = match op {
        "tombstone" => None, // a Kafka tombstone: deletes what the earlier record of its key wrote
        "d" => Some(envelope(row, serde_json::Value::Null)),
        _ => Some(envelope(serde_json::Value::Null, row)),
    };
    KafkaRecord {
        topic: "orders".into(),
        partition: 0,
        offset,
        key: Some(serde_json::json!({"transaction_no": "700001", "line_no": line}).to_string().into_bytes()),
        value: value.map(|v| v.to_string().into_bytes()),
        headers: vec![],
        timestamp_ms: Some(1_700_000_000_000),
    }
}

fn readers() -> Vec<TableReader> {
    let d = lakestream::tables::registry::change_tables()[0];
    vec![TableReader { reader: Reader::new(d).unwrap(), topic: "orders".into() }]
}

#[test]
fn prepared_changes_cut_by_the_tombstones_are_the_changes_chosen_with_them() {
    let readers = readers();
    // (line, op, sequence, quantity), in offset order. Lines 1-3 are remembered deleted at 50.
    let script = [
        (5, "c", 10, 1), (1, "u", 40, 2), (2, "u", 60, 3), (3, "c", 45, 4), (3, "d", 48, 4), (4, "c", 20, 5),
        (4, "u", 30, 6), (4, "tombstone", 0, 0), (6, "u", 70, 7), (5, "u", 11, 8), (7, "d", 5, 9), (1, "u", 50, 10),
    ];
    let records: Vec<KafkaRecord> = script.iter().enumerate().map(|(o, (line, op, seq, qty))| record(o as i64, *line, op, *seq, *qty)).collect();
    let decoded = Decoded::new(records, &readers, 1 << 20);
    assert_eq!(decoded.rejected(), 0);
    let events = &decoded.tables[0].events;
    let mut tombstones = Tombstones::default();
    for at in [1, 2, 4] {
        tombstones.record(events[at].as_ref().unwrap().key.clone(), Seq::Int(50), 0, Utc::now());
    }
    let (now, rows, reader) = (Utc::now(), &decoded.tables[0].rows, &readers[0].reader);

    let prepared = prepare(reader, &decoded.records, events, rows, now).expect("the Kafka tombstone follows a change of its key");
    let got = prepared.after_tombstones(events, &tombstones);

    // Chosen with the tombstones known; the Kafka tombstone deletes line 4 at the sequence it found (30).
    let resolved = Resolved::from_iter([((0, 7), Seq::Int(30))]);
    let all = decoded.records.iter().zip(events).enumerate().filter_map(|(at, (r, e))| e.as_ref().map(|e| (at, r, e)));
    let chosen = newest_per_key(all, &resolved, |k| tombstones.seq(k));
    let (want, _) = source_rows(reader, rows, &chosen, now).unwrap();
    assert_eq!(got.rows, want.rows);
    assert_eq!(got.deletes, want.deletes);
    assert_eq!(got.search, want.search);
    // Line 1 (never newer than its delete) is gone; line 3 keeps its own delete; lines 2 and 4-7 stay.
    assert_eq!(got.rows.num_rows(), 6);
    assert_eq!(got.deletes.iter().filter(|d| **d).count(), 3, "lines 3, 4 and 7");
    assert!(matches!(got, Cow::Owned(_)), "a change was cut");
    assert!(matches!(prepared.after_tombstones(events, &Tombstones::default()), Cow::Borrowed(_)), "nothing remembered: nothing cut");
}

#[test]
fn a_kafka_tombstone_that_needs_the_table_is_not_prepared() {
    let readers = readers();
    let decoded = Decoded::new(vec![record(0, 9, "c", 1, 1), record(1, 8, "tombstone", 0, 0)], &readers, 1 << 20);
    let t = &decoded.tables[0];
    assert!(prepare(&readers[0].reader, &decoded.records, &t.events, &t.rows, Utc::now()).is_none());
}
