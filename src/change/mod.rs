//! Change events: what a change topic says about one row of a source table,
//! decoded by that table's definition (`[change]` in `tables/<name>.toml`).
//!
//! - [`json`]: a record's JSON as a tree borrowed from the record;
//! - [`spec`]: the `[change]` section and the column sources of a definition
//!   (how a table reads its topic), checked at start;
//! - [`value`]: a JSON value to the column's Delta type, Debezium's encodings
//!   included (days, ms/µs/ns timestamps, zoned ISO text, base64 decimals);
//! - [`sequence`]: what orders a key's changes (`sequence_by`);
//! - [`envelope`]: the shapes a record comes in (Debezium envelope with or
//!   without Kafka Connect's `schema`/`payload` wrapper, a plain row, a
//!   Kafka tombstone);
//! - [`decode`]: one Kafka record to a [`ChangeEvent`] or a [`DecodeError`];
//! - [`derive`]: the derived columns (SQL expressions, evaluated by DataFusion
//!   once per batch) and the rows a batch of events becomes.

pub mod decode;
pub mod derive;
pub mod envelope;
pub mod json;
pub mod sequence;
pub mod spec;
pub mod value;

pub use json::Json;
pub use sequence::Seq;
pub use value::Scalar;

use serde::Serialize;

/// The operation of a change event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Op {
    #[serde(rename = "c")]
    Create,
    #[serde(rename = "u")]
    Update,
    #[serde(rename = "d")]
    Delete,
    /// A snapshot read: the row as it is, an upsert like `c`.
    #[serde(rename = "r")]
    Read,
}

impl Op {
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
        }
    }
}

/// The primary key of a row: the key columns' values, in the definition's order.
pub type Key = Vec<Scalar>;

/// A decoded change of one row.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeEvent {
    pub op: Op,
    /// Orders a key's changes: a newer change has a higher `seq`.
    pub seq: Seq,
    /// When the change happened at the source (ms since the epoch), if known.
    pub source_ts_ms: Option<i64>,
    pub key: Key,
    /// Row of the decoded batch ([`derive::TableRows`]) that holds the row
    /// after the change (for a delete: the row before it, or its key alone).
    pub row: usize,
    /// True when the row holds a full image (not just the key).
    pub full_image: bool,
    /// Row of the decoded batch's `before` images, when the event carries a
    /// full one: the partition the row lived in before the change.
    pub before_row: Option<usize>,
    /// A Kafka tombstone (null value): it deletes the row written from an
    /// earlier record of its partition, whatever that record's sequence.
    pub kafka_tombstone: bool,
}

/// Why a record could not be decoded; `kind` is a stable label for queries
/// and metrics, `message` names the field and the problem.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct DecodeError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    Oversized,
    NotUtf8,
    NotJson,
    NotAnObject,
    MissingField,
    WrongType,
    InvalidValue,
    UnknownOp,
    KeyMismatch,
    TombstoneKey,
    /// A field the table has no column for, with `on_new_column = "quarantine"`.
    UnknownColumn,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::Oversized,
        ErrorKind::NotUtf8,
        ErrorKind::NotJson,
        ErrorKind::NotAnObject,
        ErrorKind::MissingField,
        ErrorKind::WrongType,
        ErrorKind::InvalidValue,
        ErrorKind::UnknownOp,
        ErrorKind::KeyMismatch,
        ErrorKind::TombstoneKey,
        ErrorKind::UnknownColumn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Oversized => "oversized",
            ErrorKind::NotUtf8 => "not_utf8",
            ErrorKind::NotJson => "not_json",
            ErrorKind::NotAnObject => "not_an_object",
            ErrorKind::MissingField => "missing_field",
            ErrorKind::WrongType => "wrong_type",
            ErrorKind::InvalidValue => "invalid_value",
            ErrorKind::UnknownOp => "unknown_op",
            ErrorKind::KeyMismatch => "key_mismatch",
            ErrorKind::TombstoneKey => "tombstone_key",
            ErrorKind::UnknownColumn => "unknown_column",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(crate) fn err(kind: ErrorKind, message: impl Into<String>) -> DecodeError {
    DecodeError { kind, message: message.into() }
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
