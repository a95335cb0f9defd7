//! The run loop: one task that owns the open batch and the writer, and reacts
//! to what happens, each in its own method: a record arrives, partitions are
//! assigned or revoked, a deadline passes, a stop is requested, the batch in
//! flight lands. Records only ever reach a table through [`RunLoop::flush`],
//! which decodes the batch and hands it to the writer's task
//! ([`super::in_flight`]), which commits it to every table with its offsets,
//! retrying until it lands; [`RunLoop::land`] then reports it.

use super::decoded::Decoded;
use super::in_flight::InFlight;
use super::lag::Lag;
use super::report;
use super::shutdown::{Backoff, Stop};
use super::status::Status;
use super::writer::{Writer, MAX_DEFER};
use super::{RunOptions, RunSummary};
use crate::batch::Batch;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::offsets::TopicPartition;
use crate::source::consumer::{Assignment, KafkaSource, ResumeFn, SourceEvent};
use crate::source::record::KafkaRecord;
use anyhow::{anyhow, bail, Context};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How often the writer forgets tombstones past `maintenance.tombstone_retention_hours`.
const TOMBSTONE_EXPIRY_EVERY: Duration = Duration::from_secs(3600);

pub struct RunLoop {
    pub config: Config,
    pub options: RunOptions,
    /// None while a batch is in flight: its task has the writer.
    writer: Option<Writer>,
    in_flight: Option<InFlight>,
    pub source: KafkaSource,
    pub metrics: Arc<Metrics>,
    pub stop: Stop,
    pub lag: Arc<Lag>,
    pub resume: Arc<ResumeFn>,
    /// Every partition of the run's topics and its end offset when the run started.
    pub start_ends: HashMap<TopicPartition, i64>,
    batch: Batch,
    summary: RunSummary,
    status: Status,
    /// Owned partitions, with where each started and ended at assignment.
    assigned: HashMap<TopicPartition, Assignment>,
    had_assignment: bool,
    /// Records between what the tables hold and the end offsets seen at
    /// assignment, as of the last commit or hand-over (see [`RunLoop::held_changed`]).
    unread: i64,
    others_checked: Instant,
    tombstones_expired: Instant,
}

