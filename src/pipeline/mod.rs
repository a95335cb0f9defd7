//! `lakestream run`: the streaming writer.
//!
//! Data flow: the consumer thread ([`crate::source::consumer`]) hands records
//! over a bounded channel; they are [`Batch`]ed; a closed batch is decoded
//! ([`decoded`]) and written to every table with its offsets ([`writer`]);
//! then the offsets are committed to the consumer group too, for lag tools.

pub mod decoded;
pub mod writer;

use crate::batch::Batch;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::offsets::{resume_offset, TopicPartition};
use crate::source::client::client_config;
use crate::source::consumer::{Assignment, KafkaSource, ResumeFn, SourceEvent};
use crate::tables::location::{register_object_stores, storage_options, LakeLocation};
use crate::tables::registry::{self, TableRole};
use crate::tables::{LakeTable, TableSpec};
use anyhow::{anyhow, bail, Context};
use decoded::Decoded;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use writer::Writer;

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Exit once every partition of the topic is committed, in every table, up
    /// to the end offset seen at start (partitions this writer does not own
    /// count too: it waits for its peers, or for a rebalance to hand a dead
    /// peer's partitions over).
    pub until_caught_up: bool,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub records: u64,
    pub batches: u64,
    pub quarantined: u64,
    pub commits: u64,
}

/// The tables of the pipeline, in commit order.
pub fn table_specs() -> Vec<(TableRole, TableSpec)> {
    registry::specs()
}

/// Migrates a new lake, checks every table is at the current migration, and opens them. Errors name `lake.uri`.
pub async fn open_tables(config: &Config) -> anyhow::Result<Vec<(TableRole, LakeTable)>> {
    register_object_stores();
    let location = LakeLocation::parse(&config.lake.uri).map_err(|m| anyhow!("setting `lake.uri`: {m}"))?;
    let storage = storage_options(&config.lake.storage);
    let mut loaded = crate::migration::ensure_current(&location, &storage)
        .await
        .with_context(|| format!("the lake at lake.uri = {} is not ready", location.root))?;
    let mut tables = Vec::new();
    for (role, spec) in table_specs() {
        let table = match loaded.remove(spec.name) {
            Some(delta) => LakeTable::from_loaded(spec, delta).map_err(anyhow::Error::from),
            None => LakeTable::open(&location, &storage, spec).await.map_err(anyhow::Error::from),
        }
        .with_context(|| format!("cannot open the lake at lake.uri = {} (check lake.uri and lake.storage.*)", location.root))?;
        table.check_protocol(config.lake.max_reader_version)?;
        tables.push((role, table));
    }
    Ok(tables)
}

/// Where a topic is configured, for messages: `kafka.topic` or the
/// definition files of the tables that read it.
pub fn topic_setting(config: &Config, topic: &str) -> String {
    if topic == config.kafka.topic {
        return "kafka.topic".into();
    }
    let files: Vec<&str> = registry::change_tables()
        .into_iter()
        .filter(|d| registry::topic_of(d, &config.kafka.topic) == topic)
        .map(|d| d.file)
        .collect();
    format!("[source] topic in {}", files.join(", "))
}

/// Checks that the brokers answer and `topic` exists, within a bounded
/// time; returns its number of partitions.
pub fn check_topic(config: &Config, topic: &str, timeout: Duration) -> anyhow::Result<usize> {
    let k = &config.kafka;
    let setting = topic_setting(config, topic);
    let consumer: BaseConsumer = client_config(k)
        .create()
        .map_err(|e| anyhow!("cannot create a Kafka client (kafka.*): {e}"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| anyhow!("cannot reach Kafka at kafka.brokers = {} within {:?}: {e}", k.brokers, timeout))?;
    let found = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| anyhow!("topic {topic} not found ({setting})"))?;
    if let Some(err) = found.error() {
        let code = rdkafka::types::RDKafkaErrorCode::from(err);
        if code == rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition {
            bail!("topic {topic} not found ({setting}) at kafka.brokers = {}", k.brokers);
        }
        bail!("topic {topic} ({setting}) is not usable: {code}");
    }
    Ok(found.partitions().len())
}

