//! Reading a table's Change Data Feed: what Databricks `table_changes()` and
//! downstream streams consume. Used by `lakestream changes` to inspect it.

use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::delta_datafusion::DeltaCdfTableProvider;
use deltalake::{DeltaTableBuilder, DeltaTableError};
use std::collections::HashMap;
use std::sync::Arc;
use url::Url;

/// Every change from `starting_version` on, in commit order, with the
/// `_change_type`, `_commit_version` and `_commit_timestamp` columns.
pub async fn read(url: Url, storage: HashMap<String, String>, starting_version: i64) -> Result<Vec<RecordBatch>, DeltaTableError> {
    let table = DeltaTableBuilder::from_url(url)?.with_storage_options(storage).load().await?;
    let provider = DeltaCdfTableProvider::try_new(table.scan_cdf().with_starting_version(starting_version as _))?;
    let ctx = SessionContext::new();
    let generic = |e: deltalake::datafusion::error::DataFusionError| DeltaTableError::Generic(e.to_string());
    ctx.register_table("changes", Arc::new(provider)).map_err(generic)?;
    ctx.sql("SELECT * FROM changes")
        .await
        .map_err(generic)?
        .collect()
        .await
        .map_err(generic)
}

/// Writes batches as JSON lines.
pub fn to_json_lines(batches: &[RecordBatch], out: impl std::io::Write) -> Result<(), String> {
    let mut writer = arrow_json::LineDelimitedWriter::new(out);
    for b in batches {
        writer.write(b).map_err(|e| e.to_string())?;
    }
    writer.finish().map_err(|e| e.to_string())
}
