//! Silver's upsert: a batch of changes, one per key, applied to the table in
//! one commit, reading and rewriting only the files that hold a changed key.
//!
//! Why not delta-rs' MERGE: it plans a DataFusion join of the batch against
//! every file its partition predicate keeps, and it was the longest stage of
//! a batch (220-520 ms of about a second for 100,000 changes) and much of the
//! writer's memory. Silver needs less: the batch has one row per key and so
//! does the table, so a hash lookup per stored row of the files that may hold
//! a key is the whole join.
//!
//! 1. **Which files may hold a key** ([`candidates`]): a file is read only if
//!    a change searching its partition has a first key column value within
//!    the file's min/max statistics. Partition values are compared as values
//!    of their type, not as the text a writer put in the log. A change whose
//!    partition is unknown (a key-only delete) searches every file.
//! 2. **Match**: the stored rows of those files whose key the batch holds are
//!    compared by sequence: a newer change replaces the row, a delete at least
//!    as new removes it, anything else leaves it (and is not inserted: late
//!    and re-delivered changes never overwrite newer data).
//! 3. **Rewrite what changed**: a file with a replaced or removed row is
//!    written again without it; a file read that matched nothing is left
//!    alone. Changes of keys no file holds are inserted. New rows are written
//!    in key order, so files keep narrow key ranges.
//! 4. **One commit**: the removes of the rewritten files, the new files, and,
//!    when the commit changes stored rows, change data files (`_change_data/`,
//!    with `_change_type`) holding every change of the commit, inserts
//!    included: a change-feed reader then reads only those (the Delta
//!    protocol's rule, as Spark writes it). A commit that only inserts writes
//!    no change files: its added files are its feed.
//! 5. **Races** ([`LakeTable::commit_rewrite`]): a lost race is committed
//!    again on the newer version unless the winner rewrote a file this one
//!    rewrites (a compaction, Spark's OPTIMIZE, a DELETE), wrote one of the
//!    writer's partitions, or changed the table's metadata: then the writer
//!    reloads and applies the batch again. So writers of the same month never
//!    queue on each other, and no row is written twice.

use crate::tables::data_file;
use crate::tables::definition::TableDefinition;
use crate::tables::delta::TableError;
use crate::tables::{CommitOutcome, LakeTable};
use deltalake::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, UInt32Array};
use deltalake::arrow::compute::{cast, concat_batches, filter_record_batch, lexsort_to_indices, take_record_batch, SortColumn};
use deltalake::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use deltalake::arrow::row::{RowConverter, SortField};
use deltalake::kernel::engine::arrow_conversion::TryIntoArrow;
use deltalake::kernel::scalars::ScalarExt;
use deltalake::kernel::{Action, Add, AddCDCFile, Remove, Transaction};
use deltalake::parquet::arrow::ArrowWriter;
use deltalake::parquet::basic::Compression;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::{DeltaOperation, MergePredicate};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::{DeltaTableError, DeltaTablePartition};
use futures::stream::{self, StreamExt};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// A batch's changes, one per primary key, sorted by key.
#[derive(Clone)]
pub struct Changes {
    /// The table's columns (in the definition's order).
    pub rows: RecordBatch,
    /// Per row: the change is a delete.
    pub deletes: Vec<bool>,
    /// Per row: the partition (`col=value/…`, as the log names a file's) the
    /// stored row lives in, None when unknown (every file is searched).
    pub search: Vec<Option<Arc<str>>>,
}

/// What an upsert read, wrote and committed.
#[derive(Debug, Default)]
pub struct Upserted {
    pub version: i64,
    /// Partitions the changes search (-1: some change's is unknown, every
    /// file is searched): how broad the batch is.
    pub partitions: i64,
    pub files_read: usize,
    pub files_left: usize,
    pub files_rewritten: usize,
    pub files_added: usize,
    pub rows_copied: usize,
    pub inserted: usize,
    pub updated: usize,
    pub deleted: usize,
    pub read_ms: u64,
    /// Lost races committed past (see [`LakeTable::commit_rewrite`]).
    pub races: u32,
    pub write_ms: u64,
}

/// Files read at once.
const CONCURRENT_READS: usize = 4;

/// A file of the snapshot: its actions, partition and first key column bounds.
struct StoredFile {
    add: Add,
    remove: Remove,
    partition: String,
    bounds: Option<(serde_json::Value, serde_json::Value)>,
}