/// The end offset (high watermark) of every partition of `topics`.
fn end_offsets(config: &Config, topics: &[String], timeout: Duration) -> anyhow::Result<HashMap<TopicPartition, i64>> {
    let k = &config.kafka;
    let consumer: BaseConsumer = client_config(k).create().map_err(|e| anyhow!("cannot create a Kafka client (kafka.*): {e}"))?;
    let mut ends = HashMap::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| anyhow!("cannot reach Kafka at kafka.brokers = {} within {timeout:?}: {e}", k.brokers))?;
        for t in metadata.topics().iter().filter(|t| t.name() == topic) {
            for p in t.partitions() {
                let (_, high) = consumer
                    .fetch_watermarks(topic, p.id(), timeout)
                    .map_err(|e| anyhow!("cannot read the end offset of {topic} partition {}: {e}", p.id()))?;
                ends.insert(TopicPartition::new(topic.clone(), p.id()), high);
            }
        }
    }
    Ok(ends)
}

/// The resume callback: for each partition, the offset after the lowest
/// version any table that reads its topic holds. It keeps table handles of
/// its own (copies of the writer's at start, brought up to date at each
/// assignment), so it never waits on the writer and a rebalance does not
/// reload whole logs.
fn resume_fn(runtime: tokio::runtime::Handle, tables: Vec<(Option<String>, LakeTable)>) -> Arc<ResumeFn> {
    let tables = tokio::sync::Mutex::new(tables);
    Arc::new(move |partitions: &[TopicPartition]| {
        runtime.block_on(async {
            let mut tables = tables.lock().await;
            let mut per_table = Vec::new();
            for (topic, table) in tables.iter_mut() {
                let mine: Vec<TopicPartition> =
                    partitions.iter().filter(|tp| topic.as_deref().is_none_or(|t| t == tp.topic)).cloned().collect();
                table.refresh().await.map_err(|e| e.to_string())?;
                let versions = writer::held_offsets(table, &mine).await.map_err(|e| format!("{}: {e}", table.name()))?;
                per_table.push(versions);
            }
            Ok(partitions
                .iter()
                .map(|tp| {
                    let versions: Vec<Option<i64>> = per_table.iter().filter_map(|t| t.get(tp).copied()).collect();
                    (tp.clone(), resume_offset(&versions))
                })
                .collect())
        })
    })
}

/// How often the writer forgets tombstones past `maintenance.tombstone_retention_hours`.
const TOMBSTONE_EXPIRY_EVERY: Duration = Duration::from_secs(3600);

