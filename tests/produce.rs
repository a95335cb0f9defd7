//! `lakestream produce` against the real broker.

mod common;

use common::*;
use rdkafka::message::Message;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

/// The whole dataset, produced and read back independently.
#[test]
fn full_dataset_round_trips_through_the_broker() {
    let topic = unique("produce-full");
    let out = produce(&topic, &["--partitions", "6"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("produced 536350 events"), "{stdout}");

    let messages = consume_all(&topic, Duration::from_secs(300));
    assert_eq!(messages.len(), 536_350);
    let mut cents: i128 = 0;
    let mut last_seq_by_key: HashMap<String, i64> = HashMap::new();
    let mut partition_of_key: HashMap<String, i32> = HashMap::new();
    let mut lines_573585 = Vec::new();
    let mut na_customers = 0;
    let mut quoted_name_seen = false;
    // consume_all reads each partition in order; check per-key order within partitions.
    for m in &messages {
        let v = json_of(m);
        assert_eq!(v["op"], "c");
        assert_eq!(v["source"]["table"], "order_lines");
        assert!(v["before"].is_null());
        let after = &v["after"];
        let key = std::str::from_utf8(m.key().unwrap()).unwrap().to_string();
        assert_eq!(after["transaction_no"].as_str().unwrap(), key, "the key is the transaction number");
        let seq = v["source"]["seq"].as_i64().unwrap();
        if let Some(prev) = last_seq_by_key.insert(key.clone(), seq) {
            assert!(seq > prev, "events of {key} out of order: {prev} then {seq}");
        }
        let p = *partition_of_key.entry(key.clone()).or_insert(m.partition());
        assert_eq!(p, m.partition(), "all events of {key} in one partition");
        // price: a JSON number with at most two decimals, summed exactly in cents
        let price_text = after["price"].to_string();
        let price = lakestream::order_line::Price::parse(&price_text).unwrap();
        cents += price.cents() as i128 * after["quantity"].as_i64().unwrap() as i128;
        if after["customer_no"].is_null() {
            na_customers += 1;
        }
        if after["product_name"] == "Record Frame 7\" Single Size" {
            quoted_name_seen = true;
        }
        if key == "573585" {
            lines_573585.push(after["line_no"].as_i64().unwrap());
        }
        assert!(after["order_date"].as_str().unwrap().len() == 10);
    }
    assert_eq!(cents, 6_028_002_426, "sum of price x quantity is 60,280,024.26");
    assert_eq!(na_customers, 55, "NA customer numbers become null");
    assert!(quoted_name_seen, "a quoted product name with \"\" round-trips");
    lines_573585.sort_unstable();
    assert_eq!(lines_573585, (1..=1111).collect::<Vec<_>>(), "line_no numbers the 1,111 lines of 573585");
}

/// line_no tells apart exact duplicate rows of one transaction.
#[test]
fn duplicate_rows_are_distinct_lines() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dups.csv");
    std::fs::write(
        &file,
        "TransactionNo,Date,ProductNo,ProductName,Price,Quantity,CustomerNo,Country\r\n\
         581475,12/9/2019,22596,Tin,10.65,36,NA,United Kingdom\r\n\
         581475,12/9/2019,22596,Tin,10.65,36,NA,United Kingdom\r\n",
    )
    .unwrap();
    let topic = unique("produce-dups");
    let mut c = lakestream();
    c.args(["produce", "--brokers", &brokers(), "--topic", &topic, "--partitions", "1", "--input"]).arg(&file);
    run_ok(c);
    let msgs = consume_all(&topic, Duration::from_secs(30));
    let lines: Vec<i64> = msgs.iter().map(|m| json_of(m)["after"]["line_no"].as_i64().unwrap()).collect();
    assert_eq!(lines, vec![1, 2]);
}

fn without_ts(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("ts_ms");
    v
}

