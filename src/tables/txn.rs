//! Reading the Kafka offsets a table holds: the versions of its `txn` app ids.
//!
//! delta-kernel answers one app id per call, and each call replays the log
//! from the last checkpoint: every commit file since, plus the checkpoint.
//! A writer that gets 24 partitions asks 4 tables for 24 app ids each, so its
//! start-up read the same ~50 commit files about a hundred times (10,601
//! storage requests and 7.5 s at 47 commits per table on loopback Azurite;
//! `tests/bench/startup.sh`), and more as the log grew.
//!
//! Here a table answers all the app ids asked for in one pass: it reads its
//! commit files newest first, a few at a time, and stops as soon as every app
//! id has been seen. The newest `txn` action of an app id is its version (the
//! Delta protocol's rule, and the kernel's), and a writer's commit carries the
//! offsets of every partition of its batch, so one or two commit files usually
//! answer everything. App ids not found in the last [`MAX_TAIL_COMMITS`]
//! commits, or past a commit file that log cleanup has removed, are asked of
//! the kernel, which also reads the checkpoint. A table that expires txn
//! actions (`delta.setTransactionRetentionDuration`) is always asked of the
//! kernel, which applies the expiry.

use deltalake::logstore::LogStore;
use deltalake::DeltaTableError;
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Deserialize;
use std::collections::HashMap;

/// Commit files read at most before the kernel is asked for what is left.
pub const MAX_TAIL_COMMITS: i64 = 128;
/// Commit files read at once.
const CONCURRENT_READS: usize = 8;

/// One line of a commit file: only a `txn` action is of interest.
#[derive(Deserialize)]
struct ActionLine {
    txn: Option<TxnAction>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TxnAction {
    app_id: String,
    version: i64,
}

/// What reading the tail of the log found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TailRead {
    /// Newest version of each app id asked for that the tail holds.
    pub found: HashMap<String, i64>,
    /// Every commit from version 0 was read: an app id not found has no version.
    pub complete: bool,
    /// Commit files read.
    pub commits_read: usize,
}

/// Reads commit files from `version` down until every app id of `wanted` is
/// found, version 0 is read, a commit file is missing, or `max_commits` were read.
pub async fn read_tail(log_store: &dyn LogStore, version: i64, wanted: &[String], max_commits: i64) -> Result<TailRead, DeltaTableError> {
    let mut read = TailRead::default();
    let mut next = version;
    let mut chunk = 1i64;
    let lowest = (version - max_commits + 1).max(0);
    while next >= lowest && read.found.len() < wanted.len() {
        let first = (next - chunk + 1).max(lowest);
        // Newest first: a version found in a newer commit is never replaced.
        let versions: Vec<i64> = (first..=next).rev().collect();
        let files: Vec<(i64, Option<_>)> = stream::iter(versions)
            .map(|v| async move { log_store.read_commit_entry(v as u64).await.map(|b| (v, b)) })
            .buffered(CONCURRENT_READS)
            .try_collect()
            .await?;
        for (v, file) in files {
            let Some(bytes) = file else {
                // Cleaned up (older than the log retention): the kernel reads the checkpoint.
                return Ok(read);
            };
            read.commits_read += 1;
            for (app_id, txn_version) in txn_actions(&bytes, v)? {
                if wanted.contains(&app_id) {
                    read.found.entry(app_id).or_insert(txn_version);
                }
            }
            if v == 0 {
                read.complete = true;
            }
        }
        next = first - 1;
        chunk = (chunk * 2).min(CONCURRENT_READS as i64 * 2);
    }
    Ok(read)
}

