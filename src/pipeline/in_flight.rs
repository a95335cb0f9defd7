//! The batch being committed while the next one fills and decodes.
//!
//! A closed batch is decoded on the run loop, then handed with the
//! [`Writer`] to a task of its own that commits it to every table (retrying
//! until it lands, as a batch always did). The run loop meanwhile receives
//! and decodes the next batch: on two cores, decoding one batch overlaps
//! committing the one before, instead of each waiting for the other.
//!
//! Only one batch is ever in flight, and a batch is only handed to the
//! writer once the one before has landed, so the tables still see the
//! batches one after the other, in order, each commit carrying its offsets:
//! every crash point is the one of a sequential writer. What needs the
//! writer itself (an assignment, a hand-over, held offsets, the end of a run)
//! lands the batch in flight first.

use super::decoded::{Decoded, TableReader};
use super::shutdown::{Backoff, Stop};
use super::writer::{TableCommit, Writer};
use crate::metrics::Metrics;
use crate::offsets::{OffsetRange, TopicPartition};
use anyhow::anyhow;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A batch handed to the writer's task, with what the run loop reports once it lands.
pub struct InFlight {
    task: JoinHandle<(Writer, anyhow::Result<Vec<TableCommit>>)>,
    /// Told once the task is done.
    done: Arc<Notify>,
    /// The change tables' readers the writer had when it left: the next batch decodes with them.
    pub readers: Arc<Vec<TableReader>>,
    pub decoded: Arc<Decoded>,
    pub ranges: Arc<BTreeMap<TopicPartition, OffsetRange>>,
    /// The batch's Kafka payload bytes.
    pub bytes: usize,
    /// When the batch closed.
    pub closed: Instant,
}

/// A batch that landed (or failed for good), with the writer back.
pub struct Landed {
    pub writer: Writer,
    pub commits: anyhow::Result<Vec<TableCommit>>,
    pub decoded: Arc<Decoded>,
    pub ranges: Arc<BTreeMap<TopicPartition, OffsetRange>>,
    pub bytes: usize,
    pub closed: Instant,
}

impl InFlight {
    /// Hands `decoded` and `writer` to a task that commits the batch to every
    /// table, retrying failures with back-off until it lands; it gives up
    /// only once a requested stop is overdue.
    pub fn start(writer: Writer, decoded: Decoded, ranges: BTreeMap<TopicPartition, OffsetRange>, bytes: usize, closed: Instant, stop: Stop, metrics: Arc<Metrics>) -> InFlight {
        let (decoded, ranges) = (Arc::new(decoded), Arc::new(ranges));
        let readers = writer.readers.clone();
        let done = Arc::new(Notify::new());
        let tell = done.clone();
        let write = write_until_landed(writer, decoded.clone(), ranges.clone(), stop, metrics);
        let task = tokio::spawn(async move {
            let out = write.await;
            tell.notify_one();
            out
        });
        InFlight { task, done, readers, decoded, ranges, bytes, closed }
    }

    /// Waits for the batch to land (see [`InFlight::start`]).
    pub async fn land(self) -> Landed {
        let (writer, commits) = match self.task.await {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("the batch commit task was cancelled: {e}"),
        };
        Landed { writer, commits, decoded: self.decoded, ranges: self.ranges, bytes: self.bytes, closed: self.closed }
    }

    /// Resolves once the task is done: [`InFlight::land`] will not wait.
    pub async fn done(&self) {
        if !self.task.is_finished() {
            self.done.notified().await;
        }
    }
}

async fn write_until_landed(
    mut writer: Writer,
    decoded: Arc<Decoded>,
    ranges: Arc<BTreeMap<TopicPartition, OffsetRange>>,
    stop: Stop,
    metrics: Arc<Metrics>,
) -> (Writer, anyhow::Result<Vec<TableCommit>>) {
    let mut backoff = Backoff::default();
    loop {
        match writer.write(&decoded, &ranges).await {
            Ok(c) => {
                metrics.lake_ok.store(true, Ordering::Relaxed);
                return (writer, Ok(c));
            }
            Err(e) if stop.overdue() => {
                let failed = anyhow!("stopping while the batch still fails to commit ({e}); nothing of it is committed and it is read again on restart");
                return (writer, Err(failed));
            }
            Err(e) => {
                metrics.lake_ok.store(false, Ordering::Relaxed);
                metrics.batch_retries.inc();
                tracing::warn!(error = %e, retry_in = ?backoff.next_wait(), "batch commit failed; retrying");
                backoff.wait().await;
            }
        }
    }
}
