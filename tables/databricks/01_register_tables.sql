-- lakestream: register the lake's three Delta tables in Unity Catalog.
--
-- Databricks SQL (SQL warehouse) or Databricks Runtime 14.3 LTS and above
-- (session variables, IDENTIFIER and EXECUTE IMMEDIATE). Run it once per
-- environment; it is idempotent (CREATE ... IF NOT EXISTS).
--
-- The tables are EXTERNAL: lakestream writes them on ADLS Gen2 and stays
-- their only writer. Unity Catalog only records where they are; the schema,
-- partitioning and table properties (e.g. delta.enableChangeDataFeed=true on
-- silver) come from each table's _delta_log. Do not INSERT/UPDATE/DELETE,
-- OPTIMIZE or VACUUM them from Databricks while lakestream runs: grant SELECT
-- only (see the end of this file).
--
-- PREREQUISITE (once, by a metastore admin or a user with CREATE EXTERNAL
-- LOCATION): a storage credential and an external location that cover the
-- lake root must exist, or CREATE TABLE ... LOCATION fails with a permission
-- error naming the path.
--   1. Storage credential: an "Access Connector for Azure Databricks" (managed
--      identity) with the "Storage Blob Data Reader" role on the storage account
--      or container (read is enough: Databricks only reads these tables).
--      Created in Catalog Explorer > External data > Credentials, or with the
--      Databricks CLI / Terraform (there is no SQL statement for it).
--   2. External location over the lake root, e.g.
--        CREATE EXTERNAL LOCATION IF NOT EXISTS lakestream_lake
--          URL 'abfss://lake@mystorageaccount.dfs.core.windows.net/lakestream'
--          WITH (STORAGE CREDENTIAL lakestream_adls)
--          COMMENT 'lakestream Delta lake (written by lakestream, read-only here)';
--        GRANT READ FILES, CREATE EXTERNAL TABLE ON EXTERNAL LOCATION lakestream_lake
--          TO `data-platform-admins`;
--      (mark it read-only in Catalog Explorer: Advanced options > Limit to read-only use).
--
-- PARAMETERS: set these three session variables to your environment (edit the
-- DEFAULTs below, or run the DECLAREs with your values and then the rest).
--   lakestream_catalog    Unity Catalog catalog that receives the tables
--   lakestream_schema     schema (created if missing); the gold views go there too
--   lakestream_lake_root  exactly lakestream's `lake.uri`: the directory that
--                         holds bronze/, silver/ and quarantine/, as
--                         abfss://<container>@<account>.dfs.core.windows.net/<lake>

DECLARE OR REPLACE VARIABLE lakestream_catalog STRING DEFAULT 'main';
DECLARE OR REPLACE VARIABLE lakestream_schema STRING DEFAULT 'lakestream';
DECLARE OR REPLACE VARIABLE lakestream_lake_root STRING
  DEFAULT 'abfss://lake@mystorageaccount.dfs.core.windows.net/lakestream';

USE CATALOG IDENTIFIER(lakestream_catalog);
CREATE SCHEMA IF NOT EXISTS IDENTIFIER(lakestream_schema)
  COMMENT 'lakestream: Kafka order change events as Delta tables (bronze, silver, quarantine) and gold views';
USE SCHEMA IDENTIFIER(lakestream_schema);

-- LOCATION only takes a string literal (no parameter markers or variables in DDL
-- before Databricks Runtime 18), so each statement is composed in a variable and
-- run with EXECUTE IMMEDIATE. Trailing slashes of the root are dropped; \' is
-- an escaped single quote in Databricks SQL string literals.
DECLARE OR REPLACE VARIABLE lakestream_ddl STRING;

-- bronze: every Kafka record, raw, append-only, partitioned by ingest_date.
SET VAR lakestream_ddl = 'CREATE TABLE IF NOT EXISTS bronze_orders USING DELTA LOCATION \''
  || regexp_replace(lakestream_lake_root, '/+$', '') || '/bronze/orders\'';
EXECUTE IMMEDIATE lakestream_ddl;

-- silver: current state of every order line (transaction_no, line_no), SCD type 1,
-- deletes physically applied, Change Data Feed on, partitioned by order_month.
SET VAR lakestream_ddl = 'CREATE TABLE IF NOT EXISTS silver_order_lines USING DELTA LOCATION \''
  || regexp_replace(lakestream_lake_root, '/+$', '') || '/silver/order_lines\'';
EXECUTE IMMEDIATE lakestream_ddl;

-- quarantine: one row per record that could not be decoded, with the reason.
SET VAR lakestream_ddl = 'CREATE TABLE IF NOT EXISTS quarantine_orders USING DELTA LOCATION \''
  || regexp_replace(lakestream_lake_root, '/+$', '') || '/quarantine/orders\'';
EXECUTE IMMEDIATE lakestream_ddl;

-- (<lake>/silver/order_lines_tombstones is lakestream's own bookkeeping of deleted
-- keys; it is deliberately not registered.)

-- No COMMENT ON TABLE / ALTER TABLE here: on a Delta table those commit a new
-- version to its _delta_log, i.e. Databricks would become a second writer.
-- CREATE TABLE ... LOCATION with no columns, properties or comment only reads the log.

-- Checks: the registered schema comes from the Delta log, and silver must carry CDF.
DESCRIBE TABLE EXTENDED silver_order_lines;
SHOW TBLPROPERTIES silver_order_lines ('delta.enableChangeDataFeed');

-- Access: readers get SELECT, never MODIFY (lakestream is the only writer).
-- Replace <catalog>/<schema> with the values above:
-- GRANT USE CATALOG ON CATALOG <catalog> TO `bi-readers`;
-- GRANT USE SCHEMA, SELECT ON SCHEMA <catalog>.<schema> TO `bi-readers`;