/// Runs the writer until `shutdown` resolves (or, with `until_caught_up`, until caught up).
pub async fn run(
    config: Config,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunSummary> {
    let stop = Stop::default();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop.request();
        });
    }
    let tables = open_tables(&config).await?;
    let topics = registry::topics(&config.kafka.topic);
    let start_ends: HashMap<TopicPartition, i64> = {
        let (c, topics) = (config.clone(), topics.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<HashMap<TopicPartition, i64>> {
            for t in &topics {
                check_topic(&c, t, Duration::from_secs(15))?;
            }
            end_offsets(&c, &topics, Duration::from_secs(15))
        })
        .await??
    };
    let metrics = Metrics::new();
    metrics.set_default_topic(&config.kafka.topic);
    if let Some(listen) = &config.metrics.listen {
        crate::metrics::serve(listen, metrics.clone()).await?;
    }
    let maintenance_task = if config.maintenance.enabled {
        // Table handles of its own (copies of the writer's, which maintenance
        // refreshes itself): maintenance never waits on the writer, nor the writer on it.
        let handles = tables.iter().map(|(_, t)| t.clone()).collect();
        Some(tokio::spawn(crate::maintenance::run_service(handles, config.maintenance.clone(), metrics.clone())))
    } else {
        None
    };
    let mut writer = Writer::new(&config.kafka.topic, tables);
    let (tx, mut rx) = mpsc::channel::<SourceEvent>(8192);
    let resume = resume_fn(tokio::runtime::Handle::current(), writer.sinks.iter().map(|s| (s.topic.clone(), s.table.clone())).collect());
    let mut others_checked = Instant::now();
    let source = KafkaSource::start(&config.kafka, &topics, resume.clone(), tx).map_err(|e| anyhow!(e))?;
    let committed_offsets: Arc<std::sync::Mutex<std::collections::BTreeMap<TopicPartition, i64>>> = Default::default();
    let lag_task = tokio::spawn(report_lag(source.consumer.clone(), committed_offsets.clone(), metrics.clone()));
    tracing::info!(topics = %topics.join(","), group = %config.kafka.group_id, lake = %config.lake.uri, "lakestream writer started");

    let mut batch = Batch::new(config.batch.clone());
    let mut summary = RunSummary::default();
    let mut assigned: BTreeSet<TopicPartition> = BTreeSet::new();
    let mut ends: HashMap<TopicPartition, Assignment> = HashMap::new();
    let mut had_assignment = false;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut tombstones_expired = Instant::now();
    let result: anyhow::Result<()> = async {
        loop {
            tokio::select! {
                biased;
                _ = stop.requested() => {
                    tracing::info!("shutdown requested: committing the open batch");
                    break;
                }
                event = rx.recv() => match event {
                    None => bail!("the Kafka consumer stopped unexpectedly"),
                    Some(SourceEvent::Record(r)) => {
                        // (No allocation per record: a linear look over the owned partitions.)
                        if !assigned.iter().any(|tp| tp.partition == r.partition && tp.topic == r.topic) {
                            continue; // a record of a partition handed over already
                        }
                        batch.push(r);
                        metrics.open_batch_records.set(batch.len() as i64);
                        // With --until-caught-up, close the last batch as soon as it holds everything.
                        let everything_in = options.until_caught_up
                            && all_through_end(&assigned, &ends, |p| {
                                writer.committed(p).max(batch.last_offset(p))
                            });
                        if batch.is_full() || everything_in {
                            flush(&mut batch, &mut writer, &source, &config, &mut summary, &metrics, &stop).await?;
                            publish_committed(&assigned, &writer, &committed_offsets);
                        }
                    }
                    Some(SourceEvent::Assigned(list)) => {
                        had_assignment = true;
                        let parts: Vec<TopicPartition> = list.iter().map(|a| a.tp.clone()).collect();
                        read_offsets(&mut writer, &parts, &metrics, &stop).await?;
                        for a in list {
                            assigned.insert(a.tp.clone());
                            ends.insert(a.tp.clone(), a);
                        }
                        metrics.assigned_partitions.set(assigned.len() as i64);
                        publish_committed(&assigned, &writer, &committed_offsets);
                    }
                    Some(SourceEvent::Revoked(parts, ack)) => {
                        flush(&mut batch, &mut writer, &source, &config, &mut summary, &metrics, &stop).await?;
                        batch.drop_partitions(&parts);
                        writer.revoked(&parts);
                        for p in &parts {
                            assigned.remove(p);
                            metrics.consumer_lag.remove(&metrics.partition(p));
                            metrics.committed_offset.remove(&metrics.partition(p));
                        }
                        metrics.assigned_partitions.set(assigned.len() as i64);
                        publish_committed(&assigned, &writer, &committed_offsets);
                        let _ = ack.send(());
                    }
                    Some(SourceEvent::Fatal(message)) => bail!(message),
                },
                _ = tick.tick() => {
                    if batch.deadline().is_some_and(|d| Instant::now() >= d) {
                        flush(&mut batch, &mut writer, &source, &config, &mut summary, &metrics, &stop).await?;
                        publish_committed(&assigned, &writer, &committed_offsets);
                    }
                    // Tombstones that maintenance deletes from the table leave memory too.
                    if config.maintenance.enabled && tombstones_expired.elapsed() >= TOMBSTONE_EXPIRY_EVERY {
                        tombstones_expired = Instant::now();
                        let (forgotten, kept) = writer.expire_tombstones(config.maintenance.tombstone_cutoff());
                        tracing::debug!(forgotten, kept, "expired tombstones from memory");
                    }
                }
            }
            if options.until_caught_up
                && had_assignment
                && batch.is_empty()
                && all_through_end(&assigned, &ends, |p| writer.committed(p))
            {
                // Our partitions are done; the others must be too, in the tables (read at most twice a second).
                let others: Vec<TopicPartition> = start_ends.keys().filter(|p| !assigned.contains(*p)).cloned().collect();
                if others.is_empty() {
                    tracing::info!("caught up with the end offsets seen at start");
                    break;
                }
                if others_checked.elapsed() >= Duration::from_millis(500) {
                    others_checked = Instant::now();
                    let (resume, parts) = (resume.clone(), others.clone());
                    let next = tokio::task::spawn_blocking(move || resume(&parts)).await?.map_err(|e| anyhow!(e))?;
                    if others.iter().all(|p| start_ends[p] <= 0 || next.get(p).copied().flatten().is_some_and(|n| n >= start_ends[p])) {
                        tracing::info!("caught up with the end offsets seen at start (other partitions by other writers)");
                        break;
                    }
                }
            }
        }
        flush(&mut batch, &mut writer, &source, &config, &mut summary, &metrics, &stop).await
    }
    .await;
    lag_task.abort();
    let _ = lag_task.await;
    if let Some(task) = maintenance_task {
        // A round cut short leaves at worst files no commit references (VACUUM's job).
        task.abort();
        let _ = task.await;
    }
    drop(rx);
    source.shutdown().await;
    result?;
    tracing::info!(records = summary.records, batches = summary.batches, quarantined = summary.quarantined, "lakestream writer stopped");
    Ok(summary)
}

