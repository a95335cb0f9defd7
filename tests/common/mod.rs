//! Shared test helpers. Every integration test runs against the real local
//! stack (`tests/stack/stack.sh start`): a Kafka-protocol broker, Azurite and
//! SeaweedFS. The endpoints come from `tests/stack/stack.sh env`, which the
//! test command (`tests/run.sh`) exports. Without them the tests fail with a
//! message saying so: they never pass by skipping.
#![allow(dead_code)]

pub mod checks;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with `bash tests/run.sh` (it starts the local stack), or `eval \"$(tests/stack/stack.sh env)\"` after `tests/stack/stack.sh start`")
    })
}

pub fn brokers() -> String {
    env("LAKESTREAM_TEST_BROKERS")
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000_000)
}

pub fn dataset() -> PathBuf {
    match std::env::var("LAKESTREAM_DATASET") {
        Ok(p) => PathBuf::from(p),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/sales-transaction-v4a.csv.gz"),
    }
}

/// The lakestream binary, logging JSON, with no LAKESTREAM_* settings inherited.
pub fn lakestream() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lakestream"));
    for (k, _) in std::env::vars() {
        if k.starts_with("LAKESTREAM_") && !k.starts_with("LAKESTREAM_TEST_") {
            c.env_remove(k);
        }
    }
    c.env("LAKESTREAM_LOG_FORMAT", "json").env_remove("RUST_LOG");
    c
}

pub fn run_ok(mut c: Command) -> Output {
    let out = c.output().expect("lakestream runs");
    assert!(
        out.status.success(),
        "lakestream failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        tail(&String::from_utf8_lossy(&out.stderr), 4000)
    );
    out
}

pub fn tail(s: &str, n: usize) -> &str {
    let start = s.len().saturating_sub(n);
    let start = (start..s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(s.len());
    &s[start..]
}

/// Runs a command that must fail within `limit`; returns its stderr.
pub fn run_fails_within(mut c: Command, limit: Duration) -> String {
    let started = Instant::now();
    let mut child = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            assert!(!status.success(), "expected a failure, got success: {}", String::from_utf8_lossy(&out.stdout));
            return String::from_utf8_lossy(&out.stderr).into_owned();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("the command did not fail within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn produce(topic: &str, args: &[&str]) -> Output {
    let mut c = lakestream();
    c.args(["produce", "--brokers", &brokers(), "--topic", topic, "--input"]).arg(dataset()).args(args);
    run_ok(c)
}

/// Waits for `cond` to hold, polling, failing the test at the deadline.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// High watermarks (next offset) of every partition of `topic`.
pub fn end_offsets(topic: &str) -> Vec<(i32, i64)> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let t = md.topics().iter().find(|t| t.name() == topic).expect("topic exists");
    t.partitions()
        .iter()
        .map(|p| (p.id(), c.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).unwrap().1))
        .collect()
}