/// The `txn` actions of one commit file, last first.
fn txn_actions(bytes: &[u8], version: i64) -> Result<Vec<(String, i64)>, DeltaTableError> {
    let mut out = Vec::new();
    for line in bytes.split(|b| *b == b'\n').filter(|l| l.iter().any(|b| !b.is_ascii_whitespace())) {
        let action: ActionLine = serde_json::from_slice(line).map_err(|e| DeltaTableError::Generic(format!(
            "commit {version} of the log has a line that is not a JSON action: {e}"
        )))?;
        if let Some(txn) = action.txn {
            out.push((txn.app_id, txn.version));
        }
    }
    // Newest first, like the commits: within one commit an app id appears at
    // most once (protocol); if not, the last one wins, as the first one seen.
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_txn_actions_and_ignores_the_others() {
        let commit = br#"{"commitInfo":{"timestamp":1,"operation":"WRITE","note":"{\"txn\":{\"appId\":\"fake\"}}"}}
{"txn":{"appId":"lakestream:bronze.orders:orders:0","version":41,"lastUpdated":1700000000000}}
{"add":{"path":"a.parquet","size":1,"modificationTime":1,"dataChange":true,"partitionValues":{}}}
{"txn":{"appId":"lakestream:bronze.orders:orders:1","version":7}}

"#;
        let got = txn_actions(commit, 3).unwrap();
        let mut got: Vec<_> = got.into_iter().collect();
        got.sort();
        assert_eq!(
            got,
            vec![("lakestream:bronze.orders:orders:0".to_string(), 41), ("lakestream:bronze.orders:orders:1".to_string(), 7)]
        );
        let err = txn_actions(b"{\"txn\":", 9).unwrap_err().to_string();
        assert!(err.contains("commit 9"), "{err}");
    }

    /// The one-pass read must give what delta-kernel gives for every app id:
    /// ids in the newest commits, ids last written before a checkpoint whose
    /// older commit files were cleaned up, and ids never written.
    #[tokio::test(flavor = "multi_thread")]
    async fn agrees_with_the_kernel_across_a_checkpoint_and_log_cleanup() {
        use crate::tables::location::LakeLocation;
        use crate::tables::LakeTable;
        use deltalake::kernel::Transaction;

        let dir = tempfile::tempdir().unwrap();
        let location = LakeLocation::parse(dir.path().to_str().unwrap()).unwrap();
        let storage = HashMap::new();
        crate::migration::ensure_current(&location, &storage).await.unwrap();
        let spec = crate::tables::quarantine::spec();
        let mut table = LakeTable::open(&location, &storage, spec.clone()).await.unwrap();
        let id = |p: i32| crate::offsets::app_id(spec.name, "orders", p);
        let mut checkpoint = 0;
        // Partition 0 is in every commit, 1 only before the checkpoint, 2 once after it, 3 never.
        for i in 0..12i64 {
            let mut txns = vec![Transaction::new(id(0), i)];
            if i < 5 {
                txns.push(Transaction::new(id(1), 100 + i));
            }
            if i == 9 {
                txns.push(Transaction::new(id(2), 900));
            }
            table.append(None, txns).await.unwrap();
            if i == 5 {
                deltalake::checkpoints::create_checkpoint(table.delta(), None).await.unwrap();
                checkpoint = table.version().unwrap();
            }
        }
        // Log cleanup: the commit files before the checkpoint are gone.
        let log = dir.path().join(spec.path).join("_delta_log");
        for v in 0..checkpoint {
            std::fs::remove_file(log.join(format!("{v:020}.json"))).unwrap();
        }
        let table = LakeTable::open(&location, &storage, spec.clone()).await.unwrap();
        let ids: Vec<String> = (0..4).map(id).collect();

        let got = table.txn_versions(&ids).await.unwrap();
        for i in &ids {
            assert_eq!(got[i], table.txn_version(i).await.unwrap(), "{i}");
        }
        let expected: HashMap<String, Option<i64>> =
            [(id(0), Some(11)), (id(1), Some(104)), (id(2), Some(900)), (id(3), None)].into_iter().collect();
        assert_eq!(got, expected);

        // The newest commit answers partition 0 alone; the tail stops at the cleaned-up commits.
        let store = table.delta().log_store();
        let version = table.version().unwrap();
        let one = read_tail(store.as_ref(), version, &ids[..1], MAX_TAIL_COMMITS).await.unwrap();
        assert_eq!((one.found.get(&id(0)), one.commits_read, one.complete), (Some(&11), 1, false));
        let all = read_tail(store.as_ref(), version, &ids, MAX_TAIL_COMMITS).await.unwrap();
        assert_eq!(all.commits_read as i64, version - checkpoint + 1);
        assert!(!all.complete && !all.found.contains_key(&id(1)) && all.found[&id(2)] == 900);
    }
}
