//! The Kafka side: where records enter lakestream.
//!
//! - [`client`]: librdkafka settings from the configuration (security, pass-through);
//! - [`consumer`]: the consumer thread, which owns group membership, seeks each
//!   assigned partition to the offset the Delta tables say comes next, and
//!   hands records to the writer;
//! - [`record`]: the owned record type the writer batches.

pub mod client;
pub mod consumer;
pub mod record;