/// Applies `changes` to `table` in one commit carrying `txns` (the writer's
/// offsets). Nothing to change commits the offsets alone.
pub async fn apply(table: &mut LakeTable, d: &TableDefinition, changes: &Changes, txns: Vec<Transaction>) -> Result<Upserted, TableError> {
    let started = Instant::now();
    // An Arrow or schema failure, named by the table (the table is passed in:
    // it is borrowed mutably for the commit at the end).
    let fail = |table: &LakeTable, e: &dyn std::fmt::Display| table.wrap_error(DeltaTableError::Generic(format!("{}: {e}", d.name)));
    let snapshot = table.delta().snapshot().map_err(|e| table.wrap_error(e))?;
    let schema: SchemaRef = Arc::new(TryIntoArrow::<Schema>::try_into_arrow(snapshot.schema().as_ref()).map_err(|e| table.wrap_error(e.into()))?);
    let partition_columns = snapshot.metadata().partition_columns().to_vec();
    let change_feed = snapshot.metadata().configuration().get("delta.enableChangeDataFeed").is_some_and(|v| v == "true");
    let files: Vec<StoredFile> = stored_files(table, &d.primary_key[0], &schema)?;
    let rows = data_file::conform(&changes.rows, &schema).map_err(|e| fail(table, &e))?;
    let n = rows.num_rows();
    let key_index: Vec<usize> = d.primary_key.iter().map(|k| schema.index_of(k).expect("key columns are table columns")).collect();
    let seq_index = schema.index_of(d.sequence_column.as_deref().expect("change tables have a sequence column")).expect("the sequence column is a table column");
    let converter = RowConverter::new(key_index.iter().map(|i| SortField::new(schema.field(*i).data_type().clone())).collect())
        .map_err(|e| fail(table, &e))?;
    let keys = converter.convert_columns(&key_index.iter().map(|i| rows.column(*i).clone()).collect::<Vec<_>>()).map_err(|e| fail(table, &e))?;
    let mut by_key: HashMap<&[u8], usize, foldhash::fast::RandomState> = HashMap::with_capacity_and_hasher(n, Default::default());
    for (i, k) in keys.iter().enumerate() {
        by_key.insert(k.data(), i);
    }

    // 1-2: read the files that may hold a key, and match their rows.
    let (reading, partitions) = candidates(&files, changes, rows.column(key_index[0]));
    let mut out = Upserted { files_read: reading.len(), partitions, ..Default::default() };
    let (mut matched, mut replaced) = (vec![false; n], vec![false; n]);
    let (mut kept, mut preimages, mut removed_rows) = (Vec::new(), Vec::new(), Vec::new());
    let mut removes: Vec<Remove> = Vec::new();
    let store = table.delta().log_store().object_store(None);
    // A file is read for its key and sequence columns first: most files
    // read hold none of the batch's keys (their key range only overlaps it),
    // and those are never decoded further. Key columns, then the sequence.
    let key_schema = Arc::new(Schema::new(key_index.iter().chain([&seq_index]).map(|i| schema.field(*i).clone()).collect::<Vec<_>>()));
    // Owned inputs: the reads run inside the writer's spawned commit task.
    let jobs: Vec<(usize, Add)> = reading.iter().enumerate().map(|(i, f)| (i, f.add.clone())).collect();
    let (read_schema, read_partitions) = (key_schema.clone(), partition_columns.clone());
    let mut reads = stream::iter(jobs)
        .map(move |(i, add)| {
            let (store, schema, partitions) = (store.clone(), read_schema.clone(), read_partitions.clone());
            async move {
                let bytes = data_file::fetch(store, &add).await?;
                let keys = data_file::decode(bytes.clone(), &add, &schema, &partitions)?;
                Ok::<_, DeltaTableError>((i, bytes, keys))
            }
        })
        .buffered(CONCURRENT_READS);
    let deletion_timestamp = chrono::Utc::now().timestamp_millis();
    let stored_seq = key_index.len();
    while let Some(read) = reads.next().await {
        let (file, bytes, key_batches) = read.map_err(|e| table.wrap_error(e))?;
        let file = reading[file];
        let stored_key_columns = concat_batches(&key_schema, &key_batches).map_err(|e| fail(table, &e))?;
        let stored_keys = converter.convert_columns(&stored_key_columns.columns()[..stored_seq]).map_err(|e| fail(table, &e))?;
        let (mut updated_at, mut deleted_at) = (Vec::new(), Vec::new());
        for (row, key) in stored_keys.iter().enumerate() {
            let Some(&change) = by_key.get(key.data()) else { continue };
            matched[change] = true;
            // SQL's rule, as the MERGE had it: a row without a sequence is never replaced.
            let Some(order) = compare(rows.column(seq_index), change, stored_key_columns.column(stored_seq), row) else { continue };
            if changes.deletes[change] {
                if order != Ordering::Less {
                    deleted_at.push(row as u32);
                }
            } else if order == Ordering::Greater {
                updated_at.push(row as u32);
                replaced[change] = true;
            }
        }
        if updated_at.is_empty() && deleted_at.is_empty() {
            out.files_left += 1;
            continue;
        }
        // Rows are in file order in both reads, so the positions hold.
        let stored = data_file::decode(bytes, &file.add, &schema, &partition_columns)
            .and_then(|batches| concat_batches(&schema, &batches).map_err(DeltaTableError::from))
            .map_err(|e| table.wrap_error(e))?;
        let mut keep = vec![true; stored.num_rows()];
        for r in updated_at.iter().chain(&deleted_at) {
            keep[*r as usize] = false;
        }
        let left = filter_record_batch(&stored, &BooleanArray::from(keep)).map_err(|e| fail(table, &e))?;
        out.rows_copied += left.num_rows();
        out.updated += updated_at.len();
        out.deleted += deleted_at.len();
        kept.push(left);
        preimages.push(take_record_batch(&stored, &UInt32Array::from(updated_at)).map_err(|e| fail(table, &e))?);
        removed_rows.push(take_record_batch(&stored, &UInt32Array::from(deleted_at)).map_err(|e| fail(table, &e))?);
        let mut remove = file.remove.clone();
        remove.data_change = true;
        remove.deletion_timestamp = Some(deletion_timestamp);
        removes.push(remove);
    }
    drop(reads);
    out.files_rewritten = removes.len();
    out.read_ms = started.elapsed().as_millis() as u64;

    // 3: the new rows (replacements and inserts) and what the rewritten files keep.
    let inserted = |i: usize| !matched[i] && !changes.deletes[i];
    let postimage: Vec<u32> = (0..n as u32).filter(|i| replaced[*i as usize]).collect();
    let inserts: Vec<u32> = (0..n as u32).filter(|i| inserted(*i as usize)).collect();
    out.inserted = inserts.len();
    let new_rows: Vec<u32> = (0..n as u32).filter(|i| replaced[*i as usize] || inserted(*i as usize)).collect();
    let new_rows = take_record_batch(&rows, &UInt32Array::from(new_rows)).map_err(|e| fail(table, &e))?;
    let data = if kept.is_empty() {
        new_rows // in key order already
    } else {
        kept.push(new_rows);
        let all = concat_batches(&schema, &kept).map_err(|e| fail(table, &e))?;
        sorted_by(&all, &key_index).map_err(|e| fail(table, &e))?
    };
    drop(kept);
    let write_started = Instant::now();
    let mut actions: Vec<Action> = Vec::new();
    if data.num_rows() > 0 {
        let mut writer = RecordBatchWriter::for_table(table.delta()).map_err(|e| table.wrap_error(e))?;
        writer.write(data).await.map_err(|e| table.wrap_error(e))?;
        let adds = writer.flush().await.map_err(|e| table.wrap_error(e))?;
        out.files_added = adds.len();
        actions.extend(adds.into_iter().map(Action::Add));
    }
    // 4: the change feed, when stored rows change.
    if change_feed && (out.updated > 0 || out.deleted > 0) {
        let take_rows = |at: &[u32]| take_record_batch(&rows, &UInt32Array::from(at.to_vec()));
        let parts: Vec<(RecordBatch, &str)> = vec![
            (concat_batches(&schema, &preimages).map_err(|e| fail(table, &e))?, "update_preimage"),
            (take_rows(&postimage).map_err(|e| fail(table, &e))?, "update_postimage"),
            (concat_batches(&schema, &removed_rows).map_err(|e| fail(table, &e))?, "delete"),
            (take_rows(&inserts).map_err(|e| fail(table, &e))?, "insert"),
        ];
        let cdc = change_rows(&schema, &parts).map_err(|e| fail(table, &e))?;
        for file in write_change_files(table, &cdc, &partition_columns).await? {
            actions.push(Action::Cdc(file));
        }
    }
    out.write_ms = write_started.elapsed().as_millis() as u64;
    crate::failpoint::hit(&format!("{}.files_written", table.name()));

    // 5: one commit.
    let version = if removes.is_empty() && !actions.iter().any(|a| matches!(a, Action::Cdc(_))) {
        table.commit_appended(actions, txns).await? // only inserts: an append (delta-rs' check suffices)
    } else {
        actions.extend(removes.into_iter().map(Action::Remove));
        let operation = DeltaOperation::Merge {
            predicate: None,
            merge_predicate: Some(d.primary_key.iter().map(|k| format!("target.{k} = source.{k}")).collect::<Vec<_>>().join(" AND ")),
            matched_predicates: vec![
                MergePredicate { action_type: "update".into(), predicate: Some("source is newer".into()) },
                MergePredicate { action_type: "delete".into(), predicate: Some("source is a delete at least as new".into()) },
            ],
            not_matched_predicates: vec![MergePredicate { action_type: "insert".into(), predicate: Some("source is not a delete".into()) }],
            not_matched_by_source_predicates: vec![],
        };
        let (version, races) = table.commit_rewrite(actions, txns, operation).await?;
        out.races = races;
        version
    };
    out.version = version;
    Ok(out)
}

