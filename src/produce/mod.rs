//! `lakestream produce`: replays the order dataset into the order topic, the
//! way the orders application publishes changes of its `order_lines` table.

pub mod mutations;
pub mod topic;

use crate::order_line::{Envelope, Source};
use crate::config::KafkaConfig;
use crate::dataset;
use crate::source::client::client_config;
use anyhow::{anyhow, bail, Context};
use mutations::{plan, MutationSummary};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct ProduceOptions {
    pub topic: String,
    pub input: PathBuf,
    pub limit: Option<usize>,
    /// Events per second; None for as fast as the broker takes them.
    pub rate: Option<f64>,
    pub partitions: i32,
    pub replication: i32,
    pub mutations: f64,
    pub seed: u64,
    pub skip_bad_rows: bool,
    /// Replay the file this many times, each with new transaction numbers
    /// (replay k prefixes the digits with k) and later order dates (k times the
    /// dataset's span), to grow the tables for benchmarks.
    pub replays: u32,
    /// The number of the first replay (0: the file as it is comes first).
    pub first_replay: u32,
    /// Draw a progress bar (on a terminal) instead of periodic log lines.
    pub progress_bar: bool,
}

#[derive(Clone, Debug)]
pub struct ProduceReport {
    pub events: u64,
    pub summary: MutationSummary,
    pub bad_rows: Vec<dataset::BadRow>,
    pub topic_created: bool,
    pub elapsed: Duration,
}

impl ProduceReport {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Counts deliveries; keeps the first failure to report it.
#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_error.lock().unwrap().get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Reads the dataset, plans the events and publishes them. Blocking: call it
/// from a thread that may block.
pub fn produce(k: &KafkaConfig, o: &ProduceOptions) -> anyhow::Result<ProduceReport> {
    if !(0.0..=1.0).contains(&o.mutations) {
        bail!("--mutations must be between 0 and 1, got {}", o.mutations);
    }
    if o.partitions < 1 {
        bail!("--partitions must be at least 1, got {}", o.partitions);
    }
    if o.rate.is_some_and(|r| r <= 0.0 || !r.is_finite()) {
        bail!("--rate must be a positive number of events per second");
    }
    if o.replays == 0 {
        bail!("--replays must be at least 1");
    }
    let mut data = dataset::read(&o.input, o.skip_bad_rows, o.limit)?;
    for bad in &data.bad_rows {
        tracing::warn!(line = bad.line, reason = %bad.reason, "skipped a bad row");
    }
    if o.replays > 1 || o.first_replay > 0 {
        data.lines = replayed(&data.lines, o.first_replay..o.first_replay + o.replays);
    }
    let (events, summary) = plan(&data.lines, o.mutations, o.seed);
    let topic_created = topic::ensure(k, &o.topic, o.partitions, o.replication, Duration::from_secs(15))?;

    let mut cfg = client_config(k);
    cfg.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "500000")
        .set("queue.buffering.max.kbytes", "262144")
        .set("message.timeout.ms", "120000");
    let producer: BaseProducer<Deliveries> = cfg
        .create_with_context(Deliveries::default())
        .map_err(|e| anyhow!("cannot create the Kafka producer: {e}"))?;

