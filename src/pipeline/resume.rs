//! Where a partition resumes: right after the lowest offset held by the
//! tables that read its topic. Each table skips what it holds already, so the
//! tables that were ahead when the writer stopped write nothing twice.

use crate::offsets::{resume_offset, TopicPartition};
use crate::pipeline::writer;
use crate::source::consumer::ResumeFn;
use crate::tables::LakeTable;
use std::sync::Arc;

/// The consumer's resume callback (called on its thread, at assignment). It
/// keeps table handles of its own, copies of the writer's at start brought up
/// to date at each call, so it never waits on the writer and a rebalance does
/// not reload whole logs. `tables`: each table with the topic it reads (None: all).
pub fn resume_fn(runtime: tokio::runtime::Handle, tables: Vec<(Option<String>, LakeTable)>) -> Arc<ResumeFn> {
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
