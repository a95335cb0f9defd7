//! `lakestream check`: validates the configuration, reaches the broker and the
//! lake, confirms the topic and the tables, and says what it found. Creates
//! nothing. Exits non-zero on the first problem, naming the setting.

use crate::config::Config;
use crate::offsets::app_id;
use crate::source::admin::check_topic;
use crate::tables::lake::Lake;
use crate::tables::registry::{self, TableRole};
use anyhow::Context;
use deltalake::{DeltaTableBuilder, DeltaTableError};
use std::fmt::Write;
use std::time::Duration;

/// Returns the report printed by `lakestream check`.
pub async fn check(config: &Config) -> anyhow::Result<String> {
    let mut report = String::new();
    config.validate()?;
    writeln!(report, "config: ok\n{}", config.redacted().trim_end())?;
    let mut partitions: Vec<(String, usize)> = Vec::new();
    for topic in registry::topics(&config.kafka.topic) {
        let (c, t) = (config.clone(), topic.clone());
        let n = tokio::task::spawn_blocking(move || check_topic(&c, &t, Duration::from_secs(15))).await??;
        writeln!(report, "kafka: {} reachable; topic {topic} has {n} partitions", config.kafka.brokers)?;
        partitions.push((topic, n));
    }
    let change_tables = registry::change_tables();
    let lake = Lake::of(config)?;
    for (role, spec) in registry::specs() {
        let reads = match role {
            TableRole::Tombstones { of: i } | TableRole::Change { index: i } => Some(registry::topic_of(change_tables[i], &config.kafka.topic)),
            TableRole::Bronze | TableRole::Quarantine => None,
        };
        let url = lake.table_url(spec.path);
        let mut table = DeltaTableBuilder::from_url(url.clone())?.with_storage_options(lake.storage.clone()).build()?;
        match table.load().await {
            Ok(()) => {
                let snapshot = table.snapshot()?;
                let mut offsets = Vec::new();
                for (topic, n) in partitions.iter().filter(|(t, _)| reads.as_ref().is_none_or(|r| r == t)) {
                    let mut of_topic = Vec::new();
                    for p in 0..*n as i32 {
                        let v = snapshot.transaction_version(table.log_store().as_ref(), app_id(spec.name, topic, p)).await?;
                        of_topic.push(v.map_or("-".to_string(), |v| v.to_string()));
                    }
                    offsets.push(if partitions.len() > 1 { format!("{topic}: {}", of_topic.join(", ")) } else { of_topic.join(", ") });
                }
                let protocol = snapshot.protocol();
                let migration = snapshot.metadata().configuration().get(crate::migration::VERSION_PROPERTY).cloned();
                writeln!(
                    report,
                    "table {}: version {}, migration {} (this lakestream: {:04}), reader {} writer {}, last offsets per partition [{}]",
                    spec.name,
                    table.version().unwrap_or(0),
                    migration.as_deref().unwrap_or("none"),
                    crate::migration::latest(),
                    protocol.min_reader_version(),
                    protocol.min_writer_version(),
                    offsets.join("; ")
                )?;
            }
            Err(DeltaTableError::NotATable(_)) => {
                writeln!(report, "table {}: not created yet at {url} (`lakestream migrate` or the first `lakestream run` creates it)", spec.name)?;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read the lake at lake.uri = {} (check lake.uri and lake.storage.*)", lake.location.root));
            }
        }
    }
    Ok(report)
}