impl RunLoop {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        options: RunOptions,
        writer: Writer,
        source: KafkaSource,
        metrics: Arc<Metrics>,
        stop: Stop,
        lag: Arc<Lag>,
        resume: Arc<ResumeFn>,
        start_ends: HashMap<TopicPartition, i64>,
    ) -> RunLoop {
        RunLoop {
            batch: Batch::new(config.batch.clone()),
            config,
            options,
            writer: Some(writer),
            in_flight: None,
            source,
            metrics,
            stop,
            lag,
            resume,
            start_ends,
            summary: RunSummary::default(),
            status: Status::start(),
            assigned: HashMap::new(),
            had_assignment: false,
            unread: 0,
            others_checked: Instant::now(),
            tombstones_expired: Instant::now(),
        }
    }

    /// Runs until a stop is requested (or, with `--until-caught-up`, until
    /// caught up), then commits the open batch.
    pub async fn run(&mut self, events: &mut mpsc::Receiver<SourceEvent>) -> anyhow::Result<RunSummary> {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // One timer for the open batch's deadline, moved only when the deadline
        // does (a new timer per record would cost more than the record).
        let deadline_timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(deadline_timer);
        let mut armed: Option<Instant> = None;
        let result = async {
            loop {
                let deadline = self.batch.deadline(chrono::Utc::now().timestamp_millis(), self.backlog());
                if deadline != armed {
                    if let Some(d) = deadline {
                        deadline_timer.as_mut().reset(d.into());
                    }
                    armed = deadline;
                }
                tokio::select! {
                    biased;
                    _ = self.stop.requested() => {
                        tracing::info!("shutdown requested: committing the open batch");
                        break;
                    }
                    event = events.recv() => match event {
                        None => bail!("the Kafka consumer stopped unexpectedly"),
                        Some(SourceEvent::Records(list)) => {
                            for r in list {
                                self.on_record(r).await?;
                            }
                        }
                        Some(SourceEvent::Assigned(list)) => self.on_assigned(list).await?,
                        Some(SourceEvent::Revoked(parts, ack)) => self.on_revoked(parts, ack).await?,
                        Some(SourceEvent::Fatal(message)) => bail!(message),
                    },
                    _ = &mut deadline_timer, if armed.is_some() => self.flush().await?,
                    _ = landed(&self.in_flight), if self.in_flight.is_some() => self.land().await?,
                    _ = tick.tick() => self.on_tick().await?,
                }
                if self.options.until_caught_up && self.caught_up().await? {
                    break;
                }
            }
            self.flush().await?;
            self.land().await?;
            self.settle(Duration::ZERO).await
        }
        .await;
        self.status.finish();
        result.map(|()| self.summary.clone())
    }

    async fn on_record(&mut self, r: KafkaRecord) -> anyhow::Result<()> {
        // A linear look over the owned partitions: no allocation per record.
        let Some(end) = self.assigned.iter().find(|(tp, _)| tp.partition == r.partition && *tp.topic == *r.topic).map(|(_, a)| a.end) else {
            return Ok(()); // a record of a partition handed over already
        };
        let reaches_end = r.offset + 1 >= end;
        self.batch.push(r);
        self.metrics.open_batch_records.set(self.batch.len() as i64);
        // With --until-caught-up, close the last batch as soon as it holds
        // everything (which only the last record of a partition can complete).
        let everything_in = self.options.until_caught_up && reaches_end && {
            self.land().await?;
            self.all_through_end(|p| self.writer().committed(p).max(self.batch.last_offset(p)))
        };
        if self.batch.is_full() || everything_in {
            self.flush().await?;
        }
        Ok(())
    }

    async fn on_assigned(&mut self, list: Vec<Assignment>) -> anyhow::Result<()> {
        self.land().await?;
        self.had_assignment = true;
        let parts: Vec<TopicPartition> = list.iter().map(|a| a.tp.clone()).collect();
        // The tables' offsets for the new partitions, retried while the lake is
        // unreachable (a store restarting during a rebalance must not stop the
        // writer; found by tests/chaos). Their records wait in the channel.
        let mut backoff = Backoff::default();
        loop {
            match self.writer_mut().assigned(&parts).await {
                Ok(()) => break,
                Err(e) if !self.stop.overdue() => {
                    self.metrics.lake_ok.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %e, retry_in = ?backoff.next_wait(), partitions = ?parts, "cannot read the tables' offsets after an assignment; retrying");
                    backoff.wait().await;
                }
                Err(e) => return Err(e).context("reading the tables' offsets after assignment"),
            }
        }
        self.metrics.lake_ok.store(true, Ordering::Relaxed);
        for a in list {
            self.assigned.insert(a.tp.clone(), a);
        }
        self.metrics.assigned_partitions.set(self.assigned.len() as i64);
        self.held_changed();
        Ok(())
    }

    /// Commits what the batch holds (of every partition), hands the revoked
    /// partitions over and answers the consumer thread.
    async fn on_revoked(&mut self, parts: Vec<TopicPartition>, ack: oneshot::Sender<()>) -> anyhow::Result<()> {
        self.flush().await?;
        self.land().await?;
        self.settle(Duration::ZERO).await?; // the next owner starts where the tables really are
        self.batch.drop_partitions(&parts);
        self.writer_mut().revoked(&parts);
        for p in &parts {
            self.assigned.remove(p);
            self.metrics.consumer_lag.remove(&self.metrics.partition(p));
            self.metrics.committed_offset.remove(&self.metrics.partition(p));
        }
        self.metrics.assigned_partitions.set(self.assigned.len() as i64);
        self.held_changed();
        let _ = ack.send(());
        Ok(())
    }

    async fn on_tick(&mut self) -> anyhow::Result<()> {
        let expiry_due = self.config.maintenance.enabled && self.tombstones_expired.elapsed() >= TOMBSTONE_EXPIRY_EVERY;
        if self.in_flight.is_some() && !expiry_due {
            // The writer is busy: held offsets wait for the next tick (a batch
            // that keeps the writer busy commits them itself once MAX_DEFER old).
            return Ok(());
        }
        // Offsets held in memory only are written once MAX_DEFER old, even on an idle stream.
        self.settle(MAX_DEFER).await?;
        // Tombstones that maintenance deletes from the table leave memory too.
        if expiry_due {
            self.tombstones_expired = Instant::now();
            let cutoff = self.config.maintenance.tombstone_cutoff();
            let (forgotten, kept) = self.writer_mut().expire_tombstones(cutoff);
            tracing::debug!(forgotten, kept, "expired tombstones from memory");
        }
        Ok(())
    }

    /// With `--until-caught-up`: true once every partition of the run's
    /// topics is in every table up to its end offset seen at start, ours from
    /// the writer, the others' from the tables (read at most twice a second).
    async fn caught_up(&mut self) -> anyhow::Result<bool> {
        // A batch in flight: asked again once it lands.
        if !self.had_assignment || !self.batch.is_empty() || self.in_flight.is_some() || !self.all_through_end(|p| self.writer().committed(p)) {
            return Ok(false);
        }
        let others: Vec<TopicPartition> = self.start_ends.keys().filter(|p| !self.assigned.contains_key(*p)).cloned().collect();
        if others.is_empty() {
            tracing::info!("caught up with the end offsets seen at start");
            return Ok(true);
        }
        if self.others_checked.elapsed() < Duration::from_millis(500) {
            return Ok(false);
        }
        // The other writers wait on our tables' logs as we wait on theirs.
        self.settle(Duration::ZERO).await?;
        self.others_checked = Instant::now();
        let (resume, parts) = (self.resume.clone(), others.clone());
        let next = tokio::task::spawn_blocking(move || resume(&parts)).await?.map_err(|e| anyhow!(e))?;
        let ends = &self.start_ends;
        let done = others.iter().all(|p| ends[p] <= 0 || next.get(p).copied().flatten().is_some_and(|n| n >= ends[p]));
        if done {
            tracing::info!("caught up with the end offsets seen at start (other partitions by other writers)");
        }
        Ok(done)
    }

    /// True when, for every owned partition, `through(p)` (the last offset
    /// known to be done) reaches the end offset seen at assignment.
    fn all_through_end(&self, through: impl Fn(&TopicPartition) -> Option<i64>) -> bool {
        self.assigned.iter().all(|(p, a)| {
            let nothing_to_read = a.end <= a.start.unwrap_or(0) || a.end <= 0;
            nothing_to_read || through(p).is_some_and(|o| o + 1 >= a.end)
        })
    }

    /// At least a full batch still to write: the writer is catching up, and
    /// its batches close by size or by the long deadline (see [`crate::batch`]).
    /// Lag as the reporter last measured it, or records left to the end offsets
    /// seen at assignment: the reporter reads every few seconds, and its first
    /// reading comes before the first assignment, so without the second a
    /// restart on a fresh backlog would write it in batches cut by the live deadline.
    fn backlog(&self) -> bool {
        let full = self.config.batch.max_records as i64;
        self.unread >= full || self.lag.total().is_some_and(|t| t >= full)
    }

    /// Records left until every owned partition reaches its end at assignment.
    fn remaining(&self) -> i64 {
        self.assigned
            .iter()
            .map(|(p, a)| {
                let next = self.writer().committed(p).map_or(a.start.unwrap_or(0), |o| o + 1);
                (a.end - next).max(0)
            })
            .sum()
    }

    /// What the tables hold (or which partitions are owned) changed: counts
    /// what is left to the end offsets seen at assignment (for
    /// [`RunLoop::backlog`]) and shares the held offsets with the lag reporter.
    fn held_changed(&mut self) {
        self.unread = self.remaining();
        let writer = self.writer.as_ref().expect("held offsets change only while no batch is in flight");
        self.lag.publish(self.assigned.keys().map(|p| (p.clone(), writer.committed(p))));
    }

    /// Commits the offsets that tables with nothing to add held in memory
    /// for at least `older_than` (see [`MAX_DEFER`]), retried like a batch.
    async fn settle(&mut self, older_than: Duration) -> anyhow::Result<()> {
        self.land().await?;
        if !self.writer().deferred(older_than) {
            return Ok(());
        }
        let mut backoff = Backoff::default();
        let commits = loop {
            match self.writer_mut().settle(older_than).await {
                Ok(c) => break c,
                Err(e) if self.stop.overdue() => {
                    bail!("stopping while offsets still fail to commit ({e}); what they cover is read again on restart")
                }
                Err(e) => {
                    self.metrics.lake_ok.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %e, retry_in = ?backoff.next_wait(), "committing held offsets failed; retrying");
                    backoff.wait().await;
                }
            }
        };
        self.metrics.lake_ok.store(true, Ordering::Relaxed);
        report::offsets_settled(&self.metrics, &commits);
        self.summary.commits += commits.len() as u64;
        Ok(())
    }

    /// Decodes the open batch and hands it to the writer, once the batch
    /// before it has landed (see [`super::in_flight`]): the next batch fills
    /// while this one commits.
    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let closed = Instant::now();
        let bytes = self.batch.bytes();
        let (records, ranges) = self.batch.take();
        self.metrics.open_batch_records.set(0);
        let max_bytes = self.config.decode.max_record_bytes;
        // Decoded while the batch before commits, with the readers it commits with.
        let readers = match &self.in_flight {
            Some(f) => f.readers.clone(),
            None => self.writer().readers.clone(),
        };
        let mut decoded = Decoded::new(records, &readers, max_bytes);
        drop(readers);
        self.land().await?;
        if decoded.needs_evolution() {
            // Fields without a column (on_new_column = "evolve"): grow the tables, then read the batch again.
            let mut backoff = Backoff::default();
            while let Err(e) = self.writer_mut().evolve(&decoded).await {
                if self.stop.overdue() {
                    bail!("stopping while new columns cannot be added ({e}); the batch is read again on restart");
                }
                tracing::warn!(error = %e, retry_in = ?backoff.next_wait(), "adding new columns failed; retrying");
                backoff.wait().await;
            }
            for (t, table) in self.writer().readers.iter().zip(&decoded.tables) {
                if !table.new_columns.is_empty() {
                    self.metrics.schema_changes.get_or_create(&self.metrics.table(&t.reader.definition.name)).inc();
                }
            }
            decoded = Decoded::new(decoded.records, &self.writer().readers, max_bytes);
        }
        let writer = self.writer.take().expect("landed above");
        self.in_flight = Some(InFlight::start(writer, decoded, ranges, bytes, closed, self.stop.clone(), self.metrics.clone()));
        Ok(())
    }

    /// Waits for the batch in flight to land, then reports it and commits
    /// its offsets to the consumer group (the Delta log already holds them).
    async fn land(&mut self) -> anyhow::Result<()> {
        let Some(in_flight) = self.in_flight.take() else {
            return Ok(());
        };
        let landed = in_flight.land().await;
        self.writer = Some(landed.writer);
        let commits = landed.commits?;
        let (decoded, ranges) = (landed.decoded, landed.ranges);
        report::batch_committed(&self.metrics, &self.writer().readers, &decoded, &commits, landed.bytes, landed.closed.elapsed());
        let records = decoded.records.len() as u64;
        self.summary.records += records;
        self.summary.quarantined += decoded.rejected() as u64;
        self.summary.batches += 1;
        self.summary.commits += commits.len() as u64;
        let next: Vec<(TopicPartition, i64)> = ranges.iter().map(|(tp, r)| (tp.clone(), r.last + 1)).collect();
        if let Err(e) = self.source.commit_to_group(&next) {
            tracing::warn!(error = %e, "committing offsets to the consumer group failed (the Delta log is the source of truth)");
        }
        self.held_changed();
        let remaining = self.options.until_caught_up.then_some(self.unread);
        self.status.committed(records, self.lag.total(), remaining);
        Ok(())
    }

    fn writer(&self) -> &Writer {
        self.writer.as_ref().expect("the writer is used only while no batch is in flight")
    }

    fn writer_mut(&mut self) -> &mut Writer {
        self.writer.as_mut().expect("the writer is used only while no batch is in flight")
    }
}

/// Resolves once the batch in flight is done (pending forever when none is).
async fn landed(in_flight: &Option<InFlight>) {
    match in_flight {
        Some(f) => f.done().await,
        None => std::future::pending().await,
    }
}
