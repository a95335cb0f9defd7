//! What a written batch leaves for the operator: the metrics of every table
//! it touched, and one log line. In a terminal that line sums the batch up
//! (records, each table's new version, rows and milliseconds) and each
//! table's commit is a debug event; in JSON logs every commit is its own info
//! event too, with all its fields (partitions, offsets, conflicts).

use crate::metrics::Metrics;
use crate::pipeline::decoded::{Decoded, TableReader};
use crate::logs::json_logs;
use crate::pipeline::writer::TableCommit;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Records the metrics of a committed batch and logs it. `took`: from the
/// batch's close to its last commit (decode and every table).
pub fn batch_committed(metrics: &Metrics, readers: &[TableReader], decoded: &Decoded, commits: &[TableCommit], bytes: usize, took: Duration) {
    for c in commits {
        table_committed(metrics, c);
    }
    metrics.records_consumed.inc_by(decoded.records.len() as u64);
    metrics.batch_records.observe(decoded.records.len() as f64);
    for e in decoded.errors.iter().flatten() {
        metrics.quarantined.get_or_create(&metrics.kind(e.kind.as_str())).inc();
    }
    for (t, table) in readers.iter().zip(&decoded.tables) {
        for (field, count) in &table.ignored_fields {
            let name = t.reader.definition.name.as_str();
            let labels = vec![("table", name.to_string()), ("column", field.clone())];
            let counter = metrics.columns_ignored.get_or_create(&labels);
            if counter.get() == 0 {
                tracing::warn!(
                    table = name,
                    field = %field,
                    "records carry a field the table has no column for; its values are dropped (on_new_column = \"ignore\"; \
                     bronze keeps the records whole; counted in lakestream_columns_ignored_total)"
                );
            }
            counter.inc_by(*count);
        }
    }
    if let Some(ts) = decoded.records.iter().filter_map(|r| r.timestamp_ms).max() {
        metrics.last_committed_ts_ms.fetch_max(ts, Ordering::Relaxed);
    }
    let tables: Vec<String> =
        commits.iter().map(|c| format!("{} v{} +{} {}ms", c.table, c.outcome.version, c.outcome.rows, c.duration.as_millis())).collect();
    tracing::info!(
        records = decoded.records.len(),
        bytes,
        quarantined = decoded.rejected(),
        ms = took.as_millis() as u64,
        decode_ms = decoded.took.as_millis() as u64,
        tables = %tables.join(", "),
        "batch committed"
    );
}

/// Records the metrics of commits of offsets alone (see [`crate::pipeline::writer::MAX_DEFER`]).
pub fn offsets_settled(metrics: &Metrics, commits: &[TableCommit]) {
    for c in commits {
        table_committed(metrics, c);
    }
}

fn table_committed(metrics: &Metrics, c: &TableCommit) {
    let t = metrics.table(c.table);
    metrics.rows_written.get_or_create(&t).inc_by(c.outcome.rows as u64);
    metrics.commit_seconds.get_or_create(&t).observe(c.duration.as_secs_f64());
    metrics.commit_conflicts.get_or_create(&t).inc_by(u64::from(c.conflicts));
    metrics.table_version.get_or_create(&t).set(c.outcome.version);
    let offsets = || c.offsets.iter().map(|(tp, o)| format!("{tp}:{o}")).collect::<Vec<_>>().join(",");
    let ms = c.duration.as_millis() as u64;
    let partitions = c.offsets.len();
    if json_logs() {
        tracing::info!(table = c.table, version = c.outcome.version, records = c.outcome.rows, partitions, offsets = %offsets(), conflicts = c.conflicts, ms, "committed");
    } else {
        tracing::debug!(table = c.table, version = c.outcome.version, records = c.outcome.rows, partitions, offsets = %offsets(), conflicts = c.conflicts, ms, "committed");
    }
    if c.conflicts > 0 && !json_logs() {
        tracing::info!(table = c.table, conflicts = c.conflicts, "commit lost races to another writer and was retried");
    }
}
