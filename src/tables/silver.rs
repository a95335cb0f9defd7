//! Silver: the current state of every order line, at `<lake>/silver/order_lines`.
//!
//! Change events are applied as SCD type 1 with a MERGE per batch:
//! - within a batch only the newest event per key (by `seq`) counts;
//! - a new key is inserted (unless the event is a delete);
//! - an existing row is updated, or deleted for `op:"d"`, only when the event's
//!   `seq` is newer than the stored `_seq`: late and re-delivered events never
//!   overwrite newer data;
//! - a deleted key leaves a tombstone (see [`super::tombstones`]) so that a late
//!   event older than the delete cannot bring the row back.
//!
//! Partitioned by `order_month` (the first day of the order's month). Power BI
//! and Databricks SQL filter by order date, which prunes to a few months; a
//! month of this shop is ~40k lines, a healthy partition size; and live orders
//! land in the current month, so the MERGE of a batch touches only the
//! partitions of the months it carries. delta-rs turns the join predicate into
//! an early filter: `order_month IN (…)` plus `transaction_no`/`line_no` ranges
//! checked against file statistics, so a batch does not scan the table.
//!
//! The MERGE joins on the month of the row *before* the change (the event's
//! `before` image when it has one), so an update that moves an order to another
//! month finds the old row. A plain-row upsert carries no `before`: it must not
//! move a line across months. A delete without any image (a Kafka tombstone)
//! cannot name a month: a batch holding one merges without month pruning.
//!
//! Change Data Feed is on: each MERGE's inserts, update pre/post images and
//! deletes are the table's change feed.

use crate::change_event::{ChangeEvent, Op};
use crate::source::record::KafkaRecord;
use crate::tables::delta::TableError;
use crate::tables::definition::{self, TableDefinition};
use crate::tables::{CommitOutcome, LakeTable, TableSpec};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use deltalake::arrow::array::{
    Array, ArrayRef, Date32Array, BooleanBuilder, Date32Builder, Decimal128Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use std::sync::{Arc, LazyLock};

pub const NAME: &str = "silver.order_lines";

/// The table, as `tables/silver_order_lines.toml` defines it.
pub fn definition() -> &'static TableDefinition {
    definition::get(NAME)
}

pub fn spec() -> TableSpec {
    definition().spec()
}

/// The source of a MERGE: the table's columns plus `_match_month`, the month
/// the target row lives in (see the module docs).
fn source_schema() -> Arc<Schema> {
    static SCHEMA: LazyLock<Arc<Schema>> = LazyLock::new(|| {
        let mut fields: Vec<Field> = definition().schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("_match_month", DataType::Date32, true));
        Arc::new(Schema::new(fields))
    });
    SCHEMA.clone()
}

/// First day of the month of `d`, as days since the epoch.
fn month_of(d: NaiveDate) -> i32 {
    days_since_epoch_date(NaiveDate::from_ymd_opt(d.year(), d.month(), 1).expect("first of month"))
}

fn days_since_epoch_date(d: NaiveDate) -> i32 {
    d.signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32
}

/// One event chosen for the MERGE, with the record it came from.
pub struct SilverChange<'a> {
    pub event: &'a ChangeEvent,
    pub record: &'a KafkaRecord,
    /// The month of the row before the change (from the `before` image), if known.
    pub before_month: Option<NaiveDate>,
}

