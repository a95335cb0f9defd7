//! Table maintenance: keeps the tables healthy while ingestion goes on.
//!
//! A streaming writer adds a few files per table and batch, so a table that
//! nobody looks after ends up with hundreds of thousands of small files and a
//! long log. Per table, maintenance:
//! - **compacts** ([`compaction`], OPTIMIZE by bin-packing) once a table holds
//!   `compact_min_small_files` files smaller than half the target size;
//! - **vacuums** (at most every `vacuum_interval_hours`): deletes the files no
//!   longer in the table (removed by a commit, or written by a writer that
//!   crashed before its commit) once older than `vacuum_retention_hours`;
//! - **expires silver tombstones** older than `tombstone_retention_hours`
//!   (in the vacuum rounds);
//! - **checkpoints**: every commit checkpoints the log at multiples of the
//!   table's `delta.checkpointInterval` (delta-rs' post-commit hook, which also
//!   removes expired log files); a one-off `lakestream maintain` checkpoints too.
//!
//! Why this is safe beside ingestion, without breaking exactly-once:
//! - maintenance commits carry no `txn` actions, so they never change the
//!   offsets a table holds, and a checkpoint keeps every `txn` (no
//!   `delta.setTransactionRetentionDuration` is ever set);
//! - compaction rewrites files with `dataChange=false`: an append racing it
//!   commits on top of it; tombstone expiry and another compaction conflict
//!   with it through the layout lock of [`compaction`] and are retried on the
//!   new snapshot; silver's upsert checks its own races (a winner that
//!   removed a file it rewrites sends the batch back to be applied again);
//! - VACUUM only deletes files older than the retention, so never a file a
//!   writer uploaded and is about to commit; the retention has a floor of 1 hour.

use crate::config::MaintenanceConfig;
use crate::tables::delta::TableError;
use crate::tables::{registry, tombstones, LakeTable};
pub mod compaction;

use deltalake::operations::vacuum::VacuumMode;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::{DeltaResult, DeltaTable};
use std::time::{Duration, Instant};

/// How often a lost race is retried within one round, per operation.
const ATTEMPTS: u32 = 3;

/// What one round did to one table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableReport {
    pub table: &'static str,
    /// Files before the round, and how many of them were small.
    pub files: usize,
    pub small_files: usize,
    /// Compaction: files removed and added, partitions left for the next round (None: not run).
    pub compacted: Option<compaction::Compacted>,
    /// VACUUM: files deleted (None: not run).
    pub vacuumed: Option<usize>,
    /// Tombstones expired (silver's tombstone table only).
    pub tombstones_expired: Option<usize>,
    /// Version checkpointed (one-off runs).
    pub checkpoint: Option<i64>,
}

/// What a round may do besides compaction.
#[derive(Clone, Copy, Debug, Default)]
pub struct Round {
    pub vacuum: bool,
    pub checkpoint: bool,
    /// Compact whenever there are at least 2 small files (one-off runs).
    pub compact_any: bool,
}

/// Maintains one table: compaction when due, then the operations `round` asks for.
pub async fn maintain(table: &mut LakeTable, config: &MaintenanceConfig, round: Round) -> Result<TableReport, TableError> {
    table.refresh().await?;
    let (files, small_files) = file_counts(table, config.target_file_bytes / 2)?;
    let mut report = TableReport { table: table.name(), files, small_files, ..TableReport::default() };
    let name = table.name();
    let threshold = if round.compact_any { 2 } else { config.compact_min_small_files };
    if small_files >= threshold {
        let fan_in = if round.compact_any { 2 } else { compaction::TIER_FAN_IN };
        report.compacted = Some(retrying(table, |t| compaction::compact(t, name, config.target_file_bytes, fan_in)).await?);
    }
    if round.vacuum && registry::is_tombstones(table.name()) {
        let cutoff = config.tombstone_cutoff();
        report.tombstones_expired = Some(retrying(table, |t| expire_tombstones(t, name, cutoff)).await?);
    }
    if round.vacuum {
        report.vacuumed = Some(retrying(table, |t| vacuum(t, config.vacuum_retention_hours)).await?);
    }
    if round.checkpoint {
        deltalake::checkpoints::create_checkpoint(table.delta(), None)
            .await
            .map_err(|e| table.wrap_error(e))?;
        report.checkpoint = table.version();
    }
    Ok(report)
}

/// All files of the table, and those smaller than `small`.
fn file_counts(table: &LakeTable, small: u64) -> Result<(usize, usize), TableError> {
    let snapshot = table.delta().snapshot().map_err(|e| table.wrap_error(e))?;
    let data = snapshot.log_data();
    let small_files = data.iter().filter(|f| (f.size().max(0) as u64) < small).count();
    Ok((data.num_files(), small_files))
}

