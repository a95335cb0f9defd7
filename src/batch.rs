//! Batching: records accumulate until the batch is full or old enough, then
//! the whole batch is written to every table in one commit per table.
//!
//! A batch closes at `max_records`, `max_bytes` or a deadline after its first
//! record, whichever comes first. Bigger batches mean fewer commits and
//! bigger files; the deadline keeps the tables fresh.
//!
//! The deadline depends on whether the stream is live. Live, the batch closes
//! `max_latency_ms` after it opened (300 ms by default), so a live stream
//! reaches the tables within a second. While catching up on a backlog, the
//! batch may stay open up to `catch_up_latency_ms` instead: being behind
//! already, the writer favours full batches, which a backlog fills long
//! before either deadline unless the brokers are far away. The writer is
//! catching up when at least a full batch waits for it (the caller says so,
//! from the measured lag or the end offsets seen at assignment) or when the newest record of the batch is
//! older than `catch_up_latency_ms` by its Kafka timestamp. A producer whose
//! clock runs behind only makes batches close by the longer deadline; records
//! without a timestamp count as live.

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
    /// The newest Kafka timestamp of the batch's records.
    newest_ms: Option<i64>,
    ranges: BTreeMap<TopicPartition, OffsetRange>,
}

impl Batch {
    pub fn new(limits: BatchConfig) -> Batch {
        Batch { limits, records: Vec::new(), bytes: 0, opened_at: None, newest_ms: None, ranges: BTreeMap::new() }
    }

    pub fn push(&mut self, record: KafkaRecord) {
        self.opened_at.get_or_insert_with(Instant::now);
        self.bytes += record.size();
        if let Some(ts) = record.timestamp_ms {
            self.newest_ms = Some(self.newest_ms.map_or(ts, |n| n.max(ts)));
        }
        // A linear look over the batch's few partitions: no allocation per record.
        match self.ranges.iter_mut().find(|(tp, _)| tp.partition == record.partition && *tp.topic == *record.topic) {
            Some((_, r)) => r.extend(record.offset),
            None => {
                let tp = TopicPartition::new(&*record.topic, record.partition);
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

    /// When the batch must close even if it is not full (None while empty),
    /// given the wall clock `now_ms` and whether records are waiting
    /// (`backlog`): see the module notes.
    pub fn deadline(&self, now_ms: i64, backlog: bool) -> Option<Instant> {
        let behind = backlog || self.newest_ms.is_some_and(|ts| now_ms - ts > self.limits.catch_up_latency_ms as i64);
        let live = self.limits.max_latency_ms;
        let wait = if behind { self.limits.catch_up_latency_ms.max(live) } else { live };
        self.opened_at.map(|t| t + Duration::from_millis(wait))
    }

    /// Drops the records of partitions this writer no longer owns: their new
    /// owner resumes from the offsets in the tables.
    pub fn drop_partitions(&mut self, partitions: &[TopicPartition]) {
        if partitions.is_empty() {
            return;
        }
        self.records.retain(|r| !partitions.iter().any(|tp| tp.partition == r.partition && *tp.topic == *r.topic));
        for p in partitions {
            self.ranges.remove(p);
        }
        self.bytes = self.records.iter().map(KafkaRecord::size).sum();
        if self.records.is_empty() {
            self.opened_at = None;
        }
        self.newest_ms = self.records.iter().filter_map(|r| r.timestamp_ms).max();
    }

    /// Closes the batch: its records in arrival order and the offset range per partition.
    /// The next batch starts with room for as many records as this one had:
    /// while catching up every batch is full, and a vector grown by doubling
    /// would copy its records several times over.
    pub fn take(&mut self) -> (Vec<KafkaRecord>, BTreeMap<TopicPartition, OffsetRange>) {
        self.bytes = 0;
        self.opened_at = None;
        self.newest_ms = None;
        let room = self.records.len().min(self.limits.max_records);
        (std::mem::replace(&mut self.records, Vec::with_capacity(room)), std::mem::take(&mut self.ranges))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(partition: i32, offset: i64) -> KafkaRecord {
        rec_at(partition, offset, None)
    }

    fn rec_at(partition: i32, offset: i64, timestamp_ms: Option<i64>) -> KafkaRecord {
        KafkaRecord {
            topic: "t".into(),
            partition,
            offset,
            key: None,
            value: Some(vec![0; 68]),
            headers: vec![],
            timestamp_ms,
        }
    }

    #[test]
    fn closes_at_records_or_bytes_and_tracks_ranges() {
        let mut b = Batch::new(BatchConfig { max_records: 3, max_bytes: 1 << 20, max_latency_ms: 10, catch_up_latency_ms: 10 });
        assert!(b.deadline(0, false).is_none());
        b.push(rec(0, 5));
        b.push(rec(1, 7));
        assert!(!b.is_full() && b.deadline(0, false).is_some());
        b.push(rec(0, 6));
        assert!(b.is_full());
        b.drop_partitions(&[TopicPartition::new("t", 1)]);
        assert_eq!(b.len(), 2);
        let (records, ranges) = b.take();
        assert_eq!(records.len(), 2);
        assert_eq!(ranges[&TopicPartition::new("t", 0)], OffsetRange { partition: 0, first: 5, last: 6 });
        assert!(!ranges.contains_key(&TopicPartition::new("t", 1)));
        assert!(b.is_empty() && b.deadline(0, false).is_none());
        let mut b = Batch::new(BatchConfig { max_records: 100, max_bytes: 1024, max_latency_ms: 10, catch_up_latency_ms: 10 });
        for i in 0..10 {
            b.push(rec(0, i));
        }
        assert!(!b.is_full(), "10 records of 100 bytes stay under 1024 bytes");
        b.push(rec(0, 10));
        assert!(b.is_full(), "the 11th record crosses 1024 bytes");
    }

    #[test]
    fn a_live_batch_closes_at_the_short_deadline_a_backlog_at_the_long_one() {
        let limits = BatchConfig { max_records: 100, max_bytes: 1 << 20, max_latency_ms: 300, catch_up_latency_ms: 5_000 };
        let now_ms = 1_700_000_000_000;
        let mut live = Batch::new(limits.clone());
        live.push(rec_at(0, 1, Some(now_ms - 50)));
        let opened = live.opened_at.unwrap();
        assert_eq!(live.deadline(now_ms, false), Some(opened + Duration::from_millis(300)));
        // Records waiting behind the batch: catching up, whatever their age.
        assert_eq!(live.deadline(now_ms, true), Some(opened + Duration::from_millis(5_000)));
        let mut backlog = Batch::new(limits.clone());
        backlog.push(rec_at(0, 1, Some(now_ms - 60_000)));
        let opened = backlog.opened_at.unwrap();
        assert_eq!(backlog.deadline(now_ms, false), Some(opened + Duration::from_millis(5_000)));
        // The batch reaches the live end of the stream: the short deadline again.
        backlog.push(rec_at(0, 2, Some(now_ms - 10)));
        assert_eq!(backlog.deadline(now_ms, false), Some(opened + Duration::from_millis(300)));
        let mut untimed = Batch::new(limits);
        untimed.push(rec_at(0, 1, None));
        assert_eq!(untimed.deadline(now_ms, false), Some(untimed.opened_at.unwrap() + Duration::from_millis(300)));
    }
}
