//! A Kafka record, owned, as the writer batches it.

use std::sync::Arc;

/// One record as read from the topic. The writer owns it from the moment it
/// leaves the consumer until the batch it belongs to is committed.
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaRecord {
    /// Shared by the records of a topic (the consumer hands out one name per
    /// topic rather than an allocation per record).
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// None for a tombstone.
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Producer or log-append time, ms since the epoch.
    pub timestamp_ms: Option<i64>,
}

impl KafkaRecord {
    /// Bytes the record weighs in a batch (key, value and headers).
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self.value.as_ref().map_or(0, Vec::len)
            + self.headers.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len)).sum::<usize>()
            + 32
    }
}
