//! The rows a batch of changes becomes: the columns read from the row
//! images, plus the derived columns, which the definition declares as SQL
//! expressions (`expr = "price * quantity"`) and DataFusion evaluates once
//! per batch, cast to the column's type. A row whose expression fails (an
//! overflow, a bad cast) is found by bisection and quarantined with the
//! reason; the others go on. `apply_as_deletes` is evaluated the same way.

use super::decode::{Change, Reader};
use super::spec::ColumnSource;
use super::value;
use super::{err, ChangeEvent, DecodeError, ErrorKind, Op};
use deltalake::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringBuilder};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::datafusion::logical_expr::cast;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::datafusion::sql::sqlparser::dialect::GenericDialect;
use deltalake::datafusion::sql::sqlparser::keywords::Keyword;
use deltalake::datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use std::sync::Arc;

/// The evaluated rows of one table's changes in a batch.
#[derive(Clone, Debug)]
pub struct TableRows {
    /// Every column but the meta columns, in the definition's order; a
    /// change's `row` indexes it.
    pub rows: RecordBatch,
    /// The same columns for the full `before` images (`before_row`).
    pub before: RecordBatch,
}

/// The identifiers (field names) a SQL expression reads: words that are not
/// keywords and not function names.
pub fn identifiers(sql: &str) -> Vec<String> {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else { return vec![] };
    let significant: Vec<&Token> = tokens.iter().filter(|t| !matches!(t, Token::Whitespace(_))).collect();
    let mut out: Vec<String> = Vec::new();
    for (i, t) in significant.iter().enumerate() {
        let Token::Word(w) = t else { continue };
        let is_call = matches!(significant.get(i + 1), Some(Token::LParen));
        if is_call || (w.quote_style.is_none() && w.keyword != Keyword::NoKeyword) {
            continue;
        }
        if !out.contains(&w.value) {
            out.push(w.value.clone());
        }
    }
    out
}

/// The schema of [`TableRows::rows`]: the definition's columns but the meta ones.
pub fn rows_schema(reader: &Reader) -> SchemaRef {
    let fields: Vec<Field> = reader
        .definition
        .columns
        .iter()
        .filter(|c| !matches!(c.source, Some(ColumnSource::Meta(_))))
        .map(|c| Field::new(&c.name, c.data_type.clone(), true))
        .collect();
    Arc::new(Schema::new(fields))
}

/// Evaluates the derived columns and `apply_as_deletes` of a batch's
/// changes. Returns one result per change (same order) and the rows.
pub fn evaluate(reader: &Reader, changes: Vec<Result<Change, DecodeError>>) -> (Vec<Result<ChangeEvent, DecodeError>>, TableRows) {
    let mut changes = changes;
    loop {
        let ok: Vec<&Change> = changes.iter().filter_map(|c| c.as_ref().ok()).collect();
        let images = image_batch(reader, ok.iter().map(|c| &c.image));
        let befores: Vec<&Vec<super::Scalar>> = ok.iter().filter_map(|c| c.before.as_ref()).collect();
        let before_images = image_batch(reader, befores.into_iter());
        let flags = flags_batch(reader, &ok);
        let (failed, batch_error) = match evaluate_all(reader, &images, &before_images, flags.as_ref()) {
            Ok((rows, before, deletes)) => {
                let mut events = Vec::with_capacity(changes.len());
                let (mut row, mut before_row) = (0, 0);
                for c in changes {
                    events.push(c.map(|c| {
                        let b = c.before.as_ref().map(|_| {
                            before_row += 1;
                            before_row - 1
                        });
                        let op = if c.op != Op::Delete && deletes.as_ref().is_some_and(|d| d.value(row) && !d.is_null(row)) { Op::Delete } else { c.op };
                        let e = ChangeEvent {
                            op,
                            seq: c.seq,
                            source_ts_ms: c.source_ts_ms,
                            key: c.key,
                            row,
                            full_image: c.full_image,
                            before_row: b,
                            kafka_tombstone: c.kafka_tombstone,
                        };
                        row += 1;
                        e
                    }));
                }
                return (events, TableRows { rows, before });
            }
            Err(e) => (find_failures(reader, &images, flags.as_ref()), e),
        };
        // DataFusion fails on the batch but on no row alone (not seen): every row gets the reason,
        // rather than the batch failing forever.
        let failed: Vec<(usize, String)> = if failed.is_empty() {
            (0..images.num_rows()).map(|i| (i, format!("{}: derived columns: {batch_error}", reader.definition.name))).collect()
        } else {
            failed
        };
        // Quarantine the rows whose expressions fail, then evaluate the rest again.
        let mut ok_index = 0;
        for c in changes.iter_mut() {
            if c.is_ok() {
                if let Some((_, why)) = failed.iter().find(|(i, _)| *i == ok_index) {
                    *c = Err(err(ErrorKind::InvalidValue, why.clone()));
                }
                ok_index += 1;
            }
        }
    }
}

