//! The commit cycle: one batch, written to each table in turn, each commit
//! carrying that table's offsets.
//!
//! Per table and partition the writer keeps the last offset the table holds
//! (its `txn` version), read from the table's log when a partition is assigned
//! and advanced by each of its own commits. A record at or below that version
//! is already in the table and is skipped. The cached versions are valid for
//! the table snapshot they were read at: delta-rs checks every commit against
//! the commits that landed since that snapshot, and fails it with a conflict
//! if one of them carries the same txn app id (another writer wrote the same
//! partition). Then, and only then, the writer reloads the table, reads the
//! versions again and retries with what is still missing.
//!
//! Every commit carries a txn for *every* partition this writer owns, not
//! only those in the batch (the others keep their version). That makes the
//! conflict check cover all of them: if a previous owner's late commit lands
//! for any owned partition, our next commit fails instead of silently moving
//! our snapshot past it. For the same reason the snapshot only ever moves by
//! our own commits (to exactly the version committed) or by a full re-read.
//!
//! Tables are written in a fixed order (bronze, quarantine, silver). A crash
//! between two commits leaves the later tables behind; on restart each
//! partition resumes after the lowest version of all tables, and each table
//! skips what it already holds.

use crate::offsets::{app_id, OffsetRange};
use crate::pipeline::decoded::Decoded;
use crate::tables::delta::TableError;
use crate::change_event::Op;
use crate::tables::tombstones::{self, Tombstones};
use crate::tables::{bronze, quarantine, silver, CommitOutcome, LakeTable};
use chrono::Utc;
use deltalake::kernel::Transaction;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How many times in a row a commit may lose a race before the cycle gives up
/// and retries from the top (with back-off).
const MAX_CONFLICT_RETRIES: u32 = 20;

/// What a table takes from a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableRole {
    /// Every record.
    Bronze,
    /// Records that failed to decode.
    Quarantine,
    /// The delete events (remembered so late events cannot resurrect a row).
    Tombstones,
    /// The change events, merged into the current state.
    Silver,
}

impl TableRole {
    /// The crash point right after this table's commit in a cycle.
    fn after_commit_point(self) -> &'static str {
        match self {
            TableRole::Bronze => "cycle.after_bronze",
            TableRole::Quarantine => "cycle.after_quarantine",
            TableRole::Tombstones => "cycle.after_tombstones",
            TableRole::Silver => "cycle.after_silver",
        }
    }
}

pub struct TableSink {
    pub role: TableRole,
    pub table: LakeTable,
    /// Last offset held, per partition, as of the loaded snapshot.
    versions: BTreeMap<i32, Option<i64>>,
}

/// What one table's commit did, for logs and metrics.
#[derive(Clone, Debug)]
pub struct TableCommit {
    pub table: &'static str,
    pub outcome: CommitOutcome,
    pub duration: Duration,
    pub conflicts: u32,
    pub offsets: Vec<(i32, i64)>,
}

pub struct Writer {
    pub topic: String,
    pub sinks: Vec<TableSink>,
    /// Tombstones of the owned partitions (see [`crate::tables::tombstones`]).
    pub tombstones: Tombstones,
}

impl Writer {
    pub fn new(topic: String, tables: Vec<(TableRole, LakeTable)>) -> Writer {
        let sinks = tables
            .into_iter()
            .map(|(role, table)| TableSink { role, table, versions: BTreeMap::new() })
            .collect();
        Writer { topic, sinks, tombstones: Tombstones::default() }
    }

    /// Reloads every table and reads the versions of newly assigned partitions.
    pub async fn assigned(&mut self, partitions: &[i32]) -> Result<(), TableError> {
        if crate::failpoint::fails("writer.assigned") {
            return Err(TableError::Injected("writer.assigned"));
        }
        for sink in &mut self.sinks {
            sink.table.refresh().await?;
            sink.versions.clear();
            load_versions(sink, &self.topic, partitions).await?;
            if sink.role == TableRole::Tombstones {
                self.tombstones.forget_partitions(partitions);
                self.tombstones.load(&sink.table, partitions).await?;
            }
        }
        Ok(())
    }

    pub fn revoked(&mut self, partitions: &[i32]) {
        self.tombstones.forget_partitions(partitions);
        for sink in &mut self.sinks {
            for p in partitions {
                sink.versions.remove(p);
            }
        }
    }

    /// The lowest offset all tables hold for a partition (None: some table holds nothing).
    pub fn committed(&self, partition: i32) -> Option<i64> {
        let mut low: Option<i64> = None;
        for sink in &self.sinks {
            let v = sink.versions.get(&partition).copied().flatten()?;
            low = Some(low.map_or(v, |l| l.min(v)));
        }
        low
    }

