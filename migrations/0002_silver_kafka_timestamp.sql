-- 0002: silver keeps the Kafka timestamp of the record that made each row, next
-- to the event time (_source_ts), so that Databricks can measure end-to-end
-- latency (_updated_at - _kafka_timestamp) per row.
--
-- Adding a nullable column is safe while data flows: files written before it
-- read as null, and a lakestream at migration 0002 fills it in new batches.
-- A writer still at 0001 refuses to start against it (run `lakestream migrate`,
-- then roll out the new version).

ALTER TABLE silver_order_lines ADD COLUMNS (
  _kafka_timestamp TIMESTAMP COMMENT 'The Kafka timestamp of the record that made the row; null for rows written before migration 0002.'
);
