//! Change tables added by definition files alone (`--tables DIR`,
//! `--migrations DIR`), fed by real connectors' records: Debezium's
//! PostgreSQL, MySQL and SQL Server envelopes (tests/fixtures/debezium,
//! written from Debezium's documentation), a plain-row topic, and the
//! shipped order_lines table, in one `lakestream run`. Read back with DuckDB.

mod common;

use common::checks::*;
use common::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// How a connector's customers table is declared.
struct Connector {
    fixture: &'static str,
    sequence_by: &'static str,
    seq_type: &'static str,
    unit: &'static str,
}

const POSTGRES: &str = r#"{ fields = ["source.lsn"] }"#;
const MYSQL: &str = r#"{ fields = ["source.file", "source.pos", "source.row"], bits = [20, 32, 11] }"#;
const SQLSERVER: &str = r#"{ fields = ["source.commit_lsn", "source.change_lsn", "source.event_serial_no"] }"#;

fn connectors() -> Vec<Connector> {
    vec![
        Connector { fixture: "customers_postgres_schemas", sequence_by: POSTGRES, seq_type: "bigint", unit: "micros" },
        Connector { fixture: "customers_postgres_plain", sequence_by: POSTGRES, seq_type: "bigint", unit: "micros" },
        Connector { fixture: "out_of_order_postgres_plain", sequence_by: POSTGRES, seq_type: "bigint", unit: "micros" },
        Connector { fixture: "customers_mysql_plain", sequence_by: MYSQL, seq_type: "bigint", unit: "millis" },
        Connector { fixture: "customers_sqlserver_schemas", sequence_by: SQLSERVER, seq_type: "string", unit: "nanos" },
    ]
}

/// A definitions directory: the shipped tables and migrations plus the
/// customers and order headers tables and their migration.
struct Definitions {
    dir: tempfile::TempDir,
}

impl Definitions {
    fn new(c: &Connector, customers_topic: &str, headers_topic: &str) -> Definitions {
        let dir = tempfile::tempdir().unwrap();
        let (tables, migrations) = (dir.path().join("tables"), dir.path().join("migrations"));
        std::fs::create_dir_all(&tables).unwrap();
        std::fs::create_dir_all(&migrations).unwrap();
        for entry in std::fs::read_dir(repo("tables")).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "toml") {
                std::fs::copy(&p, tables.join(p.file_name().unwrap())).unwrap();
            }
        }
        for entry in std::fs::read_dir(repo("migrations")).unwrap() {
            let p = entry.unwrap().path();
            std::fs::copy(&p, migrations.join(p.file_name().unwrap())).unwrap();
        }
        let fill = |text: String| {
            text.replace("@TOPIC@", customers_topic)
                .replace("@HEADERS_TOPIC@", headers_topic)
                .replace("@SEQUENCE_BY@", c.sequence_by)
                .replace("@SEQ_TYPE@", c.seq_type)
                .replace("@UNIT@", c.unit)
                .replace("@CONNECTOR@", c.fixture)
        };
        let fixtures = repo("tests/fixtures/tables");
        for (from, to) in [
            ("customers.toml.in", tables.join("silver_customers.toml")),
            ("customers_tombstones.toml.in", tables.join("silver_customers_tombstones.toml")),
            ("order_headers.toml", tables.join("silver_order_headers.toml")),
            ("0003_customers.sql.in", migrations.join("0003_customers.sql")),
        ] {
            std::fs::write(to, fill(std::fs::read_to_string(fixtures.join(from)).unwrap())).unwrap();
        }
        Definitions { dir }
    }

    fn apply(&self, c: &mut Command) {
        c.env("LAKESTREAM_TABLES", self.dir.path().join("tables")).env("LAKESTREAM_MIGRATIONS", self.dir.path().join("migrations"));
    }
}

fn create_topic(topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let result = rt.block_on(admin.create_topics([&new], &AdminOptions::new())).unwrap();
    for r in result {
        r.unwrap();
    }
    wait_until("the topic's metadata", Duration::from_secs(30), || std::panic::catch_unwind(|| end_offsets(topic)).is_ok());
}