/// How long a requested shutdown waits for a failing batch commit to succeed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A shutdown request (SIGTERM/SIGINT), observable from the run loop and from
/// the retry loop of a batch commit.
#[derive(Clone, Default)]
struct Stop {
    at: Arc<std::sync::Mutex<Option<Instant>>>,
    notify: Arc<tokio::sync::Notify>,
}

impl Stop {
    fn request(&self) {
        self.at.lock().unwrap().get_or_insert_with(Instant::now);
        self.notify.notify_waiters();
    }
    async fn requested(&self) {
        loop {
            let notified = self.notify.notified();
            if self.at.lock().unwrap().is_some() {
                return;
            }
            notified.await;
        }
    }
    /// True once a shutdown was requested more than `grace` ago.
    fn overdue(&self, grace: Duration) -> bool {
        self.at.lock().unwrap().is_some_and(|t| t.elapsed() >= grace)
    }
}

/// Shares the offsets every table holds with the lag reporter.
fn publish_committed(
    assigned: &BTreeSet<TopicPartition>,
    writer: &Writer,
    shared: &std::sync::Mutex<std::collections::BTreeMap<TopicPartition, i64>>,
) {
    let mut map = shared.lock().unwrap();
    map.clear();
    for p in assigned {
        map.insert(p.clone(), writer.committed(p).unwrap_or(-1));
    }
}

/// Every 10 s: consumer lag per owned partition, from the offsets committed to
/// every table (the Delta log, not the group offsets) and the high watermark.
async fn report_lag(
    consumer: Arc<crate::source::consumer::SourceConsumer>,
    committed: Arc<std::sync::Mutex<std::collections::BTreeMap<TopicPartition, i64>>>,
    metrics: Arc<Metrics>,
) {
    let mut every = tokio::time::interval(Duration::from_secs(10));
    loop {
        every.tick().await;
        let owned: Vec<(TopicPartition, i64)> = committed.lock().unwrap().iter().map(|(p, c)| (p.clone(), *c)).collect();
        let (consumer, metrics) = (consumer.clone(), metrics.clone());
        let _ = tokio::task::spawn_blocking(move || {
            for (p, c) in owned {
                if let Ok((_, high)) = consumer.fetch_watermarks(&p.topic, p.partition, Duration::from_secs(5)) {
                    metrics.consumer_lag.get_or_create(&metrics.partition(&p)).set((high - c - 1).max(0));
                    metrics.committed_offset.get_or_create(&metrics.partition(&p)).set(c);
                }
            }
        })
        .await;
    }
}

/// True when, for every assigned partition, `through(p)` (the last offset
/// known to be done) reaches the end offset seen at assignment.
fn all_through_end(
    assigned: &BTreeSet<TopicPartition>,
    ends: &HashMap<TopicPartition, Assignment>,
    through: impl Fn(&TopicPartition) -> Option<i64>,
) -> bool {
    assigned.iter().all(|p| {
        let Some(a) = ends.get(p) else { return false };
        let nothing_to_read = a.end <= a.start.unwrap_or(0) || a.end <= 0;
        nothing_to_read || through(p).is_some_and(|o| o + 1 >= a.end)
    })
}