impl Upserted {
    pub fn outcome(&self, rows: usize) -> CommitOutcome {
        CommitOutcome { version: self.version, rows }
    }
}

/// The live files of the table with their partition (in the canonical form
/// of [`canonical_partition`]) and the bounds of the first key column (None:
/// no statistics, the file may hold any key).
fn stored_files(table: &LakeTable, first_key: &str, schema: &Schema) -> Result<Vec<StoredFile>, TableError> {
    if table.version().is_none_or(|v| v < 0) {
        return Ok(Vec::new());
    }
    let snapshot = table.delta().snapshot().map_err(|e| table.wrap_error(e))?;
    let mut files = Vec::new();
    let mut canonical: HashMap<String, String> = HashMap::new();
    for file in snapshot.log_data().iter() {
        // The Add form carries the partition values as text, as the log has them.
        #[allow(deprecated)]
        let add = file.add_action();
        let bounds = add.stats.as_deref().and_then(|s| {
            let stats: serde_json::Value = serde_json::from_str(s).ok()?;
            Some((stats.get("minValues")?.get(first_key)?.clone(), stats.get("maxValues")?.get(first_key)?.clone()))
        });
        let written = data_file::partition_path(&add);
        let partition = canonical.entry(written).or_insert_with(|| canonical_partition(&add, schema)).clone();
        files.push(StoredFile { remove: file.remove_action(true), add, partition, bounds });
    }
    Ok(files)
}

