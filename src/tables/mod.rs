//! The lake's Delta tables and how lakestream commits to them.
//!
//! - [`definition`]: the table definitions of `tables/*.toml`;
//! - [`lake`]: opening the lake (URI, storage options, every table);
//! - [`location`]: the lake URI and where each table lives below it;
//! - [`delta`]: opening a table and committing a batch to it together with
//!   its Kafka offsets (`txn` actions);
//! - [`txn`]: reading back the offsets a table holds, for many partitions at once;
//! - [`registry`]: the tables in commit order and what each takes from a batch;
//! - [`bronze`], [`quarantine`]: the two tables every lake has, and how a
//!   batch of records becomes their rows;
//! - [`silver`], [`tombstones`]: a change table's MERGE and its remembered deletes.

pub mod bronze;
pub mod change_feed;
pub mod definition;
pub mod delta;
pub mod evolution;
pub mod lake;
pub mod location;
pub mod quarantine;
pub mod registry;
pub mod silver;
pub mod tombstones;
pub mod txn;

pub use delta::{CommitOutcome, LakeTable, TableSpec};
