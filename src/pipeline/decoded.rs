//! The decode stage: each record of a batch is decoded by every change table
//! that reads its topic, into a change event or a decode error (which sends
//! it to quarantine), and each table's derived columns are evaluated once for
//! the whole batch. Every table then takes what it needs from the result.

use crate::change::decode::{Change, Reader};
use crate::change::derive::{self, TableRows};
use crate::change::{ChangeEvent, DecodeError};
use crate::source::record::KafkaRecord;
use deltalake::arrow::datatypes::DataType;
use std::collections::BTreeMap;

/// One change table's part of a decoded batch.
pub struct TableBatch {
    /// Per record of the batch: the event, when this table reads the record's
    /// topic and decoded it.
    pub events: Vec<Option<ChangeEvent>>,
    pub rows: TableRows,
    /// Fields without a column that were dropped (`on_new_column = "ignore"`), with counts.
    pub ignored_fields: BTreeMap<String, u64>,
    /// Fields without a column yet (`on_new_column = "evolve"`), with their
    /// type (string when records disagree).
    pub new_columns: BTreeMap<String, DataType>,
}

pub struct Decoded {
    pub records: Vec<KafkaRecord>,
    /// Per record: why it could not be decoded (None: every table that reads it did).
    pub errors: Vec<Option<DecodeError>>,
    /// Per change table (the registry's order).
    pub tables: Vec<TableBatch>,
    /// How long decoding the batch took (every table, derived columns included).
    pub took: std::time::Duration,
}

/// A change table as the decode stage sees it: how to read a record, and the topic it reads.
pub struct TableReader {
    pub reader: Reader,
    pub topic: String,
}

impl Decoded {
    pub fn new(records: Vec<KafkaRecord>, readers: &[TableReader], max_record_bytes: usize) -> Decoded {
        let started = std::time::Instant::now();
        let mut errors: Vec<Option<DecodeError>> = vec![None; records.len()];
        let mut tables = Vec::with_capacity(readers.len());
        // With several change tables, a message says which one refused the record.
        let several_tables = readers.len() > 1;
        for t in readers {
            let mut ignored_fields: BTreeMap<String, u64> = BTreeMap::new();
            let mut new_columns: BTreeMap<String, DataType> = BTreeMap::new();
            let mine: Vec<&KafkaRecord> = records.iter().filter(|r| *r.topic == *t.topic).collect();
            let changes = decode_all(&t.reader, &mine, max_record_bytes);
            for c in changes.iter().flatten() {
                for f in &c.ignored_fields {
                    *ignored_fields.entry(f.clone()).or_default() += 1;
                }
                for (f, data_type) in &c.new_fields {
                    let entry = new_columns.entry(f.clone()).or_insert_with(|| data_type.clone());
                    if entry != data_type {
                        *entry = if matches!((&*entry, data_type), (DataType::Int64, DataType::Float64) | (DataType::Float64, DataType::Int64)) {
                            DataType::Float64
                        } else {
                            DataType::Utf8
                        };
                    }
                }
            }
            let (events, rows) = derive::evaluate(&t.reader, changes);
            let mut events = events.into_iter();
            let mut per_record = Vec::with_capacity(records.len());
            for (i, r) in records.iter().enumerate() {
                if *r.topic != *t.topic {
                    per_record.push(None);
                    continue;
                }
                match events.next().expect("one result per record of the topic") {
                    Ok(e) => per_record.push(Some(e)),
                    Err(mut e) => {
                        if several_tables {
                            e.message = format!("{}: {}", t.reader.definition.name, e.message);
                        }
                        errors[i].get_or_insert(e);
                        per_record.push(None);
                    }
                }
            }
            tables.push(TableBatch { events: per_record, rows, ignored_fields, new_columns });
        }
        Decoded { records, errors, tables, took: started.elapsed() }
    }

    /// True when a table must grow columns before this batch is written.
    pub fn needs_evolution(&self) -> bool {
        self.tables.iter().any(|t| !t.new_columns.is_empty())
    }

    pub fn rejected(&self) -> usize {
        self.errors.iter().filter(|e| e.is_some()).count()
    }
}

/// Fewest records worth a decode thread of their own: below it, starting a
/// thread costs more than the records.
const RECORDS_PER_THREAD: usize = 4096;

/// Decodes `records` for one table, in order. Records decode independently
/// and the writer does nothing else meanwhile (the tables wait for the
/// decoded batch), so a large batch is split over the machine's cores:
/// decoding is the one stage of a cycle that would otherwise leave a core idle.
fn decode_all(reader: &Reader, records: &[&KafkaRecord], max_record_bytes: usize) -> Vec<Result<Change, DecodeError>> {
    let decode = |r: &&KafkaRecord| reader.decode(r.key.as_deref(), r.value.as_deref(), r.offset, max_record_bytes);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(records.len() / RECORDS_PER_THREAD).max(1);
    if threads == 1 {
        return records.iter().map(decode).collect();
    }
    let chunk = records.len().div_ceil(threads);
    std::thread::scope(|s| {
        let parts: Vec<_> = records.chunks(chunk).map(|part| s.spawn(move || part.iter().map(decode).collect::<Vec<_>>())).collect();
        let mut out = Vec::with_capacity(records.len());
        for part in parts {
            match part.join() {
                Ok(changes) => out.extend(changes),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}
