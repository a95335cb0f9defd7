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
//! - [`silver`], [`tombstones`]: a change table's current state and its remembered deletes;
//! - [`upsert`]: how a batch of changes lands in silver in one commit;
//! - [`data_file`]: reading a data file back for the commits that rewrite files.

pub mod bronze;
pub mod change_feed;
pub mod data_file;
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
pub mod upsert;

pub use delta::{CommitOutcome, LakeTable, TableSpec};