/// Sends records (key and value as JSON; None: absent / a tombstone), in order, to partition 0.
fn send(topic: &str, records: &[(Option<Value>, Option<Value>)]) {
    let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    for (key, value) in records {
        let (k, v) = (key.as_ref().map(|k| k.to_string()), value.as_ref().map(|v| v.to_string()));
        let mut r = BaseRecord::<str, str>::to(topic).partition(0);
        if let Some(k) = &k {
            r = r.key(k);
        }
        if let Some(v) = &v {
            r = r.payload(v);
        }
        p.send(r).map_err(|(e, _)| e).unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
}

fn fixture(name: &str) -> Vec<(Option<Value>, Option<Value>)> {
    let text = std::fs::read_to_string(repo(&format!("tests/fixtures/debezium/{name}.jsonl"))).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (Some(v["key"].clone()).filter(|k| !k.is_null()), Some(v["value"].clone()).filter(|v| !v.is_null()))
        })
        .collect()
}

fn customers(lake: &Lake) -> Vec<Value> {
    duckdb(
        &lake.table("silver/customers"),
        &lake.reader_opts(),
        "SELECT id, first_name, last_name, email, CAST(birth_date AS VARCHAR) AS birth_date, \
         strftime(created_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%fZ') AS created_at, \
         strftime(updated_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%fZ') AS updated_at, \
         CAST(credit_limit AS VARCHAR) AS credit_limit, active FROM t ORDER BY id",
    )
}

fn expected_customers() -> Vec<Value> {
    serde_json::from_str(&std::fs::read_to_string(repo("tests/fixtures/debezium/expected_customers.json")).unwrap()).unwrap()
}

/// Plain-row order headers: versions, a soft delete, a tombstone, a re-insert.
fn headers_records() -> Vec<(Option<Value>, Option<Value>)> {
    let h = |id: &str, version: i64, status: &str, extra: Value| {
        let mut v = json!({"order_id": id, "customer_id": 1001, "status": status, "total": "99.90",
            "placed_at": "2024-05-02T08:00:00Z", "version": version});
        if let Value::Object(m) = extra {
            v.as_object_mut().unwrap().extend(m);
        }
        (Some(Value::String(id.into())), Some(v))
    };
    vec![
        h("A-1", 1, "placed", json!({})),
        h("A-2", 1, "placed", json!({})),
        h("A-3", 1, "placed", json!({})),
        h("A-1", 3, "shipped", json!({"carrier": "dhl"})), // a field without a column: ignored and counted
        h("A-1", 2, "paid", json!({})),                    // late: older than what silver holds
        h("A-2", 2, "cancelled", json!({"__deleted": "true"})), // a soft delete (ExtractNewRecordState)
        (Some(json!("A-3")), None),                          // a tombstone
        h("A-4", 1, "placed", json!({})),
    ]
}

fn headers(lake: &Lake) -> Vec<(String, String)> {
    duckdb(&lake.table("silver/order_headers"), &lake.reader_opts(), "SELECT order_id, status FROM t ORDER BY order_id")
        .into_iter()
        .map(|r| (r["order_id"].as_str().unwrap().to_string(), r["status"].as_str().unwrap().to_string()))
        .collect()
}

