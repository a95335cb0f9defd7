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
//! A table most batches add nothing to (quarantine on a healthy stream, a
//! tombstones table when nothing is deleted) does not commit its offsets alone
//! every batch: it holds them in memory ([`TableSink::deferred_since`]) and
//! the next commit with rows carries them, or, once they are [`MAX_DEFER`] old,
//! a commit of offsets only ([`Writer::settle`]; also at a hand-over and at the
//! end of a run). Fewer commits on a live stream cost a crash at most
//! `MAX_DEFER` of records read again (those tables resume lowest, and every
//! other table skips them).
//!
//! Tables commit concurrently where they are independent (bronze, quarantine,
//! and each change table after its own tombstones table; the registry's order,
//! [`crate::tables::registry`], within each); a change table's changes are
//! built meanwhile, on a thread of their own ([`silver::Prepared`]), so that
//! only its own upsert waits for its tombstones. A crash between commits leaves
//! some tables behind; on restart each partition resumes after the lowest
//! version of the tables that read its topic, and each table skips what it
//! already holds. What a table takes
//! from the batch is its role's branch in `commit_one`; the tables
//! themselves come from `tables/*.toml`.

use crate::change::decode::Reader;
use crate::change::Op;
use crate::offsets::{app_id, OffsetRange, TopicPartition};
use crate::pipeline::decoded::{Decoded, TableReader};
use crate::tables::delta::TableError;
use crate::tables::registry::TableRole;
use crate::tables::tombstones::{self, Tombstones};
use crate::tables::{bronze, quarantine, silver, CommitOutcome, LakeTable};
use chrono::Utc;
use deltalake::kernel::Transaction;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many times in a row a commit may lose a race before the cycle gives up
/// and retries from the top (with back-off).
const MAX_CONFLICT_RETRIES: u32 = 20;

/// How long a table with nothing to add may hold its offsets in memory
/// before it commits them alone: bounds what a crash makes the next run read
/// again (about this long of the stream).
pub const MAX_DEFER: Duration = Duration::from_secs(10);

pub struct TableSink {
    pub role: TableRole,
    pub table: LakeTable,
    /// The topic the table reads (None: every topic of the run).
    pub topic: Option<String>,
    /// Last offset held, per partition: as of the loaded snapshot, or ahead
    /// of it while `deferred_since` is set.
    versions: BTreeMap<TopicPartition, Option<i64>>,
    /// Since when `versions` is ahead of the table's log: batches that gave
    /// this table no rows advanced its offsets in memory only (they hold
    /// nothing for it, so holding them is true; only the log does not say so
    /// yet). None: the log holds `versions`.
    deferred_since: Option<Instant>,
}

impl TableSink {
    pub fn reads(&self, topic: &str) -> bool {
        self.topic.as_deref().is_none_or(|t| t == topic)
    }

    /// May this batch's empty commit wait (see [`MAX_DEFER`])? Only for the
    /// tables most batches add nothing to, never when settling.
    fn may_defer(&self, settle: Option<Duration>) -> bool {
        matches!(self.role, TableRole::Quarantine | TableRole::Tombstones { .. })
            && settle.is_none()
            && self.deferred_since.is_none_or(|t| t.elapsed() < MAX_DEFER)
    }

    /// Holds `offsets` in memory instead of committing them alone.
    fn defer(&mut self, offsets: &[(TopicPartition, i64)]) {
        for (tp, last) in offsets {
            self.versions.insert(tp.clone(), Some(*last));
        }
        self.deferred_since.get_or_insert_with(Instant::now);
    }
}

/// What one table's commit did, for logs and metrics.
#[derive(Clone, Debug)]
pub struct TableCommit {
    pub table: &'static str,
    pub outcome: CommitOutcome,
    pub duration: Duration,
    pub conflicts: u32,
    pub offsets: Vec<(TopicPartition, i64)>,
}

pub struct Writer {
    pub sinks: Vec<TableSink>,
    /// The change tables, in the registry's order: how each reads its topic
    /// (shared with the commit tasks of a cycle; replaced when columns evolve).
    pub readers: Arc<Vec<TableReader>>,
    /// Per change table, the tombstones of the owned partitions (see [`crate::tables::tombstones`]).
    pub tombstones: Vec<Tombstones>,
}

