//! Table definitions, migrations and the reader contract, on real lakes read
//! back with DuckDB.

mod common;

use common::*;
use deltalake::kernel::engine::arrow_conversion::TryIntoArrow;
use deltalake::DeltaTableBuilder;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn migrate(lake: &Lake, args: &[&str]) -> std::process::Output {
    let mut c = lakestream();
    c.args(["migrate", "--lake", &lake.uri]).args(args);
    c.output().expect("lakestream runs")
}

fn migrate_ok(lake: &Lake, args: &[&str]) -> String {
    let out = migrate(lake, args);
    assert!(out.status.success(), "migrate failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn repo_migrations() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("migrations")
}

/// A copy of migrations/ to edit.
fn migrations_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(repo_migrations()).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    dir
}

/// The table's latest protocol and metadata actions, read from the log files directly.
fn log_actions(table_dir: &Path) -> (Value, Value) {
    let mut protocol = Value::Null;
    let mut metadata = Value::Null;
    let mut files: Vec<PathBuf> = std::fs::read_dir(table_dir.join("_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for f in files {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            if v.get("protocol").is_some() {
                protocol = v["protocol"].clone();
            }
            if v.get("metaData").is_some() {
                metadata = v["metaData"].clone();
            }
        }
    }
    (protocol, metadata)
}

/// A local table through delta-rs, for the test to change it as another tool would.
async fn load_table(dir: &Path) -> deltalake::DeltaTable {
    let url = url::Url::from_directory_path(dir).unwrap();
    let mut table = DeltaTableBuilder::from_url(url).unwrap().build().unwrap();
    table.load().await.unwrap();
    table
}

const TABLES: [&str; 4] = ["bronze/orders", "quarantine/orders", "silver/order_lines_tombstones", "silver/order_lines"];

#[test]
fn a_fresh_lake_is_migrated_to_the_latest_version_readable_at_reader_version_1() {
    let lake = Lake::local();
    let out = migrate_ok(&lake, &[]);
    assert_eq!(out.matches("migration 0000 -> 0002").count(), 4, "{out}");
    let dir = lake.dir.as_ref().unwrap().path();
    for t in TABLES {
        let (protocol, metadata) = log_actions(&dir.join(t));
        assert_eq!(protocol["minReaderVersion"], 1, "{t}: {protocol}");
        assert!(protocol.get("readerFeatures").is_none(), "{t}: {protocol}");
        let config = &metadata["configuration"];
        assert_eq!(config["lakestream.migration.version"], "2", "{t}: {config}");
        assert!(config["lakestream.migration.0001.checksum"].as_str().unwrap().starts_with("fnv1a64:"));
        assert_eq!(config["delta.checkpointInterval"], "50", "{t}");
        // DuckDB reads the empty table with every column.
        let cols = duckdb(&lake.table(t), &[], "SELECT count(*) AS n FROM t");
        assert_eq!(cols[0]["n"], 0);
    }
    let silver_cols = duckdb(&lake.table("silver/order_lines"), &[], "SELECT column_name FROM (DESCRIBE t)");
    assert!(silver_cols.iter().any(|r| r["column_name"] == "_kafka_timestamp"), "{silver_cols:?}");
    // Idempotent: nothing to do, and no new commit.
    let commits = std::fs::read_dir(dir.join("silver/order_lines/_delta_log")).unwrap().count();
    let again = migrate_ok(&lake, &[]);
    assert_eq!(again.matches("nothing to do").count(), 4, "{again}");
    assert_eq!(std::fs::read_dir(dir.join("silver/order_lines/_delta_log")).unwrap().count(), commits);
}

