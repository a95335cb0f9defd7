//! The Kafka side: where records enter lakestream.
//!
//! - [`admin`]: topic checks and end offsets, outside the consumer group;
//! - [`client`]: librdkafka settings from the configuration (security, pass-through);
//! - [`consumer`]: the consumer thread, which owns group membership, seeks each
//!   assigned partition to the offset the Delta tables say comes next, and
//!   hands records to the writer;
//! - [`record`]: the owned record type the writer batches.

pub mod admin;
pub mod client;
pub mod consumer;
pub mod record;
