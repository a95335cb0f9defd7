//! Exactly-once bronze ingestion against the real broker and object stores,
//! checked with an independent reader (DuckDB's Delta extension).

mod common;

use common::*;
use common::checks::*;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use std::path::Path;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn count_commits(lake_dir: &Path) -> usize {
    std::fs::read_dir(lake_dir.join("bronze/orders/_delta_log"))
        .map(|d| d.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().ends_with(".json")).count())
        .unwrap_or(0)
}

/// Partial runs stopped at random points, including crashes between writing
/// the Parquet files and committing them; then bronze holds exactly N records.
fn exactly_once_over_crashes(lake: Lake, rows: &str, runs_with_crash: usize) {
    let topic = unique("bronze");
    produce(&topic, &["--limit", rows, "--partitions", "6"]);
    let group = unique("g");
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("kill seed {seed}");
    let mut rng = Rng(seed);
    let (mut aborted, mut killed) = (0, 0);
    for attempt in 0..40 {
        let crash = aborted + killed < runs_with_crash;
        let use_failpoint = crash && attempt % 2 == 0;
        let mut cmd = lake.run(&topic, &group, &[("LAKESTREAM_BATCH__MAX_RECORDS", "500")]);
        if use_failpoint {
            // Crash after the Parquet files are uploaded, before the commit that references them.
            cmd.env("LAKESTREAM_FAILPOINTS", format!("bronze.orders.files_written={}", 1 + rng.below(3)));
        }
        let mut child = Writer(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
        let kill_after = Duration::from_millis(50 + rng.below(400));
        let started = Instant::now();
        let status = loop {
            if let Some(s) = child.0.try_wait().unwrap() {
                break Some(s);
            }
            if crash && !use_failpoint && started.elapsed() >= kill_after {
                child.0.kill().unwrap(); // SIGKILL
                child.0.wait().unwrap();
                break None;
            }
            assert!(started.elapsed() < Duration::from_secs(300), "a run hung");
            std::thread::sleep(Duration::from_millis(5));
        };
        match status {
            None => killed += 1,
            Some(s) if s.signal() == Some(6) => aborted += 1, // SIGABRT at the failpoint
            Some(s) if s.success() && !crash => {
                eprintln!("{aborted} crashes at the failpoint, {killed} kill -9");
                assert!(aborted >= 2, "the failpoint crashed the writer at least twice");
                assert_exactly_once(&lake, &topic);
                return;
            }
            Some(s) if s.success() => {} // finished before the kill: the next run still has to find nothing to do
            Some(s) => panic!("run failed: {s}"),
        }
    }
    panic!("no run finished after 40 attempts");
}

#[test]
fn exactly_once_over_crashes_on_local_disk() {
    exactly_once_over_crashes(Lake::local(), "60000", 6);
}

#[test]
fn exactly_once_over_crashes_on_azurite() {
    exactly_once_over_crashes(Lake::azurite(), "15000", 3);
}

#[test]
fn exactly_once_over_crashes_on_seaweedfs() {
    exactly_once_over_crashes(Lake::seaweedfs(), "15000", 3);
}

/// Two writers in one group share six partitions; one is killed mid-stream.
#[test]
fn two_writers_one_killed_still_exactly_once() {
    let lake = Lake::local();
    let dir = lake.dir.as_ref().unwrap().path().to_path_buf();
    let topic = unique("bronze-pair");
    produce(&topic, &["--limit", "120000", "--partitions", "6"]);
    let group = unique("g");
    let mut a = Writer(lake.run(&topic, &group, &[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    let mut b = Writer(lake.run(&topic, &group, &[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    wait_until("a few bronze commits", Duration::from_secs(120), || count_commits(&dir) >= 6);
    a.0.kill().unwrap();
    a.0.wait().unwrap();
    // B takes over A's partitions after the session timeout; whatever B leaves, a restart finishes.
    let deadline = Instant::now() + Duration::from_secs(300);
    while b.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "writer B hung");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(b.0.wait().unwrap().success());
    run_ok(lake.run(&topic, &group, &[]));
    assert_exactly_once(&lake, &topic);
}

/// Raw means raw: records that are not JSON land in bronze unchanged; they are quarantined, not lost.
#[test]
fn bronze_keeps_any_bytes() {
    let lake = Lake::local();
    let topic = unique("bronze-raw");
    produce(&topic, &["--limit", "10", "--partitions", "1"]);
    let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let raw: Vec<Option<&[u8]>> = vec![Some(b"not json at all"), Some(b""), None, Some(&[0xff, 0xfe, 0x00, b'x'])];
    for v in &raw {
        let mut r = BaseRecord::<str, [u8]>::to(&topic).key("k");
        if let Some(v) = v {
            r = r.payload(v);
        }
        p.send(r).map_err(|(e, _)| e).unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
    run_ok(lake.run(&topic, &unique("g"), &[]));
    assert_exactly_once(&lake, &topic);
    let bronze = lake.table("bronze/orders");
    let rows = duckdb(&bronze, &[], "SELECT \"offset\" AS o, value, hex(value_bytes) AS b FROM t WHERE \"offset\" >= 10 ORDER BY 1");
    assert_eq!(rows[0]["value"], "not json at all");
    assert_eq!(rows[1]["value"], "");
    assert!(rows[2]["value"].is_null(), "a tombstone stays a null value");
    assert_eq!(rows[3]["b"], "FFFE0078", "invalid UTF-8 is kept byte for byte");
    let q = duckdb(&lake.table("quarantine/orders"), &[], "SELECT \"offset\" AS o, error_kind AS k FROM t ORDER BY 1");
    let kinds: Vec<&str> = q.iter().map(|r| r["k"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["not_json", "not_json", "tombstone_key", "not_utf8"]);
}

#[test]
fn configuration_errors_fail_fast_and_name_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().to_str().unwrap().to_string();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = lakestream();
        c.arg("run").args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        run_fails_within(c, Duration::from_secs(40))
    };
    let e = run(&["--brokers", "127.0.0.1:1", "--topic", "t", "--lake", &lake], &[]);
    assert!(e.contains("cannot reach Kafka at kafka.brokers = 127.0.0.1:1"), "{e}");
    let e = run(&["--brokers", &brokers(), "--lake", "ftp://host/lake"], &[]);
    assert!(e.contains("setting `lake.uri`") && e.contains("not supported"), "{e}");
    let e = run(&["--brokers", &brokers(), "--topic", &unique("missing"), "--lake", &lake], &[]);
    assert!(e.contains("not found (kafka.topic)"), "{e}");
    let e = run(&["--brokers", &brokers(), "--lake", "s3://lakestream/x"], &[]);
    assert!(e.contains("lake.storage.aws_access_key_id"), "{e}");
    let e = run(&["--brokers", &brokers(), "--lake", "az://lakestream/x"], &[]);
    assert!(e.contains("lake.storage.azure_storage_account_key"), "{e}");
    let e = run(&["--brokers", &brokers(), "--lake", &lake], &[("LAKESTREAM_BATCH__MAX_RECORDS", "0")]);
    assert!(e.contains("setting `batch.max_records`"), "{e}");
}

/// GET on the metrics server; None while it does not answer.
fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// SIGTERM: the open batch is committed, the group left, exit 0. Also checks
/// the health endpoints and the metrics series after a run.
#[test]
fn sigterm_commits_the_open_batch_and_exits_0() {
    let lake = Lake::local();
    let topic = unique("bronze-term");
    produce(&topic, &["--limit", "5000", "--partitions", "3"]);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = lakestream();
    cmd.args(["run", "--brokers", &brokers(), "--topic", &topic, "--group", &unique("g"), "--lake", &lake.uri]);
    // The batch can only close by the signal: no size or time limit is reached.
    cmd.env("LAKESTREAM_BATCH__MAX_LATENCY_MS", "3600000").env("LAKESTREAM_METRICS__LISTEN", &addr);
    let mut w = Writer(cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap());
    wait_until("the health endpoint", Duration::from_secs(60), || {
        http_get(&addr, "/healthz").is_some_and(|r| r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200"))
    });
    wait_until("ready", Duration::from_secs(60), || http_get(&addr, "/readyz").is_some_and(|r| r.contains(" 200 ")));
    wait_until("5000 records in the open batch", Duration::from_secs(60), || {
        http_get(&addr, "/metrics").is_some_and(|m| m.contains("lakestream_open_batch_records 5000"))
    });
    for p in 0..3 {
        let app = format!("lakestream:bronze.orders:{topic}:{p}");
        assert_eq!(duckdb_txn(&lake.table("bronze/orders"), &[], &app), None, "nothing committed before the signal ({app})");
    }
    let status = std::process::Command::new("kill").args(["-TERM", &w.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(s) = w.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit within 60 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "exit 0 after SIGTERM: {exit}");
    assert_exactly_once(&lake, &topic);
}

/// After a run: the metrics carry the expected series.
#[test]
fn metrics_after_a_run() {
    let lake = Lake::local();
    let topic = unique("bronze-metrics");
    produce(&topic, &["--limit", "3000", "--partitions", "2", "--mutations", "0.1"]);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = lakestream();
    cmd.args(["run", "--brokers", &brokers(), "--topic", &topic, "--group", &unique("g"), "--lake", &lake.uri]);
    cmd.env("LAKESTREAM_BATCH__MAX_LATENCY_MS", "200").env("LAKESTREAM_METRICS__LISTEN", &addr);
    let _w = Writer(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    let total: i64 = end_offsets(&topic).iter().map(|(_, e)| e).sum();
    let mut page = String::new();
    wait_until("every record committed and lag reported as 0", Duration::from_secs(90), || {
        page = http_get(&addr, "/metrics").unwrap_or_default();
        page.contains(&format!("lakestream_records_consumed_total {total}"))
            && page.contains("lakestream_consumer_lag{partition=\"0\"} 0")
            && page.contains("lakestream_consumer_lag{partition=\"1\"} 0")
    });
    for series in [
        "lakestream_rows_written_total{table=\"bronze.orders\"}",
        "lakestream_rows_written_total{table=\"silver.order_lines\"}",
        "lakestream_commit_duration_seconds_bucket{le=\"0.005\",table=\"silver.order_lines\"}",
        "lakestream_batch_records_count",
        "lakestream_table_version{table=\"bronze.orders\"}",
        "lakestream_freshness_seconds",
        "lakestream_assigned_partitions 2",
    ] {
        assert!(page.contains(series), "{series} missing from:\n{page}");
    }
}

/// SASL passwords and storage keys never show in logs, errors or `check` output.
#[test]
fn secrets_never_appear_in_logs_or_errors() {
    let password = "Sup3r-S3cret-SASL-pw";
    let key = "c2VjcmV0LXN0b3JhZ2Uta2V5LXRoYXQtbXVzdC1uZXZlci1sZWFr"; // base64 of a made-up key
    let with_secrets = |sub: &str| {
        let mut c = lakestream();
        c.args([sub, "--brokers", &brokers(), "--topic", "orders", "--lake", "az://lakestream-test/secrets"]);
        c.env("LAKESTREAM_KAFKA__SECURITY_PROTOCOL", "sasl_plaintext")
            .env("LAKESTREAM_KAFKA__SASL_MECHANISM", "PLAIN")
            .env("LAKESTREAM_KAFKA__SASL_USERNAME", "APIKEY")
            .env("LAKESTREAM_KAFKA__SASL_PASSWORD", password)
            .env("LAKESTREAM_LAKE__STORAGE__AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1")
            .env("LAKESTREAM_LAKE__STORAGE__AZURE_STORAGE_ACCOUNT_KEY", key)
            .env("RUST_LOG", "debug");
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = c.spawn().unwrap();
        let out = child.wait_with_output().unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    for sub in ["check", "run"] {
        let text = with_secrets(sub);
        assert!(!text.is_empty());
        assert!(!text.contains(password), "{sub} printed the SASL password:\n{text}");
        assert!(!text.contains(key), "{sub} printed the storage key:\n{text}");
    }
}

/// Regression (found by tests/chaos): when reading the tables' offsets after an
/// assignment failed (the store restarting during a rebalance), the writer
/// exited 1. It retries now, and every record is still written exactly once.
#[test]
fn a_failed_offset_read_after_assignment_is_retried() {
    let lake = Lake::local();
    let topic = unique("assign-retry");
    produce(&topic, &["--limit", "2000", "--partitions", "3"]);
    let out = run_ok(lake.run(&topic, &unique("g"), &[("LAKESTREAM_FAILPOINTS", "writer.assigned=1:fail")]));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("failpoint writer.assigned reached: failing"), "the failure was not injected:\n{}", tail(&log, 3000));
    assert!(log.contains("after an assignment; retrying"), "no retry logged:\n{}", tail(&log, 3000));
    assert_exactly_once(&lake, &topic);
}

/// A writer that starts on a backlog of fresh records (younger than
/// `catch_up_latency_ms`, so their timestamps do not say it is behind)
/// writes it in full batches: the end offsets seen at assignment say it is
/// catching up before the lag reporter's first reading does. Before, the
/// batches of the first seconds closed at the live deadline (1 ms here),
/// 4 or 5 batches for these 100,000 records instead of 2.
#[test]
fn a_fresh_backlog_is_written_in_full_batches() {
    let lake = Lake::local();
    let topic = unique("backlog");
    produce(&topic, &["--limit", "100000", "--partitions", "3"]);
    let settings = [
        ("LAKESTREAM_BATCH__MAX_RECORDS", "50000"),
        ("LAKESTREAM_BATCH__MAX_LATENCY_MS", "1"),
        ("LAKESTREAM_BATCH__CATCH_UP_LATENCY_MS", "60000"),
    ];
    let out = run_ok(lake.run(&topic, &unique("g"), &settings));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("wrote 100000 records in 2 batches"), "{stdout}");
    assert_exactly_once(&lake, &topic);
}
