#!/usr/bin/env python3
"""Per-row freshness of lakestream's tables, read from the tables themselves.

For each row: the commit timestamp of the first table version whose added files hold
it, minus its Kafka timestamp. A row is one Kafka record: (partition, offset) in
bronze, (_kafka_partition, _kafka_offset) in silver (a MERGE or a compaction that
rewrites a file later does not count: the first version does). Only records with a
Kafka timestamp at or after --since-ms count (the measured phase).

  freshness.py --lake DIR [--since-ms MS]
Prints, per table, rows, p50, p90, p99 and max in seconds.
"""

import argparse
import glob
import json
import os

import duckdb

TABLES = [
    ("bronze/orders", "partition", "offset", "kafka_timestamp"),
    ("silver/order_lines", "_kafka_partition", "_kafka_offset", "_kafka_timestamp"),
]


def first_versions(table_dir):
    """(file path, commit timestamp ms) of every file any version added, in version order."""
    added = []
    for log in sorted(glob.glob(os.path.join(table_dir, "_delta_log", "*.json"))):
        commit_ms, paths = None, []
        with open(log) as f:
            for line in f:
                action = json.loads(line)
                if "commitInfo" in action:
                    commit_ms = action["commitInfo"].get("timestamp")
                elif "add" in action:
                    paths.append(action["add"]["path"])
        from urllib.parse import unquote
        added += [(os.path.join(table_dir, unquote(p)), commit_ms) for p in paths]
    return added


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lake", required=True)
    ap.add_argument("--since-ms", type=int, default=0)
    args = ap.parse_args()
    con = duckdb.connect()
    for table, part, off, ts in TABLES:
        files = first_versions(os.path.join(args.lake, table))
        if not files:
            print(f"{table}: no files")
            continue
        con.execute("CREATE OR REPLACE TEMP TABLE commits (file VARCHAR, commit_ms BIGINT)")
        con.executemany("INSERT INTO commits VALUES (?, ?)", files)
        paths = [f for f, _ in files if os.path.exists(f)]
        row = con.execute(
            f"""
            WITH rows AS (
              SELECT r.{part} AS p, r.{off} AS o, epoch_ms(r.{ts}) AS kafka_ms, c.commit_ms
              FROM read_parquet(?, filename = true, hive_partitioning = false, union_by_name = true) r
              JOIN commits c ON c.file = r.filename
              WHERE r.{ts} IS NOT NULL
            ),
            firsts AS (
              SELECT p, o, min(kafka_ms) AS kafka_ms, min(commit_ms) AS commit_ms FROM rows GROUP BY p, o
            )
            SELECT count(*),
                   quantile_cont((commit_ms - kafka_ms) / 1000.0, 0.5),
                   quantile_cont((commit_ms - kafka_ms) / 1000.0, 0.9),
                   quantile_cont((commit_ms - kafka_ms) / 1000.0, 0.99),
                   max((commit_ms - kafka_ms) / 1000.0)
            FROM firsts WHERE kafka_ms >= ?
            """,
            [paths, args.since_ms],
        ).fetchone()
        n, p50, p90, p99, mx = row
        if not n:
            print(f"{table}: no rows in the measured phase")
            continue
        print(f"{table:<20} rows {n:>8}  p50 {p50:.3f} s  p90 {p90:.3f} s  p99 {p99:.3f} s  max {mx:.3f} s")


if __name__ == "__main__":
    main()
