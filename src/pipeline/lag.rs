//! Kafka lag, measured against the Delta log: per owned partition, the high
//! watermark minus the next offset every table holds. Group offsets are
//! committed after the tables, so standard lag tools agree, but this one is
//! exact even when a group commit fails.

use crate::metrics::Metrics;
use crate::offsets::TopicPartition;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the high watermarks are read.
const EVERY: Duration = Duration::from_secs(5);

/// What the run loop shares with the lag reporter: the last offset every
/// table holds per owned partition (-1: nothing yet), and the total lag the
/// reporter last measured (-1: not yet measured).
#[derive(Default)]
pub struct Lag {
    held: Mutex<BTreeMap<TopicPartition, i64>>,
    total: AtomicI64,
}

impl Lag {
    pub fn new() -> Arc<Lag> {
        Arc::new(Lag { held: Mutex::default(), total: AtomicI64::new(-1) })
    }

    /// Replaces the owned partitions and their held offsets.
    pub fn publish(&self, held: impl Iterator<Item = (TopicPartition, Option<i64>)>) {
        let mut map = self.held.lock().unwrap();
        map.clear();
        map.extend(held.map(|(p, v)| (p, v.unwrap_or(-1))));
    }

    /// Records still to write over every owned partition, as last measured.
    pub fn total(&self) -> Option<i64> {
        Some(self.total.load(Ordering::Relaxed)).filter(|t| *t >= 0)
    }
}

/// Every few seconds: the consumer lag per owned partition, into the metrics
/// (`consumer_lag`, `committed_offset`) and the total for the status line.
///
/// `client` is a Kafka client of its own (see [`crate::source::admin::watermark_client`]),
/// not the group consumer: a broker answers a connection's requests in order,
/// so on the consumer's connection each watermark query would wait behind its
/// fetch long-poll (`fetch.wait.max.ms`), 500 ms a partition once caught up.
///
/// Returns once `stop` turns true, after the reading under way (aborting the
/// task would leave that reading on a blocking thread, which the process
/// waits for before it exits).
pub async fn report(client: Arc<BaseConsumer>, lag: Arc<Lag>, metrics: Arc<Metrics>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut every = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let owned: Vec<(TopicPartition, i64)> = lag.held.lock().unwrap().iter().map(|(p, c)| (p.clone(), *c)).collect();
        let (client, metrics, lag) = (client.clone(), metrics.clone(), lag.clone());
        let _ = tokio::task::spawn_blocking(move || {
            let mut total = 0;
            for (p, c) in owned {
                let Ok((_, high)) = client.fetch_watermarks(&p.topic, p.partition, Duration::from_secs(5)) else { return };
                let behind = (high - c - 1).max(0);
                total += behind;
                metrics.consumer_lag.get_or_create(&metrics.partition(&p)).set(behind);
                metrics.committed_offset.get_or_create(&metrics.partition(&p)).set(c);
            }
            lag.total.store(total, Ordering::Relaxed);
        })
        .await;
    }
}
