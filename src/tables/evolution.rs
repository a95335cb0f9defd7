//! Schema drift: a change table with `on_new_column = "evolve"` (the default)
//! grows a nullable column when its records carry a field it has no column
//! for, instead of dropping the values.
//!
//! The column is added to the Delta table by a metadata commit (`ADD
//! COLUMNS`, reader version unchanged, old rows read null) and recorded in
//! the table's properties as `lakestream.evolved.<column> = <type>`, which is
//! what `migrate` and `run` accept beside the definition file (and what a
//! later migration that declares the column makes permanent). Writers that
//! race to add the same column conflict on the metadata; the loser reloads,
//! finds the column, and adopts it: it is added exactly once. A writer that
//! starts on a table with evolved columns adopts them too.

use crate::change::spec::{ColumnSource, FieldSource};
use crate::tables::definition::{ColumnDefinition, TableDefinition};
use crate::tables::delta::TableError;
use crate::tables::LakeTable;
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake::kernel::StructType;
use std::collections::HashMap;
use std::sync::Arc;

/// The property that records an evolved column.
pub fn property(column: &str) -> String {
    format!("lakestream.evolved.{column}")
}

/// The Databricks name of a type a column can evolve to.
pub fn type_name(t: &DataType) -> String {
    match t {
        DataType::Utf8 => "string".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "int".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float64 => "double".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Date32 => "date".into(),
        DataType::Binary => "binary".into(),
        DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
        t if *t == crate::change::value::timestamp_type() => "timestamp".into(),
        other => other.to_string(),
    }
}

/// `base` plus `extra` columns (nullable, read from the field of their name),
/// as a definition that lives as long as the process (evolutions are rare).
pub fn evolved_definition(base: &'static TableDefinition, extra: &[(String, DataType)]) -> &'static TableDefinition {
    if extra.is_empty() {
        return base;
    }
    let mut d = base.clone();
    for (name, data_type) in extra {
        d.columns.push(ColumnDefinition {
            name: name.clone(),
            type_text: type_name(data_type),
            data_type: data_type.clone(),
            nullable: true,
            comment: Some("added by on_new_column = \"evolve\"".into()),
            source: Some(ColumnSource::Field(FieldSource {
                path: vec![name.clone()],
                required: false,
                null_if: vec![],
                pattern: None,
                min: None,
                unit: None,
                numbers_as_text: *data_type == DataType::Utf8,
                evolved: true,
            })),
            line: 0,
        });
    }
    d.schema = Arc::new(Schema::new(d.columns.iter().map(|c| Field::new(&c.name, c.data_type.clone(), c.nullable)).collect::<Vec<_>>()));
    Box::leak(Box::new(d))
}

/// The evolved columns the table has beyond `base`'s (recorded by the property).
pub fn evolved_columns(table: &LakeTable, base: &TableDefinition) -> Result<Vec<(String, DataType)>, TableError> {
    let snapshot = table.delta().snapshot().map_err(|e| table.wrap_error(e))?;
    let config = snapshot.metadata().configuration();
    let schema: Schema = snapshot.schema().as_ref().try_into_arrow().map_err(|e| table.wrap_error(e.into()))?;
    Ok(schema
        .fields()
        .iter()
        .filter(|f| base.column(f.name()).is_none() && config.contains_key(&property(f.name())))
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect())
}

/// Adds the `columns` the table lacks (nullable), recording each in the
/// table's properties. Safe against writers racing to do the same.
pub async fn add_columns(table: &mut LakeTable, columns: &[(String, DataType)]) -> Result<(), TableError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        table.refresh().await?;
        let snapshot = table.delta().snapshot().map_err(|e| table.wrap_error(e))?;
        let existing: Schema = snapshot.schema().as_ref().try_into_arrow().map_err(|e| table.wrap_error(e.into()))?;
        let config = snapshot.metadata().configuration().clone();
        let missing: Vec<Field> = columns
            .iter()
            .filter(|(name, _)| existing.field_with_name(name).is_err())
            .map(|(name, t)| Field::new(name, t.clone(), true))
            .collect();
        let unrecorded: HashMap<String, String> = columns
            .iter()
            .filter(|(name, _)| !config.contains_key(&property(name)))
            .map(|(name, t)| {
                let t = existing.field_with_name(name).map(|f| f.data_type().clone()).unwrap_or_else(|_| t.clone());
                (property(name), type_name(&t))
            })
            .collect();
        let result = if !missing.is_empty() {
            let kernel: StructType = (&Schema::new(missing.clone())).try_into_kernel().map_err(|e| table.wrap_error(e.into()))?;
            let fields: Vec<_> = kernel.fields().cloned().collect();
            table.delta().clone().add_columns().with_fields(fields).await
        } else if !unrecorded.is_empty() {
            table.delta().clone().set_tbl_properties().with_properties(unrecorded).with_raise_if_not_exists(false).await
        } else {
            return Ok(());
        };
        match result {
            Ok(t) => {
                if !missing.is_empty() {
                    let names: Vec<&str> = missing.iter().map(|f| f.name().as_str()).collect();
                    tracing::info!(table = table.name(), columns = ?names, "new columns added (on_new_column = \"evolve\")");
                }
                table.set_delta(t);
            }
            Err(e) if crate::tables::delta::is_conflict(&e) && attempt < 10 => {
                tracing::info!(table = table.name(), error = %e, "adding columns raced another commit; looking again");
            }
            Err(e) => return Err(table.wrap_error(e)),
        }
    }
}