    let started = Instant::now();
    let total = events.len() as u64;
    let bar = o.progress_bar.then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events  {per_sec}  eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut last_log = Instant::now();
    let mut ts_by_index: Vec<i64> = Vec::with_capacity(events.len());
    let mut buf = Vec::with_capacity(512);
    for (i, e) in events.iter().enumerate() {
        let ts_ms = match e.redelivery_of {
            Some(original) => ts_by_index[original],
            None => chrono::Utc::now().timestamp_millis(),
        };
        ts_by_index.push(ts_ms);
        buf.clear();
        let envelope = Envelope {
            op: e.op,
            ts_ms,
            source: Source { table: "order_lines", seq: e.seq },
            before: e.before.as_ref(),
            after: e.after.as_ref(),
        };
        serde_json::to_writer(&mut buf, &envelope).context("encoding a change event")?;
        let key = e.key();
        loop {
            match producer.send(BaseRecord::to(&o.topic).key(key).payload(&buf)) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => producer.poll(Duration::from_millis(50)),
                Err((err, _)) => bail!("cannot produce to {}: {err}", o.topic),
            }
        }
        if i % 1024 == 0 {
            producer.poll(Duration::ZERO);
            if producer.context().failed.load(Ordering::Relaxed) > 0 {
                break; // report below
            }
        }
        if let Some(rate) = o.rate {
            let due = Duration::from_secs_f64((i + 1) as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        if let Some(bar) = &bar {
            if i % 1024 == 0 {
                bar.set_position(i as u64);
            }
        } else if last_log.elapsed() >= Duration::from_secs(5) {
            last_log = Instant::now();
            tracing::info!(sent = i + 1, total, "producing");
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .map_err(|e| anyhow!("not every event was acknowledged by Kafka within 120 s: {e}"))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let ctx = producer.context();
    let failed = ctx.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = ctx.first_error.lock().unwrap().clone().unwrap_or_default();
        bail!("{failed} events were not delivered to {} (first error: {first})", o.topic);
    }
    let delivered = ctx.ok.load(Ordering::Relaxed);
    if delivered != total {
        bail!("{delivered} of {total} events were acknowledged");
    }
    Ok(ProduceReport { events: total, summary, bad_rows: data.bad_rows, topic_created, elapsed: started.elapsed() })
}

/// The lines `replays` times, as the shop's next years of business: replay k
/// gets transaction numbers `k` + digits (`581482` -> `3581482`, `C581482` ->
/// `C3581482`) and its order dates moved k times the dataset's span later, so
/// that, as with live orders, each replay lands in months of its own. In file
/// order (newest first), so that replay 0 is published first.
fn replayed(lines: &[crate::order_line::OrderLine], replays: std::ops::Range<u32>) -> Vec<crate::order_line::OrderLine> {
    let span_days = match (lines.iter().map(|l| l.order_date).min(), lines.iter().map(|l| l.order_date).max()) {
        (Some(first), Some(last)) => (last - first).num_days() + 1,
        _ => 0,
    };
    let mut out = Vec::with_capacity(lines.len() * replays.len());
    for k in replays.rev() {
        for l in lines {
            let mut l = l.clone();
            if k > 0 {
                let (prefix, digits) = match l.transaction_no.strip_prefix('C') {
                    Some(d) => ("C", d),
                    None => ("", l.transaction_no.as_str()),
                };
                l.transaction_no = format!("{prefix}{k}{digits}");
                l.order_date += chrono::Duration::days(span_days * i64::from(k));
            }
            out.push(l);
        }
    }
    out
}

/// Whether stderr is a terminal (for the progress bar).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order_line::{OrderLine, Price};

    #[test]
    fn replays_get_new_transaction_numbers_and_replay_0_comes_first() {
        let line = |t: &str| OrderLine {
            transaction_no: t.into(),
            line_no: 1,
            order_date: chrono::NaiveDate::from_ymd_opt(2019, 1, 1).unwrap(),
            product_no: "1".into(),
            product_name: "p".into(),
            price: Price(100),
            quantity: 1,
            customer_no: None,
            country: "UK".into(),
        };
        let mut cancellation = line("C581481");
        cancellation.order_date = chrono::NaiveDate::from_ymd_opt(2019, 1, 10).unwrap();
        let lines = replayed(&[line("581482"), cancellation.clone()], 0..3);
        let numbers: Vec<&str> = lines.iter().map(|l| l.transaction_no.as_str()).collect();
        assert_eq!(numbers, ["2581482", "C2581481", "1581482", "C1581481", "581482", "C581481"]);
        // The dataset spans 10 days: each replay is 10 days later than the one before.
        let dates: Vec<String> = lines.iter().map(|l| l.order_date.to_string()).collect();
        assert_eq!(dates, ["2019-01-21", "2019-01-30", "2019-01-11", "2019-01-20", "2019-01-01", "2019-01-10"]);
        let (events, _) = plan(&lines, 0.0, 1);
        assert_eq!(events[0].key(), "C581481", "oldest of replay 0 first");
        // Later business alone: replay 2 is the same whether or not 0 and 1 come with it.
        let later = replayed(&[line("581482"), cancellation], 2..3);
        assert_eq!(later, lines[..2]);
    }
}