/// A lake at migration 0001 holding data: `run` refuses it, `migrate` brings it
/// to 0002 with the data intact; old rows read the new column as null, new
/// batches fill it.
#[test]
fn an_old_lake_migrates_with_its_data_and_new_batches_fill_the_new_column() {
    let lake = Lake::local();
    migrate_ok(&lake, &["--to", "1"]);
    // Old data, as a 0001 writer left it: two silver rows.
    let silver_dir = lake.dir.as_ref().unwrap().path().join("silver/order_lines");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let table = load_table(&silver_dir).await;
        let schema: deltalake::arrow::datatypes::Schema = table.snapshot().unwrap().schema().as_ref().try_into_arrow().unwrap();
        assert!(schema.field_with_name("_kafka_timestamp").is_err(), "0001 has no _kafka_timestamp");
        let rows = r#"{"transaction_no":"900001","line_no":1,"order_date":"2019-01-05","product_no":"P1","product_name":"Old","price":"1.50","quantity":2,"customer_no":"13","country":"UK","is_cancellation":false,"line_total":"3.00","_op":"c","_seq":1,"_source_ts":"2019-01-05T00:00:00Z","_kafka_partition":0,"_kafka_offset":0,"_updated_at":"2019-01-05T00:00:00Z","order_month":"2019-01-01"}
{"transaction_no":"900001","line_no":2,"order_date":"2019-01-05","product_no":"P2","product_name":"Old","price":"2.00","quantity":1,"customer_no":null,"country":"UK","is_cancellation":false,"line_total":"2.00","_op":"c","_seq":2,"_source_ts":"2019-01-05T00:00:00Z","_kafka_partition":0,"_kafka_offset":1,"_updated_at":"2019-01-05T00:00:00Z","order_month":"2019-01-01"}"#;
        let batch = arrow_json::ReaderBuilder::new(std::sync::Arc::new(schema)).build(rows.as_bytes()).unwrap().next().unwrap().unwrap();
        table.write(vec![batch]).await.unwrap();
    });

    let topic = unique("migrate");
    produce(&topic, &["--limit", "500", "--partitions", "2"]);
    let refused = run_fails_within(lake.run(&topic, &unique("g"), &[]), Duration::from_secs(60));
    assert!(refused.contains("is at migration 0001") && refused.contains("lakestream migrate --lake"), "{refused}");

    let out = migrate_ok(&lake, &[]);
    assert!(out.contains("silver.order_lines: migration 0001 -> 0002"), "{out}");
    let old = duckdb(
        &lake.table("silver/order_lines"),
        &[],
        "SELECT count(*) AS n, count(_kafka_timestamp) AS with_ts, sum(line_total)::VARCHAR AS total FROM t WHERE transaction_no = '900001'",
    );
    assert_eq!((old[0]["n"].as_i64(), old[0]["with_ts"].as_i64(), old[0]["total"].as_str()), (Some(2), Some(0), Some("5.00")));

    run_ok(lake.run(&topic, &unique("g"), &[]));
    let all = duckdb(
        &lake.table("silver/order_lines"),
        &[],
        "SELECT count(*) AS n, count(_kafka_timestamp) AS with_ts FROM t WHERE transaction_no <> '900001'",
    );
    assert_eq!(all[0]["n"].as_i64(), Some(500), "{all:?}");
    assert_eq!(all[0]["with_ts"].as_i64(), Some(500), "new batches fill the new column: {all:?}");
    let old_again = duckdb(&lake.table("silver/order_lines"), &[], "SELECT count(*) AS n FROM t WHERE transaction_no = '900001' AND _kafka_timestamp IS NULL");
    assert_eq!(old_again[0]["n"].as_i64(), Some(2));
}

#[test]
fn a_migration_edited_after_it_was_applied_is_refused() {
    let lake = Lake::local();
    let dir = migrations_copy();
    let from = dir.path().to_str().unwrap();
    migrate_ok(&lake, &["--migrations", from, "--to", "1"]);
    let first = dir.path().join("0001_create_tables.sql");
    let text = std::fs::read_to_string(&first).unwrap();
    std::fs::write(&first, text.replace("'delta.checkpointInterval' = '50'", "'delta.checkpointInterval' = '10'")).unwrap();
    let out = migrate(&lake, &["--migrations", from]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an edited migration was applied");
    assert!(stderr.contains("0001_create_tables.sql changed after it was applied"), "{stderr}");
    // Nothing was applied: the tables are still at 0001.
    let (_, metadata) = log_actions(&lake.dir.as_ref().unwrap().path().join("silver/order_lines"));
    assert_eq!(metadata["configuration"]["lakestream.migration.version"], "1");
}

#[test]
fn definitions_and_migrations_that_disagree_are_caught() {
    let lake = Lake::local();
    let dir = migrations_copy();
    let second = dir.path().join("0002_silver_kafka_timestamp.sql");
    let text = std::fs::read_to_string(&second).unwrap();
    std::fs::write(&second, text.replace("_kafka_timestamp TIMESTAMP", "_kafka_ts TIMESTAMP")).unwrap();
    let out = migrate(&lake, &["--migrations", dir.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("migrations and tables/silver_order_lines.toml disagree"), "{stderr}");
    assert!(stderr.contains("_kafka_ts"), "{stderr}");
}

/// A table someone upgraded to deletion vectors (reader version 3) is refused
/// by `run` with what to do, and left untouched.
#[test]
fn a_table_with_an_unsupported_feature_is_refused() {
    let lake = Lake::local();
    let topic = unique("contract");
    produce(&topic, &["--limit", "200", "--partitions", "1"]);
    run_ok(lake.run(&topic, &unique("g"), &[]));
    let silver_dir = lake.dir.as_ref().unwrap().path().join("silver/order_lines");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let table = load_table(&silver_dir).await;
        let props = std::collections::HashMap::from([("delta.enableDeletionVectors".to_string(), "true".to_string())]);
        table.set_tbl_properties().with_properties(props).await.unwrap();
    });
    let (protocol, _) = log_actions(&silver_dir);
    assert_eq!(protocol["minReaderVersion"], 3, "the test upgraded the table: {protocol}");
    let commits = std::fs::read_dir(silver_dir.join("_delta_log")).unwrap().count();
    let topic2 = unique("contract2");
    produce(&topic2, &["--limit", "10", "--partitions", "1"]);
    let refused = run_fails_within(lake.run(&topic2, &unique("g"), &[]), Duration::from_secs(60));
    assert!(refused.contains("silver.order_lines") && refused.contains("reader version 3"), "{refused}");
    assert!(refused.contains("deletionVectors") && refused.contains("lake.max_reader_version"), "{refused}");
    assert_eq!(std::fs::read_dir(silver_dir.join("_delta_log")).unwrap().count(), commits, "nothing was written");
}
