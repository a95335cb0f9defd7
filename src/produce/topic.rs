//! Creating the order topic when it is missing.

use crate::config::KafkaConfig;
use crate::source::client::client_config;
use anyhow::{anyhow, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use std::time::Duration;

/// Partition count of `topic`, or None when it does not exist. Fails within
/// `timeout` when no broker answers.
pub fn partition_count(k: &KafkaConfig, topic: &str, timeout: Duration) -> anyhow::Result<Option<usize>> {
    let client: BaseConsumer = client_config(k).create().map_err(|e| anyhow!("cannot create a Kafka client: {e}"))?;
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| anyhow!("cannot reach Kafka at kafka.brokers = {} within {timeout:?}: {e}", k.brokers))?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len()))
}

/// Creates `topic` with `partitions` partitions unless it exists. Returns true when created.
pub fn ensure(k: &KafkaConfig, topic: &str, partitions: i32, replication: i32, timeout: Duration) -> anyhow::Result<bool> {
    if let Some(existing) = partition_count(k, topic, timeout)? {
        if existing != partitions as usize {
            tracing::warn!(topic, existing, requested = partitions, "topic exists with another partition count; keeping it");
        }
        return Ok(false);
    }
    let admin: AdminClient<DefaultClientContext> =
        client_config(k).create().map_err(|e| anyhow!("cannot create a Kafka admin client: {e}"))?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    let opts = AdminOptions::new().operation_timeout(Some(timeout)).request_timeout(Some(timeout));
    let results = futures::executor::block_on(admin.create_topics([&new], &opts))
        .map_err(|e| anyhow!("cannot create topic {topic}: {e}"))?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => return Ok(false),
            Err((name, code)) => bail!("cannot create topic {name} ({partitions} partitions, replication {replication}): {code}"),
        }
    }
    // Wait (bounded) until the metadata shows the new topic, so producing does not race its creation.
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if partition_count(k, topic, timeout)? == Some(partitions as usize) {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("topic {topic} was created but does not show {partitions} partitions after {timeout:?}")
}
