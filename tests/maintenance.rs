//! Table maintenance beside ingestion: compaction, checkpoints and VACUUM keep
//! the tables small without losing or duplicating a record.

mod common;

use common::checks::*;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn lake_dir(lake: &Lake) -> PathBuf {
    lake.dir.as_ref().expect("a local lake").path().to_path_buf()
}

/// Data files the table's current version references, as DuckDB reads them.
fn active_files(lake: &Lake, table: &str) -> i64 {
    let path = lake_dir(lake).join(table);
    let sql = format!("SELECT count(DISTINCT filename) AS n FROM delta_scan('{}', filename = true)", path.display());
    duckdb(&lake.table(table), &[], &sql)[0]["n"].as_i64().unwrap()
}

/// Commits in the table's log, and the version of its last checkpoint.
fn log_state(dir: &Path) -> (usize, Option<i64>) {
    let log = dir.join("_delta_log");
    let commits = std::fs::read_dir(&log)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .count();
    let last = std::fs::read_to_string(log.join("_last_checkpoint"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["version"].as_i64());
    (commits, last)
}

fn maintain(lake: &Lake, args: &[&str]) -> String {
    let mut c = lakestream();
    c.args(["maintain", "--lake", &lake.uri]).args(args);
    String::from_utf8(run_ok(c).stdout).unwrap()
}

/// Over 500 small commits per table with maintenance on: the tables end up
/// with a recent checkpoint, few files, and exactly the records of the topic;
/// the tombstones table, which most batches add nothing to, far fewer commits.
#[test]
fn five_hundred_small_commits_with_maintenance_on() {
    let lake = Lake::local();
    let topic = unique("maint500");
    produce(&topic, &["--limit", "2000", "--mutations", "0.05", "--seed", "3", "--partitions", "2"]);
    let run = lake.run(
        &topic,
        &unique("g"),
        &[
            ("LAKESTREAM_BATCH__MAX_RECORDS", "4"),
            ("LAKESTREAM_BATCH__MAX_LATENCY_MS", "50"),
            ("LAKESTREAM_MAINTENANCE__INTERVAL_SECS", "2"),
            ("LAKESTREAM_MAINTENANCE__COMPACT_MIN_SMALL_FILES", "20"),
        ],
    );
    let out = run_ok(run);
    let log = String::from_utf8_lossy(&out.stderr);
    let compactions = log.lines().filter(|l| l.contains("\"message\":\"maintained\"") && l.contains("compacted")).count();

    let dir = lake_dir(&lake);
    // The tombstones table commits with its deletes only (the offsets of
    // batches without any ride along or wait, see pipeline::writer::MAX_DEFER).
    let (bronze_commits, _) = log_state(&dir.join("bronze/orders"));
    let (tombstone_commits, _) = log_state(&dir.join("silver/order_lines_tombstones"));
    assert!(tombstone_commits * 5 < bronze_commits, "tombstones: {tombstone_commits} commits against bronze's {bronze_commits}");
    for table in ["bronze/orders", "silver/order_lines"] {
        let (commits, checkpoint) = log_state(&dir.join(table));
        let latest = commits as i64 - 1;
        let interval = 100; // delta.checkpointInterval (the delta-rs default; tables/ may set it lower)
        assert!(commits >= 500, "{table}: {commits} commits, the test wants 500+");
        let checkpoint = checkpoint.unwrap_or_else(|| panic!("{table}: no checkpoint after {commits} commits"));
        assert!(latest - checkpoint < interval, "{table}: last checkpoint {checkpoint}, latest version {latest}");
        let files = active_files(&lake, table);
        assert!(files < 60, "{table}: {files} active files after {commits} commits with maintenance on");
    }
    assert!(compactions >= 3, "maintenance compacted {compactions} times during the run");
    assert_exactly_once(&lake, &topic);
    assert_silver_matches(&lake, &topic);
}

/// `lakestream maintain` in a loop (compaction of every small file, VACUUM,
/// checkpoints) while a writer with its own maintenance ingests: no record is
/// lost or written twice, and every file the log references is readable.
#[test]
fn maintenance_racing_ingestion_loses_nothing() {
    let lake = Lake::local();
    let topic = unique("maintrace");
    produce(&topic, &["--limit", "20000", "--mutations", "0.05", "--seed", "8", "--partitions", "6"]);
    let mut run = lake.run(
        &topic,
        &unique("g"),
        &[
            ("LAKESTREAM_BATCH__MAX_RECORDS", "150"),
            ("LAKESTREAM_BATCH__MAX_LATENCY_MS", "50"),
            ("LAKESTREAM_MAINTENANCE__INTERVAL_SECS", "1"),
            ("LAKESTREAM_MAINTENANCE__COMPACT_MIN_SMALL_FILES", "2"),
        ],
    );
    let log_path = lake_dir(&lake).join("writer.log");
    let mut writer = Writer(run.stdout(Stdio::null()).stderr(std::fs::File::create(&log_path).unwrap()).spawn().unwrap());
    let started = Instant::now();
    let (mut rounds, mut compacted_rounds) = (0, 0);
    let status = loop {
        if let Some(status) = writer.0.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "the writer did not catch up within 5 minutes");
        let out = maintain(&lake, &[]);
        rounds += 1;
        if out.lines().any(|l| l.contains("compacted") && !l.contains("compacted -")) {
            compacted_rounds += 1;
        }
    };
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "writer failed: {}", tail(&log, 4000));
    let conflicts: u64 = log
        .lines()
        .filter(|l| l.contains("\"message\":\"committed\""))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["conflicts"].as_u64())
        .sum();
    eprintln!("{rounds} maintain rounds during ingestion, {compacted_rounds} compacted; writer commit conflicts retried: {conflicts}");
    assert!(compacted_rounds >= 3, "only {compacted_rounds} of {rounds} maintain rounds raced ingestion with a compaction");
    assert_exactly_once(&lake, &topic);
    assert_silver_matches(&lake, &topic);
    // Every file of the current version exists (DuckDB read them all above); a
    // final maintenance round after ingestion leaves the same rows.
    maintain(&lake, &[]);
    assert_exactly_once(&lake, &topic);
    assert_silver_matches(&lake, &topic);
}