/// Every connector's topic folds to the same customers (in the connector's
/// order, events spread over many small batches), next to order_lines and a
/// plain-row table, in one run; every table exactly once.
#[test]
fn debezium_connectors_and_plain_rows_fold_into_tables_defined_by_files() {
    for c in connectors() {
        let lake = Lake::local();
        let (orders, customers_topic, headers_topic) = (unique("orders"), unique("customers"), unique("headers"));
        let defs = Definitions::new(&c, &customers_topic, &headers_topic);
        produce(&orders, &["--limit", "300", "--mutations", "0.1", "--seed", "3", "--partitions", "2"]);
        create_topic(&customers_topic, 1);
        create_topic(&headers_topic, 1);
        send(&customers_topic, &fixture(c.fixture));
        send(&headers_topic, &headers_records());
        let mut run = lake.run(&orders, &unique("g"), &[("LAKESTREAM_BATCH__MAX_RECORDS", "3")]);
        defs.apply(&mut run);
        run_ok(run);
        assert_eq!(customers(&lake), expected_customers(), "{}", c.fixture);
        let quarantined = duckdb(&lake.table("quarantine/orders"), &lake.reader_opts(), "SELECT topic, error_kind, error FROM t");
        assert_eq!(quarantined, Vec::<Value>::new(), "{}: nothing quarantined", c.fixture);
        assert_eq!(
            headers(&lake),
            vec![("A-1".to_string(), "shipped".to_string()), ("A-4".to_string(), "placed".to_string())],
            "{}",
            c.fixture
        );
        assert_silver_matches(&lake, &orders);
        // Bronze holds every record of every topic once.
        let bronze = duckdb(&lake.table("bronze/orders"), &lake.reader_opts(), "SELECT topic, count(*) AS n, count(DISTINCT (\"partition\", \"offset\")) AS d FROM t GROUP BY 1 ORDER BY 1");
        for (topic, n) in [(&customers_topic, fixture(c.fixture).len() as i64), (&headers_topic, headers_records().len() as i64)] {
            let row = bronze.iter().find(|r| r["topic"] == topic.as_str()).unwrap_or_else(|| panic!("{topic} in bronze: {bronze:?}"));
            assert_eq!((row["n"].as_i64(), row["d"].as_i64()), (Some(n), Some(n)), "{topic}");
        }
        let app = format!("lakestream:silver.customers:{customers_topic}:0");
        assert_eq!(duckdb_txn(&lake.table("silver/customers"), &lake.reader_opts(), &app), Some(fixture(c.fixture).len() as i64 - 1));
    }
}

/// The three tables in one process, SIGKILLed at random and crashed at every
/// failpoint: each ends exactly once, equal to its fold.
#[test]
fn three_tables_in_one_run_are_exactly_once_through_crashes() {
    let c = &connectors()[0];
    let lake = Lake::local();
    let (orders, customers_topic, headers_topic) = (unique("orders"), unique("customers"), unique("headers"));
    let defs = Definitions::new(c, &customers_topic, &headers_topic);
    produce(&orders, &["--limit", "5000", "--mutations", "0.05", "--seed", "8", "--partitions", "3"]);
    create_topic(&customers_topic, 1);
    create_topic(&headers_topic, 1);
    send(&customers_topic, &fixture(c.fixture));
    send(&headers_topic, &headers_records());
    let group = unique("g");
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("kill seed {seed}");
    let mut rng = Rng(seed);
    // The customers' points first: they are reached only while the customers' records are not all in.
    let points = [
        "cycle.after:silver.customers_tombstones",
        "cycle.after:silver.customers",
        "cycle.after:silver.order_headers",
        "cycle.after_bronze",
        "cycle.after_quarantine",
        "cycle.after_tombstones",
        "cycle.after_silver",
    ];
    let mut crashed = 0;
    for attempt in 0..40 {
        let at_point = attempt < points.len();
        let kill = !at_point && attempt < points.len() + 5;
        if at_point || kill {
            // New business for every crashing run, so that each has batches to crash in.
            produce(&orders, &["--limit", "2000", "--mutations", "0.05", "--seed", "8", "--first-replay", &(attempt + 1).to_string()]);
        }
        let mut cmd = lake.run(&orders, &group, &[("LAKESTREAM_BATCH__MAX_RECORDS", "700")]);
        defs.apply(&mut cmd);
        if at_point {
            cmd.env("LAKESTREAM_FAILPOINTS", format!("{}=1", points[attempt]));
        }
        let mut child = Writer(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
        let kill_after = Duration::from_millis(100 + rng.below(1000));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                break Some(status);
            }
            if kill && started.elapsed() >= kill_after {
                child.0.kill().unwrap();
                child.0.wait().unwrap();
                break None;
            }
            assert!(started.elapsed() < Duration::from_secs(300), "a run hung");
            std::thread::sleep(Duration::from_millis(5));
        };
        eprintln!("run {attempt}: {}", status.map_or("killed".to_string(), |s| s.to_string()));
        match status {
            None => crashed += 1,
            Some(s) if s.signal() == Some(6) => crashed += 1,
            Some(s) if s.success() && !at_point && !kill => {
                eprintln!("{crashed} crashes");
                assert!(crashed >= points.len(), "every failpoint was reached, and kills ({crashed})");
                assert_exactly_once(&lake, &orders);
                assert_silver_matches(&lake, &orders);
                assert_eq!(customers(&lake), expected_customers());
                assert_eq!(headers(&lake), vec![("A-1".to_string(), "shipped".to_string()), ("A-4".to_string(), "placed".to_string())]);
                let dup = duckdb(&lake.table("silver/customers"), &lake.reader_opts(), "SELECT count(*) - count(DISTINCT id) AS d FROM t");
                assert_eq!(dup[0]["d"].as_i64(), Some(0));
                return;
            }
            Some(s) if s.success() => {}
            Some(s) => panic!("run failed: {s}"),
        }
    }
    panic!("no run finished");
}

