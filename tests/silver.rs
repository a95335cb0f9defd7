//! Silver order lines: change-data semantics checked against an independent
//! fold of the events, read back with DuckDB; quarantine routing.

mod common;

use common::*;
use common::checks::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The whole dataset with 5 % mutations; silver equals the fold.
#[test]
fn silver_equals_the_fold_of_the_full_dataset() {
    let lake = Lake::local();
    let topic = unique("silver-full");
    produce(&topic, &["--mutations", "0.05", "--seed", "11", "--partitions", "6"]);
    let mut run = lake.run(&topic, &unique("g"), &[]);
    run.env("LAKESTREAM_BATCH__MAX_RECORDS", "100000");
    run_ok(run);
    assert_silver_matches(&lake, &topic);
}

/// The same on Azurite (a slice of the dataset), through random kill -9 restarts.
#[test]
fn silver_equals_the_fold_after_crashes_on_azurite() {
    silver_after_crashes(Lake::azurite(), "30000");
}

#[test]
fn silver_equals_the_fold_after_crashes_on_local_disk() {
    silver_after_crashes(Lake::local(), "60000");
}

fn silver_after_crashes(lake: Lake, rows: &str) {
    let topic = unique("silver-crash");
    produce(&topic, &["--limit", rows, "--mutations", "0.05", "--seed", "5", "--partitions", "6"]);
    let group = unique("g");
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("kill seed {seed}");
    let mut rng = Rng(seed);
    // Crash points: after uploading a table's files, and between the tables' commits.
    let points = [
        "bronze.orders.files_written",
        "cycle.after_bronze",
        "cycle.after_quarantine",
        "silver.order_lines_tombstones.files_written",
        "cycle.after_tombstones",
        "silver.order_lines.files_written",
        "cycle.after_silver",
    ];
    let (mut aborted, mut killed) = (0, 0);
    for attempt in 0..30 {
        let mut cmd = lake.run(&topic, &group, &[("LAKESTREAM_BATCH__MAX_RECORDS", "1000")]);
        let at_point = attempt < points.len();
        let kill = !at_point && attempt < points.len() + 4;
        if at_point || kill {
            // New business for every crashing run, so that each has batches to crash in
            // (a run that reaches its point late otherwise catches up with the topic first).
            produce(&topic, &["--limit", "3000", "--mutations", "0.05", "--seed", "5", "--first-replay", &(attempt + 1).to_string()]);
        }
        if at_point {
            // Quarantine commits once per run here (clean records: its offsets wait for the
            // run's end or 10 s, see pipeline::writer::MAX_DEFER), so its point is its first commit.
            let count = if points[attempt] == "cycle.after_quarantine" { 1 } else { 1 + rng.below(2) };
            cmd.env("LAKESTREAM_FAILPOINTS", format!("{}={count}", points[attempt]));
        }
        let mut child = Writer(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
        let kill_after = Duration::from_millis(50 + rng.below(400));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                break Some(status);
            }
            if kill && started.elapsed() >= kill_after {
                child.0.kill().unwrap(); // SIGKILL
                child.0.wait().unwrap();
                break None;
            }
            assert!(started.elapsed() < Duration::from_secs(300), "a run hung");
            std::thread::sleep(Duration::from_millis(5));
        };
        match status {
            None => killed += 1,
            Some(s) if s.signal() == Some(6) => aborted += 1,
            Some(s) if s.success() && !at_point && !kill => {
                eprintln!("{aborted} crashes at failpoints, {killed} kill -9");
                assert!(aborted >= 4, "most crash points were reached ({aborted})");
                assert_silver_matches(&lake, &topic);
                return;
            }
            Some(s) if s.success() => {}
            Some(s) => panic!("run failed: {s}"),
        }
    }
    panic!("no run finished");
}