impl Writer {
    /// `default_topic` is `kafka.topic`, which definitions name as `topic = "kafka.topic"`.
    pub fn new(default_topic: &str, tables: Vec<(TableRole, LakeTable)>) -> Writer {
        let readers: Vec<TableReader> = crate::tables::registry::change_tables()
            .into_iter()
            .map(|d| TableReader { reader: Reader::new(d).expect("a change table"), topic: crate::tables::registry::topic_of(d, default_topic) })
            .collect();
        let sinks: Vec<TableSink> = tables
            .into_iter()
            .map(|(role, table)| {
                let topic = match role {
                    TableRole::Tombstones { of } => Some(readers[of].topic.clone()),
                    TableRole::Change { index } => Some(readers[index].topic.clone()),
                    TableRole::Bronze | TableRole::Quarantine => None,
                };
                TableSink { role, table, topic, versions: BTreeMap::new(), deferred_since: None }
            })
            .collect();
        let tombstones = readers.iter().map(|_| Tombstones::default()).collect();
        Writer { sinks, readers: Arc::new(readers), tombstones }
    }

    /// Grows the change tables by the columns a decoded batch found
    /// (`on_new_column = "evolve"`), then reads them in: decode the batch again after.
    pub async fn evolve(&mut self, decoded: &Decoded) -> Result<(), TableError> {
        for (index, t) in decoded.tables.iter().enumerate() {
            if t.new_columns.is_empty() {
                continue;
            }
            let columns: Vec<_> = t.new_columns.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let sink = self.sinks.iter_mut().find(|s| s.role == TableRole::Change { index }).expect("every change table has a sink");
            crate::tables::evolution::add_columns(&mut sink.table, &columns).await?;
        }
        self.adopt_evolved_columns()
    }

    /// Reads the columns each change table grew (by this writer or another)
    /// into its reader, so that their fields are decoded as columns.
    pub fn adopt_evolved_columns(&mut self) -> Result<(), TableError> {
        for sink in &self.sinks {
            let TableRole::Change { index } = sink.role else { continue };
            let base = crate::tables::definition::get(sink.table.name());
            let extra = crate::tables::evolution::evolved_columns(&sink.table, base)?;
            let current = self.readers[index].reader.definition;
            if current.columns.len() != base.columns.len() + extra.len() {
                let definition = crate::tables::evolution::evolved_definition(base, &extra);
                let readers = Arc::get_mut(&mut self.readers).expect("no commit in flight while columns evolve");
                readers[index].reader = Reader::new(definition).expect("a change table");
            }
        }
        Ok(())
    }

    /// Forgets the tombstones written before `cutoff` (see [`Tombstones::expire`]).
    pub fn expire_tombstones(&mut self, cutoff: chrono::DateTime<Utc>) -> (usize, usize) {
        let forgotten = self.tombstones.iter_mut().map(|t| t.expire(cutoff)).sum();
        (forgotten, self.tombstones.iter().map(Tombstones::len).sum())
    }

    /// Reloads every table and reads the versions of newly assigned partitions.
    pub async fn assigned(&mut self, partitions: &[TopicPartition]) -> Result<(), TableError> {
        if crate::failpoint::fails("writer.assigned") {
            return Err(TableError::Injected("writer.assigned"));
        }
        for sink in &mut self.sinks {
            sink.table.refresh().await?;
            sink.versions.clear();
            sink.deferred_since = None;
            let mine: Vec<TopicPartition> = partitions.iter().filter(|tp| sink.reads(&tp.topic)).cloned().collect();
            load_versions(sink, &mine).await?;
            if let TableRole::Tombstones { of } = sink.role {
                let definition = crate::tables::definition::get(sink.table.name());
                let key = &self.readers[of].reader.definition.primary_key;
                let numbers: Vec<i32> = mine.iter().map(|tp| tp.partition).collect();
                self.tombstones[of].forget_partitions(&numbers);
                self.tombstones[of].load(&sink.table, definition, key, &numbers).await?;
            }
        }
        self.adopt_evolved_columns()
    }

