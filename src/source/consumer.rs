//! The consumer thread.
//!
//! librdkafka calls the rebalance callback on the thread that polls. Running
//! the poll loop on a dedicated OS thread lets that callback do what exactly-
//! once needs, synchronously and before any record of a new partition is
//! fetched: read the offsets the Delta tables hold and start each partition
//! right after them. Records then flow to the async writer over a bounded
//! channel, which also gives back-pressure when the lake is slow.
//!
//! On revocation the callback asks the writer to commit what it holds of the
//! revoked partitions and waits for it (bounded), so a rebalance hands over
//! cleanly; if the wait times out nothing breaks: the next owner resumes from
//! the tables, and the txn conflict check stops a stale commit.

use crate::config::KafkaConfig;
use crate::offsets::TopicPartition;
use crate::source::client::{client_config, describe};
use crate::source::record::KafkaRecord;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A partition given to this writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    pub tp: TopicPartition,
    /// The offset consumption starts at (None: the beginning of the partition).
    pub start: Option<i64>,
    /// The partition's end (high watermark) when it was assigned.
    pub end: i64,
}

/// What the consumer thread tells the writer.
pub enum SourceEvent {
    /// Records in the order they were read (up to [`CHUNK`] at a time).
    Records(Vec<KafkaRecord>),
    Assigned(Vec<Assignment>),
    /// Commit what you hold of these partitions, then answer.
    Revoked(Vec<TopicPartition>, oneshot::Sender<()>),
    /// The consumer cannot go on (e.g. the tables' offsets cannot be read).
    Fatal(String),
}

/// Records read back to back go to the writer together, up to this many: one
/// hand-over (and one wake-up of the writer) per chunk instead of per record.
/// A chunk goes as soon as the consumer has nothing more at hand, so a live
/// stream's records are not held back.
pub const CHUNK: usize = 512;

/// Reads, for each partition, the offset to resume at (None: from the beginning).
pub type ResumeFn = dyn Fn(&[TopicPartition]) -> Result<HashMap<TopicPartition, Option<i64>>, String> + Send + Sync;

pub struct SourceContext {
    topics: Vec<String>,
    resume: Arc<ResumeFn>,
    events: mpsc::Sender<SourceEvent>,
    revoke_wait: Duration,
    /// Set at shutdown: the writer has flushed and no longer answers hand-overs.
    stopping: Arc<AtomicBool>,
    /// Records read but not yet handed over (see [`CHUNK`]). Kept here, not
    /// in the poll loop, so that a rebalance (which librdkafka runs inside a
    /// poll) hands them over before it tells the writer of the new assignment.
    pending: Mutex<Vec<KafkaRecord>>,
}