/// The field columns of images as a batch (one row per image).
fn image_batch<'a>(reader: &Reader, images: impl Iterator<Item = &'a Vec<super::Scalar>>) -> RecordBatch {
    let images: Vec<&Vec<super::Scalar>> = images.collect();
    let mut fields = Vec::new();
    let mut arrays = Vec::new();
    for (i, (column, _)) in reader.fields.iter().enumerate() {
        let values: Vec<&super::Scalar> = images.iter().map(|img| &img[i]).collect();
        arrays.push(value::array(&column.data_type, &values).expect("values were read for the column's type"));
        fields.push(Field::new(&column.name, column.data_type.clone(), true));
    }
    RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        arrays,
        &deltalake::arrow::array::RecordBatchOptions::new().with_row_count(Some(images.len())),
    )
    .expect("image columns line up")
}

fn flags_batch(reader: &Reader, changes: &[&Change]) -> Option<RecordBatch> {
    reader.spec.apply_as_deletes.as_ref()?;
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (i, name) in reader.flag_fields.iter().enumerate() {
        let mut b = StringBuilder::new();
        for c in changes {
            b.append_option(c.flags[i].as_deref());
        }
        arrays.push(Arc::new(b.finish()));
        fields.push(Field::new(name, DataType::Utf8, true));
    }
    RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        arrays,
        &deltalake::arrow::array::RecordBatchOptions::new().with_row_count(Some(changes.len())),
    )
    .ok()
}

type Evaluated = (RecordBatch, RecordBatch, Option<deltalake::arrow::array::BooleanArray>);

fn evaluate_all(reader: &Reader, images: &RecordBatch, before: &RecordBatch, flags: Option<&RecordBatch>) -> Result<Evaluated, String> {
    let rows = derive(reader, images)?;
    let before = derive(reader, before)?;
    let deletes = match (flags, &reader.spec.apply_as_deletes) {
        (Some(f), Some(expr)) => Some(predicate(f, expr)?),
        _ => None,
    };
    Ok((rows, before, deletes))
}

/// Plans every expression of a change table against the columns it reads, so
/// that a broken one stops lakestream at start, naming the file and column.
pub fn check_expressions(reader: &Reader) -> Result<(), String> {
    use deltalake::datafusion::common::DFSchema;
    use deltalake::datafusion::logical_expr::ExprSchemable;
    let d = reader.definition;
    let images = image_batch(reader, std::iter::empty());
    let schema = DFSchema::try_from(images.schema().as_ref().clone()).map_err(|e| e.to_string())?;
    let ctx = SessionContext::new();
    for c in &d.columns {
        let Some(ColumnSource::Derived(sql)) = &c.source else { continue };
        let at = format!("{}:{}: column `{}`: expr `{sql}`", d.file, c.line, c.name);
        let expr = ctx.parse_sql_expr(sql, &schema).map_err(|e| format!("{at}: {e}"))?;
        let got = expr.get_type(&schema).map_err(|e| format!("{at}: {e}"))?;
        if !deltalake::arrow::compute::can_cast_types(&got, &c.data_type) {
            return Err(format!("{at} gives {got}, which does not cast to {}", c.type_text));
        }
    }
    if let Some(sql) = &d.change.as_ref().and_then(|c| c.apply_as_deletes.clone()) {
        let fields: Vec<Field> = reader.flag_fields.iter().map(|f| Field::new(f, DataType::Utf8, true)).collect();
        let schema = DFSchema::try_from(Schema::new(fields)).map_err(|e| e.to_string())?;
        ctx.parse_sql_expr(sql, &schema).map_err(|e| format!("{}: apply_as_deletes `{sql}`: {e}", d.file))?;
    }
    Ok(())
}

