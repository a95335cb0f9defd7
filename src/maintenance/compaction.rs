//! Compaction (OPTIMIZE) that is safe beside ingestion and beside another
//! compaction.
//!
//! Why not delta-rs' `optimize()`: its conflict checker (1.1.3) ignores
//! removes with `dataChange=false`, which is what a compaction writes. So two
//! compactions of the same files both commit (every row twice), and a commit
//! that read a file a compaction has just replaced commits its rewrite of
//! that file next to the compacted copy (the rows twice again). Both were
//! found by `tests/maintenance.rs` (maintenance racing ingestion).
//!
//! The fix is a lock in the log, with the conflict check delta-rs does apply:
//! a compaction commit carries the `txn` app id of [`layout_txns`], and so does
//! tombstone expiry. delta-rs fails a commit with `ConcurrentTransaction` when
//! a commit that landed since its snapshot carries an app id it carries too,
//! so any two of them that overlap in time conflict; the loser retries on the
//! new snapshot. Silver's upsert takes no lock: it checks a lost race itself
//! ([`crate::tables::LakeTable::commit_rewrite`]: a winner that removed a file
//! it rewrites, with any `dataChange`, sends it back), and its removes carry
//! `dataChange=true`, which delta-rs' check does see when a compaction loses to
//! it. Appends read nothing and need no lock.
//!
//! The compaction itself: per partition, the files smaller than half the
//! target size, packed into bins of up to the target size; each bin with two or
//! more files is read (partition values put back as columns, columns added by a
//! migration since read as null) and written as one file; one commit removes
//! the originals and adds the new files, all with `dataChange=false`, so change
//! data feed readers see no change. One commit per partition, recorded as a
//! rewrite of that partition (so its conflict check covers that partition
//! only), under the partition's lock and the table lock. A partition that
//! loses to a commit that rewrote one of its files is left for the next round.

use deltalake::arrow::datatypes::Schema;
use deltalake::kernel::engine::arrow_conversion::TryIntoArrow;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, Remove, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaResult, DeltaTable};
use std::collections::{BTreeMap, HashSet};

/// The table-wide lock of `table` (see the module docs).
fn table_lock(table: &str) -> String {
    format!("lakestream:{table}:layout")
}

/// The lock of one partition of `table`, e.g. `order_month=2019-12-01`.
fn partition_lock(table: &str, partition: &str) -> String {
    format!("lakestream:{table}:layout:{partition}")
}

fn txn(app_id: String) -> Transaction {
    let now = chrono::Utc::now().timestamp_millis();
    // The version is only informative (a timestamp): the app id is the lock.
    Transaction::new_with_last_update(app_id, now, Some(now))
}

/// The locks of a commit that rewrites or deletes files of `table`: the
/// partitions it touches (`partition=value` paths), or the whole table when
/// they are not known. A compaction of a partition takes both its partition
/// lock and the table lock, so it conflicts with a commit holding either.
pub fn layout_txns(table: &str, partitions: Option<&[String]>) -> Vec<Transaction> {
    match partitions {
        Some(list) => list.iter().map(|p| txn(partition_lock(table, p))).collect(),
        None => vec![txn(table_lock(table))],
    }
}

/// How many times a partition's compaction commit is tried again on a newer
/// snapshot after losing a race with a commit that left its files alone.
const COMMIT_RETRIES: u32 = 10;

/// True when every file `actions` removes is still in the table's snapshot.
fn still_present(delta: &DeltaTable, actions: &[Action]) -> DeltaResult<bool> {
    let live: HashSet<String> = delta.snapshot()?.log_data().iter().map(|f| f.path().into_owned()).collect();
    Ok(actions.iter().all(|a| match a {
        Action::Remove(r) => live.contains(&r.path),
        _ => true,
    }))
}

/// What a compaction did: files removed, files added, partitions skipped
/// because a concurrent commit won (they are compacted next round).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compacted {
    pub removed: u64,
    pub added: u64,
    pub skipped_partitions: u64,
}

