//! The tables of the lake, in commit order, and what each takes from a batch:
//! the one list the writer, maintenance, `check`, the failpoints and the
//! migrations read. A table is added by a file in `tables/` (and its
//! migration), never here.
//!
//! - **bronze** (`bronze.orders`): every record;
//! - **quarantine** (`quarantine.orders`): the records a change table could
//!   not decode, with the reason;
//! - per **change table** (a definition with `[change]`): first its
//!   tombstones table (the deletes it must remember), then the table itself
//!   (an upsert of the batch's newest change per key).
//!
//! Bronze and quarantine are shared by every topic of a run: both carry the
//! record's topic, partition and offset, and their txn app ids name the
//! topic, so one table each is enough, and a record found in quarantine is
//! found byte for byte in bronze by the same three columns.

use crate::tables::definition::{self, TableDefinition};
use crate::tables::{bronze, quarantine, TableSpec};

/// What a table takes from a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableRole {
    /// Every record.
    Bronze,
    /// Records that failed to decode.
    Quarantine,
    /// The delete events of change table `of` (an index into [`change_tables`]),
    /// remembered so that late events cannot resurrect a row.
    Tombstones { of: usize },
    /// Change table `index`: its decoded changes, merged into the current state.
    Change { index: usize },
}

impl TableRole {
    /// The crash point right after this table's commit in a cycle (the chaos
    /// harness kills writers there).
    pub fn after_commit_point(self) -> &'static str {
        match self {
            TableRole::Bronze => "cycle.after_bronze",
            TableRole::Quarantine => "cycle.after_quarantine",
            TableRole::Tombstones { .. } => "cycle.after_tombstones",
            TableRole::Change { .. } => "cycle.after_silver",
        }
    }
}

/// The change tables, in the order of their files.
pub fn change_tables() -> Vec<&'static TableDefinition> {
    definition::all().map(|all| all.iter().filter(|d| d.is_change_table()).collect()).unwrap_or_default()
}

/// Every table with its role, in commit order.
pub fn tables() -> Vec<(TableRole, &'static TableDefinition)> {
    let mut out = vec![(TableRole::Bronze, bronze::definition()), (TableRole::Quarantine, quarantine::definition())];
    for (index, d) in change_tables().into_iter().enumerate() {
        if let Some(t) = d.change.as_ref().and_then(|c| c.tombstones.as_deref()) {
            out.push((TableRole::Tombstones { of: index }, definition::get(t)));
        }
        out.push((TableRole::Change { index }, d));
    }
    out
}

/// The tables' specs, in commit order.
pub fn specs() -> Vec<(TableRole, TableSpec)> {
    tables().into_iter().map(|(role, d)| (role, d.spec())).collect()
}

/// True for a tombstones table (maintenance expires its rows).
pub fn is_tombstones(name: &str) -> bool {
    tables().iter().any(|(role, d)| matches!(role, TableRole::Tombstones { .. }) && d.name == name)
}

/// The topic a change table reads: its `[source] topic`, where
/// `"kafka.topic"` stands for the configured `kafka.topic`.
pub fn topic_of(definition: &TableDefinition, default_topic: &str) -> String {
    if definition.source.topic == "kafka.topic" {
        default_topic.to_string()
    } else {
        definition.source.topic.clone()
    }
}

/// Every topic a run reads: `kafka.topic` and each change table's, once each.
pub fn topics(default_topic: &str) -> Vec<String> {
    let mut out = vec![default_topic.to_string()];
    for d in change_tables() {
        let t = topic_of(d, default_topic);
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// Every table as a JSON object (for `lakestream tables`): its name, path,
/// role, the topic its definition names, and its crash points.
pub fn describe() -> Vec<serde_json::Value> {
    tables()
        .into_iter()
        .map(|(role, d)| {
            let (kind, topic) = match role {
                TableRole::Bronze => ("bronze", None),
                TableRole::Quarantine => ("quarantine", None),
                TableRole::Tombstones { of } => ("tombstones", Some(change_tables()[of].source.topic.clone())),
                TableRole::Change { .. } => ("change", Some(d.source.topic.clone())),
            };
            let mut failpoints = vec![role.after_commit_point().to_string(), format!("cycle.after:{}", d.name)];
            if !matches!(role, TableRole::Change { .. }) {
                failpoints.push(format!("{}.files_written", d.name)); // appends write files, then commit
            }
            serde_json::json!({"name": d.name, "sql_name": d.sql_name, "path": d.path, "role": kind, "topic": topic, "failpoints": failpoints})
        })
        .collect()
}

/// Parses every definition and runs every row builder on no rows against
/// its definition: the start-up check of every command that touches tables.
pub fn check_all() -> Result<(), String> {
    definition::all().map_err(|e| format!("invalid table definition: {e}"))?;
    let now = chrono::Utc::now();
    let empty: Vec<&crate::source::record::KafkaRecord> = Vec::new();
    crate::tables::bronze::try_rows(&empty, now)?;
    crate::tables::quarantine::try_rows(std::iter::empty(), now)?;
    for d in change_tables() {
        let reader = crate::change::decode::Reader::new(d).expect("a change table");
        crate::change::derive::check_expressions(&reader)?;
        let rows = crate::change::derive::TableRows {
            rows: deltalake::arrow::array::RecordBatch::new_empty(crate::change::derive::rows_schema(&reader)),
            before: deltalake::arrow::array::RecordBatch::new_empty(crate::change::derive::rows_schema(&reader)),
        };
        crate::tables::silver::source_rows(&reader, &rows, &[], now)?;
        if let Some(t) = d.change.as_ref().and_then(|c| c.tombstones.as_deref()) {
            let key_types: Vec<deltalake::arrow::datatypes::DataType> = reader.key.iter().map(|i| reader.fields[*i].0.data_type.clone()).collect();
            crate::tables::tombstones::rows(definition::get(t), &d.primary_key, &key_types, &[], now)?;
        }
    }
    Ok(())
}