/// Reads every record of `topic` from the beginning (independently of lakestream).
pub fn consume_all(topic: &str, limit: Duration) -> Vec<OwnedMessage> {
    let ends = end_offsets(topic);
    let expected: i64 = ends.iter().map(|(_, e)| e).sum();
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for (p, _) in &ends {
        tpl.add_partition_offset(topic, *p, Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::with_capacity(expected as usize);
    let deadline = Instant::now() + limit;
    while (out.len() as i64) < expected {
        assert!(Instant::now() < deadline, "read {} of {expected} records of {topic} in {limit:?}", out.len());
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            out.push(m.expect("consume").detach());
        }
    }
    out
}

pub fn json_of(m: &OwnedMessage) -> Value {
    serde_json::from_slice(m.payload().expect("value")).expect("JSON value")
}

/// The independent reader (DuckDB's Delta extension, tests/stack/duckdb_delta.py)
/// pointed at the table at `uri`; `args` says what to read.
fn duckdb_reader(uri: &str, storage: &[(&str, &str)], args: &[&str]) -> String {
    let mut c = Command::new(env("LAKESTREAM_PYTHON"));
    c.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/stack/duckdb_delta.py")).args(["--table", uri]);
    for (k, v) in storage {
        c.args(["--storage", &format!("{k}={v}")]);
    }
    let out = c.args(args).output().expect("python runs");
    assert!(out.status.success(), "duckdb reader failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs SQL against the table (exposed as view `t`); one JSON object per row.
pub fn duckdb(uri: &str, storage: &[(&str, &str)], sql: &str) -> Vec<Value> {
    duckdb_reader(uri, storage, &["--sql", sql]).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The txn version DuckDB reads for an app id (None when the table has none).
pub fn duckdb_txn(uri: &str, storage: &[(&str, &str)], app_id: &str) -> Option<i64> {
    let text = duckdb_reader(uri, storage, &["--txn", app_id]);
    serde_json::from_str::<Value>(text.trim()).ok().and_then(|v| v.as_i64())
}

/// A running `lakestream run` process that is killed if the test panics.
pub struct Writer(pub Child);

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where a test's lake lives, with the storage settings lakestream and DuckDB need.
pub struct Lake {
    pub uri: String,
    /// lake.storage.* for lakestream.
    pub storage: Vec<(String, String)>,
    /// The same for the DuckDB reader.
    pub reader: Vec<(String, String)>,
    pub dir: Option<tempfile::TempDir>,
}

impl Lake {
    pub fn local() -> Lake {
        let dir = tempfile::tempdir().unwrap();
        Lake { uri: format!("file://{}", dir.path().display()), storage: vec![], reader: vec![], dir: Some(dir) }
    }
    pub fn azurite() -> Lake {
        let _ = env("LAKESTREAM_TEST_AZURITE");
        let emulator = vec![("azure_storage_use_emulator".to_string(), "true".to_string())];
        Lake { uri: format!("az://lakestream-test/{}", unique("lake")), storage: emulator.clone(), reader: emulator, dir: None }
    }
    pub fn seaweedfs() -> Lake {
        let s = vec![
            ("aws_endpoint_url".to_string(), env("LAKESTREAM_TEST_S3_ENDPOINT")),
            ("aws_access_key_id".to_string(), env("LAKESTREAM_TEST_S3_KEY")),
            ("aws_secret_access_key".to_string(), env("LAKESTREAM_TEST_S3_SECRET")),
            ("aws_region".to_string(), "us-east-1".to_string()),
            ("aws_allow_http".to_string(), "true".to_string()),
        ];
        Lake { uri: format!("s3://{}/{}", env("LAKESTREAM_TEST_S3_BUCKET"), unique("lake")), storage: s.clone(), reader: s, dir: None }
    }
    pub fn table(&self, path: &str) -> String {
        format!("{}/{path}", self.uri.trim_end_matches('/'))
    }
    pub fn reader_opts(&self) -> Vec<(&str, &str)> {
        self.reader.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }
    /// `lakestream run` against this lake; small batches so that runs make many commits.
    pub fn run(&self, topic: &str, group: &str, extra_env: &[(&str, &str)]) -> Command {
        let mut c = lakestream();
        c.args(["run", "--brokers", &brokers(), "--topic", topic, "--group", group, "--lake", &self.uri, "--until-caught-up"]);
        for (k, v) in &self.storage {
            c.env(format!("LAKESTREAM_LAKE__STORAGE__{}", k.to_uppercase()), v);
        }
        c.env("LAKESTREAM_BATCH__MAX_RECORDS", "2000").env("LAKESTREAM_BATCH__MAX_LATENCY_MS", "300");
        c.env("LAKESTREAM_KAFKA__PROPERTIES__session.timeout.ms", "6000");
        c.env("LAKESTREAM_KAFKA__PROPERTIES__heartbeat.interval.ms", "500");
        for (k, v) in extra_env {
            c.env(k, v);
        }
        c
    }
}

/// A small seeded generator for kill points (the seed is printed to reproduce a run).
pub struct Rng(pub u64);
impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

