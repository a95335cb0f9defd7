//! The ceiling for `tests/bench/pipeline.sh`: reads a topic from its start to
//! the end offsets seen at start with the same librdkafka settings as the
//! writer, touching each record's key and value and nothing else, and prints
//! `records seconds` on one line.
//!
//!   cargo run --release --example bare_consume -- BROKERS TOPIC

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::ClientConfig;
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, brokers, topic] = &args[..] else {
        eprintln!("usage: bare_consume BROKERS TOPIC");
        std::process::exit(2);
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bare-consume-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.max.bytes", "52428800")
        .set("queued.max.messages.kbytes", "32768")
        .set("fetch.queue.backoff.ms", "100")
        .create()
        .expect("a consumer");
    let timeout = Duration::from_secs(15);
    let metadata = consumer.fetch_metadata(Some(topic), timeout).expect("topic metadata");
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for p in metadata.topics()[0].partitions() {
        let (_, high) = consumer.fetch_watermarks(topic, p.id(), timeout).expect("watermarks");
        if high > 0 {
            ends.insert(p.id(), high);
        }
    }
    let started = Instant::now();
    consumer.subscribe(&[topic]).expect("subscribe");
    let (mut records, mut bytes) = (0u64, 0usize);
    while !ends.is_empty() {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else { continue };
        let m = m.expect("a record");
        records += 1;
        bytes += m.key().map_or(0, <[u8]>::len) + m.payload().map_or(0, <[u8]>::len);
        if ends.get(&m.partition()).is_some_and(|end| m.offset() + 1 >= *end) {
            ends.remove(&m.partition());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!("bare consume: {records} records, {bytes} bytes");
    println!("{records} {secs:.3}");
}
