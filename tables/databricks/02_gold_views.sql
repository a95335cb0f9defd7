-- lakestream: gold views for the squad's Power BI reports.
--
-- Databricks SQL (Unity Catalog). Run after 01_register_tables.sql, with the same
-- catalog and schema. Every view reads silver_order_lines only, so every figure is:
--
--   * net of deletes: silver is the current state of each order line, and a line
--     deleted in the orders application is physically deleted from silver;
--     updates are already applied (only the latest version of a line is there).
--   * net of cancellations: the shop books a cancellation as its own transaction
--     (transaction_no 'C' + digits, is_cancellation = true) with NEGATIVE quantities,
--     on the day it happened, in the customer's country. It carries no link to the
--     order it cancels. So
--         net_revenue     = SUM(line_total) over sales AND cancellation lines
--                         = gross_sales - cancelled_value
--         gross_sales     = SUM(line_total) of sales lines            (>= 0)
--         cancelled_value = -SUM(line_total) of cancellation lines    (>= 0)
--     and a cancellation lowers the figures of the day/month it was booked in,
--     not those of the original order.
--   * line_total = price * quantity, decimal(18,2), exact: sums are exact decimals.
--
-- "orders" counts distinct sales transactions (no C prefix); "cancellations"
-- counts distinct cancellation transactions (C prefix).
--
-- These SELECTs are also run, mechanically translated to DuckDB, by
-- tests/gold/gold.py against a local silver table and checked against figures
-- computed from the source CSV; keep to the functions listed in its mapping table
-- (a function it does not know fails the check until it is added there).
--
-- PARAMETERS (session variables, as in 01): the catalog and schema that hold
-- silver_order_lines. The views are created there; Databricks stores the current
-- catalog and schema with each view, so the unqualified silver_order_lines in the
-- view bodies always means <catalog>.<schema>.silver_order_lines.

DECLARE OR REPLACE VARIABLE lakestream_catalog STRING DEFAULT 'main';
DECLARE OR REPLACE VARIABLE lakestream_schema STRING DEFAULT 'lakestream';

USE CATALOG IDENTIFIER(lakestream_catalog);
USE SCHEMA IDENTIFIER(lakestream_schema);

-- Daily revenue by country: one row per (order_date, country) that has at least
-- one line. order_date is the date of the transaction (the dataset has no time of
-- day); for a cancellation it is the day of the cancellation.
CREATE OR REPLACE VIEW gold_daily_revenue_by_country
COMMENT 'Net revenue per order_date and country: sales minus cancellations, net of deleted lines. Source: silver_order_lines.'
AS
SELECT
  order_date,
  country,
  SUM(line_total)                                                      AS net_revenue,
  SUM(CASE WHEN NOT is_cancellation THEN line_total ELSE 0 END)        AS gross_sales,
  -SUM(CASE WHEN is_cancellation THEN line_total ELSE 0 END)           AS cancelled_value,
  COUNT(DISTINCT CASE WHEN NOT is_cancellation THEN transaction_no END) AS orders,
  COUNT(DISTINCT CASE WHEN is_cancellation THEN transaction_no END)    AS cancellations,
  COUNT_IF(NOT is_cancellation)                                        AS sales_lines,
  COUNT_IF(is_cancellation)                                            AS cancellation_lines,
  SUM(quantity)                                                        AS net_units
FROM silver_order_lines
GROUP BY order_date, country;

-- Top products over all time, ranked by net revenue and by net units. Filter on
-- revenue_rank <= N for a top-N visual (RANK: ties share a rank, the next rank is
-- skipped). product_name is MAX(product_name) so that the row is deterministic if
-- a product was ever renamed (today every product_no has one name).
CREATE OR REPLACE VIEW gold_top_products
COMMENT 'Products ranked by net revenue (sales minus cancellations, net of deleted lines), all time. Source: silver_order_lines.'
AS
SELECT
  product_no,
  MAX(product_name)                                                    AS product_name,
  SUM(line_total)                                                      AS net_revenue,
  SUM(CASE WHEN NOT is_cancellation THEN line_total ELSE 0 END)        AS gross_sales,
  -SUM(CASE WHEN is_cancellation THEN line_total ELSE 0 END)           AS cancelled_value,
  SUM(quantity)                                                        AS net_units,
  COUNT(DISTINCT CASE WHEN NOT is_cancellation THEN transaction_no END) AS orders,
  COUNT(DISTINCT CASE WHEN is_cancellation THEN transaction_no END)    AS cancellations,
  RANK() OVER (ORDER BY SUM(line_total) DESC)                          AS revenue_rank,
  RANK() OVER (ORDER BY SUM(quantity) DESC)                            AS units_rank
