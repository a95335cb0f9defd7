//! lakestream: an exactly-once writer from a Kafka order stream to Delta Lake.
//!
//! The modules follow the data: a record enters from Kafka ([`source`]), is
//! decoded into a [`change`] event by its table's definition, is [`batch`]ed,
//! and is written to the bronze, silver and quarantine [`tables`] together
//! with its [`offsets`] by the [`pipeline`]. [`produce`] is the other end: it
//! replays the order [`dataset`] into the topic as the orders application would.
//! The tables are declared in `tables/` and changed by [`migration`]s.
//! [`maintenance`] keeps the tables compact and clean beside ingestion;
//! [`logs`] and [`metrics`] are what an operator sees of it all.

pub mod batch;
pub mod change;
pub mod check;
pub mod config;
pub mod dataset;
pub mod failpoint;
pub mod logs;
pub mod maintenance;
pub mod memory;
pub mod metrics;
pub mod migration;
pub mod offsets;
pub mod order_line;
pub mod pipeline;
pub mod produce;
pub mod source;
pub mod tables;