/// A file's partition as `col=value/…` (columns by name) with each value
/// read as its column's type and written the way [`partition_value`] writes
/// a change's: another writer may have written the same value differently
/// (`007` for 7, another timestamp format), and a change must find the
/// file all the same. A value that does not read as its type stays as written.
fn canonical_partition(add: &Add, schema: &Schema) -> String {
    let canonical = |column: &str, text: &str| -> Option<String> {
        let data_type = schema.field_with_name(column).ok()?.data_type();
        let array = cast(&(Arc::new(StringArray::from(vec![text])) as ArrayRef), data_type).ok()?;
        partition_value(array.as_ref(), 0)
    };
    data_file::partition_path_with(add, |column, text| canonical(column, text).unwrap_or_else(|| text.to_string()))
}

/// The files some change may find its stored row in (see the module docs),
/// and how many partitions the changes search (-1: some change's is unknown).
fn candidates<'f>(files: &'f [StoredFile], changes: &Changes, first_key: &ArrayRef) -> (Vec<&'f StoredFile>, i64) {
    // Per partition, the changes searching it, in key order (the batch is sorted by key).
    let mut by_partition: HashMap<&str, Vec<usize>, foldhash::fast::RandomState> = HashMap::default();
    let mut everywhere: Vec<usize> = Vec::new();
    for (row, search) in changes.search.iter().enumerate() {
        match search.as_deref() {
            Some(p) => by_partition.entry(p).or_default().push(row),
            None => everywhere.push(row),
        }
    }
    let key = FirstKey::of(first_key);
    let reading = files
        .iter()
        .filter(|f| {
            let here = by_partition.get(f.partition.as_str()).map(Vec::as_slice).unwrap_or_default();
            key.any_within(here, &f.bounds) || key.any_within(&everywhere, &f.bounds)
        })
        .collect();
    (reading, if everywhere.is_empty() { by_partition.len() as i64 } else { -1 })
}