/// The MERGE source: one row per key. `_match_month` is the month the target
/// row lives in; `order_month` the month it will live in.
pub fn source_rows(changes: &[SilverChange<'_>], now: DateTime<Utc>) -> RecordBatch {
    try_source_rows(changes, now).expect("silver columns match tables/silver_order_lines.toml (checked at start)")
}

/// The same, or why the columns do not fit the definition.
pub fn try_source_rows(changes: &[SilverChange<'_>], now: DateTime<Utc>) -> Result<RecordBatch, String> {
    let n = changes.len();
    let mut transaction_no = StringBuilder::new();
    let mut line_no = Int32Builder::with_capacity(n);
    let mut order_date = Date32Builder::with_capacity(n);
    let mut product_no = StringBuilder::new();
    let mut product_name = StringBuilder::new();
    let mut price = Decimal128Builder::with_capacity(n).with_precision_and_scale(10, 2).expect("decimal(10,2)");
    let mut quantity = Int32Builder::with_capacity(n);
    let mut customer_no = StringBuilder::new();
    let mut country = StringBuilder::new();
    let mut is_cancellation = BooleanBuilder::with_capacity(n);
    let mut line_total = Decimal128Builder::with_capacity(n).with_precision_and_scale(18, 2).expect("decimal(18,2)");
    let mut op = StringBuilder::new();
    let mut seq = Int64Builder::with_capacity(n);
    let mut source_ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut partition = Int32Builder::with_capacity(n);
    let mut offset = Int64Builder::with_capacity(n);
    let mut updated = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut order_month = Date32Builder::with_capacity(n);
    let mut match_month = Date32Builder::with_capacity(n);
    let mut kafka_ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    for c in changes {
        let e = c.event;
        transaction_no.append_value(&e.key.transaction_no);
        line_no.append_value(e.key.line_no);
        let line = e.line.as_ref();
        order_date.append_option(line.map(|l| days_since_epoch_date(l.order_date)));
        product_no.append_option(line.map(|l| l.product_no.as_str()));
        product_name.append_option(line.map(|l| l.product_name.as_str()));
        price.append_option(line.map(|l| i128::from(l.price.cents())));
        quantity.append_option(line.map(|l| l.quantity));
        customer_no.append_option(line.and_then(|l| l.customer_no.as_deref()));
        country.append_option(line.map(|l| l.country.as_str()));
        is_cancellation.append_value(e.key.transaction_no.starts_with('C'));
        line_total.append_option(line.map(|l| i128::from(l.line_total_cents())));
        op.append_value(e.op.code());
        seq.append_value(e.seq);
        source_ts.append_option(e.source_ts_ms.or(c.record.timestamp_ms).map(|ms| ms * 1000));
        partition.append_value(c.record.partition);
        offset.append_value(c.record.offset);
        updated.append_value(now.timestamp_micros());
        let new_month = line.map(|l| month_of(l.order_date));
        order_month.append_option(new_month);
        match_month.append_option(c.before_month.map(month_of).or(new_month));
        kafka_ts.append_option(c.record.timestamp_ms.map(|ms| ms * 1000));
    }
    let columns: Vec<(&'static str, ArrayRef)> = vec![
        ("transaction_no", Arc::new(transaction_no.finish())),
        ("line_no", Arc::new(line_no.finish())),
        ("order_date", Arc::new(order_date.finish())),
        ("product_no", Arc::new(product_no.finish())),
        ("product_name", Arc::new(product_name.finish())),
        ("price", Arc::new(price.finish())),
        ("quantity", Arc::new(quantity.finish())),
        ("customer_no", Arc::new(customer_no.finish())),
        ("country", Arc::new(country.finish())),
        ("is_cancellation", Arc::new(is_cancellation.finish())),
        ("line_total", Arc::new(line_total.finish())),
        ("_op", Arc::new(op.finish())),
        ("_seq", Arc::new(seq.finish())),
        ("_source_ts", Arc::new(source_ts.finish())),
        ("_kafka_partition", Arc::new(partition.finish())),
        ("_kafka_offset", Arc::new(offset.finish())),
        ("_updated_at", Arc::new(updated.finish())),
        ("order_month", Arc::new(order_month.finish())),
        ("_kafka_timestamp", Arc::new(kafka_ts.finish())),
    ];
    let table_rows = definition().batch(columns, n)?;
    let mut all: Vec<ArrayRef> = table_rows.columns().to_vec();
    all.push(Arc::new(match_month.finish()));
    RecordBatch::try_new(source_schema(), all).map_err(|e| format!("silver MERGE source: {e}"))
}

/// Applies `source` (one row per key) to silver in one MERGE commit carrying `txns`.
/// An empty source commits the offsets alone.
///
/// The MERGE rewrites the files it matches, so it carries the layout lock of
/// [`crate::maintenance::compaction`]: it conflicts with a compaction that
/// overlaps it instead of committing next to it.
pub async fn merge(table: &mut LakeTable, source: RecordBatch, mut txns: Vec<Transaction>) -> Result<CommitOutcome, TableError> {
    let rows = source.num_rows();
    if rows == 0 {
        return table.append(None, txns).await;
    }
    let touched = touched_partitions(&source);
    txns.extend(crate::maintenance::compaction::layout_txns(NAME, touched.as_deref()));
    let month_known = source.column_by_name("_match_month").is_some_and(|c| c.null_count() == 0);
    let key = "target.transaction_no = source.transaction_no AND target.line_no = source.line_no";
    let predicate = if month_known {
        format!("target.order_month = source._match_month AND {key}")
    } else {
        key.to_string()
    };
    let ctx = SessionContext::new();
    let frame = ctx
        .read_batch(source)
        .map_err(|e| table.wrap_error(deltalake::DeltaTableError::Generic(format!("silver source: {e}"))))?;
    let newer = "source._seq > target._seq";
    let (merged, metrics) = table
        .delta()
        .clone()
        .merge(frame, predicate)
        .with_source_alias("source")
        .with_target_alias("target")
        .with_commit_properties(CommitProperties::default().with_application_transactions(txns))
        .when_matched_delete(|d| d.predicate(format!("source._op = 'd' AND {newer}")))
        .and_then(|m| {
            m.when_matched_update(|u| {
                data_columns()
                    .fold(u.predicate(format!("source._op <> 'd' AND {newer}")), |u, c| u.update(c, format!("source.{c}")))
            })
        })
        .and_then(|m| {
            m.when_not_matched_insert(|i| data_columns().fold(i.predicate("source._op <> 'd'"), |i, c| i.set(c, format!("source.{c}"))))
        })
        .map_err(|e| table.wrap_error(e))?
        .await
        .map_err(|e| table.wrap_error(e))?;
    table.set_delta(merged);
    // What the MERGE read and rewrote: the figures that show whether a batch's
    // cost follows the batch or the table (tests/bench/flat.sh reads them).
    tracing::info!(
        table = NAME,
        months = touched.as_ref().map_or(-1, |t| t.len() as i64),
        files_scanned = metrics.num_target_files_scanned,
        files_skipped = metrics.num_target_files_skipped_during_scan,
        files_added = metrics.num_target_files_added,
        files_removed = metrics.num_target_files_removed,
        rows_copied = metrics.num_target_rows_copied,
        rows_inserted = metrics.num_target_rows_inserted,
        rows_updated = metrics.num_target_rows_updated,
        rows_deleted = metrics.num_target_rows_deleted,
        scan_ms = metrics.scan_time_ms,
        rewrite_ms = metrics.rewrite_time_ms,
        execution_ms = metrics.execution_time_ms,
        "merged"
    );
    Ok(CommitOutcome { version: table.version().unwrap_or(-1), rows })
}

/// The partitions (`order_month=YYYY-MM-DD`) a MERGE of `source` may rewrite:
/// the months rows live in and move to. None when a row's month is unknown (a
/// key-only delete): the MERGE may touch any partition.
fn touched_partitions(source: &RecordBatch) -> Option<Vec<String>> {
    let mut months = std::collections::BTreeSet::new();
    for column in ["_match_month", "order_month"] {
        let array = source.column_by_name(column)?.as_any().downcast_ref::<Date32Array>()?;
        for i in 0..array.len() {
            if array.is_null(i) {
                if column == "_match_month" {
                    return None;
                }
                continue; // a delete: no new month
            }
            months.insert(array.value(i));
        }
    }
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
    Some(months.into_iter().map(|d| format!("order_month={}", epoch + chrono::Duration::days(i64::from(d)))).collect())
}

/// The table's columns, which a MERGE sets from the source.
fn data_columns() -> impl Iterator<Item = &'static str> {
    definition().columns.iter().map(|c| c.name.as_str())
}

/// Keeps, per key, the newest event by `seq` (on a tie, the later record),
/// dropping events not newer than the key's tombstone. Deletes stay: the
/// MERGE applies them only to an older row.
pub fn newest_per_key<'a>(
    events: impl Iterator<Item = (&'a KafkaRecord, &'a ChangeEvent)>,
    tombstone_seq: impl Fn(&crate::change_event::LineKey) -> Option<i64>,
) -> Vec<SilverChange<'a>> {
    let mut newest: std::collections::HashMap<&crate::change_event::LineKey, (&KafkaRecord, &ChangeEvent)> =
        std::collections::HashMap::new();
    for (r, e) in events {
        if e.op != Op::Delete && tombstone_seq(&e.key).is_some_and(|t| e.seq <= t) {
            continue; // older than a delete: must not resurrect the row
        }
        match newest.get(&e.key) {
            Some((_, kept)) if kept.seq > e.seq => {}
            _ => {
                newest.insert(&e.key, (r, e));
            }
        }
    }
    let mut out: Vec<SilverChange<'a>> = newest
        .into_values()
        .map(|(record, event)| SilverChange { event, record, before_month: event.before_order_date })
        .collect();
    out.sort_by(|a, b| a.event.key.cmp(&b.event.key));
    out
}