/// `a=1/b=x` as a SQL predicate: `a = '1' AND b = 'x'`.
fn partition_predicate(partition: &str) -> String {
    partition
        .split('/')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| format!("{k} = '{}'", v.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Size tiers of the files compaction merges: under 1 MiB, under 8 MiB,
/// under 64 MiB, … Files are only merged with files of their own tier.
///
/// Why tiers: a streaming table gains dozens of tiny files a minute. Merging
/// every small file of a partition into one bin rewrote the file the last
/// round produced, again and again, growing each time (for bronze at 1,000
/// events/s, a file of tens of MiB read and rewritten every minute: that was
/// the writer's RSS climbing in the live soak). With tiers a row is rewritten
/// about once per tier (log₈ of the target size), as in size-tiered LSM trees.
pub fn tier(size: u64) -> u32 {
    let mut tier = 0;
    let mut bound = 1u64 << 20;
    while size >= bound {
        tier += 1;
        bound = bound.saturating_mul(8);
    }
    tier
}

/// Files a tier above the lowest needs before its files are merged.
pub const TIER_FAN_IN: usize = 8;

/// Compacts the small files of `delta` (the table `name`, from its loaded
/// snapshot), one commit per partition, and returns the table at its new
/// version. A partition whose commit loses a race is left for the next round.
/// Files are merged within their [`tier`]: the lowest tier whenever it has
/// two files or more, a higher one once it has `fan_in` files (2 merges
/// whatever there is, as a one-off `lakestream maintain` does).
pub async fn compact(delta: DeltaTable, name: &'static str, target_bytes: u64, fan_in: usize) -> DeltaResult<(Compacted, DeltaTable)> {
    let mut delta = delta;
    let snapshot = delta.snapshot()?;
    let partition_columns = snapshot.metadata().partition_columns().to_vec();
    let schema: Schema = snapshot.schema().as_ref().try_into_arrow()?;
    let append_only = snapshot.metadata().configuration().get("delta.appendOnly").is_some_and(|v| v == "true");
    // Small files per partition and tier, oldest first.
    let mut by_partition: BTreeMap<(String, u32), Vec<(Add, Remove)>> = BTreeMap::new();
    for file in snapshot.log_data().iter() {
        let size = file.size().max(0) as u64;
        if size < target_bytes / 2 {
            // The Add form carries the partition values as text, as the log has them.
            #[allow(deprecated)]
            let add = file.add_action();
            by_partition.entry((crate::tables::data_file::partition_path(&add), tier(size))).or_default().push((add, file.remove_action(false)));
        }
    }
    let lowest = by_partition.keys().map(|(_, t)| *t).min().unwrap_or(0);
    by_partition.retain(|(_, t), files| *t == lowest || files.len() >= fan_in.max(2));
    // One commit per partition: its tiers together.
    let mut grouped: BTreeMap<String, Vec<Vec<(Add, Remove)>>> = BTreeMap::new();
    for ((partition, _), files) in by_partition {
        grouped.entry(partition).or_default().push(files);
    }
    let store = delta.log_store().object_store(None);
    let mut done = Compacted::default();
    for (partition, tiers) in grouped {
        let mut bins: Vec<Vec<(Add, Remove)>> = Vec::new();
        for mut files in tiers {
            files.sort_by_key(|(a, _)| a.modification_time);
            bins.push(Vec::new());
            let mut bytes = 0u64;
            for (add, remove) in files {
                if !bins.last().unwrap().is_empty() && bytes + add.size as u64 > target_bytes {
                    bins.push(Vec::new());
                    bytes = 0;
                }
                bytes += add.size as u64;
                bins.last_mut().unwrap().push((add, remove));
            }
        }
        bins.retain(|b| b.len() > 1);
        if bins.is_empty() {
            continue;
        }
        let mut actions = Vec::new();
        let (mut removed, mut added) = (0u64, 0u64);
        let deletion_timestamp = chrono::Utc::now().timestamp_millis();
        for bin in bins {
            let mut writer = RecordBatchWriter::for_table(&delta)?;
            for (add, _) in &bin {
                for batch in crate::tables::data_file::read(store.clone(), add, &schema, &partition_columns).await? {
                    writer.write(batch).await?;
                }
            }
            for mut new_file in writer.flush().await? {
                new_file.data_change = false;
                actions.push(Action::Add(new_file));
                added += 1;
            }
            for (_, mut remove) in bin {
                remove.deletion_timestamp = Some(deletion_timestamp);
                actions.push(Action::Remove(remove));
                removed += 1;
            }
        }
        let mut locks = layout_txns(name, None);
        if !partition.is_empty() {
            locks.extend(layout_txns(name, Some(std::slice::from_ref(&partition))));
        }
        let properties = CommitProperties::default().with_application_transactions(locks);
        let operation = if partition.is_empty() || append_only {
            // Nothing but compaction ever removes files here (appends only, or
            // an unpartitioned table whose deletes take the table lock): an
            // OPTIMIZE, which appends do not conflict with.
            DeltaOperation::Optimize { predicate: None, target_size: target_bytes as i64 }
        } else {
            // Recorded as a rewrite of one partition (replaceWhere) with dataChange=false:
            // delta-rs checks a commit against the files its predicate reads, and
            // an OPTIMIZE carries none, so it would "read" the whole table and lose
            // to any rewrite anywhere.
            DeltaOperation::Write {
                mode: SaveMode::Overwrite,
                partition_by: Some(partition_columns.clone()),
                predicate: Some(partition_predicate(&partition)),
            }
        };
        // A silver commit into the partition being written lands every few
        // hundred ms: a compaction that had to read and write its files first
        // would nearly always lose to one (and the month being written would
        // never be compacted). Its files are written by now, so a lost race is
        // retried on the newest snapshot, a commit that takes milliseconds, as
        // long as every file it removes is still in the table (a commit that
        // rewrote one of them wins).
        let mut attempt = 0;
        loop {
            let committed = CommitBuilder::from(properties.clone())
                .with_actions(actions.clone())
                .build(Some(delta.snapshot()?), delta.log_store(), operation.clone())
                .await;
            match committed {
                Ok(finalized) => {
                    let version = finalized.version();
                    delta.update_incremental(Some(version)).await?;
                    done.removed += removed;
                    done.added += added;
                    break;
                }
                Err(e) if crate::tables::delta::is_conflict(&e) => {
                    attempt += 1;
                    delta.update_incremental(None).await?;
                    if attempt <= COMMIT_RETRIES && still_present(&delta, &actions)? {
                        tracing::debug!(table = name, partition, attempt, "compaction of a partition lost a race; its files are unchanged, committing again");
                        continue;
                    }
                    // Its new files are unreferenced now: VACUUM removes them.
                    tracing::info!(table = name, partition, error = %e, attempt, "compaction of a partition lost a race with a commit that changed its files; next round");
                    done.skipped_partitions += 1;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok((done, delta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{AsArray, Int64Array, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field, Int64Type};
    use deltalake::arrow::record_batch::RecordBatch;
    use std::sync::Arc;
    use deltalake::datafusion::prelude::SessionContext;

    fn rows(ids: std::ops::Range<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true), Field::new("p", DataType::Utf8, true)]));
        let n = ids.clone().count();
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(ids)), Arc::new(StringArray::from(vec!["a"; n]))]).unwrap()
    }

    /// A table partitioned by `p` with three small files in `p=a` (ids 0..30).
    async fn three_small_files() -> DeltaTable {
        let mut t = DeltaTable::new_in_memory().write(vec![rows(0..10)]).with_partition_columns(["p"]).await.unwrap();
        for i in 1..3 {
            t = t.write(vec![rows(i * 10..i * 10 + 10)]).await.unwrap();
        }
        t
    }

    fn locked() -> CommitProperties {
        CommitProperties::default().with_application_transactions(layout_txns("t", Some(&["p=a".to_string()])))
    }

    async fn ids(t: &DeltaTable) -> Vec<i64> {
        let ctx = SessionContext::new();
        t.update_datafusion_session(&ctx.state()).unwrap();
        ctx.register_table("t", t.table_provider().await.unwrap()).unwrap();
        let batches = ctx.sql("SELECT id FROM t ORDER BY id").await.unwrap().collect().await.unwrap();
        batches.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect()
    }

    /// The month being written gets a MERGE every few hundred ms, each one
    /// under the partition's lock: a compaction that loses to a commit that
    /// left its files alone commits on the newer snapshot instead of giving up.
    #[tokio::test]
    async fn a_compaction_that_loses_to_a_commit_leaving_its_files_alone_commits_again() {
        let table = three_small_files().await;
        let stale = table.clone();
        let table = table.write(vec![rows(100..105)]).with_commit_properties(locked()).await.unwrap();
        let (done, compacted) = compact(stale, "t", 1 << 30, 2).await.unwrap();
        assert_eq!(done, Compacted { removed: 3, added: 1, skipped_partitions: 0 });
        assert_eq!(compacted.snapshot().unwrap().log_data().iter().count(), 2, "the compacted file and the racing commit's");
        assert!(compacted.version() > table.version());
        let expected: Vec<i64> = (0..30).chain(100..105).collect();
        assert_eq!(ids(&compacted).await, expected);
    }

    /// A commit that rewrote one of the files wins: the compaction leaves the
    /// partition for the next round, and no row is there twice.
    #[tokio::test]
    async fn a_compaction_that_loses_to_a_rewrite_of_its_files_gives_up() {
        let table = three_small_files().await;
        let stale = table.clone();
        let (table, _) = table.delete().with_predicate("id = 0").with_commit_properties(locked()).await.unwrap();
        let (done, compacted) = compact(stale, "t", 1 << 30, 2).await.unwrap();
        assert_eq!(done, Compacted { removed: 0, added: 0, skipped_partitions: 1 });
        assert_eq!(compacted.version(), table.version());
        assert_eq!(ids(&compacted).await, (1..30).collect::<Vec<_>>());
    }

    #[test]
    fn files_fall_in_tiers_of_eight() {
        assert_eq!(tier(0), 0);
        assert_eq!(tier(50_000), 0);
        assert_eq!(tier((1 << 20) - 1), 0);
        assert_eq!(tier(1 << 20), 1);
        assert_eq!(tier(5 << 20), 1);
        assert_eq!(tier(8 << 20), 2);
        assert_eq!(tier(63 << 20), 2);
        assert_eq!(tier(64 << 20), 3);
    }
}