/// VACUUM deletes a file no commit references only once it is older than the
/// retention: a younger one may belong to a commit still in flight.
#[test]
fn vacuum_deletes_only_old_unreferenced_files() {
    let lake = Lake::local();
    let topic = unique("vacuum");
    produce(&topic, &["--limit", "3000", "--partitions", "3"]);
    run_ok(lake.run(&topic, &unique("g"), &[("LAKESTREAM_BATCH__MAX_RECORDS", "500")]));
    let bronze = lake_dir(&lake).join("bronze/orders");
    let partition_dir = std::fs::read_dir(&bronze)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("ingest_date="))
        .expect("a partition directory");
    let any_data_file = std::fs::read_dir(&partition_dir).unwrap().filter_map(Result::ok).next().unwrap().path();
    let old_orphan = partition_dir.join("part-00000-orphan-old.parquet");
    let young_orphan = partition_dir.join("part-00000-orphan-young.parquet");
    std::fs::copy(&any_data_file, &old_orphan).unwrap();
    std::fs::copy(&any_data_file, &young_orphan).unwrap();
    let three_hours_ago = std::time::SystemTime::now() - Duration::from_secs(3 * 3600);
    std::fs::File::options().write(true).open(&old_orphan).unwrap().set_modified(three_hours_ago).unwrap();

    let mut c = lakestream();
    c.args(["maintain", "--lake", &lake.uri]).env("LAKESTREAM_MAINTENANCE__VACUUM_RETENTION_HOURS", "2");
    let out = String::from_utf8(run_ok(c).stdout).unwrap();
    assert!(out.contains("bronze.orders:"), "{out}");
    assert!(!old_orphan.exists(), "an unreferenced file 3 hours old is vacuumed (retention 2 h):\n{out}");
    assert!(young_orphan.exists(), "an unreferenced file younger than the retention is kept:\n{out}");
    assert_exactly_once(&lake, &topic);
}

/// Commits that maintenance made are not ingestion: the offsets stay, and a
/// restarted writer has nothing to do.
#[test]
fn maintenance_keeps_the_offsets() {
    let lake = Lake::local();
    let topic = unique("maintoffsets");
    produce(&topic, &["--limit", "3000", "--mutations", "0.05", "--partitions", "3"]);
    let group = unique("g");
    run_ok(lake.run(&topic, &group, &[("LAKESTREAM_BATCH__MAX_RECORDS", "100")]));
    let out = maintain(&lake, &[]);
    assert!(out.contains("silver.order_lines: ") && out.contains("checkpoint at version"), "{out}");
    assert_exactly_once(&lake, &topic); // txn versions read through the new checkpoint
    let again = run_ok(lake.run(&topic, &group, &[]));
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(stdout.contains("wrote 0 records"), "a restart after maintenance re-wrote records: {stdout}");
    assert_exactly_once(&lake, &topic);
    assert_silver_matches(&lake, &topic);
}
