//! A table's data file as the commits that rewrite files see it (compaction
//! and silver's upsert): its partition, and its rows read back in the table's schema.

use deltalake::arrow::array::{new_null_array, ArrayRef, StringArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::Schema;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::Add;
use deltalake::logstore::object_store::GetOptions;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::{DeltaResult, DeltaTableError};
use std::collections::HashMap;
use std::sync::Arc;

/// The partition path of a file, as its partition values say (`a=1/b=x`; empty when unpartitioned).
pub fn partition_path(add: &Add) -> String {
    let mut values: Vec<(&String, &Option<String>)> = add.partition_values.iter().collect();
    values.sort();
    values.iter().map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("__HIVE_DEFAULT_PARTITION__"))).collect::<Vec<_>>().join("/")
}

/// The rows of one data file with the table's full schema: partition values
/// become columns again, columns the file predates are null, and a column
/// another writer stored in another physical type (Spark's INT96
/// timestamps) is cast to the table's type.
pub async fn read(store: Arc<dyn deltalake::ObjectStore>, add: &Add, schema: &Schema, partition_columns: &[String]) -> DeltaResult<Vec<RecordBatch>> {
    let path = deltalake::Path::parse(&add.path).map_err(|e| DeltaTableError::Generic(format!("file path {}: {e}", add.path)))?;
    // Files that are rewritten are small (compaction) or narrow (one key
    // range of silver): each one is read whole.
    let bytes = store.get_opts(&path, GetOptions::default()).await?.bytes().await?;
    let batches = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?.collect::<Result<Vec<RecordBatch>, _>>()?;
    let values: HashMap<&str, Option<&str>> = add.partition_values.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        let rows = batch.num_rows();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let name = field.name().as_str();
            let column = if partition_columns.iter().any(|p| p == name) {
                let text: ArrayRef = Arc::new(StringArray::from(vec![values.get(name).copied().flatten(); rows]));
                cast(&text, field.data_type())?
            } else {
                match batch.column_by_name(name) {
                    Some(c) if c.data_type() == field.data_type() => c.clone(),
                    Some(c) => cast(c, field.data_type())?,
                    None => new_null_array(field.data_type(), rows),
                }
            };
            columns.push(column);
        }
        out.push(RecordBatch::try_new(Arc::new(schema.clone()), columns)?);
    }
    Ok(out)
}