/// Reads the offsets the tables hold for newly assigned partitions, retrying
/// with back-off while the lake is unreachable (a store that restarts during a
/// rebalance must not stop the writer; found by tests/chaos). The records of
/// these partitions wait in the channel meanwhile.
async fn read_offsets(writer: &mut Writer, partitions: &[TopicPartition], metrics: &Metrics, stop: &Stop) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(250);
    loop {
        match writer.assigned(partitions).await {
            Ok(()) => {
                metrics.lake_ok.store(true, std::sync::atomic::Ordering::Relaxed);
                return Ok(());
            }
            Err(e) if !stop.overdue(SHUTDOWN_GRACE) => {
                metrics.lake_ok.store(false, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(error = %e, retry_in = ?backoff, ?partitions, "cannot read the tables' offsets after an assignment; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e).context("reading the tables' offsets after assignment"),
        }
    }
}

/// Writes the open batch to every table, retrying transient failures with
/// back-off until it succeeds: a batch is never skipped.
async fn flush(
    batch: &mut Batch,
    writer: &mut Writer,
    source: &KafkaSource,
    config: &Config,
    summary: &mut RunSummary,
    metrics: &Metrics,
    stop: &Stop,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let bytes = batch.bytes();
    let (records, ranges) = batch.take();
    metrics.open_batch_records.set(0);
    let mut decoded = Decoded::new(records, &writer.readers, config.decode.max_record_bytes);
    if decoded.needs_evolution() {
        // Fields without a column (on_new_column = "evolve"): grow the tables, then read the batch again.
        let mut backoff = Duration::from_millis(250);
        while let Err(e) = writer.evolve(&decoded).await {
            if stop.overdue(SHUTDOWN_GRACE) {
                bail!("stopping while new columns cannot be added ({e}); the batch is read again on restart");
            }
            tracing::warn!(error = %e, retry_in = ?backoff, "adding new columns failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        for (t, table) in writer.readers.iter().zip(&decoded.tables) {
            if !table.new_columns.is_empty() {
                metrics.schema_changes.get_or_create(&metrics.table(&t.reader.definition.name)).inc();
            }
        }
        decoded = Decoded::new(decoded.records, &writer.readers, config.decode.max_record_bytes);
    }
    let mut backoff = Duration::from_millis(250);
    let commits = loop {
        match writer.write(&decoded, &ranges).await {
            Ok(c) => break c,
            Err(e) => {
                if stop.overdue(SHUTDOWN_GRACE) {
                    bail!(
                        "stopping while the batch still fails to commit ({e}); nothing of it is committed and it is \
                         read again on restart"
                    );
                }
                metrics.lake_ok.store(false, std::sync::atomic::Ordering::Relaxed);
                metrics.batch_retries.inc();
                tracing::warn!(error = %e, retry_in = ?backoff, "batch commit failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    metrics.lake_ok.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in &commits {
        let t = metrics.table(c.table);
        metrics.rows_written.get_or_create(&t).inc_by(c.outcome.rows as u64);
        metrics.commit_seconds.get_or_create(&t).observe(c.duration.as_secs_f64());
        metrics.commit_conflicts.get_or_create(&t).inc_by(u64::from(c.conflicts));
        metrics.table_version.get_or_create(&t).set(c.outcome.version);
        tracing::info!(
            table = c.table,
            version = c.outcome.version,
            records = c.outcome.rows,
            partitions = c.offsets.len(),
            offsets = %c.offsets.iter().map(|(tp, o)| format!("{tp}:{o}")).collect::<Vec<_>>().join(","),
            conflicts = c.conflicts,
            ms = c.duration.as_millis() as u64,
            "committed"
        );
    }
    metrics.records_consumed.inc_by(decoded.records.len() as u64);
    metrics.batch_records.observe(decoded.records.len() as f64);
    for e in decoded.errors.iter().flatten() {
        metrics.quarantined.get_or_create(&metrics.kind(e.kind.as_str())).inc();
    }
    for (t, table) in writer.readers.iter().zip(&decoded.tables) {
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
        metrics.last_committed_ts_ms.fetch_max(ts, std::sync::atomic::Ordering::Relaxed);
    }
    summary.records += decoded.records.len() as u64;
    summary.quarantined += decoded.rejected() as u64;
    summary.batches += 1;
    summary.commits += commits.len() as u64;
    let next: Vec<(TopicPartition, i64)> = ranges.iter().map(|(tp, r)| (tp.clone(), r.last + 1)).collect();
    if let Err(e) = source.commit_to_group(&next) {
        tracing::warn!(error = %e, "committing offsets to the consumer group failed (the Delta log is the source of truth)");
    }
    tracing::info!(records = decoded.records.len(), bytes, quarantined = decoded.rejected(), "batch written");
    Ok(())
}