    pub fn revoked(&mut self, partitions: &[TopicPartition]) {
        for (t, reader) in self.tombstones.iter_mut().zip(self.readers.iter()) {
            let numbers: Vec<i32> = partitions.iter().filter(|tp| tp.topic == reader.topic).map(|tp| tp.partition).collect();
            t.forget_partitions(&numbers);
        }
        for sink in &mut self.sinks {
            for p in partitions {
                sink.versions.remove(p);
            }
        }
    }

    /// The lowest offset all tables that read its topic hold for a partition
    /// (None: some table holds nothing).
    pub fn committed(&self, tp: &TopicPartition) -> Option<i64> {
        let mut low: Option<i64> = None;
        for sink in self.sinks.iter().filter(|s| s.reads(&tp.topic)) {
            let v = sink.versions.get(tp).copied().flatten()?;
            low = Some(low.map_or(v, |l| l.min(v)));
        }
        low
    }

    /// Writes the batch to every table. Idempotent: called again with the
    /// same batch after a failure, it writes only what is missing.
    ///
    /// Tables that do not depend on each other commit at the same time, each
    /// on its own task: bronze, quarantine, and each change table after its
    /// tombstones (a delete must be remembered before the row goes, see
    /// [`crate::tables::tombstones`]). Which of them land before a crash does
    /// not matter: each holds its own offsets and skips what it has.
    pub async fn write(&mut self, batch: &Arc<Decoded>, ranges: &Arc<BTreeMap<TopicPartition, OffsetRange>>) -> Result<Vec<TableCommit>, TableError> {
        self.cycle(batch, ranges, None).await
    }

    /// True when some table holds offsets in memory that its log does not
    /// (see [`MAX_DEFER`]); `older_than`: only counting those deferred at least that long.
    pub fn deferred(&self, older_than: Duration) -> bool {
        self.sinks.iter().any(|s| s.deferred_since.is_some_and(|t| t.elapsed() >= older_than))
    }

    /// Commits the offsets that tables hold in memory only, deferred at least
    /// `older_than` (ZERO: all of them), as commits of offsets alone.
    /// Idempotent and retryable like [`Writer::write`].
    pub async fn settle(&mut self, older_than: Duration) -> Result<Vec<TableCommit>, TableError> {
        let nothing = Arc::new(Decoded::new(Vec::new(), &self.readers, 0));
        self.cycle(&nothing, &Arc::new(BTreeMap::new()), Some(older_than)).await
    }