    /// Writes the batch to every table. Idempotent: called again with the
    /// same batch after a failure, it writes only what is missing.
    pub async fn write(&mut self, batch: &Decoded, ranges: &BTreeMap<i32, OffsetRange>) -> Result<Vec<TableCommit>, TableError> {
        let mut commits = Vec::new();
        for sink in &mut self.sinks {
            if let Some(c) = commit_one(sink, &self.topic, batch, ranges, &mut self.tombstones).await? {
                commits.push(c);
                crate::failpoint::hit(sink.role.after_commit_point());
            }
        }
        Ok(commits)
    }
}

async fn load_versions(sink: &mut TableSink, topic: &str, partitions: &[i32]) -> Result<(), TableError> {
    let held = held_offsets(&sink.table, topic, partitions).await?;
    sink.versions.extend(held);
    Ok(())
}

/// The last offset `table` holds for each of `partitions` (None: nothing yet),
/// read in one pass over its log.
pub async fn held_offsets(table: &LakeTable, topic: &str, partitions: &[i32]) -> Result<BTreeMap<i32, Option<i64>>, TableError> {
    let ids: Vec<String> = partitions.iter().map(|&p| app_id(table.name(), topic, p)).collect();
    let versions = table.txn_versions(&ids).await?;
    Ok(partitions.iter().zip(&ids).map(|(&p, id)| (p, versions.get(id).copied().flatten())).collect())
}

async fn commit_one(
    sink: &mut TableSink,
    topic: &str,
    batch: &Decoded,
    ranges: &BTreeMap<i32, OffsetRange>,
    tombstone_state: &mut Tombstones,
) -> Result<Option<TableCommit>, TableError> {
    let started = Instant::now();
    let mut conflicts = 0;
    // Partitions assigned without a version read (should not happen) are read now.
    let unknown: Vec<i32> = ranges.keys().copied().filter(|p| !sink.versions.contains_key(p)).collect();
    if !unknown.is_empty() {
        load_versions(sink, topic, &unknown).await?;
    }
    loop {
        let mut txns = Vec::new();
        let mut offsets = Vec::new();
        let now_ms = Utc::now().timestamp_millis();
        for (&p, held) in &sink.versions {
            let version = match ranges.get(&p) {
                Some(range) if held.is_none_or(|v| v < range.last) => {
                    offsets.push((p, range.last));
                    range.last
                }
                // Owned but nothing new: re-assert the version (-1: nothing yet) so
                // that a concurrent commit for this partition is a conflict.
                _ => held.unwrap_or(-1),
            };
            txns.push(Transaction::new_with_last_update(app_id(sink.table.name(), topic, p), version, Some(now_ms)));
        }
        if offsets.is_empty() {
            return Ok(None); // the table holds the whole batch already
        }
        let wanted = |r: &crate::source::record::KafkaRecord| {
            sink.versions.get(&r.partition).copied().flatten().is_none_or(|v| r.offset > v)
        };
        let now = Utc::now();
        let events = || {
            batch
                .records
                .iter()
                .zip(&batch.results)
                .filter(|(r, _)| wanted(r))
                .filter_map(|(r, res)| res.as_ref().ok().map(|e| (r, e)))
        };
        let committed = match sink.role {
            TableRole::Bronze => {
                let selected: Vec<_> = batch.records.iter().filter(|r| wanted(r)).collect();
                sink.table.append(Some(bronze::rows(selected.into_iter(), now)), txns).await
            }
            TableRole::Quarantine => {
                let selected: Vec<_> = batch
                    .records
                    .iter()
                    .zip(&batch.results)
                    .filter_map(|(r, res)| res.as_ref().err().map(|e| (r, e)))
                    .filter(|(r, _)| wanted(r))
                    .collect();
                sink.table.append(Some(quarantine::rows(selected.into_iter(), now)), txns).await
            }
            TableRole::Tombstones => {
                let deletes = events().filter(|(_, e)| e.op == Op::Delete);
                let result = sink.table.append(Some(tombstones::rows(deletes, now)), txns).await;
                if result.is_ok() {
                    for (r, e) in events().filter(|(_, e)| e.op == Op::Delete) {
                        tombstone_state.record(e.key.clone(), e.seq, r.partition, now);
                    }
                }
                result
            }
            TableRole::Silver => {
                let changes = silver::newest_per_key(events(), |k| tombstone_state.seq(k));
                silver::merge(&mut sink.table, silver::source_rows(&changes, now), txns).await
            }
        };
        match committed {
            Ok(outcome) => {
                for (p, last) in &offsets {
                    sink.versions.insert(*p, Some(*last));
                }
                return Ok(Some(TableCommit {
                    table: sink.table.name(),
                    outcome,
                    duration: started.elapsed(),
                    conflicts,
                    offsets,
                }));
            }
            Err(e) if e.is_conflict() && conflicts < MAX_CONFLICT_RETRIES => {
                conflicts += 1;
                tracing::warn!(table = sink.table.name(), error = %e, conflicts, "commit conflict; reloading the table and its offsets");
                sink.table.refresh().await?;
                let owned: Vec<i32> = sink.versions.keys().copied().collect();
                load_versions(sink, topic, &owned).await?;
            }
            Err(e) => return Err(e),
        }
    }
}
