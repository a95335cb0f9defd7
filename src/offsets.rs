//! Kafka offsets as they are kept in the Delta log.
//!
//! Each table records, per Kafka partition, the last offset it holds as an
//! application transaction (`txn` action) in the same commit as the rows.
//! The app id is `lakestream:<table>:<topic>:<partition>`, e.g.
//! `lakestream:bronze.orders:orders:3`; its version is the last offset written.
//! Because the offsets and the rows are one atomic commit, a restart reads the
//! versions back and resumes at `version + 1`: nothing is skipped and nothing
//! is written twice, whatever crashed and when.

use std::collections::BTreeMap;

/// The txn app id of one table for one partition of a topic.
pub fn app_id(table: &str, topic: &str, partition: i32) -> String {
    format!("lakestream:{table}:{topic}:{partition}")
}

/// One partition of one topic: what a consumer is assigned and a txn app id names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> TopicPartition {
        TopicPartition { topic: topic.into(), partition }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// The first and last offset of one partition within a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetRange {
    pub partition: i32,
    pub first: i64,
    pub last: i64,
}

impl OffsetRange {
    pub fn extend(&mut self, offset: i64) {
        self.first = self.first.min(offset);
        self.last = self.last.max(offset);
    }
}

/// The last offset a table holds, per partition (absent: nothing yet).
pub type CommittedOffsets = BTreeMap<i32, i64>;

/// Where to resume a partition: after the lowest version over all tables, so
/// that every table gets every record it lacks. Tables that are ahead skip
/// what they hold by comparing offsets with their own version.
pub fn resume_offset(versions: &[Option<i64>]) -> Option<i64> {
    if versions.iter().any(Option::is_none) {
        return None;
    }
    versions.iter().flatten().min().map(|v| v + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_from_the_table_that_is_behind() {
        assert_eq!(resume_offset(&[Some(10), Some(7), Some(12)]), Some(8));
        assert_eq!(resume_offset(&[Some(10), None]), None);
        assert_eq!(app_id("bronze.orders", "orders", 3), "lakestream:bronze.orders:orders:3");
    }
}
