//! Gold views (tables/databricks/02_gold_views.sql): after a replay of the whole
//! dataset without mutations, every view, translated to DuckDB and run against
//! silver with DuckDB's Delta extension, equals the figures tests/gold/gold.py
//! computes from the CSV. And the checker is live: it fails on a perturbed
//! expectation and on views that get "net of cancellations" wrong.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gold_py() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/gold/gold.py")
}

fn views_sql() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tables/databricks/02_gold_views.sql")
}

/// Runs the checker on `silver`; extra arguments after the mandatory ones.
fn gold(silver: &Path, extra: &[&str]) -> Output {
    let mut c = Command::new(env("LAKESTREAM_PYTHON"));
    c.arg(gold_py()).arg("--silver").arg(silver).arg("--csv").arg(dataset()).args(extra);
    c.output().expect("the gold checker runs")
}

fn text(out: &Output) -> String {
    format!(
        "exit: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        tail(&String::from_utf8_lossy(&out.stderr), 4000)
    )
}

/// The difference lines of a failed run (indented under "gold: FAILED").
fn diff_lines(out: &Output) -> Vec<String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.lines().skip_while(|l| !l.starts_with("gold: FAILED")).skip(1).map(str::to_string).collect()
}

#[test]
fn gold_views_match_the_csv_after_a_full_replay() {
    let lake = Lake::local();
    let topic = unique("gold");
    produce(&topic, &["--mutations", "0", "--partitions", "6"]);
    let mut run = lake.run(&topic, &unique("g"), &[]);
    run.env("LAKESTREAM_BATCH__MAX_RECORDS", "100000");
    run_ok(run);
    let silver = lake.dir.as_ref().unwrap().path().join("silver/order_lines");

    // The views against the CSV.
    let ok = gold(&silver, &[]);
    println!("{}", String::from_utf8_lossy(&ok.stdout));
    assert!(ok.status.success(), "the gold views do not match the CSV:\n{}", text(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("gold: OK"), "{}", text(&ok));

    // The checker can fail: one expected figure of every check changed by a cent
    // (or one order) must be reported, check by check.
    let checks = ["base", "daily_revenue", "top_products", "cancellation_rate", "orders_per_hour"];
    let mut args = vec![];
    for c in checks {
        args.extend(["--perturb", c]);
    }
    let perturbed = gold(&silver, &args);
    assert_eq!(perturbed.status.code(), Some(1), "a perturbed expectation must fail the check:\n{}", text(&perturbed));
    let diffs = diff_lines(&perturbed);
    for (prefix, n) in [
        ("base (silver): sum_line_total:", 1),
        ("gold_daily_revenue_by_country:", 1),
        ("gold_top_products:", 1),
        ("gold_cancellation_rate:", 1),
        ("gold_orders_per_hour: SUM(orders)", 1),
    ] {
        let found = diffs.iter().filter(|l| l.trim_start().starts_with(prefix)).count();
        assert_eq!(found, n, "expected {n} difference starting `{prefix}`:\n{}", text(&perturbed));
    }
    assert_eq!(diffs.len(), checks.len(), "exactly the perturbed figures differ:\n{}", text(&perturbed));

    // Wrong views fail: the same views reading silver without its cancellation
    // lines (so not "net of cancellations") must be caught in every view.
    let original = std::fs::read_to_string(views_sql()).unwrap();
    let from = "FROM silver_order_lines";
    assert!(original.matches(from).count() >= 4, "every view reads `{from}`");
    let wrong = original.replace(from, "FROM (SELECT * FROM silver_order_lines WHERE NOT is_cancellation) AS s");
    let dir = tempfile::tempdir().unwrap();
    let wrong_path = dir.path().join("wrong_gold_views.sql");
    std::fs::write(&wrong_path, wrong).unwrap();
    let caught = gold(&silver, &["--views", wrong_path.to_str().unwrap()]);
    assert_eq!(caught.status.code(), Some(1), "views that ignore cancellations must fail:\n{}", text(&caught));
    let diffs = diff_lines(&caught);
    for view in ["gold_daily_revenue_by_country", "gold_top_products", "gold_cancellation_rate", "gold_orders_per_hour"] {
        assert!(
            diffs.iter().any(|l| l.trim_start().starts_with(&format!("{view}:"))),
            "{view} should differ when cancellations are ignored:\n{}",
            text(&caught)
        );
    }
}