/// Sends hand-written change events to a one-partition topic.
fn send(topic: &str, records: &[(Option<&str>, Option<Value>)]) {
    let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    for (key, value) in records {
        let body = value.as_ref().map(|v| v.to_string());
        let mut r = BaseRecord::<str, str>::to(topic);
        if let Some(k) = key {
            r = r.key(k);
        }
        if let Some(b) = &body {
            r = r.payload(b);
        }
        p.send(r).map_err(|(e, _)| e).unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
}

fn line(qty: i64) -> Value {
    json!({"transaction_no":"900001","line_no":1,"order_date":"2019-12-09","product_no":"22596","product_name":"Tin",
           "price":10.65,"quantity":qty,"customer_no":"13069","country":"United Kingdom"})
}

fn env_of(op: &str, seq: i64, before: Option<Value>, after: Option<Value>) -> Value {
    json!({"op":op,"ts_ms":1_700_000_000_000i64 + seq,"source":{"table":"order_lines","seq":seq},"before":before,"after":after})
}

fn create_topic(topic: &str) {
    // one record through produce creates the topic with one partition; then our events follow
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("one.csv");
    std::fs::write(&f, "TransactionNo,Date,ProductNo,ProductName,Price,Quantity,CustomerNo,Country\r\n100001,1/1/2019,1,x,1.00,1,1,UK\r\n").unwrap();
    let mut c = lakestream();
    c.args(["produce", "--brokers", &brokers(), "--topic", topic, "--partitions", "1", "--input"]).arg(&f);
    run_ok(c);
}

/// insert, update, late older update, delete, late update after delete, re-delivery:
/// the change feed has exactly the expected rows and change types.
#[test]
fn change_feed_of_a_scripted_scenario() {
    let lake = Lake::local();
    let topic = unique("cdf");
    create_topic(&topic);
    let k = Some("900001");
    let steps: Vec<Vec<(Option<&str>, Option<Value>)>> = vec![
        vec![(k, Some(env_of("c", 1, None, Some(line(1)))))],                 // insert
        vec![(k, Some(env_of("u", 3, Some(line(1)), Some(line(3)))))],       // update
        vec![(k, Some(env_of("u", 2, Some(line(1)), Some(line(2)))))],       // late, older update: ignored
        vec![(k, Some(env_of("d", 4, Some(line(3)), None)))],                // delete
        vec![(k, Some(env_of("u", 3, Some(line(1)), Some(line(3)))))],       // late update after delete: ignored
        vec![(k, Some(env_of("c", 1, None, Some(line(1)))))],                 // re-delivery of the insert: ignored
    ];
    let group = unique("g");
    for step in &steps {
        send(&topic, step); // one batch per step: each its own MERGE
        run_ok(lake.run(&topic, &group, &[]));
    }
    let changes = lakestream_cdf(&lake.table("silver/order_lines"));
    let got: Vec<(String, i64, i64)> = changes
        .iter()
        .filter(|c| c.0 == "900001")
        .map(|c| (c.1.clone(), c.2, c.3))
        .collect();
    assert_eq!(
        got,
        vec![
            ("insert".to_string(), 1, 1),
            ("update_preimage".to_string(), 1, 1),
            ("update_postimage".to_string(), 3, 3),
            ("delete".to_string(), 3, 3),
        ],
        "(change type, _seq, quantity) in commit order: {changes:?}"
    );
    assert!(silver_rows(&lake).get(&("900001".to_string(), 1)).is_none(), "deleted and not resurrected");
}

/// A batch of keys the table does not hold is appended (a WRITE commit),
/// even when a key falls inside a file's key range (the file is read, found
/// not to hold it, and left alone); a batch that changes a stored key
/// rewrites that file (a MERGE commit). No silver commit takes a layout lock,
/// so writers of the same month never queue on one. Silver and its change
/// feed are right either way, and no row is there twice.
#[test]
fn new_keys_are_appended_and_changes_of_stored_keys_merged() {
    let lake = Lake::local();
    let topic = unique("append");
    create_topic(&topic); // transaction 100001, 2019-01
    let group = unique("g");
    let of = |no: &str, qty: i64| {
        let mut l = line(qty);
        l["transaction_no"] = json!(no);
        l
    };
    let insert = |no: &'static str, qty: i64| (Some(no), Some(env_of("c", 1, None, Some(of(no, qty)))));
    let steps: Vec<Vec<(Option<&str>, Option<Value>)>> = vec![
        vec![insert("900001", 1), insert("900003", 3)],                                // new keys: append
        vec![insert("900005", 5)],                                                     // new key: append
        vec![(Some("900001"), Some(env_of("u", 2, Some(of("900001", 1)), Some(of("900001", 7)))))], // update: MERGE
        vec![insert("900002", 2)],                                                     // inside 900001..900003, new: append
        vec![insert("900003", 3)],                                                     // re-delivery: nothing to change
    ];
    run_ok(lake.run(&topic, &group, &[]));
    for step in &steps {
        send(&topic, step);
        run_ok(lake.run(&topic, &group, &[]));
    }
    // Each silver commit that carries offsets: (operation, adds files, takes a layout lock).
    let log = lake.dir.as_ref().unwrap().path().join("silver/order_lines/_delta_log");
    let mut commits: Vec<_> = std::fs::read_dir(&log).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect();
    commits.sort();
    let mut ops = Vec::new();
    for c in commits {
        let actions: Vec<Value> = std::fs::read_to_string(&c).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let ids: Vec<&str> = actions.iter().filter_map(|a| a["txn"]["appId"].as_str()).collect();
        if ids.is_empty() {
            continue; // a migration
        }
        let operation = actions.iter().find_map(|a| a["commitInfo"]["operation"].as_str()).unwrap_or("").to_string();
        let adds = actions.iter().any(|a| a.get("add").is_some());
        ops.push((operation, adds, ids.iter().any(|id| id.contains(":layout"))));
    }
    let append = ("WRITE".to_string(), true, false);
    let offsets_alone = ("WRITE".to_string(), false, false); // the re-delivery changes nothing
    let merge = ("MERGE".to_string(), true, false);
    assert_eq!(ops, vec![append.clone(), append.clone(), append.clone(), merge, append, offsets_alone], "silver commits: {ops:?}");
    let rows = silver_rows(&lake);
    let quantity = |no: &str| rows.get(&(no.to_string(), 1)).map(|r| r["quantity"].as_i64().unwrap());
    assert_eq!(
        ["100001", "900001", "900002", "900003", "900005"].map(quantity),
        [Some(1), Some(7), Some(2), Some(3), Some(5)],
        "{rows:?}"
    );
    let inserts = lakestream_cdf(&lake.table("silver/order_lines")).into_iter().filter(|c| c.1 == "insert").count();
    assert_eq!(inserts, 5, "one insert per key in the change feed");
}

/// The change feed as (transaction_no, change type, _seq, quantity), by commit version.
fn lakestream_cdf(uri: &str) -> Vec<(String, String, i64, i64)> {
    let out = lakestream().args(["changes", "--table", uri]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut rows: Vec<(i64, String, String, i64, i64)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["_commit_version"].as_i64().unwrap(),
                v["transaction_no"].as_str().unwrap().to_string(),
                v["_change_type"].as_str().unwrap().to_string(),
                v["_seq"].as_i64().unwrap(),
                v["quantity"].as_i64().unwrap(),
            )
        })
        .collect();
    let order = |t: &str| match t {
        "insert" => 0,
        "update_preimage" => 1,
        "update_postimage" => 2,
        _ => 3,
    };
    rows.sort_by_key(|r| (r.0, order(&r.2)));
    rows.into_iter().map(|r| (r.1, r.2, r.3, r.4)).collect()
}