impl ClientContext for SourceContext {}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::types::RDKafkaRespErr::*;
        // Records read under the old assignment reach the writer before it changes.
        self.hand_over();
        match err {
            RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(consumer, tpl),
            RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let partitions = partitions_of(tpl, &self.topics);
                let (ack, done) = oneshot::channel();
                if !self.stopping.load(Ordering::SeqCst)
                    && self.events.blocking_send(SourceEvent::Revoked(partitions.clone(), ack)).is_ok() {
                    let waited = wait_oneshot(done, self.revoke_wait);
                    if !waited {
                        tracing::warn!(?partitions, "writer did not confirm the hand-over in time; the next owner resumes from the tables");
                    }
                }
                if let Err(e) = consumer.unassign() {
                    tracing::warn!(error = %e, "unassign failed");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                let _ = consumer.unassign();
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, _rebalance: &Rebalance<'_>) {}
}

impl SourceContext {
    /// Sends the pending records to the writer; false once the writer is gone.
    fn hand_over(&self) -> bool {
        let chunk = std::mem::take(&mut *self.pending.lock().unwrap());
        chunk.is_empty() || self.events.blocking_send(SourceEvent::Records(chunk)).is_ok()
    }

    fn assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let partitions = partitions_of(tpl, &self.topics);
        let mut backoff = Duration::from_millis(200);
        let mut attempts = 0;
        // The tables are the source of truth: without their offsets we must not consume.
        let resume = loop {
            match (self.resume)(&partitions) {
                Ok(r) => break r,
                Err(e) if attempts < 8 => {
                    attempts += 1;
                    tracing::warn!(error = %e, attempt = attempts, "cannot read the tables' offsets; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(15));
                }
                Err(e) => {
                    let _ = self.events.blocking_send(SourceEvent::Fatal(format!(
                        "cannot read the Kafka offsets held by the Delta tables: {e}"
                    )));
                    return;
                }
            }
        };
        let mut assignments = Vec::with_capacity(partitions.len());
        for tp in &partitions {
            let start = resume.get(tp).copied().flatten();
            let offset = start.map_or(Offset::Beginning, Offset::Offset);
            if let Err(e) = tpl.set_partition_offset(&tp.topic, tp.partition, offset) {
                tracing::error!(partition = %tp, error = %e, "cannot set the start offset");
            }
            let end = match consumer.fetch_watermarks(&tp.topic, tp.partition, Duration::from_secs(10)) {
                Ok((_, high)) => high,
                Err(e) => {
                    tracing::warn!(partition = %tp, error = %e, "cannot read the partition's end offset");
                    -1
                }
            };
            assignments.push(Assignment { tp: tp.clone(), start, end });
        }
        if let Err(e) = consumer.assign(tpl) {
            let _ = self.events.blocking_send(SourceEvent::Fatal(format!("cannot assign partitions: {e}")));
            return;
        }
        tracing::info!(?assignments, "partitions assigned");
        let _ = self.events.blocking_send(SourceEvent::Assigned(assignments));
    }
}

fn partitions_of(tpl: &TopicPartitionList, topics: &[String]) -> Vec<TopicPartition> {
    let mut v: Vec<TopicPartition> = tpl
        .elements()
        .iter()
        .filter(|e| topics.iter().any(|t| t == e.topic()))
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect();
    v.sort_unstable();
    v
}

fn wait_oneshot(mut done: oneshot::Receiver<()>, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match done.try_recv() {
            Ok(()) => return true,
            Err(oneshot::error::TryRecvError::Closed) => return false,
            Err(oneshot::error::TryRecvError::Empty) if std::time::Instant::now() >= deadline => return false,
            Err(oneshot::error::TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

pub type SourceConsumer = BaseConsumer<SourceContext>;

/// The running consumer: its thread and a handle the writer uses to commit
/// offsets to the group and read positions.
pub struct KafkaSource {
    pub consumer: Arc<SourceConsumer>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KafkaSource {
    /// Creates the consumer, subscribes to `topics` and starts the poll thread.
    pub fn start(
        k: &KafkaConfig,
        topics: &[String],
        resume: Arc<ResumeFn>,
        events: mpsc::Sender<SourceEvent>,
    ) -> Result<KafkaSource, String> {
        let mut cfg = client_config(k);
        cfg.set("group.id", &k.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false");
        // librdkafka prefetches into its queue until it holds
        // queued.min.messages per partition or queued.max.messages.kbytes,
        // then postpones the next fetch by fetch.queue.backoff.ms. At its
        // default of a second, a writer that takes a whole batch at once found
        // the queue empty for most of that second (0.6-0.7 s of a batch's
        // receive time on the full-dataset benchmark); at 100 ms the queue
        // refills while the batch decodes, and a 32 MB queue is as fast as a
        // 128 MB one. Each queued message also holds a librdkafka op and pins
        // its fetch buffer: at the default of 100,000 messages a partition
        // that cost ~80 MB of the writer's peak RSS, and 25,000 keeps the
        // throughput (BENCHMARKS.md, sessions 26 and 27).
        for (key, default) in [
            ("session.timeout.ms", "30000"),
            ("max.poll.interval.ms", "300000"),
            ("fetch.max.bytes", "52428800"),
            ("queued.max.messages.kbytes", "32768"),
            ("queued.min.messages", "25000"),
            ("fetch.queue.backoff.ms", "100"),
            ("partition.assignment.strategy", "range,roundrobin"),
        ] {
            if !k.properties.contains_key(key) {
                cfg.set(key, default);
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let context = SourceContext {
            topics: topics.to_vec(),
            resume,
            events,
            revoke_wait: Duration::from_secs(60),
            stopping: stop.clone(),
            pending: Mutex::new(Vec::with_capacity(CHUNK)),
        };
        let consumer: SourceConsumer =
            cfg.create_with_context(context).map_err(|e| describe(k, "cannot create the Kafka consumer", &e))?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| describe(k, &format!("cannot subscribe to topics {}", names.join(", ")), &e))?;
        let consumer = Arc::new(consumer);
        let thread = {
            let consumer = consumer.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("kafka-consumer".into())
                .spawn(move || poll_loop(consumer, stop))
                .map_err(|e| format!("cannot start the consumer thread: {e}"))?
        };
        Ok(KafkaSource { consumer, stop, thread: Some(thread) })
    }

    /// Commits `next offsets` (last written + 1) to the consumer group so that
    /// standard lag tools see progress. The Delta log stays the source of truth.
    pub fn commit_to_group(&self, next: &[(TopicPartition, i64)]) -> KafkaResult<()> {
        let mut tpl = TopicPartitionList::new();
        for (tp, o) in next {
            tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*o))?;
        }
        self.consumer.commit(&tpl, rdkafka::consumer::CommitMode::Async)
    }

    /// The next offset the consumer will fetch, per assigned partition.
    pub fn positions(&self) -> HashMap<TopicPartition, i64> {
        let mut out = HashMap::new();
        if let Ok(tpl) = self.consumer.position() {
            for e in tpl.elements() {
                if let Offset::Offset(o) = e.offset() {
                    out.insert(TopicPartition::new(e.topic(), e.partition()), o);
                }
            }
        }
        out
    }

    /// Stops polling, leaves the group and joins the thread. Call after the
    /// writer has committed everything it holds.
    pub async fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take();
        let consumer = self.consumer.clone();
        drop(self);
        // Joining and the final drop of the consumer (which leaves the group,
        // running the revoke callback) block: keep them off the runtime.
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(t) = thread {
                let _ = t.join();
            }
            drop(consumer);
        })
        .await;
    }
}

/// How long a poll waits for a record when nothing is pending. A stop is
/// seen only between polls (rust-rdkafka's poll cannot be woken), so this is
/// also how long a stopping writer may wait for the thread: at 100 ms that
/// was 4 % of a full-dataset `--until-caught-up` run. Idle, the writer
/// used 0.68 s of CPU a minute against 0.57 s at 100 ms (BENCHMARKS.md, session 28).
const IDLE_POLL: Duration = Duration::from_millis(20);

fn poll_loop(consumer: Arc<SourceConsumer>, stop: Arc<AtomicBool>) {
    let context = consumer.context();
    // The name of the topic the last record came from, shared by its records.
    let mut topic: Arc<str> = Arc::from("");
    while !stop.load(Ordering::SeqCst) {
        // With records pending, only take what librdkafka already has at hand.
        let waiting = !context.pending.lock().unwrap().is_empty();
        let Some(result) = consumer.poll(if waiting { Duration::ZERO } else { IDLE_POLL }) else {
            if !context.hand_over() {
                break; // the writer is gone
            }
            continue;
        };
        match result {
            Ok(m) => {
                let headers = m
                    .headers()
                    .map(|hs| hs.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect())
                    .unwrap_or_default();
                if *topic != *m.topic() {
                    topic = Arc::from(m.topic());
                }
                let record = KafkaRecord {
                    topic: topic.clone(),
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers,
                    timestamp_ms: m.timestamp().to_millis(),
                };
                let full = {
                    let mut pending = context.pending.lock().unwrap();
                    pending.push(record);
                    pending.len() >= CHUNK
                };
                if full && !context.hand_over() {
                    break; // the writer is gone
                }
            }
            // Transient broker errors are retried by librdkafka itself; log and go on.
            Err(e) => tracing::warn!(error = %e, "kafka consumer error"),
        }
    }
    // The group is left when the last handle is dropped (see `shutdown`).
    drop(consumer);
}