/// The first key column, as the file statistics can bound it.
enum FirstKey<'a> {
    Int(deltalake::arrow::array::Int64Array),
    Text(&'a StringArray),
    /// Another type: no file statistics are used, every file may hold any key.
    Other,
}

impl<'a> FirstKey<'a> {
    fn of(column: &'a ArrayRef) -> FirstKey<'a> {
        match column.data_type() {
            DataType::Int64 | DataType::Int32 | DataType::Int16 | DataType::Int8 => match cast(column, &DataType::Int64) {
                Ok(a) => FirstKey::Int(a.as_primitive::<Int64Type>().clone()),
                Err(_) => FirstKey::Other,
            },
            DataType::Utf8 => FirstKey::Text(column.as_string::<i32>()),
            _ => FirstKey::Other,
        }
    }

    /// Some row of `rows` (sorted by this key) lies within `bounds`.
    fn any_within(&self, rows: &[usize], bounds: &Option<(serde_json::Value, serde_json::Value)>) -> bool {
        if rows.is_empty() {
            return false;
        }
        match (self, bounds) {
            (FirstKey::Int(a), Some((lo, hi))) if a.null_count() == 0 => match (lo.as_i64(), hi.as_i64()) {
                (Some(lo), Some(hi)) => {
                    let first = rows.partition_point(|r| a.value(*r) < lo);
                    rows.get(first).is_some_and(|r| a.value(*r) <= hi)
                }
                _ => true,
            },
            (FirstKey::Text(a), Some((lo, hi))) if a.null_count() == 0 => match (lo.as_str(), hi.as_str()) {
                // A truncated string maximum is an upper bound (as Delta writers make it).
                (Some(lo), Some(hi)) => {
                    let first = rows.partition_point(|r| a.value(*r) < lo);
                    rows.get(first).is_some_and(|r| a.value(*r) <= hi)
                }
                _ => true,
            },
            _ => true,
        }
    }
}

/// The order of a change's sequence against a stored row's; None when the
/// stored row has none.
fn compare(changes: &ArrayRef, change: usize, stored: &ArrayRef, row: usize) -> Option<Ordering> {
    if stored.is_null(row) || changes.is_null(change) {
        return None;
    }
    match (changes.data_type(), stored.data_type()) {
        (DataType::Int64, DataType::Int64) => Some(changes.as_primitive::<Int64Type>().value(change).cmp(&stored.as_primitive::<Int64Type>().value(row))),
        (DataType::Utf8, DataType::Utf8) => Some(changes.as_string::<i32>().value(change).cmp(stored.as_string::<i32>().value(row))),
        _ => None,
    }
}

fn sorted_by(batch: &RecordBatch, key_index: &[usize]) -> Result<RecordBatch, deltalake::arrow::error::ArrowError> {
    if batch.num_rows() < 2 {
        return Ok(batch.clone());
    }
    let keys: Vec<SortColumn> = key_index.iter().map(|i| SortColumn { values: batch.column(*i).clone(), options: None }).collect();
    take_record_batch(batch, &lexsort_to_indices(&keys, None)?)
}

/// The change feed rows of a commit: the table's columns and `_change_type`.
fn change_rows(schema: &SchemaRef, parts: &[(RecordBatch, &str)]) -> Result<RecordBatch, deltalake::arrow::error::ArrowError> {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("_change_type", DataType::Utf8, false));
    let cdc_schema = Arc::new(Schema::new(fields));
    let mut batches = Vec::new();
    for (rows, change_type) in parts.iter().filter(|(r, _)| r.num_rows() > 0) {
        let mut columns = rows.columns().to_vec();
        columns.push(Arc::new(StringArray::from(vec![*change_type; rows.num_rows()])) as ArrayRef);
        batches.push(RecordBatch::try_new(cdc_schema.clone(), columns)?);
    }
    concat_batches(&cdc_schema, &batches)
}

