//! Batching: records accumulate until the batch is full or old enough, then
//! the whole batch is written to every table in one commit per table.
//!
//! A batch closes at `max_records`, `max_bytes` or `max_latency` after its
//! first record, whichever comes first. Bigger batches mean fewer commits and
//! bigger files; the latency bound keeps the tables fresh when traffic is low.

use crate::config::BatchConfig;
use crate::offsets::{OffsetRange, TopicPartition};
use crate::source::record::KafkaRecord;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub struct Batch {
    limits: BatchConfig,
    records: Vec<KafkaRecord>,
    bytes: usize,
    opened_at: Option<Instant>,
    ranges: BTreeMap<TopicPartition, OffsetRange>,
}

impl Batch {
    pub fn new(limits: BatchConfig) -> Batch {
        Batch { limits, records: Vec::new(), bytes: 0, opened_at: None, ranges: BTreeMap::new() }
    }

    pub fn push(&mut self, record: KafkaRecord) {
        self.opened_at.get_or_insert_with(Instant::now);
        self.bytes += record.size();
        // A linear look over the batch's few partitions: no allocation per record.
        match self.ranges.iter_mut().find(|(tp, _)| tp.partition == record.partition && tp.topic == record.topic) {
            Some((_, r)) => r.extend(record.offset),
            None => {
                let tp = TopicPartition::new(record.topic.clone(), record.partition);
                self.ranges.insert(tp, OffsetRange { partition: record.partition, first: record.offset, last: record.offset });
            }
        }
        self.records.push(record);
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_full(&self) -> bool {
        self.records.len() >= self.limits.max_records || self.bytes >= self.limits.max_bytes
    }

    /// The last offset of `tp` in the batch, if it holds any.
    pub fn last_offset(&self, tp: &TopicPartition) -> Option<i64> {
        self.ranges.get(tp).map(|r| r.last)
    }

    /// When the batch must close even if it is not full; None while empty.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened_at.map(|t| t + Duration::from_millis(self.limits.max_latency_ms))
    }

    /// Drops the records of partitions this writer no longer owns: their new
    /// owner resumes from the offsets in the tables.
    pub fn drop_partitions(&mut self, partitions: &[TopicPartition]) {
        if partitions.is_empty() {
            return;
        }
        self.records.retain(|r| !partitions.iter().any(|tp| tp.partition == r.partition && tp.topic == r.topic));
        for p in partitions {
            self.ranges.remove(p);
        }
        self.bytes = self.records.iter().map(KafkaRecord::size).sum();
        if self.records.is_empty() {
            self.opened_at = None;
        }
    }

    /// Closes the batch: its records in arrival order and the offset range per partition.
    pub fn take(&mut self) -> (Vec<KafkaRecord>, BTreeMap<TopicPartition, OffsetRange>) {
        self.bytes = 0;
        self.opened_at = None;
        (std::mem::take(&mut self.records), std::mem::take(&mut self.ranges))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(partition: i32, offset: i64) -> KafkaRecord {
        KafkaRecord {
            topic: "t".into(),
            partition,
            offset,
            key: None,
            value: Some(vec![0; 68]),
            headers: vec![],
            timestamp_ms: None,
        }
    }

    #[test]
    fn closes_at_records_or_bytes_and_tracks_ranges() {
        let mut b = Batch::new(BatchConfig { max_records: 3, max_bytes: 1 << 20, max_latency_ms: 10 });
        assert!(b.deadline().is_none());
        b.push(rec(0, 5));
        b.push(rec(1, 7));
        assert!(!b.is_full() && b.deadline().is_some());
        b.push(rec(0, 6));
        assert!(b.is_full());
        b.drop_partitions(&[TopicPartition::new("t", 1)]);
        assert_eq!(b.len(), 2);
        let (records, ranges) = b.take();
        assert_eq!(records.len(), 2);
        assert_eq!(ranges[&TopicPartition::new("t", 0)], OffsetRange { partition: 0, first: 5, last: 6 });
        assert!(!ranges.contains_key(&TopicPartition::new("t", 1)));
        assert!(b.is_empty() && b.deadline().is_none());
        let mut b = Batch::new(BatchConfig { max_records: 100, max_bytes: 1024, max_latency_ms: 10 });
        for i in 0..10 {
            b.push(rec(0, i));
        }
        assert!(!b.is_full(), "10 records of 100 bytes stay under 1024 bytes");
        b.push(rec(0, 10));
        assert!(b.is_full(), "the 11th record crosses 1024 bytes");
    }
}