/// Runs `op` on a copy of the table's handle and keeps the table it returns;
/// runs it again on a fresh snapshot when it loses a race with another commit.
async fn retrying<T, F, Fut>(table: &mut LakeTable, op: F) -> Result<T, TableError>
where
    F: Fn(DeltaTable) -> Fut,
    Fut: std::future::Future<Output = DeltaResult<(T, DeltaTable)>>,
{
    let mut attempt = 1;
    loop {
        match op(table.delta().clone()).await.map_err(|e| table.wrap_error(e)) {
            Ok((value, updated)) => {
                table.set_delta(updated);
                return Ok(value);
            }
            Err(e) if e.is_conflict() && attempt < ATTEMPTS => {
                tracing::info!(table = table.name(), error = %e, attempt, "maintenance lost a race with a commit; retrying");
                attempt += 1;
                table.refresh().await?;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn vacuum(table: DeltaTable, retention_hours: u64) -> DeltaResult<(usize, DeltaTable)> {
    let (updated, metrics) = table
        .vacuum()
        .with_retention_period(chrono::Duration::hours(retention_hours as i64))
        // Below the table's own retention (7 days by default) the operator chose
        // it knowingly; the 1-hour floor is enforced by the config.
        .with_enforce_retention_duration(false)
        // Full: also the files of commits that never happened (a crash between
        // upload and commit), not only those a commit removed.
        .with_mode(VacuumMode::Full)
        .await?;
    Ok((metrics.files_deleted.len(), updated))
}

/// Deletes the tombstones older than `cutoff`, under the layout lock (a DELETE
/// rewrites the files it reads).
async fn expire_tombstones(
    table: DeltaTable,
    name: &'static str,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> DeltaResult<(usize, DeltaTable)> {
    let definition = crate::tables::definition::get(name);
    let column = tombstones::meta_column(definition, crate::change::spec::Meta::WrittenAt).unwrap_or("deleted_at");
    let predicate = format!("\"{column}\" < '{}'", cutoff.format("%Y-%m-%dT%H:%M:%S%.6fZ"));
    let properties = CommitProperties::default().with_application_transactions(compaction::layout_txns(name, None));
    let (updated, metrics) = table.delete().with_predicate(predicate).with_commit_properties(properties).await?;
    Ok((metrics.num_deleted_rows.unwrap_or(0), updated))
}

/// When each table was last vacuumed, to space vacuums out inside `run`.
#[derive(Default)]
pub struct Schedule {
    last_vacuum: std::collections::HashMap<&'static str, Instant>,
}

impl Schedule {
    pub fn round(&mut self, table: &'static str, config: &MaintenanceConfig) -> Round {
        let every = Duration::from_secs(config.vacuum_interval_hours * 3600);
        let vacuum = self.last_vacuum.get(table).is_none_or(|t| t.elapsed() >= every);
        if vacuum {
            self.last_vacuum.insert(table, Instant::now());
        }
        Round { vacuum, checkpoint: false, compact_any: false }
    }
}

/// The maintenance loop inside `run`: every `interval_secs`, each table in
/// turn, on table handles of its own. A failing round is logged and retried
/// next time: maintenance never stops ingestion.
pub async fn run_service(mut tables: Vec<LakeTable>, config: MaintenanceConfig, metrics: std::sync::Arc<crate::metrics::Metrics>) {
    let mut schedule = Schedule::default();
    let mut every = tokio::time::interval(Duration::from_secs(config.interval_secs));
    every.tick().await; // the first tick is immediate: start after one interval
    loop {
        every.tick().await;
        for table in &mut tables {
            let round = schedule.round(table.name(), &config);
            let started = Instant::now();
            match maintain(table, &config, round).await {
                Ok(report) => {
                    metrics.record_maintenance(&report);
                    if report.compacted.is_some() || report.vacuumed.is_some_and(|n| n > 0) || report.tombstones_expired.is_some_and(|n| n > 0) {
                        tracing::info!(
                            table = report.table,
                            files = report.files,
                            small_files = report.small_files,
                            compacted = ?report.compacted,
                            vacuumed = ?report.vacuumed,
                            tombstones_expired = ?report.tombstones_expired,
                            ms = started.elapsed().as_millis() as u64,
                            "maintained"
                        );
                    }
                }
                Err(e) => {
                    metrics.maintenance_failures.get_or_create(&metrics.table(table.name())).inc();
                    tracing::warn!(table = table.name(), error = %e, "table maintenance failed; retrying next round");
                }
            }
        }
        // A compaction reads and writes whole files: what they freed goes back to the system.
        crate::memory::release_freed();
    }
}