/// A partition value as delta-rs writes it in the log (None for null): the
/// kernel's own serialization, reached through the one public type that holds
/// a kernel scalar.
pub fn partition_value(array: &dyn Array, row: usize) -> Option<String> {
    fn serialize<S: ScalarExt>(array: &dyn Array, row: usize, _: impl Fn(S) -> DeltaTablePartition) -> Option<String> {
        S::from_array(array, row).map(|s| s.serialize())
    }
    if array.is_null(row) {
        return None;
    }
    serialize(array, row, |value| DeltaTablePartition { key: String::new(), value })
}

/// The `rows` rows of the partition `columns` grouped by partition, each
/// group with its partition values as the log writes them (None for null).
/// Rows are told apart by their values in Arrow's row format, and a group's
/// values are written once, from its first row: a batch's ~10^5 rows fall in
/// a few dozen partitions, and a value written as the log writes it goes
/// through a kernel scalar (for a date, a chrono format) and an allocation.
/// Silver's change files and its changes' search paths are grouped by it.
#[allow(clippy::type_complexity)]
pub fn by_partition(columns: &[ArrayRef], rows: usize) -> Result<Vec<(Vec<Option<String>>, Vec<u32>)>, deltalake::arrow::error::ArrowError> {
    if columns.is_empty() {
        let all: Vec<u32> = (0..rows as u32).collect();
        return Ok(if all.is_empty() { vec![] } else { vec![(vec![], all)] });
    }
    let converter = RowConverter::new(columns.iter().map(|c| SortField::new(c.data_type().clone())).collect())?;
    let rows = converter.convert_columns(columns)?;
    let mut groups: Vec<(Vec<Option<String>>, Vec<u32>)> = Vec::new();
    let mut group_of: HashMap<&[u8], usize, foldhash::fast::RandomState> = HashMap::default();
    for (row, values) in rows.iter().enumerate() {
        let group = *group_of.entry(values.data()).or_insert_with(|| {
            groups.push((columns.iter().map(|c| partition_value(c.as_ref(), row)).collect(), Vec::new()));
            groups.len() - 1
        });
        groups[group].1.push(row as u32);
    }
    Ok(groups)
}

