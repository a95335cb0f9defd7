-- 0001: the tables of lakestream, as first released.
--
-- Databricks SQL DDL for Delta. `lakestream migrate --lake URI` applies this
-- file to the lake (each table at <lake>/<path> of its tables/*.toml). In
-- Databricks, register the tables first (tables/databricks/01_register_tables.sql):
-- then these CREATE TABLE IF NOT EXISTS are no-ops and later migrations apply
-- to the registered tables. Every column of silver is nullable on purpose: see
-- tables/silver_order_lines.toml.

CREATE TABLE IF NOT EXISTS bronze_orders (
  topic STRING NOT NULL,
  `partition` INT NOT NULL,
  `offset` BIGINT NOT NULL,
  `key` STRING COMMENT 'The record key as text (invalid UTF-8 replaced; see key_bytes).',
  `value` STRING COMMENT 'The record value as text; null for a tombstone.',
  headers MAP<STRING, STRING>,
  kafka_timestamp TIMESTAMP COMMENT 'The record''s Kafka timestamp (UTC).',
  ingested_at TIMESTAMP NOT NULL,
  ingest_date DATE NOT NULL,
  key_bytes BINARY COMMENT 'The key byte for byte, only when it is not valid UTF-8.',
  value_bytes BINARY COMMENT 'The value byte for byte, only when it is not valid UTF-8.'
) USING DELTA
PARTITIONED BY (ingest_date)
COMMENT 'Every Kafka record of the order topic, as received, exactly once.'
TBLPROPERTIES (
  'delta.appendOnly' = 'true',
  'delta.checkpointInterval' = '50',
  'delta.logRetentionDuration' = 'interval 30 days',
  'delta.deletedFileRetentionDuration' = 'interval 7 days'
);

CREATE TABLE IF NOT EXISTS quarantine_orders (
  topic STRING NOT NULL,
  `partition` INT NOT NULL,
  `offset` BIGINT NOT NULL,
  `key` STRING,
  `value` STRING COMMENT 'The value as text, cut at 64 KiB.',
  error_kind STRING NOT NULL,
  error STRING NOT NULL COMMENT 'What is wrong, naming the field.',
  kafka_timestamp TIMESTAMP,
  quarantined_at TIMESTAMP NOT NULL
) USING DELTA
COMMENT 'Records that failed to decode or validate, with the reason.'
TBLPROPERTIES (
  'delta.appendOnly' = 'true',
  'delta.checkpointInterval' = '50',
  'delta.logRetentionDuration' = 'interval 30 days',
  'delta.deletedFileRetentionDuration' = 'interval 7 days'
);

CREATE TABLE IF NOT EXISTS silver_order_lines_tombstones (
  transaction_no STRING NOT NULL,
  line_no INT NOT NULL,
  _seq BIGINT NOT NULL,
  _kafka_partition INT NOT NULL,
  _kafka_offset BIGINT NOT NULL,
  deleted_at TIMESTAMP NOT NULL
) USING DELTA
COMMENT 'Deleted order line keys and the seq of their delete.'
TBLPROPERTIES (
  'delta.checkpointInterval' = '50',
  'delta.logRetentionDuration' = 'interval 30 days',
  'delta.deletedFileRetentionDuration' = 'interval 7 days'
);

CREATE TABLE IF NOT EXISTS silver_order_lines (
  transaction_no STRING COMMENT 'Six digits, or C + six digits for a cancellation.',
  line_no INT COMMENT '1-based position of the line within its transaction.',
  order_date DATE,
  product_no STRING,
  product_name STRING,
  price DECIMAL(10,2),
  quantity INT COMMENT 'Negative for a cancellation.',
  customer_no STRING COMMENT 'Null when the source has NA.',
  country STRING,
  is_cancellation BOOLEAN,
  line_total DECIMAL(18,2) COMMENT 'price * quantity, exact.',
  _op STRING,
  _seq BIGINT,
  _source_ts TIMESTAMP COMMENT 'Event time of the change, UTC.',
  _kafka_partition INT,
  _kafka_offset BIGINT,
  _updated_at TIMESTAMP,
  order_month DATE COMMENT 'First day of the order''s month (partition column).'
) USING DELTA
PARTITIONED BY (order_month)
COMMENT 'Current state of every order line: inserts, updates and deletes applied by seq.'
TBLPROPERTIES (
  'delta.enableChangeDataFeed' = 'true',
  'delta.checkpointInterval' = '50',
  'delta.logRetentionDuration' = 'interval 30 days',
  'delta.deletedFileRetentionDuration' = 'interval 7 days'
);
