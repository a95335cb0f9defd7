//! A table's data file as the commits that rewrite files see it (compaction
//! and silver's upsert): its partition, and its rows read back in the table's schema.

use bytes::Bytes;
use deltalake::arrow::array::{new_null_array, ArrayRef, RecordBatchOptions, StringArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::Add;
use deltalake::logstore::object_store::GetOptions;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::parquet::arrow::ProjectionMask;
use deltalake::{DeltaResult, DeltaTableError};
use std::sync::Arc;

/// The partition path of a file, as its partition values say (`a=1/b=x`; empty when unpartitioned).
pub fn partition_path(add: &Add) -> String {
    partition_path_with(add, |_, text| text.to_string())
}

/// The partition path of a file with each non-null value written by
/// `value(column, text)`, columns by name, a null as Hive writes it.
pub fn partition_path_with(add: &Add, value: impl Fn(&str, &str) -> String) -> String {
    let mut values: Vec<(&String, &Option<String>)> = add.partition_values.iter().collect();
    values.sort();
    values
        .iter()
        .map(|(k, v)| match v {
            Some(text) => format!("{k}={}", value(k, text)),
            None => format!("{k}=__HIVE_DEFAULT_PARTITION__"),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// `batch` in `schema`: columns by name, cast where the type differs (another
/// writer's physical type, Spark's INT96 timestamps), null where the batch
/// lacks one (a column a migration added since).
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        columns.push(match batch.column_by_name(field.name()) {
            Some(c) if c.data_type() == field.data_type() => c.clone(),
            Some(c) => cast(c, field.data_type())?,
            None => new_null_array(field.data_type(), batch.num_rows()),
        });
    }
    RecordBatch::try_new(schema.clone(), columns)
}

/// The rows of one data file with the table's full schema: partition values
/// become columns again, columns the file predates are null, and a column
/// another writer stored in another physical type (Spark's INT96
/// timestamps) is cast to the table's type.
pub async fn read(store: Arc<dyn deltalake::ObjectStore>, add: &Add, schema: &Schema, partition_columns: &[String]) -> DeltaResult<Vec<RecordBatch>> {
    decode(fetch(store, add).await?, add, schema, partition_columns)
}

/// A data file's bytes. Files that are rewritten are small (compaction) or
/// narrow (one key range of silver): each one is fetched whole, once, and
/// [`decode`]d for the columns a step needs.
pub async fn fetch(store: Arc<dyn deltalake::ObjectStore>, add: &Add) -> DeltaResult<Bytes> {
    let path = deltalake::Path::parse(&add.path).map_err(|e| DeltaTableError::Generic(format!("file path {}: {e}", add.path)))?;
    Ok(store.get_opts(&path, GetOptions::default()).await?.bytes().await?)
}

/// The rows of a fetched file in `schema`, as [`read`] gives them, decoding
/// only the columns `schema` has: silver's upsert reads a file's key columns
/// first and the rest only when a key matches.
pub fn decode(bytes: Bytes, add: &Add, schema: &Schema, partition_columns: &[String]) -> DeltaResult<Vec<RecordBatch>> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    // The file's columns that `schema` has, except partition columns: their
    // values are the log's, whatever the file holds.
    let wanted = |name: &str| schema.field_with_name(name).is_ok() && !partition_columns.iter().any(|p| p == name);
    let roots: Vec<usize> = builder.parquet_schema().root_schema().get_fields().iter().enumerate().filter(|(_, f)| wanted(f.name())).map(|(i, _)| i).collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let batches = builder.with_projection(mask).build()?.collect::<Result<Vec<RecordBatch>, _>>()?;
    let schema: SchemaRef = Arc::new(schema.clone());
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        // The partition values as columns of text, then everything in the table's types.
        let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut columns = batch.columns().to_vec();
        for p in partition_columns.iter().filter(|p| schema.field_with_name(p).is_ok()) {
            let value = add.partition_values.get(p).cloned().flatten();
            fields.push(Field::new(p, DataType::Utf8, true));
            columns.push(Arc::new(StringArray::from(vec![value; batch.num_rows()])) as ArrayRef);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        let with_partitions = RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &options)?;
        out.push(conform(&with_partitions, &schema)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Array, Int64Array, StringArray};
    use deltalake::parquet::arrow::ArrowWriter;

    /// A file holding `k`, `v` and (as some writers do) its partition column `p`.
    fn file() -> Bytes {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("k", DataType::Int64, false),
                Field::new("v", DataType::Utf8, true),
                Field::new("p", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec!["a", "b", "c"])),
                Arc::new(StringArray::from(vec!["in-file", "in-file", "in-file"])),
            ],
        )
        .unwrap();
        let mut buffer = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut buffer, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        Bytes::from(buffer)
    }

    #[test]
    fn decoding_reads_the_columns_of_the_schema_given_with_the_partition_value_of_the_log() {
        let add = Add { partition_values: [("p".to_string(), Some("2024-01".to_string()))].into(), ..Default::default() };
        let partitions = vec!["p".to_string()];
        let full = Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Utf8, true),
            Field::new("new", DataType::Utf8, true),
            Field::new("p", DataType::Utf8, true),
        ]);
        let rows = decode(file(), &add, &full, &partitions).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(), ["k", "v", "new", "p"]);
        assert_eq!(rows[0].column(1).as_ref(), &StringArray::from(vec!["a", "b", "c"]) as &dyn Array);
        assert_eq!(rows[0].column(2).null_count(), 3, "a column the file predates is null");
        assert_eq!(rows[0].column(3).as_ref(), &StringArray::from(vec!["2024-01"; 3]) as &dyn Array, "the log's value, not the file's");

        let keys = Schema::new(vec![Field::new("k", DataType::Int64, false)]);
        let rows = decode(file(), &add, &keys, &partitions).unwrap();
        assert_eq!(rows[0].num_columns(), 1);
        assert_eq!(rows[0].column(0).as_ref(), &Int64Array::from(vec![1, 2, 3]) as &dyn Array);
    }
}