/// Every bad-input kind lands in quarantine with its kind; the valid records
/// of the same batch reach silver.
#[test]
fn bad_records_are_quarantined_and_valid_ones_reach_silver() {
    let lake = Lake::local();
    let topic = unique("quarantine");
    create_topic(&topic);
    let mut bad_price = line(1);
    bad_price["price"] = json!("ten");
    let mut wrong_type = line(1);
    wrong_type["quantity"] = json!("three");
    let mut missing = line(1);
    missing.as_object_mut().unwrap().remove("transaction_no");
    let big = "x".repeat(200_000); // over the limit set below
    let valid = env_of("c", 10, None, Some(line(7)));
    let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let records: Vec<(Option<&str>, Vec<u8>, &str)> = vec![
        (Some("900001"), b"{not json".to_vec(), "not_json"),
        (Some("900001"), env_of("c", 2, None, Some(bad_price)).to_string().into_bytes(), "invalid_value"),
        (Some("900001"), env_of("c", 3, None, Some(wrong_type)).to_string().into_bytes(), "wrong_type"),
        (Some("900001"), env_of("c", 4, None, Some(missing)).to_string().into_bytes(), "missing_field"),
        (Some("900001"), env_of("x", 5, None, Some(line(1))).to_string().into_bytes(), "unknown_op"),
        (Some("900001"), big.into_bytes(), "oversized"),
        (Some("999999"), env_of("c", 6, None, Some(line(1))).to_string().into_bytes(), "key_mismatch"),
        (Some("900001"), valid.to_string().into_bytes(), ""),
    ];
    for (key, value, _) in &records {
        let mut r = BaseRecord::<str, [u8]>::to(&topic).payload(value);
        if let Some(k) = key {
            r = r.key(k);
        }
        p.send(r).map_err(|(e, _)| e).unwrap();
    }
    p.flush(Duration::from_secs(20)).unwrap();
    let mut run = lake.run(&topic, &unique("g"), &[]);
    run.env("LAKESTREAM_DECODE__MAX_RECORD_BYTES", "100000");
    run_ok(run);
    let q = duckdb(&lake.table("quarantine/orders"), &[], "SELECT \"offset\" AS o, error_kind AS k, error AS e FROM t ORDER BY 1");
    let kinds: Vec<&str> = q.iter().map(|r| r["k"].as_str().unwrap()).collect();
    let expected: Vec<&str> = records.iter().map(|r| r.2).filter(|k| !k.is_empty()).collect();
    assert_eq!(kinds, expected, "{q:?}");
    assert!(q[1]["e"].as_str().unwrap().contains("after.price"), "errors name the field: {q:?}");
    let silver = silver_rows(&lake);
    let row = silver.get(&("900001".to_string(), 1)).expect("the valid record reached silver");
    assert_eq!(row["quantity"], 7);
    // bronze has all of them
    let n = duckdb(&lake.table("bronze/orders"), &[], "SELECT count(*) AS n FROM t");
    assert_eq!(n[0]["n"].as_i64(), Some(records.len() as i64 + 1));
}