fn order_line(seq: i64, qty: i64) -> Value {
    json!({"op": "c", "ts_ms": 1_700_000_000_000i64, "source": {"table": "order_lines", "seq": seq}, "before": null,
        "after": {"transaction_no": "900777", "line_no": 1, "order_date": "2019-12-09", "product_no": "P", "product_name": "Tin",
                  "price": "1.50", "quantity": qty, "customer_no": null, "country": "UK"}})
}

fn line_state(lake: &Lake) -> Vec<(i64, i64)> {
    duckdb(&lake.table("silver/order_lines"), &lake.reader_opts(), "SELECT _seq, quantity FROM t WHERE transaction_no = '900777'")
        .into_iter()
        .map(|r| (r["_seq"].as_i64().unwrap(), r["quantity"].as_i64().unwrap()))
        .collect()
}

/// A Kafka tombstone deletes the line written from an earlier record of its
/// partition, whatever the envelopes' sequence space; a later newer event
/// brings it back, a late older one does not.
#[test]
fn a_kafka_tombstone_deletes_whatever_the_sequence() {
    let lake = Lake::local();
    let topic = unique("tomb");
    create_topic(&topic, 1);
    let key = Some(json!({"transaction_no": "900777", "line_no": 1}));
    let run = |lake: &Lake| run_ok(lake.run(&topic, &unique("g"), &[]));
    send(&topic, &[(key.clone(), Some(order_line(5_000_000, 2)))]);
    run(&lake);
    assert_eq!(line_state(&lake), vec![(5_000_000, 2)]);
    send(&topic, &[(key.clone(), None)]);
    run(&lake);
    assert_eq!(line_state(&lake), vec![], "the tombstone deleted the line");
    send(&topic, &[(key.clone(), Some(order_line(4_000_000, 3)))]);
    run(&lake);
    assert_eq!(line_state(&lake), vec![], "a late older event does not resurrect it");
    send(&topic, &[(key.clone(), Some(order_line(5_000_001, 4)))]);
    run(&lake);
    assert_eq!(line_state(&lake), vec![(5_000_001, 4)], "a newer event brings it back");
    // In one batch: an envelope, its tombstone and a late older event.
    send(&topic, &[(key.clone(), Some(order_line(6_000_000, 5))), (key.clone(), None), (key.clone(), Some(order_line(5_500_000, 6)))]);
    run(&lake);
    assert_eq!(line_state(&lake), vec![]);
    let tombstones = duckdb(&lake.table("silver/order_lines_tombstones"), &lake.reader_opts(), "SELECT max(_seq) AS s FROM t WHERE transaction_no = '900777'");
    assert_eq!(tombstones[0]["s"].as_i64(), Some(6_000_000), "the tombstone remembers the sequence it deleted");
}

fn discount_of(lake: &Lake, line: i64) -> Option<Value> {
    let rows = duckdb(
        &lake.table("silver/order_lines"),
        &lake.reader_opts(),
        &format!("SELECT discount FROM t WHERE transaction_no = '900777' AND line_no = {line}"),
    );
    rows.first().map(|r| r["discount"].clone())
}

fn with_line(mut event: Value, line: i64) -> Value {
    event["after"]["line_no"] = json!(line);
    event
}