/// Writes the change rows as parquet files under `_change_data/`, one per
/// partition (partition columns are in the action, not the file).
async fn write_change_files(table: &LakeTable, cdc: &RecordBatch, partition_columns: &[String]) -> Result<Vec<AddCDCFile>, TableError> {
    let fail = |e: String| table.wrap_error(DeltaTableError::Generic(format!("{}: change data file: {e}", table.name())));
    let partition_index: Vec<usize> = partition_columns.iter().map(|p| cdc.schema().index_of(p).map_err(|e| fail(e.to_string()))).collect::<Result<_, _>>()?;
    let columns: Vec<ArrayRef> = partition_index.iter().map(|i| cdc.column(*i).clone()).collect();
    let groups = by_partition(&columns, cdc.num_rows()).map_err(|e| fail(e.to_string()))?;
    let file_columns: Vec<usize> = (0..cdc.num_columns()).filter(|i| !partition_index.contains(i)).collect();
    let store = table.delta().log_store().object_store(None);
    let properties = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut files = Vec::with_capacity(groups.len());
    for (values, rows) in groups {
        let part = take_record_batch(cdc, &UInt32Array::from(rows)).and_then(|b| b.project(&file_columns)).map_err(|e| fail(e.to_string()))?;
        let mut buffer = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut buffer, part.schema(), Some(properties.clone())).map_err(|e| fail(e.to_string()))?;
        writer.write(&part).map_err(|e| fail(e.to_string()))?;
        writer.close().map_err(|e| fail(e.to_string()))?;
        let path = format!("_change_data/cdc-{}.snappy.parquet", uuid::Uuid::new_v4());
        let size = buffer.len() as i64;
        store.put(&deltalake::Path::from(path.as_str()), buffer.into()).await.map_err(|e| table.wrap_error(e.into()))?;
        files.push(AddCDCFile {
            path,
            size,
            partition_values: partition_columns.iter().cloned().zip(values).collect(),
            data_change: false,
            tags: None,
        });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::Int64Array;

    fn files(ranges: &[(&str, i64, i64)]) -> Vec<StoredFile> {
        ranges
            .iter()
            .map(|(p, lo, hi)| StoredFile {
                add: Add::default(),
                remove: Remove { path: String::new(), data_change: true, deletion_timestamp: None, extended_file_metadata: None, partition_values: None, size: None, tags: None, deletion_vector: None, base_row_id: None, default_row_commit_version: None },
                partition: p.to_string(),
                bounds: Some((serde_json::json!(lo), serde_json::json!(hi))),
            })
            .collect()
    }

    fn changes(keys: &[i64], search: &[Option<&str>]) -> (Changes, ArrayRef) {
        let column: ArrayRef = Arc::new(Int64Array::from(keys.to_vec()));
        let rows = RecordBatch::try_new(Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)])), vec![column.clone()]).unwrap();
        let search = search.iter().map(|s| s.map(Arc::from)).collect();
        (Changes { rows, deletes: vec![false; keys.len()], search }, column)
    }

    /// A file is read only when a change searching its partition falls in its
    /// key range; a change of an unknown partition, or of one no file names,
    /// searches every file.
    #[test]
    fn files_are_read_only_where_a_key_may_be() {
        let stored = files(&[("m=1", 0, 99), ("m=1", 100, 199), ("m=2", 0, 99), ("m=2", 150, 300)]);
        let picked = |c: &(Changes, ArrayRef)| -> Vec<usize> {
            candidates(&stored, &c.0, &c.1).0.iter().map(|f| stored.iter().position(|s| std::ptr::eq(s, *f)).unwrap()).collect()
        };
        assert_eq!(picked(&changes(&[5, 120], &[Some("m=1"), Some("m=1")])), vec![0, 1]);
        assert_eq!(picked(&changes(&[120], &[Some("m=1")])), vec![1]);
        assert_eq!(picked(&changes(&[120], &[Some("m=2")])), Vec::<usize>::new(), "between m=2's two files");
        assert_eq!(picked(&changes(&[400], &[Some("m=1")])), Vec::<usize>::new(), "a new key");
        assert_eq!(picked(&changes(&[120], &[None])), vec![1], "unknown partition: every file's range");
        assert_eq!(picked(&changes(&[160], &[None])), vec![1, 3], "unknown partition: every file's range");
        assert_eq!(picked(&changes(&[160], &[Some("m=9")])), Vec::<usize>::new(), "a partition no file has: new rows");
    }

    /// A partition value another writer wrote in another form is the same
    /// partition: `007` and `7` for an integer column.
    #[test]
    fn partition_values_compare_as_values() {
        let schema = Schema::new(vec![Field::new("m", DataType::Int32, true), Field::new("c", DataType::Utf8, true)]);
        let add = |m: Option<&str>, c: &str| Add {
            partition_values: [("m".to_string(), m.map(str::to_string)), ("c".to_string(), Some(c.to_string()))].into(),
            ..Default::default()
        };
        assert_eq!(canonical_partition(&add(Some("007"), "x"), &schema), "c=x/m=7");
        assert_eq!(canonical_partition(&add(Some("7"), "x"), &schema), "c=x/m=7");
        assert_eq!(canonical_partition(&add(None, "x"), &schema), "c=x/m=__HIVE_DEFAULT_PARTITION__");
        assert_eq!(canonical_partition(&add(Some("seven"), "x"), &schema), "c=x/m=seven", "unreadable: as written");
    }

    #[test]
    fn change_rows_group_by_partition_values_as_the_log_writes_them() {
        use deltalake::arrow::array::Date32Array;
        let schema = Arc::new(Schema::new(vec![
            Field::new("d", DataType::Date32, true),
            Field::new("c", DataType::Utf8, true),
            Field::new("v", DataType::Int64, false),
        ]));
        let cdc = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Date32Array::from(vec![Some(19000), None, Some(19000), Some(19001), None])),
                Arc::new(StringArray::from(vec![Some("x"), Some("x"), Some("x"), Some("x"), Some("y")])),
                Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5])),
            ],
        )
        .unwrap();
        let mut groups = by_partition(&cdc.columns()[..2], cdc.num_rows()).unwrap();
        groups.sort();
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            groups,
            vec![
                (vec![None, s("x")], vec![1]),
                (vec![None, s("y")], vec![4]),
                (vec![s("2022-01-08"), s("x")], vec![0, 2]),
                (vec![s("2022-01-09"), s("x")], vec![3]),
            ]
        );
        assert_eq!(by_partition(&[], cdc.num_rows()).unwrap(), vec![(vec![], vec![0, 1, 2, 3, 4])], "unpartitioned: one group");
    }
}