FROM silver_order_lines
GROUP BY product_no;

-- Cancellation rate per calendar month (order_month = first day of the month of
-- order_date, silver's partition column). Cancellations are compared with the
-- sales BOOKED IN THE SAME MONTH (the data does not link a cancellation to its
-- order, and a cancellation can fall in a later month than the sale):
--   cancellation_rate_value  = cancelled_value / gross_sales      (the headline rate)
--   cancellation_rate_lines  = cancellation_lines / sales_lines
--   cancellation_rate_orders = cancellations / orders
-- Rates are DOUBLE fractions (0.05 = 5 %), NULL when the denominator is 0. The
-- components are exact; to aggregate several months, sum the components and divide
-- again (never average the rates).
CREATE OR REPLACE VIEW gold_cancellation_rate
COMMENT 'Monthly cancellation rate: cancelled value / gross sales booked in the month, plus line and order based rates. Source: silver_order_lines.'
AS
SELECT
  order_month,
  SUM(CASE WHEN NOT is_cancellation THEN line_total ELSE 0 END)        AS gross_sales,
  -SUM(CASE WHEN is_cancellation THEN line_total ELSE 0 END)           AS cancelled_value,
  SUM(line_total)                                                      AS net_revenue,
  COUNT_IF(NOT is_cancellation)                                        AS sales_lines,
  COUNT_IF(is_cancellation)                                            AS cancellation_lines,
  COUNT(DISTINCT CASE WHEN NOT is_cancellation THEN transaction_no END) AS orders,
  COUNT(DISTINCT CASE WHEN is_cancellation THEN transaction_no END)    AS cancellations,
  CAST(-SUM(CASE WHEN is_cancellation THEN line_total ELSE 0 END) AS DOUBLE)
    / NULLIF(CAST(SUM(CASE WHEN NOT is_cancellation THEN line_total ELSE 0 END) AS DOUBLE), 0)
                                                                       AS cancellation_rate_value,
  CAST(COUNT_IF(is_cancellation) AS DOUBLE)
    / NULLIF(CAST(COUNT_IF(NOT is_cancellation) AS DOUBLE), 0)         AS cancellation_rate_lines,
  CAST(COUNT(DISTINCT CASE WHEN is_cancellation THEN transaction_no END) AS DOUBLE)
    / NULLIF(CAST(COUNT(DISTINCT CASE WHEN NOT is_cancellation THEN transaction_no END) AS DOUBLE), 0)
                                                                       AS cancellation_rate_orders
FROM silver_order_lines
GROUP BY order_month;

-- Orders per hour. The dataset (and order_date) has no time of day, so the hour
-- comes from _source_ts: the event time the orders application stamped on the
-- change (Debezium-style ts_ms: wall clock when the change was published), in UTC.
-- For live traffic that is when the order was placed; for a replay of the
-- historical dataset it is the replay time, so this view is meaningful for live
-- data only (the historical orders spread over days via order_date instead).
-- Each transaction counts once, in the hour of its earliest current line
-- (MIN(_source_ts)): a transaction whose lines were published across an hour
-- boundary is not counted twice. _source_ts is the event time of the change that
-- produced the current row, so an order line updated later moves with its update.
-- Hours are computed from epoch seconds, so the result does not depend on the
-- session time zone: event_hour_utc is the instant the UTC hour starts,
-- hour_of_day_utc its hour of the day (0-23) in UTC.
CREATE OR REPLACE VIEW gold_orders_per_hour
COMMENT 'Orders and cancellations per UTC hour of the event time (_source_ts), each transaction counted once in the hour of its first line. Source: silver_order_lines.'
AS
WITH transactions AS (
  SELECT
    transaction_no,
    is_cancellation,
    FLOOR(unix_seconds(MIN(_source_ts)) / 3600)                        AS epoch_hour,
    COUNT(*)                                                           AS lines,
    SUM(line_total)                                                    AS net_value
  FROM silver_order_lines
  GROUP BY transaction_no, is_cancellation
)
SELECT
  timestamp_seconds(epoch_hour * 3600)                                 AS event_hour_utc,
  CAST(epoch_hour % 24 AS INT)                                         AS hour_of_day_utc,
  COUNT_IF(NOT is_cancellation)                                        AS orders,
  COUNT_IF(is_cancellation)                                            AS cancellations,
  SUM(lines)                                                           AS lines,
  SUM(net_value)                                                       AS net_revenue
FROM transactions
GROUP BY epoch_hour;