/// A field a table has no column for: a new column with `evolve` (the
/// default; order_lines), counted with `ignore` (order headers), quarantined
/// with the reason with `quarantine` (customers). Never dropped silently.
#[test]
fn a_new_field_evolves_the_table_or_is_counted_or_quarantined() {
    let lake = Lake::local();
    let c = &connectors()[1];
    let (orders, customers_topic, headers_topic) = (unique("orders"), unique("customers"), unique("headers"));
    let defs = Definitions::new(c, &customers_topic, &headers_topic);
    create_topic(&orders, 1);
    create_topic(&customers_topic, 1);
    create_topic(&headers_topic, 1);
    let mut with_discount = with_line(order_line(2, 2), 2);
    with_discount["after"]["discount"] = json!("0.10");
    send(&orders, &[(None, Some(order_line(1, 1)))]);
    run_ok({
        let mut r = lake.run(&orders, &unique("g"), &[]);
        defs.apply(&mut r);
        r
    });
    assert!(std::panic::catch_unwind(|| discount_of(&lake, 1)).is_err(), "no such column yet");
    send(&orders, &[(None, Some(with_discount))]);
    let mut records = fixture(c.fixture);
    let mut extra = records[0].1.clone().unwrap();
    extra["after"]["loyalty_tier"] = json!("gold");
    records.push((records[0].0.clone(), Some(extra)));
    send(&customers_topic, &records);
    send(&headers_topic, &headers_records());
    let port = free_port();
    let mut cmd = lake.run(&orders, &unique("g"), &[("LAKESTREAM_METRICS__LISTEN", &format!("127.0.0.1:{port}"))]);
    defs.apply(&mut cmd);
    // Without --until-caught-up: the test reads /metrics while the writer runs.
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).filter(|a| a != "--until-caught-up").collect();
    let mut live = Command::new(cmd.get_program());
    live.args(&args);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => live.env(k, v),
            None => live.env_remove(k),
        };
    }
    let mut writer = Writer(live.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    let mut scraped = String::new();
    wait_until("lakestream_columns_ignored_total for carrier", Duration::from_secs(120), || {
        scraped = http_get(port, "/metrics").unwrap_or_default();
        scraped.lines().any(|l| l.starts_with("lakestream_columns_ignored_total") && l.contains("column=\"carrier\"") && l.ends_with(" 1"))
    });
    assert!(scraped.contains("table=\"silver.order_headers\""), "{scraped}");
    wait_until("the quarantined customer record", Duration::from_secs(60), || {
        std::panic::catch_unwind(|| duckdb(&lake.table("quarantine/orders"), &lake.reader_opts(), "SELECT error_kind, error FROM t"))
            .is_ok_and(|rows| rows.iter().any(|r| r["error_kind"] == "unknown_column" && r["error"].as_str().unwrap().contains("after.loyalty_tier")))
    });
    wait_until("the discount column", Duration::from_secs(60), || {
        std::panic::catch_unwind(|| discount_of(&lake, 2)).ok().flatten() == Some(json!("0.10"))
    });
    assert_eq!(discount_of(&lake, 1), Some(Value::Null), "rows written before the column read null");
    assert!(http_get(port, "/metrics").unwrap_or_default().contains("lakestream_schema_changes_total{table=\"silver.order_lines\"} 1"));
    let _ = writer.0.kill();
    let _ = writer.0.wait();
    // A restarted writer adopts the column; `migrate` accepts it; the reader version stays 1.
    let mut third = with_line(order_line(3, 3), 3);
    third["after"]["discount"] = json!("0.25");
    send(&orders, &[(None, Some(third))]);
    run_ok({
        let mut r = lake.run(&orders, &unique("g"), &[]);
        defs.apply(&mut r);
        r
    });
    assert_eq!(discount_of(&lake, 3), Some(json!("0.25")));
    let mut migrate = lakestream();
    defs.apply(&mut migrate);
    migrate.args(["migrate", "--lake", &lake.uri]);
    let out = run_ok(migrate);
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to do"), "{}", String::from_utf8_lossy(&out.stdout));
    let log = std::fs::read_dir(lake.dir.as_ref().unwrap().path().join("silver/order_lines/_delta_log")).unwrap();
    let mut operations = Vec::new();
    for entry in log {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            if v["protocol"].is_object() {
                assert_eq!(v["protocol"]["minReaderVersion"], 1, "{line}");
            }
        }
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            if let Some(op) = v["commitInfo"]["operation"].as_str() {
                let about_discount = v["commitInfo"]["operationParameters"].to_string().contains("discount");
                operations.push(format!("{op}{}", if about_discount { " discount" } else { "" }));
            }
        }
    }
    assert_eq!(operations.iter().filter(|o| o.as_str() == "ADD COLUMN discount").count(), 1, "the column is added once: {operations:?}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// A broken definition stops every command with file:line and the reason.
#[test]
fn a_broken_definition_stops_lakestream_with_file_and_line() {
    let c = &connectors()[0];
    let defs = Definitions::new(c, "t1", "t2");
    let file = defs.dir.path().join("tables/silver_customers.toml");
    let good = std::fs::read_to_string(&file).unwrap();
    let cases = [
        (good.replace("type = \"decimal(12,2)\"", "type = \"money\""), "unknown type `money`"),
        (good.replace("primary_key = [\"id\"]", "primary_key = [\"customer_id\"]"), "primary key column `customer_id`"),
        (good.replace("{ fields = [\"source.lsn\"] }", "{ fields = [\"source.file\", \"source.pos\"] }"), "bigint sequence column holds one number"),
        (good.replace("path = \"silver/customers\"", "path = \"silver/order_lines\""), "two tables on one path"),
        (good.replace("name = \"active\"\ntype = \"boolean\"", "name = \"active\"\ntype = \"boolean\"\nexpr = \"nope(\""), "expr"),
    ];
    for (text, reason) in cases {
        std::fs::write(&file, &text).unwrap();
        for args in [vec!["check", "--brokers", "127.0.0.1:1"], vec!["migrate", "--lake", "/nonexistent"]] {
            let mut cmd = lakestream();
            defs.apply(&mut cmd);
            cmd.args(&args);
            let err = run_fails_within(cmd, Duration::from_secs(30));
            assert!(err.contains(reason), "{args:?} with {reason}: {err}");
            assert!(err.contains(".toml:"), "names the file and line: {err}");
        }
    }
    let _ = Path::new("");
}

/// Two writers of one group, each finding the same new field in its
/// partition at the same moment, add the column once and lose no value.
#[test]
fn writers_racing_to_add_a_column_add_it_once() {
    let lake = Lake::local();
    let topic = unique("race");
    create_topic(&topic, 2);
    let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    for i in 0..400i64 {
        let mut e = with_line(order_line(i, 1), i + 1);
        e["after"]["gift_wrap"] = json!(i % 2 == 0);
        let v = e.to_string();
        p.send(BaseRecord::<str, str>::to(&topic).partition((i % 2) as i32).key("900777").payload(&v)).map_err(|(e, _)| e).unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
    let group = unique("g");
    let writers: Vec<Writer> = (0..2)
        .map(|_| Writer(lake.run(&topic, &group, &[("LAKESTREAM_BATCH__MAX_RECORDS", "50")]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()))
        .collect();
    for mut w in writers {
        let status = w.0.wait().unwrap();
        let mut err = String::new();
        use std::io::Read;
        w.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(status.success(), "{status}: {}", tail(&err, 3000));
    }
    let rows = duckdb(
        &lake.table("silver/order_lines"),
        &lake.reader_opts(),
        "SELECT count(*) AS n, count(gift_wrap) AS with_value, count(*) FILTER (WHERE gift_wrap = (line_no % 2 = 1)) AS right_value FROM t WHERE transaction_no = '900777'",
    );
    assert_eq!((rows[0]["n"].as_i64(), rows[0]["with_value"].as_i64(), rows[0]["right_value"].as_i64()), (Some(400), Some(400), Some(400)));
    let mut added = 0;
    for entry in std::fs::read_dir(lake.dir.as_ref().unwrap().path().join("silver/order_lines/_delta_log")).unwrap() {
        for line in std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            if v["commitInfo"]["operation"] == "ADD COLUMN" && v["commitInfo"]["operationParameters"].to_string().contains("gift_wrap") {
                added += 1;
            }
        }
    }
    assert_eq!(added, 1, "the column is added once");
}
