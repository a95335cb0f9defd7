//! `lakestream run`: the streaming writer.
//!
//! Data flow: the consumer thread ([`crate::source::consumer`]) hands records
//! over a bounded channel to the run loop ([`run_loop`]), which [`Batch`]es
//! them; a closed batch is decoded ([`decoded`]) and written to every table
//! with its offsets ([`writer`]), on a task of its own while the next batch
//! fills ([`in_flight`]); then the offsets are committed to the
//! consumer group too, for lag tools. Around the loop: where partitions
//! resume ([`resume`]), lag measured against the tables ([`lag`]), what an
//! operator sees ([`report`], [`status`]) and how a run stops ([`shutdown`]).
//!
//! [`Batch`]: crate::batch::Batch

pub mod decoded;
pub mod in_flight;
pub mod lag;
pub mod report;
pub mod resume;
pub mod run_loop;
pub mod shutdown;
pub mod status;
pub mod writer;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::offsets::TopicPartition;
use crate::source::admin;
use crate::source::consumer::{KafkaSource, SourceEvent};
use crate::tables::lake::open_tables;
use crate::tables::registry;
use anyhow::anyhow;
use run_loop::RunLoop;
use shutdown::Stop;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
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

/// Runs the writer until `shutdown` resolves (or, with `until_caught_up`, until caught up).
pub async fn run(config: Config, options: RunOptions, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<RunSummary> {
    let stop = Stop::on(shutdown);
    let tables = open_tables(&config).await?;
    let topics = registry::topics(&config.kafka.topic);
    let start_ends: HashMap<TopicPartition, i64> = {
        let (c, topics) = (config.clone(), topics.clone());
        tokio::task::spawn_blocking(move || admin::check_and_measure(&c, &topics)).await??
    };
    let metrics = Metrics::new();
    metrics.set_default_topic(&config.kafka.topic);
    if let Some(listen) = &config.metrics.listen {
        crate::metrics::serve(listen, metrics.clone()).await?;
    }
    let maintenance = config.maintenance.enabled.then(|| {
        // Table handles of its own (copies of the writer's, which maintenance
        // refreshes itself): maintenance never waits on the writer, nor the writer on it.
        let handles = tables.iter().map(|(_, t)| t.clone()).collect();
        tokio::spawn(crate::maintenance::run_service(handles, config.maintenance.clone(), metrics.clone()))
    });
    let writer = Writer::new(&config.kafka.topic, tables);
    // At most 16 chunks of records read ahead of the run loop (8,192 records).
    let (tx, mut rx) = mpsc::channel::<SourceEvent>(8192 / crate::source::consumer::CHUNK);
    let resume_tables = writer.sinks.iter().map(|s| (s.topic.clone(), s.table.clone())).collect();
    let resume = resume::resume_fn(tokio::runtime::Handle::current(), resume_tables);
    let source = KafkaSource::start(&config.kafka, &topics, resume.clone(), tx).map_err(|e| anyhow!(e))?;
    let lag = lag::Lag::new();
    let (stop_lag, lag_stopped) = tokio::sync::watch::channel(false);
    let lag_client = Arc::new(admin::watermark_client(&config)?);
    let lag_task = tokio::spawn(lag::report(lag_client, lag.clone(), metrics.clone(), lag_stopped));
    tracing::info!(topics = %topics.join(","), group = %config.kafka.group_id, lake = %config.lake.uri, "lakestream writer started");

    let mut run_loop = RunLoop::new(config, options, writer, source, metrics, stop, lag, resume, start_ends);
    let result = run_loop.run(&mut rx).await;
    let _ = stop_lag.send(true);
    let _ = lag_task.await;
    if let Some(task) = maintenance {
        // A round cut short leaves at worst files no commit references (VACUUM's job).
        task.abort();
        let _ = task.await;
    }
    drop(rx);
    run_loop.source.shutdown().await;
    let summary = result?;
    tracing::info!(records = summary.records, batches = summary.batches, quarantined = summary.quarantined, "lakestream writer stopped");
    Ok(summary)
}