/// The same seed gives the same events, with every kind of mutation.
#[test]
fn mutations_are_reproducible_and_complete() {
    let (a, b) = (unique("mut-a"), unique("mut-b"));
    for t in [&a, &b] {
        let out = produce(t, &["--limit", "20000", "--mutations", "0.05", "--seed", "7", "--partitions", "1"]);
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(s.contains("updates") && s.contains("out-of-order"), "summary printed: {s}");
    }
    let ea: Vec<Value> = consume_all(&a, Duration::from_secs(60)).iter().map(|m| without_ts(json_of(m))).collect();
    let eb: Vec<Value> = consume_all(&b, Duration::from_secs(60)).iter().map(|m| without_ts(json_of(m))).collect();
    assert_eq!(ea.len(), eb.len());
    assert!(ea == eb, "same seed, same events");
    assert!(ea.len() > 20_000);
    let ops = |op: &str| ea.iter().filter(|e| e["op"] == op).count();
    assert!(ops("u") > 0 && ops("d") > 0, "updates and deletes");
    for d in ea.iter().filter(|e| e["op"] == "d") {
        assert!(d["after"].is_null() && d["before"].is_object());
    }
    // re-delivery: an identical event twice
    let mut seen = std::collections::HashSet::new();
    let redelivered = ea.iter().filter(|e| !seen.insert(e.to_string())).count();
    assert!(redelivered > 0, "re-deliveries");
    // out of order: for one key, a lower seq after a higher one (not a re-delivery)
    let mut max_seq: HashMap<(String, i64), i64> = HashMap::new();
    let mut late = 0;
    let mut seen = std::collections::HashSet::new();
    for e in &ea {
        let img = if e["after"].is_null() { &e["before"] } else { &e["after"] };
        let key = (img["transaction_no"].as_str().unwrap().to_string(), img["line_no"].as_i64().unwrap());
        let seq = e["source"]["seq"].as_i64().unwrap();
        let first_time = seen.insert(e.to_string());
        let m = max_seq.entry(key).or_insert(seq);
        if seq < *m && first_time {
            late += 1;
        }
        *m = (*m).max(seq);
    }
    assert!(late > 0, "late (out-of-order) events");
}

#[test]
fn bad_input_fails_with_a_precise_error() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("produce-bad");
    let attempt = |file: &std::path::Path| {
        let mut c = lakestream();
        c.args(["produce", "--brokers", &brokers(), "--topic", &topic, "--input"]).arg(file);
        run_fails_within(c, Duration::from_secs(30))
    };
    let missing = attempt(&dir.path().join("nope.csv"));
    assert!(missing.contains("cannot open dataset") && missing.contains("nope.csv"), "{missing}");

    let header = dir.path().join("header.csv");
    std::fs::write(&header, "TransactionNo,Date,Product\r\n1,2,3\r\n").unwrap();
    let e = attempt(&header);
    assert!(e.contains("the header must be `TransactionNo,Date,ProductNo"), "{e}");

    let good = "TransactionNo,Date,ProductNo,ProductName,Price,Quantity,CustomerNo,Country\r\n581475,12/9/2019,1,a,1.00,1,1,UK\r\n";
    let date = dir.path().join("date.csv");
    std::fs::write(&date, format!("{good}581475,12/32/2019,1,a,1.00,1,1,UK\r\n")).unwrap();
    let e = attempt(&date);
    assert!(e.contains("line 3: Date `12/32/2019` is not M/D/YYYY"), "{e}");

    let price = dir.path().join("price.csv");
    std::fs::write(&price, format!("{good}581475,12/9/2019,1,a,1.2.3,1,1,UK\r\n")).unwrap();
    let e = attempt(&price);
    assert!(e.contains("line 3: Price `1.2.3` is not a decimal number"), "{e}");

    // --skip-bad-rows reports instead of stopping
    let mut c = lakestream();
    c.args(["produce", "--brokers", &brokers(), "--topic", &topic, "--skip-bad-rows", "--input"]).arg(&price);
    let out = run_ok(c);
    assert!(String::from_utf8_lossy(&out.stdout).contains("bad rows skipped 1"));

    // an unreachable broker: a clear error within a bounded time
    let mut c = lakestream();
    c.args(["produce", "--brokers", "127.0.0.1:1", "--topic", &topic, "--input"]).arg(&date);
    std::fs::write(&date, good).unwrap();
    let e = run_fails_within(c, Duration::from_secs(40));
    assert!(e.contains("cannot reach Kafka at kafka.brokers = 127.0.0.1:1"), "{e}");
}
