//! Questions the writer asks the brokers outside the consumer group: does a
//! topic exist, how many partitions does it have, where does each partition
//! end. Each answer comes within a bounded time or as an error that names the
//! setting to fix.

use crate::config::Config;
use crate::offsets::TopicPartition;
use crate::source::client::client_config;
use crate::tables::registry;
use anyhow::{anyhow, bail};
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::collections::HashMap;
use std::time::Duration;

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

fn admin_client(config: &Config) -> anyhow::Result<BaseConsumer> {
    client_config(&config.kafka).create().map_err(|e| anyhow!("cannot create a Kafka client (kafka.*): {e}"))
}

/// A client for reading high watermarks while the writer runs, beside the
/// group consumer (whose connection answers after its fetch long-poll).
pub fn watermark_client(config: &Config) -> anyhow::Result<BaseConsumer> {
    admin_client(config)
}

/// Checks that the brokers answer and `topic` exists, within `timeout`;
/// returns its number of partitions.
pub fn check_topic(config: &Config, topic: &str, timeout: Duration) -> anyhow::Result<usize> {
    let setting = topic_setting(config, topic);
    let brokers = &config.kafka.brokers;
    let metadata = admin_client(config)?
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| anyhow!("cannot reach Kafka at kafka.brokers = {brokers} within {timeout:?}: {e}"))?;
    let found = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| anyhow!("topic {topic} not found ({setting})"))?;
    if let Some(err) = found.error() {
        let code = rdkafka::types::RDKafkaErrorCode::from(err);
        if code == rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition {
            bail!("topic {topic} not found ({setting}) at kafka.brokers = {brokers}");
        }
        bail!("topic {topic} ({setting}) is not usable: {code}");
    }
    Ok(found.partitions().len())
}

/// The end offset (high watermark) of every partition of `topics`.
pub fn end_offsets(config: &Config, topics: &[String], timeout: Duration) -> anyhow::Result<HashMap<TopicPartition, i64>> {
    let brokers = &config.kafka.brokers;
    let client = admin_client(config)?;
    let mut ends = HashMap::new();
    for topic in topics {
        let metadata = client
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| anyhow!("cannot reach Kafka at kafka.brokers = {brokers} within {timeout:?}: {e}"))?;
        for t in metadata.topics().iter().filter(|t| t.name() == topic) {
            for p in t.partitions() {
                let (_, high) = client
                    .fetch_watermarks(topic, p.id(), timeout)
                    .map_err(|e| anyhow!("cannot read the end offset of {topic} partition {}: {e}", p.id()))?;
                ends.insert(TopicPartition::new(topic.clone(), p.id()), high);
            }
        }
    }
    Ok(ends)
}

/// Checks every topic of the run, then reads where each of their partitions
/// ends. Blocking: call from a blocking thread.
pub fn check_and_measure(config: &Config, topics: &[String]) -> anyhow::Result<HashMap<TopicPartition, i64>> {
    let timeout = Duration::from_secs(15);
    for t in topics {
        check_topic(config, t, timeout)?;
    }
    end_offsets(config, topics, timeout)
}