/// The image columns plus the derived ones, in the definition's order.
///
/// Each expression is planned once into a physical expression and evaluated
/// on the whole batch in place: no query plan, so no repartitioning can
/// reorder the rows (a change's `row` indexes this batch).
pub fn derive(reader: &Reader, images: &RecordBatch) -> Result<RecordBatch, String> {
    use deltalake::datafusion::common::DFSchema;
    let schema = rows_schema(reader);
    if images.num_rows() == 0 {
        return Ok(RecordBatch::new_empty(schema));
    }
    let ctx = SessionContext::new();
    let df_schema = DFSchema::try_from(images.schema().as_ref().clone()).map_err(|e| e.to_string())?;
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for c in reader.definition.columns.iter() {
        match &c.source {
            Some(ColumnSource::Derived(sql)) => {
                let at = || format!("column `{}`: expr `{sql}`", c.name);
                let expr = ctx.parse_sql_expr(sql, &df_schema).map_err(|e| format!("{}: {e}", at()))?;
                let physical = ctx.create_physical_expr(cast(expr, c.data_type.clone()), &df_schema).map_err(|e| format!("{}: {e}", at()))?;
                let value = physical.evaluate(images).map_err(|e| format!("{}: {e}", at()))?;
                columns.push(value.into_array(images.num_rows()).map_err(|e| format!("{}: {e}", at()))?);
            }
            Some(ColumnSource::Meta(_)) => {}
            _ => columns.push(images.column_by_name(&c.name).cloned().ok_or_else(|| format!("no column `{}` in the images", c.name))?),
        }
    }
    // The definition's schema (nullability may differ after a cast).
    RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())
}

fn predicate(flags: &RecordBatch, sql: &str) -> Result<deltalake::arrow::array::BooleanArray, String> {
    use deltalake::datafusion::common::DFSchema;
    if flags.num_rows() == 0 {
        return Ok(deltalake::arrow::array::BooleanArray::from(Vec::<bool>::new()));
    }
    let ctx = SessionContext::new();
    let df_schema = DFSchema::try_from(flags.schema().as_ref().clone()).map_err(|e| e.to_string())?;
    let expr = ctx.parse_sql_expr(sql, &df_schema).map_err(|e| format!("apply_as_deletes `{sql}`: {e}"))?;
    let physical = ctx.create_physical_expr(cast(expr, DataType::Boolean), &df_schema).map_err(|e| format!("apply_as_deletes `{sql}`: {e}"))?;
    let value = physical.evaluate(flags).map_err(|e| format!("apply_as_deletes `{sql}`: {e}"))?;
    let array = value.into_array(flags.num_rows()).map_err(|e| e.to_string())?;
    Ok(array.as_boolean().clone())
}

/// The rows (by index among the images) whose expressions fail, with the reason.
fn find_failures(reader: &Reader, images: &RecordBatch, flags: Option<&RecordBatch>) -> Vec<(usize, String)> {
    let mut failed = Vec::new();
    let mut pending = vec![(0usize, images.num_rows())];
    while let Some((start, len)) = pending.pop() {
        if len == 0 {
            continue;
        }
        let slice = images.slice(start, len);
        let flag_slice = flags.map(|f| f.slice(start, len));
        let empty = RecordBatch::new_empty(images.schema());
        let result = evaluate_all(reader, &slice, &empty, flag_slice.as_ref());
        match result {
            Ok(_) => {}
            Err(why) if len == 1 => failed.push((start, format!("{}: derived columns: {why}", reader.definition.name))),
            Err(_) => {
                pending.push((start, len / 2));
                pending.push((start + len / 2, len - len / 2));
            }
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::datatypes::{Decimal128Type, Int32Type};

    /// Derived columns stay on their row in a batch larger than DataFusion's
    /// batch size (a query plan would split and may reorder it).
    #[test]
    fn derived_values_stay_on_their_row() {
        let reader = Reader::new(crate::tables::definition::get("silver.order_lines")).unwrap();
        let changes: Vec<_> = (0..20_000i64)
            .map(|i| {
                let v = serde_json::json!({"op": "c", "source": {"seq": i}, "after": {"transaction_no": format!("{}", 100000 + i),
                    "line_no": 1, "order_date": "2019-12-09", "product_no": "P", "product_name": "x", "price": "1.00",
                    "quantity": i, "country": "UK"}});
                reader.decode(None, Some(v.to_string().as_bytes()), i, 1 << 20)
            })
            .collect();
        let (events, rows) = evaluate(&reader, changes);
        let qty = rows.rows.column_by_name("quantity").unwrap().as_primitive::<Int32Type>().clone();
        let total = rows.rows.column_by_name("line_total").unwrap().as_primitive::<Decimal128Type>().clone();
        for (i, e) in events.iter().enumerate() {
            let row = e.as_ref().unwrap().row;
            assert_eq!(i64::from(qty.value(row)), i as i64);
            assert_eq!(total.value(row), i as i128 * 100, "row {row}");
        }
    }

    #[test]
    fn identifiers_skip_keywords_functions_and_literals() {
        assert_eq!(identifiers("__deleted = 'true'"), vec!["__deleted"]);
        assert_eq!(identifiers("starts_with(transaction_no, 'C') AND NOT x IS NULL"), vec!["transaction_no", "x"]);
        assert_eq!(identifiers("\"Weird Name\" = 1"), vec!["Weird Name"]);
    }
}
