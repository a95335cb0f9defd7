-- lakestream: the silver change feed, net revenue change per commit.
--
-- Databricks SQL (Unity Catalog), after 01_register_tables.sql. silver_order_lines
-- has Change Data Feed on (delta.enableChangeDataFeed = true, set by lakestream when
-- it creates the table, so from version 0). Every lakestream batch is one commit
-- (a MERGE when it changes stored lines, else a WRITE of new lines); its changes are:
--   insert            a new order line                       (+ its line_total)
--   update_preimage   a line before an update                (- its old line_total)
--   update_postimage  the same line after the update         (+ its new line_total)
--   delete            a line deleted in the orders app       (- its line_total)
-- so the signed sum below is exactly how much that commit moved net revenue
-- (sales and cancellation lines alike; see 02_gold_views.sql for "net"). Started
-- from version 0, the running total net_revenue_after_commit of the last row equals
-- SELECT SUM(line_total) FROM silver_order_lines at that version. Commits that only
-- advance offsets (no rows) have no changes and do not appear.
--
-- Start version: 0 reads the whole history. Change data is only kept as long as the
-- table's log and _change_data files are (delta.logRetentionDuration, VACUUM);
-- table_changes fails for a version older than that: start from a later version,
-- or from a timestamp: table_changes('silver_order_lines', '2026-01-01T00:00:00Z').
-- For an incremental consumer, remember the last _commit_version processed and
-- start from the next one.
--
-- PARAMETERS: the catalog and schema of silver_order_lines (as in 01).

DECLARE OR REPLACE VARIABLE lakestream_catalog STRING DEFAULT 'main';
DECLARE OR REPLACE VARIABLE lakestream_schema STRING DEFAULT 'lakestream';

USE CATALOG IDENTIFIER(lakestream_catalog);
USE SCHEMA IDENTIFIER(lakestream_schema);

SELECT
  _commit_version,
  _commit_timestamp,
  SUM(CASE WHEN _change_type IN ('insert', 'update_postimage') THEN line_total
           WHEN _change_type IN ('delete', 'update_preimage') THEN -line_total
           ELSE 0 END)                                          AS net_revenue_change,
  SUM(SUM(CASE WHEN _change_type IN ('insert', 'update_postimage') THEN line_total
               WHEN _change_type IN ('delete', 'update_preimage') THEN -line_total
               ELSE 0 END))
    OVER (ORDER BY _commit_version)                             AS net_revenue_after_commit,
  COUNT_IF(_change_type = 'insert')                             AS inserted_lines,
  COUNT_IF(_change_type = 'update_postimage')                   AS updated_lines,
  COUNT_IF(_change_type = 'delete')                             AS deleted_lines
FROM table_changes('silver_order_lines', 0)
GROUP BY _commit_version, _commit_timestamp
ORDER BY _commit_version;