    /// One commit cycle; `settle`: see [`Writer::settle`] (None: a batch).
    async fn cycle(
        &mut self,
        batch: &Arc<Decoded>,
        ranges: &Arc<BTreeMap<TopicPartition, OffsetRange>>,
        settle: Option<Duration>,
    ) -> Result<Vec<TableCommit>, TableError> {
        // Each change table's changes are built from the whole batch on a
        // thread of their own while the tables before it commit (see [`silver::Prepared`]).
        let now = Utc::now();
        let mut prepared: Vec<Option<Preparing>> = (0..self.readers.len())
            .map(|index| {
                (settle.is_none() && !batch.records.is_empty()).then(|| {
                    let (batch, readers) = (batch.clone(), self.readers.clone());
                    tokio::task::spawn_blocking(move || {
                        let t = &batch.tables[index];
                        silver::prepare(&readers[index].reader, &batch.records, &t.events, &t.rows, now)
                    })
                })
            })
            .collect();
        // Kafka tombstones take the sequence of what they delete, read before
        // any table commits: the tombstones table and the change table must agree.
        let mut resolved = Vec::with_capacity(self.readers.len());
        for (index, t) in self.readers.iter().enumerate() {
            let events = batch.records.iter().zip(&batch.tables[index].events).filter_map(|(r, e)| e.as_ref().map(|e| (r, e)));
            let has_tombstones = batch.tables[index].events.iter().flatten().any(|e| e.kafka_tombstone);
            let table = self.sinks.iter().find(|s| s.role == TableRole::Change { index }).map(|s| &s.table);
            let r = match (has_tombstones, table) {
                (true, Some(table)) => silver::resolve_kafka_tombstones(table, &t.reader, events, |k| self.tombstones[index].seq(k)).await?,
                _ => silver::Resolved::default(),
            };
            resolved.push(r);
        }
        let resolved = Arc::new(resolved);
        let mut tombstones: Vec<Option<Tombstones>> = std::mem::take(&mut self.tombstones).into_iter().map(Some).collect();
        let mut chains: Vec<Chain> = Vec::new();
        for (position, sink) in std::mem::take(&mut self.sinks).into_iter().enumerate() {
            match sink.role {
                TableRole::Bronze | TableRole::Quarantine => chains.push(Chain { sinks: vec![(position, sink)], tombstones: None, prepared: None }),
                TableRole::Tombstones { of: index } | TableRole::Change { index } => {
                    match chains.iter_mut().find(|c| c.tombstones.as_ref().is_some_and(|(i, _)| *i == index)) {
                        Some(chain) => chain.sinks.push((position, sink)),
                        None => {
                            let state = tombstones[index].take().expect("one chain per change table");
                            chains.push(Chain { sinks: vec![(position, sink)], tombstones: Some((index, state)), prepared: prepared[index].take() });
                        }
                    }
                }
            }
        }
        let tasks: Vec<_> = chains
            .into_iter()
            .map(|chain| {
                let cycle =
                    Cycle { batch: batch.clone(), ranges: ranges.clone(), readers: self.readers.clone(), resolved: resolved.clone(), settle };
                tokio::spawn(chain.commit(cycle))
            })
            .collect();
        let mut sinks = Vec::new();
        let mut commits = Vec::new();
        let mut failure = None;
        for task in tasks {
            let (chain, result) = match task.await {
                Ok(done) => done,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("a table commit task was cancelled: {e}"),
            };
            sinks.extend(chain.sinks);
            if let Some((index, state)) = chain.tombstones {
                tombstones[index] = Some(state);
            }
            match result {
                Ok(done) => commits.extend(done),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        sinks.sort_by_key(|(position, _)| *position);
        self.sinks = sinks.into_iter().map(|(_, s)| s).collect();
        self.tombstones = tombstones.into_iter().map(|t| t.expect("every chain gave its tombstones back")).collect();
        if let Some(e) = failure {
            return Err(e);
        }
        commits.sort_by_key(|(position, _)| *position);
        Ok(commits.into_iter().map(|(_, c)| c).collect())
    }
}

/// Tables that commit one after the other within a cycle (a change table
/// after its tombstones), with the tombstones they share; chains commit
/// concurrently. Each sink keeps its position in the registry's order.
struct Chain {
    sinks: Vec<(usize, TableSink)>,
    tombstones: Option<(usize, Tombstones)>,
    /// The change table's changes, being built (see [`Writer::cycle`]).
    prepared: Option<Preparing>,
}

type Preparing = tokio::task::JoinHandle<Option<silver::Prepared>>;

impl Chain {
    /// Commits each table in turn, stopping at the first failure; gives the
    /// tables back whatever happened.
    async fn commit(mut self, cycle: Cycle) -> (Chain, Result<Vec<(usize, TableCommit)>, TableError>) {
        let mut done = Vec::new();
        let mut prepared = None;
        for (position, sink) in &mut self.sinks {
            if matches!(sink.role, TableRole::Change { .. }) {
                if let Some(building) = self.prepared.take() {
                    prepared = match building.await {
                        Ok(p) => p,
                        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        Err(e) => panic!("building a batch's changes was cancelled: {e}"),
                    };
                }
            }
            let state = self.tombstones.as_mut().map(|(_, t)| t);
            match commit_one(sink, &cycle, state, prepared.as_ref()).await {
                Ok(Some(c)) => {
                    done.push((*position, c));
                    crate::failpoint::hit(sink.role.after_commit_point());
                    crate::failpoint::hit(&format!("cycle.after:{}", sink.table.name()));
                }
                Ok(None) => {}
                Err(e) => return (self, Err(e)),
            }
        }
        (self, Ok(done))
    }
}

async fn load_versions(sink: &mut TableSink, partitions: &[TopicPartition]) -> Result<(), TableError> {
    let held = held_offsets(&sink.table, partitions).await?;
    sink.versions.extend(held);
    Ok(())
}

/// The last offset `table` holds for each of `partitions` (None: nothing yet),
/// read in one pass over its log.
pub async fn held_offsets(table: &LakeTable, partitions: &[TopicPartition]) -> Result<BTreeMap<TopicPartition, Option<i64>>, TableError> {
    let ids: Vec<String> = partitions.iter().map(|tp| app_id(table.name(), &tp.topic, tp.partition)).collect();
    let versions = table.txn_versions(&ids).await?;
    Ok(partitions.iter().zip(&ids).map(|(tp, id)| (tp.clone(), versions.get(id).copied().flatten())).collect())
}

/// What every table's commit in one cycle reads (shared by the commit tasks).
struct Cycle {
    batch: Arc<Decoded>,
    ranges: Arc<BTreeMap<TopicPartition, OffsetRange>>,
    readers: Arc<Vec<TableReader>>,
    resolved: Arc<Vec<silver::Resolved>>,
    /// Some: a settle (see [`Writer::settle`]), not a batch.
    settle: Option<Duration>,
}

/// Commits what `sink`'s table takes from the batch, with its offsets.
/// `tombstones`: the remembered deletes of the change table the sink belongs
/// to (its tombstones table or itself), None for bronze and quarantine.
/// `prepared`: a change table's changes from the whole batch, if built.
async fn commit_one(
    sink: &mut TableSink,
    cycle: &Cycle,
    mut tombstones: Option<&mut Tombstones>,
    prepared: Option<&silver::Prepared>,
) -> Result<Option<TableCommit>, TableError> {
    let (batch, ranges, readers, resolved) = (&*cycle.batch, &*cycle.ranges, &*cycle.readers, &*cycle.resolved);
    let started = Instant::now();
    let mut conflicts = 0;
    // Partitions assigned without a version read (should not happen) are read now.
    let unknown: Vec<TopicPartition> =
        ranges.keys().filter(|tp| sink.reads(&tp.topic) && !sink.versions.contains_key(*tp)).cloned().collect();
    if !unknown.is_empty() {
        load_versions(sink, &unknown).await?;
    }
    loop {
        let mut txns = Vec::new();
        let mut offsets = Vec::new();
        let now_ms = Utc::now().timestamp_millis();
        for (tp, held) in &sink.versions {
            let version = match ranges.get(tp) {
                Some(range) if held.is_none_or(|v| v < range.last) => {
                    offsets.push((tp.clone(), range.last));
                    range.last
                }
                // Owned but nothing new: re-assert the version (-1: nothing yet) so
                // that a concurrent commit for this partition is a conflict.
                _ => held.unwrap_or(-1),
            };
            txns.push(Transaction::new_with_last_update(app_id(sink.table.name(), &tp.topic, tp.partition), version, Some(now_ms)));
        }
        let settling = cycle.settle.is_some_and(|age| sink.deferred_since.is_some_and(|t| t.elapsed() >= age));
        if offsets.is_empty() && !settling {
            return Ok(None); // the table holds the whole batch already
        }
        if offsets.is_empty() {
            // A settle: what it writes (and logs) is every offset held.
            offsets = sink.versions.iter().filter_map(|(tp, v)| v.map(|v| (tp.clone(), v))).collect();
        }
        // Looked up once per record of the batch.
        let held: std::collections::HashMap<(&str, i32), Option<i64>, foldhash::fast::RandomState> =
            sink.versions.iter().map(|(tp, v)| ((tp.topic.as_str(), tp.partition), *v)).collect();
        let reads_all = sink.topic.is_none();
        let topic = sink.topic.as_deref();
        let wanted = |r: &crate::source::record::KafkaRecord| {
            (reads_all || topic == Some(&*r.topic))
                && held.get(&(&*r.topic, r.partition)).copied().flatten().is_none_or(|v| r.offset > v)
        };
        let now = Utc::now();
        let committed = match sink.role {
            TableRole::Bronze => {
                let selected: Vec<_> = batch.records.iter().filter(|r| wanted(r)).collect();
                sink.table.append(bronze::parts(&selected, now), txns).await
            }
            TableRole::Quarantine => {
                let selected: Vec<_> = batch
                    .records
                    .iter()
                    .zip(&batch.errors)
                    .filter_map(|(r, e)| e.as_ref().map(|e| (r, e)))
                    .filter(|(r, _)| wanted(r))
                    .collect();
                if selected.is_empty() && sink.may_defer(cycle.settle) {
                    sink.defer(&offsets);
                    return Ok(None);
                }
                sink.table.append(Some(quarantine::rows(selected.into_iter(), now)), txns).await
            }
            TableRole::Tombstones { of } => {
                let reader = &readers[of].reader;
                let events = batch.records.iter().zip(&batch.tables[of].events).filter(|(r, _)| wanted(r));
                let deletes: Vec<_> = events
                    .filter_map(|(r, e)| e.as_ref().map(|e| (r, e)))
                    .filter(|(_, e)| e.op == Op::Delete)
                    .filter_map(|(r, e)| {
                        let seq = if e.kafka_tombstone { resolved[of].get(&(r.partition, r.offset)).cloned()? } else { e.seq.clone() };
                        Some((r, &e.key, seq))
                    })
                    .collect();
                if deletes.is_empty() && sink.may_defer(cycle.settle) {
                    sink.defer(&offsets);
                    return Ok(None);
                }
                let definition = crate::tables::definition::get(sink.table.name());
                let key_types: Vec<_> = reader.key.iter().map(|i| reader.fields[*i].0.data_type.clone()).collect();
                let rows = tombstones::rows(definition, &reader.definition.primary_key, &key_types, &deletes, now)
                    .expect("tombstone columns match their definition (checked at start)");
                let result = sink.table.append(Some(rows), txns).await;
                if result.is_ok() {
                    let state = tombstones.as_deref_mut().expect("a tombstones table commits with its change table's tombstones");
                    for (r, key, seq) in deletes {
                        state.record(key.clone(), seq, r.partition, now);
                    }
                }
                result
            }
            TableRole::Change { index } => {
                let reader = &readers[index].reader;
                let table_batch = &batch.tables[index];
                let state = tombstones.as_deref().expect("a change table commits with its tombstones");
                // The changes built from the whole batch serve while the table
                // holds none of it (as it does, unless a crash or another
                // writer got part of it in).
                let holds_none = ranges.iter().all(|(tp, range)| {
                    !sink.reads(&tp.topic) || held.get(&(tp.topic.as_str(), tp.partition)).copied().flatten().is_none_or(|v| v < range.first)
                });
                let source = match prepared.filter(|_| holds_none) {
                    Some(prepared) => prepared.after_tombstones(&table_batch.events, state),
                    None => {
                        let events = batch
                            .records
                            .iter()
                            .zip(&table_batch.events)
                            .enumerate()
                            .filter(|(_, (r, _))| wanted(r))
                            .filter_map(|(at, (r, e))| e.as_ref().map(|e| (at, r, e)));
                        let changes = silver::newest_per_key(events, &resolved[index], |k| state.seq(k));
                        let (source, _) = silver::source_rows(reader, &table_batch.rows, &changes, now)
                            .expect("change table columns match their definition (checked at start)");
                        Cow::Owned(source)
                    }
                };
                silver::apply(&mut sink.table, reader, &source, txns).await
            }
        };
        match committed {
            Ok(outcome) => {
                for (tp, last) in &offsets {
                    sink.versions.insert(tp.clone(), Some(*last));
                }
                sink.deferred_since = None; // the commit carried every owned partition's version
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
                // Offsets held in memory stay held where they are ahead of the
                // log: they say this writer read those records and they give
                // this table nothing, whoever else wrote the partition.
                let held_back = sink.deferred_since.take().map(|since| (since, sink.versions.clone()));
                sink.table.refresh().await?;
                let owned: Vec<TopicPartition> = sink.versions.keys().cloned().collect();
                load_versions(sink, &owned).await?;
                if let Some((since, versions)) = held_back {
                    for (tp, v) in versions {
                        let logged = sink.versions.get(&tp).copied().flatten();
                        if v.is_some_and(|v| logged.is_none_or(|l| v > l)) {
                            sink.versions.insert(tp, v);
                            sink.deferred_since = Some(since);
                        }
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
}
