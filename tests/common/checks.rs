//! The two checks every exactly-once test ends with, both through an
//! independent reader (DuckDB's Delta extension): bronze holds each Kafka
//! record exactly once, and silver equals a fold of the topic's events.

use super::*;
use rdkafka::message::Message;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Bronze holds each record of the topic exactly once, and its txn versions are the last offsets.
pub fn assert_exactly_once(lake: &Lake, topic: &str) {
    let ends = end_offsets(topic);
    let n: i64 = ends.iter().map(|(_, e)| e).sum();
    let bronze = lake.table("bronze/orders");
    let opts = lake.reader_opts();
    let rows = duckdb(
        &bronze,
        &opts,
        &format!("SELECT count(*) AS n, count(DISTINCT (\"partition\", \"offset\")) AS distinct_n, \
         count(*) FILTER (WHERE value IS NULL) AS null_values FROM t WHERE topic = '{topic}'"),
    );
    assert_eq!(rows[0]["n"].as_i64(), Some(n), "bronze rows = records produced ({topic})");
    assert_eq!(rows[0]["distinct_n"].as_i64(), Some(n), "no (partition, offset) twice");
    let per_partition = duckdb(
        &bronze,
        &opts,
        &format!("SELECT \"partition\" AS p, max(\"offset\") AS last, count(*) AS c FROM t WHERE topic = '{topic}' GROUP BY 1 ORDER BY 1"),
    );
    for (p, end) in &ends {
        let row = per_partition.iter().find(|r| r["p"].as_i64() == Some(*p as i64)).expect("partition present");
        assert_eq!(row["last"].as_i64(), Some(end - 1));
        assert_eq!(row["c"].as_i64(), Some(*end), "offsets 0..{end} of partition {p}");
        let app = format!("lakestream:bronze.orders:{topic}:{p}");
        assert_eq!(duckdb_txn(&bronze, &opts, &app), Some(end - 1), "txn version of {app}");
    }
}

pub type Key = (String, i64);

/// The expected silver: fold every event of the topic by key, the newest `seq`
/// wins, a delete is remembered (so older events after it do not apply).
pub fn expected_state(topic: &str) -> BTreeMap<Key, Value> {
    let mut state: HashMap<Key, (i64, Option<Value>)> = HashMap::new();
    for m in consume_all(topic, Duration::from_secs(300)) {
        let Some(payload) = m.payload() else { continue };
        let Ok(v) = serde_json::from_slice::<Value>(payload) else { continue };
        let Some(seq) = v["source"]["seq"].as_i64() else { continue };
        let img = if v["op"] == "d" { &v["before"] } else { &v["after"] };
        let key = (img["transaction_no"].as_str().unwrap().to_string(), img["line_no"].as_i64().unwrap());
        let row = if v["op"] == "d" { None } else { Some(v.clone()) };
        match state.get(&key) {
            Some((s, _)) if *s >= seq => {}
            _ => {
                state.insert(key, (seq, row));
            }
        }
    }
    state.into_iter().filter_map(|(k, (_, row))| row.map(|r| (k, r))).collect()
}

/// Silver as DuckDB reads it, keyed, with decimals as text.
pub fn silver_rows(lake: &Lake) -> BTreeMap<Key, Value> {
    let rows = duckdb(
        &lake.table("silver/order_lines"),
        &lake.reader_opts(),
        "SELECT transaction_no, line_no, CAST(order_date AS VARCHAR) AS order_date, product_no, product_name, \
         CAST(price AS VARCHAR) AS price, quantity, customer_no, country, is_cancellation, \
         CAST(line_total AS VARCHAR) AS line_total, _op, _seq, CAST(order_month AS VARCHAR) AS order_month FROM t",
    );
    let mut out = BTreeMap::new();
    for r in rows {
        let key = (r["transaction_no"].as_str().unwrap().to_string(), r["line_no"].as_i64().unwrap());
        assert!(out.insert(key.clone(), r).is_none(), "key {key:?} twice in silver");
    }
    out
}

pub fn cents(text: &str) -> i64 {
    lakestream::order_line::Price::parse(text).unwrap().cents()
}

pub fn assert_silver_matches(lake: &Lake, topic: &str) {
    let expected = expected_state(topic);
    let actual = silver_rows(lake);
    assert_eq!(actual.len(), expected.len(), "silver row count");
    let mut expected_total: i128 = 0;
    let mut actual_total: i128 = 0;
    for (key, event) in &expected {
        let a = actual.get(key).unwrap_or_else(|| panic!("{key:?} missing from silver"));
        let e = &event["after"];
        let ctx = format!("{key:?}: silver {a} vs event {event}");
        assert_eq!(a["order_date"], e["order_date"], "{ctx}");
        assert_eq!(a["product_no"], e["product_no"], "{ctx}");
        assert_eq!(a["product_name"], e["product_name"], "{ctx}");
        assert_eq!(cents(a["price"].as_str().unwrap()), cents(&e["price"].to_string()), "{ctx}");
        assert_eq!(a["quantity"], e["quantity"], "{ctx}");
        assert_eq!(a["customer_no"], e["customer_no"], "{ctx}");
        assert_eq!(a["country"], e["country"], "{ctx}");
        assert_eq!(a["is_cancellation"], json!(key.0.starts_with('C')), "{ctx}");
        assert_eq!(a["_op"], event["op"], "{ctx}");
        assert_eq!(a["_seq"], event["source"]["seq"], "{ctx}");
        assert_eq!(a["order_month"].as_str().unwrap()[..7], e["order_date"].as_str().unwrap()[..7], "{ctx}");
        let line_total = cents(&e["price"].to_string()) as i128 * e["quantity"].as_i64().unwrap() as i128;
        assert_eq!(cents(a["line_total"].as_str().unwrap()) as i128, line_total, "{ctx}");
        expected_total += line_total;
        actual_total += cents(a["line_total"].as_str().unwrap()) as i128;
    }
    assert_eq!(actual_total, expected_total, "sum of line_total");
}

