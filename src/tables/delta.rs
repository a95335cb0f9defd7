//! One Delta table of the lake: open it (migrations create it), read the Kafka offsets it
//! holds, and commit a batch of rows together with their offsets.

use crate::tables::location::LakeLocation;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, StructType, Transaction};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use std::collections::HashMap;

/// What a table is: its place in the lake, schema, partitioning and properties.
#[derive(Clone, Debug)]
pub struct TableSpec {
    /// Name used in app ids, logs and metrics, e.g. `bronze.orders`.
    pub name: &'static str,
    /// Path below the lake root, e.g. `bronze/orders`.
    pub path: &'static str,
    pub schema: SchemaRef,
    pub partition_columns: Vec<&'static str>,
    pub properties: Vec<(&'static str, &'static str)>,
}

/// A commit lost a race with another commit of the same table.
pub fn is_conflict(e: &DeltaTableError) -> bool {
    matches!(
        e,
        DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction { source: TransactionError::CommitConflict(_) | TransactionError::MaxCommitAttempts(_) }
    )
}

fn features<T: std::fmt::Display>(f: Option<&[T]>) -> String {
    f.map(|f| f.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")).unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("table {table} at {url}: {source}")]
    Delta {
        table: &'static str,
        url: String,
        #[source]
        source: DeltaTableError,
    },
    #[error("table {table} at {url}: {message}")]
    Incompatible { table: &'static str, url: String, message: String },
    /// A failure injected by a test ([`crate::failpoint::fails`]).
    #[error("failpoint {0}: injected failure")]
    Injected(&'static str),
}

impl TableError {
    /// A commit lost a race with another writer of the same table: reload and retry.
    pub fn is_conflict(&self) -> bool {
        match self {
            TableError::Delta { source, .. } => is_conflict(source),
            TableError::Incompatible { .. } | TableError::Injected(_) => false,
        }
    }
}

/// How many lost races a rewrite commits past before the writer reloads.
const REWRITE_RETRIES: u32 = 20;

/// The result of a commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitOutcome {
    pub version: i64,
    pub rows: usize,
}

#[derive(Clone)]
pub struct LakeTable {
    pub spec: TableSpec,
    table: DeltaTable,
}

impl LakeTable {
    /// Opens the table. Tables are created only by migrations
    /// ([`crate::migration`]), so a missing table is an error naming the fix.
    pub async fn open(location: &LakeLocation, storage: &HashMap<String, String>, spec: TableSpec) -> Result<LakeTable, TableError> {
        let url = location.table_url(spec.path);
        let wrap = |source| TableError::Delta { table: spec.name, url: url.to_string(), source };
        let mut table = DeltaTableBuilder::from_url(url.clone())
            .map_err(wrap)?
            .with_storage_options(storage.clone())
            .build()
            .map_err(wrap)?;
        // A location without a log is a missing table; any other failure to
        // read the log (credentials, network) is an error of its own.
        if !table.verify_deltatable_existence().await.map_err(wrap)? {
            return Err(TableError::Incompatible {
                table: spec.name,
                url: url.to_string(),
                message: format!("the table does not exist: run `lakestream migrate --lake {}`", location.root),
            });
        }
        table.load().await.map_err(wrap)?;
        LakeTable::from_loaded(spec, table)
    }

    /// A table already loaded (by the migration check), checked against its spec.
    pub fn from_loaded(spec: TableSpec, table: DeltaTable) -> Result<LakeTable, TableError> {
        let lake_table = LakeTable { spec, table };
        lake_table.check_schema()?;
        Ok(lake_table)
    }

    /// Every column of the spec must exist in the table with the same type.
    /// (Extra nullable columns added by a migration are fine.)
    fn check_schema(&self) -> Result<(), TableError> {
        let incompatible = |message: String| TableError::Incompatible {
            table: self.spec.name,
            url: self.table.table_url().to_string(),
            message,
        };
        let snapshot = self.table.snapshot().map_err(|e| incompatible(e.to_string()))?;
        let actual = snapshot.schema();
        let expected: StructType = self
            .spec
            .schema
            .as_ref()
            .try_into_kernel()
            .map_err(|e| incompatible(format!("schema does not convert to Delta: {e}")))?;
        for field in expected.fields() {
            match actual.field(field.name()) {
                None => return Err(incompatible(format!("column `{}` is missing", field.name()))),
                Some(have) if have.data_type() != field.data_type() => {
                    return Err(incompatible(format!(
                        "column `{}` is {:?}, lakestream writes {:?}",
                        field.name(),
                        have.data_type(),
                        field.data_type()
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The reader contract: the table stays readable by Power BI and
    /// Databricks (reader version at most `max_reader_version`), and uses no
    /// feature delta-rs cannot write. Refused with what to do, never written.
    pub fn check_protocol(&self, max_reader_version: i32) -> Result<(), TableError> {
        let incompatible = |message: String| TableError::Incompatible { table: self.spec.name, url: self.url(), message };
        let snapshot = self.table.snapshot().map_err(|e| self.wrap(e))?;
        let protocol = snapshot.protocol();
        if protocol.min_reader_version() > max_reader_version {
            return Err(incompatible(format!(
                "needs Delta reader version {} (reader features: [{}]); lakestream keeps tables at reader version {max_reader_version} \
                 so that Power BI and Databricks read them. Undo the upgrade (e.g. ALTER TABLE … SET TBLPROPERTIES \
                 ('delta.enableDeletionVectors' = 'false') and REORG/rewrite), or accept it with lake.max_reader_version",
                protocol.min_reader_version(),
                features(protocol.reader_features()),
            )));
        }
        deltalake::kernel::transaction::PROTOCOL.can_write_to(snapshot).map_err(|e| {
            incompatible(format!(
                "uses a feature delta-rs cannot write (writer version {}, writer features: [{}]): {e}",
                protocol.min_writer_version(),
                features(protocol.writer_features()),
            ))
        })
    }

    fn wrap(&self, source: DeltaTableError) -> TableError {
        TableError::Delta { table: self.spec.name, url: self.table.table_url().to_string(), source }
    }

    pub fn name(&self) -> &'static str {
        self.spec.name
    }

    pub fn url(&self) -> String {
        self.table.table_url().to_string()
    }

    pub fn version(&self) -> Option<i64> {
        self.table.version().map(|v| v as i64)
    }

    pub fn delta(&self) -> &DeltaTable {
        &self.table
    }

    /// Brings the table to its latest version (another writer may have committed).
    pub async fn refresh(&mut self) -> Result<(), TableError> {
        self.table.update_incremental(None).await.map_err(|e| self.wrap(e))
    }

    /// The last Kafka offset this table holds for an app id, from the loaded
    /// version, as delta-kernel reads it (a log replay per call).
    pub async fn txn_version(&self, app_id: &str) -> Result<Option<i64>, TableError> {
        let snapshot = self.table.snapshot().map_err(|e| self.wrap(e))?;
        snapshot
            .transaction_version(self.table.log_store().as_ref(), app_id)
            .await
            .map_err(|e| self.wrap(e))
    }

    /// The versions of many app ids from the loaded version, in one pass over
    /// the newest commit files (see [`crate::tables::txn`]).
    pub async fn txn_versions(&self, app_ids: &[String]) -> Result<HashMap<String, Option<i64>>, TableError> {
        let snapshot = self.table.snapshot().map_err(|e| self.wrap(e))?;
        let expires = snapshot.metadata().configuration().contains_key("delta.setTransactionRetentionDuration");
        let tail = match self.version() {
            Some(version) if !expires => {
                crate::tables::txn::read_tail(self.table.log_store().as_ref(), version, app_ids, crate::tables::txn::MAX_TAIL_COMMITS)
                    .await
                    .map_err(|e| self.wrap(e))?
            }
            _ => Default::default(),
        };
        let mut out = HashMap::with_capacity(app_ids.len());
        for id in app_ids {
            let version = match tail.found.get(id) {
                Some(v) => Some(*v),
                None if tail.complete => None,
                None => self.txn_version(id).await?,
            };
            out.insert(id.clone(), version);
        }
        Ok(out)
    }

    /// Appends `parts` (the rows of one commit, in any number of record
    /// batches) and records `txns` in the same commit. With no rows, the
    /// commit carries only the offsets, so that a table with nothing to add in
    /// a batch still advances with the others.
    ///
    /// The parts are taken one at a time: delta-rs copies each part it is
    /// given into its partitions before encoding it, so a caller that builds
    /// its rows part by part (bronze does, see [`crate::tables::bronze::PART_ROWS`]) holds one
    /// part and its copy at a time rather than the whole batch twice. The
    /// parts of a partition still go to one file.
    ///
    /// The data files are written first, then one commit adds them together
    /// with the offsets. A crash in between leaves unreferenced files (removed
    /// by VACUUM) and no commit: the batch is written again on restart.
    pub async fn append(&mut self, parts: impl IntoIterator<Item = RecordBatch>, txns: Vec<Transaction>) -> Result<CommitOutcome, TableError> {
        let mut rows = 0;
        let mut actions = Vec::new();
        let mut writer = None;
        for part in parts.into_iter().filter(|b| b.num_rows() > 0) {
            rows += part.num_rows();
            let writer = match &mut writer {
                Some(w) => w,
                None => writer.insert(RecordBatchWriter::for_table(&self.table).map_err(|e| self.wrap(e))?),
            };
            writer.write(part).await.map_err(|e| self.wrap(e))?;
        }
        if let Some(mut writer) = writer {
            actions.extend(writer.flush().await.map_err(|e| self.wrap(e))?.into_iter().map(Action::Add));
            crate::failpoint::hit(&format!("{}.files_written", self.spec.name));
        }
        let properties = CommitProperties::default().with_application_transactions(txns);
        let version = self.commit_actions(properties, actions).await?;
        Ok(CommitOutcome { version, rows })
    }

    /// Commits files written elsewhere (silver's upsert when it only inserts)
    /// as an append, with `txns`.
    pub async fn commit_appended(&mut self, actions: Vec<Action>, txns: Vec<Transaction>) -> Result<i64, TableError> {
        self.commit_actions(CommitProperties::default().with_application_transactions(txns), actions).await
    }

    /// Commits `actions`, which remove files they rewrote, with `txns`.
    ///
    /// delta-rs' conflict check ignores a winning commit's removes with
    /// `dataChange=false` (a compaction's, Spark's OPTIMIZE): it would commit
    /// a rewrite of a file that a compaction has just replaced, and the rows
    /// of that file would be in the table twice. So its retries are off and
    /// the race is checked here: after a lost race the table is brought to
    /// the latest version and the commit is tried again on it, unless a
    /// winner removed a file this commit removes, carried one of its `txn`
    /// app ids (another writer of the same partition), or changed the table's
    /// metadata or protocol. Then the conflict is returned and the writer
    /// reloads and applies the batch again.
    /// Returns the version and how many lost races it committed past.
    pub async fn commit_rewrite(&mut self, actions: Vec<Action>, txns: Vec<Transaction>, operation: DeltaOperation) -> Result<(i64, u32), TableError> {
        let ours: std::collections::HashSet<String> = txns.iter().map(|t| t.app_id.clone()).collect();
        let removed: Vec<String> = actions.iter().filter_map(|a| if let Action::Remove(r) = a { Some(r.path.clone()) } else { None }).collect();
        let properties = CommitProperties::default().with_application_transactions(txns).with_max_retries(0);
        let mut attempts = 0;
        loop {
            let base = self.version().unwrap_or(-1);
            let snapshot = self.table.snapshot().map_err(|e| self.wrap(e))?;
            let committed = CommitBuilder::from(properties.clone())
                .with_actions(actions.clone())
                .build(Some(snapshot), self.table.log_store(), operation.clone())
                .await;
            match committed {
                Ok(finalized) => {
                    let version = finalized.version();
                    self.table.update_incremental(Some(version)).await.map_err(|e| self.wrap(e))?;
                    return Ok((version as i64, attempts));
                }
                Err(e) if is_conflict(&e) && attempts < REWRITE_RETRIES => {
                    attempts += 1;
                    self.table.update_incremental(None).await.map_err(|e| self.wrap(e))?;
                    if let Some(reason) = self.lost_to(base, &ours, &removed).await? {
                        tracing::debug!(table = self.spec.name, reason, "a rewrite lost a race it cannot commit past");
                        return Err(self.wrap(e));
                    }
                    tracing::debug!(table = self.spec.name, attempts, "a rewrite lost a race to commits that left its files alone; committing again");
                }
                Err(e) => return Err(self.wrap(e)),
            }
        }
    }

    /// Why the commits after `base` (up to the loaded version) forbid
    /// committing a rewrite on top of them, if they do (see [`Self::commit_rewrite`]).
    async fn lost_to(&self, base: i64, ours: &std::collections::HashSet<String>, removed: &[String]) -> Result<Option<&'static str>, TableError> {
        let latest = self.version().unwrap_or(-1);
        for version in base + 1..=latest {
            let Some(bytes) = self.table.log_store().read_commit_entry(version as u64).await.map_err(|e| self.wrap(e))? else {
                return Ok(Some("a winning commit file is missing"));
            };
            for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let action: serde_json::Value = serde_json::from_slice(line).map_err(|e| self.wrap(DeltaTableError::Generic(format!("commit {version}: {e}"))))?;
                if action.get("txn").and_then(|t| t.get("appId")).and_then(|a| a.as_str()).is_some_and(|a| ours.contains(a)) {
                    return Ok(Some("a winner wrote one of this writer's partitions"));
                }
                if action.get("metaData").is_some() || action.get("protocol").is_some() {
                    return Ok(Some("a winner changed the table's metadata"));
                }
            }
        }
        let snapshot = self.table.snapshot().map_err(|e| self.wrap(e))?;
        let live: std::collections::HashSet<String> = snapshot.log_data().iter().map(|f| f.path().into_owned()).collect();
        if removed.iter().any(|p| !live.contains(p)) {
            return Ok(Some("a winner removed a file this commit rewrites"));
        }
        Ok(None)
    }

    /// Commits `actions` with `properties` and moves the loaded snapshot to
    /// exactly the version committed (not past it: see the writer's notes on
    /// why the snapshot must only move by our own commits or a full re-read).
    async fn commit_actions(&mut self, properties: CommitProperties, actions: Vec<Action>) -> Result<i64, TableError> {
        let snapshot = self.table.snapshot().map_err(|e| self.wrap(e))?;
        let partition_by = Some(snapshot.metadata().partition_columns().to_vec()).filter(|p| !p.is_empty());
        let operation = DeltaOperation::Write { mode: SaveMode::Append, partition_by, predicate: None };
        let finalized = CommitBuilder::from(properties)
            .with_actions(actions)
            .build(Some(snapshot), self.table.log_store(), operation)
            .await
            .map_err(|e| self.wrap(e))?;
        let version = finalized.version();
        self.table.update_incremental(Some(version)).await.map_err(|e| self.wrap(e))?;
        Ok(version as i64)
    }

    /// Replaces the in-memory table after an operation that returned a new one.
    pub fn set_delta(&mut self, table: DeltaTable) {
        self.table = table;
    }

    pub fn wrap_error(&self, source: DeltaTableError) -> TableError {
        self.wrap(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::Int64Array;
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn rows(ids: std::ops::Range<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(ids))]).unwrap()
    }

    async fn table(delta: DeltaTable) -> LakeTable {
        let spec = TableSpec { name: "t", path: "t", schema: rows(0..0).schema(), partition_columns: vec![], properties: vec![] };
        LakeTable::from_loaded(spec, delta).unwrap()
    }

    /// A rewrite of the one file of the table: remove it, add a file of `ids`.
    async fn rewrite(delta: &DeltaTable, ids: std::ops::Range<i64>) -> Vec<Action> {
        let file = delta.snapshot().unwrap().log_data().iter().next().unwrap().remove_action(true);
        let mut writer = RecordBatchWriter::for_table(delta).unwrap();
        writer.write(rows(ids)).await.unwrap();
        let mut actions: Vec<Action> = writer.flush().await.unwrap().into_iter().map(Action::Add).collect();
        actions.push(Action::Remove(file));
        actions
    }

    fn txn(app_id: &str, version: i64) -> Vec<Transaction> {
        vec![Transaction::new_with_last_update(app_id, version, None)]
    }

    fn operation() -> DeltaOperation {
        DeltaOperation::Write { mode: SaveMode::Overwrite, partition_by: None, predicate: None }
    }

    /// A compaction (or Spark's OPTIMIZE) replaced the file a rewrite removes,
    /// with `dataChange=false`, which delta-rs' own check ignores: the
    /// rewrite must not commit next to the compacted copy.
    #[tokio::test]
    async fn a_rewrite_loses_to_a_winner_that_replaced_its_file() {
        let delta = DeltaTable::new_in_memory().write(vec![rows(0..10)]).await.unwrap();
        let mut stale = table(delta.clone()).await;
        let actions = rewrite(&delta, 1..10).await;
        // The winner: the same rows in a new file, the old one removed without a data change.
        let mut compacted = rewrite(&delta, 0..10).await;
        for a in &mut compacted {
            match a {
                Action::Add(add) => add.data_change = false,
                Action::Remove(r) => r.data_change = false,
                _ => {}
            }
        }
        let winner = CommitBuilder::default()
            .with_actions(compacted)
            .build(Some(delta.snapshot().unwrap()), delta.log_store(), DeltaOperation::Optimize { predicate: None, target_size: 1 })
            .await
            .unwrap();
        let error = stale.commit_rewrite(actions, txn("writer-p0", 7), operation()).await.unwrap_err();
        assert!(error.is_conflict(), "{error}");
        assert_eq!(stale.version(), Some(winner.version() as i64), "brought to the winner's version, nothing committed on it");
    }

    /// A winner that left the rewritten file alone (an append) is committed
    /// past: no lock, no queue, and the rewrite lands on the newer version.
    #[tokio::test]
    async fn a_rewrite_commits_past_a_winner_that_left_its_file_alone() {
        let delta = DeltaTable::new_in_memory().write(vec![rows(0..10)]).await.unwrap();
        let mut stale = table(delta.clone()).await;
        let actions = rewrite(&delta, 1..10).await;
        let appended = delta.clone().write(vec![rows(100..105)]).await.unwrap();
        let (version, races) = stale.commit_rewrite(actions, txn("writer-p0", 7), operation()).await.unwrap();
        assert_eq!((version, races), (appended.version().unwrap() as i64 + 1, 1));
        assert_eq!(stale.txn_version("writer-p0").await.unwrap(), Some(7));
    }

    /// A winner that carries one of the rewrite's txn app ids (another writer
    /// of the same Kafka partition) sends it back to the writer.
    #[tokio::test]
    async fn a_rewrite_loses_to_a_winner_with_its_app_id() {
        let delta = DeltaTable::new_in_memory().write(vec![rows(0..10)]).await.unwrap();
        let mut stale = table(delta.clone()).await;
        let actions = rewrite(&delta, 1..10).await;
        let _ = delta
            .clone()
            .write(vec![rows(100..105)])
            .with_commit_properties(CommitProperties::default().with_application_transactions(txn("writer-p0", 9)))
            .await
            .unwrap();
        let error = stale.commit_rewrite(actions, txn("writer-p0", 7), operation()).await.unwrap_err();
        assert!(error.is_conflict(), "{error}");
    }
}
