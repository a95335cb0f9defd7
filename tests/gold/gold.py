#!/usr/bin/env python3
"""Checks lakestream's gold views (tables/databricks/02_gold_views.sql) against the CSV.

Runs every `CREATE OR REPLACE VIEW gold_* ... AS <query>` of the Databricks SQL file,
mechanically translated to DuckDB, against a silver table read with DuckDB's delta
extension, and compares the results with the same figures computed here, independently,
from the source dataset (stdlib csv + gzip, exact integer cents). Valid only for silver
after a replay WITHOUT mutations (`lakestream produce --mutations 0`): then silver holds
exactly one row per CSV row and the CSV determines every figure.

  $LAKESTREAM_PYTHON tests/gold/gold.py --silver LAKE/silver/order_lines --csv DATASET
      [--limit N]            expect only the first N rows of the CSV (as `produce --limit`)
      [--views FILE]         default: tables/databricks/02_gold_views.sql of this repo
      [--storage KEY=VALUE]  storage options for a remote silver (as duckdb_delta.py)
      [--perturb CHECK]      change one expected figure of CHECK (base, daily_revenue,
                             top_products, cancellation_rate, orders_per_hour): the check
                             must then fail; proves the comparison is live (repeatable)
      [--show-sql]           print each translated query

Exit status: 0 all checks pass; 1 a mismatch (a precise diff is printed) or an error;
2 bad usage.

Translation rules, Databricks SQL -> DuckDB (applied to the view's query only; string
literals and comments are never touched, comments are removed):
  1. Table reference: `silver_order_lines`, optionally qualified (`cat.schema.` or
     `schema.`), becomes `delta_scan('<--silver>')`.
  2. Functions: every `name(` in the query must be a SQL keyword before a parenthesis,
     a function with the same name and semantics in both dialects (SAME_FUNCTIONS), or
     an entry of FUNCTION_MAP, which renames it to a DuckDB function or to a macro
     defined here with the Databricks semantics. Any other function fails the check
     with "add it to FUNCTION_MAP": nothing is translated silently.
  3. Session: DuckDB runs with TimeZone = 'UTC' (timestamps are UTC instants in both).
Results: TIMESTAMP WITH TIME ZONE columns are read as epoch microseconds.

How each view is checked:
  base                      silver itself: rows, distinct (transaction_no, line_no) keys,
                            SUM(line_total), SUM(quantity) = the CSV's
  gold_daily_revenue_by_country  every (order_date, country) row, every column, exact
  gold_top_products         every product row, every column (ranks included), exact
  gold_cancellation_rate    every month row: exact components; the DOUBLE rates equal
                            the ratio of the exact components (relative 1e-12)
  gold_orders_per_hour      the CSV has no time of day, so invariants it determines:
                            SUM(orders) = distinct sales transactions, SUM(cancellations)
                            = distinct cancellation transactions, SUM(lines) = rows,
                            SUM(net_revenue) = SUM(line_total); plus hours aligned to the
                            hour, distinct, and hour_of_day_utc = the UTC hour of event_hour_utc
"""

from __future__ import annotations

import argparse
import collections
import csv
import datetime as dt
import gzip
import importlib.util
import io
import math
import os
import re
import sys
from decimal import Decimal

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_VIEWS = os.path.join(REPO, "tables", "databricks", "02_gold_views.sql")
SILVER_TABLE = "silver_order_lines"
CHECKS = ("base", "daily_revenue", "top_products", "cancellation_rate", "orders_per_hour")
VIEW_OF_CHECK = {
    "daily_revenue": "gold_daily_revenue_by_country",
    "top_products": "gold_top_products",
    "cancellation_rate": "gold_cancellation_rate",
    "orders_per_hour": "gold_orders_per_hour",
}

# Databricks function -> (DuckDB function, macro definition or None, why).
FUNCTION_MAP = {
    "unix_seconds": (
        "dbx_unix_seconds",
        "CREATE MACRO dbx_unix_seconds(ts) AS CAST(floor(epoch_us(ts) / 1000000) AS BIGINT)",
        "seconds since the epoch of an instant, fraction dropped (DuckDB: epoch_us)",
    ),
    "timestamp_seconds": (
        "to_timestamp",
        None,
        "epoch seconds -> instant (TIMESTAMP in Databricks, TIMESTAMPTZ in DuckDB)",
    ),
}
# Same name and the same result in both dialects for the argument types used.
SAME_FUNCTIONS = {"sum", "count", "min", "max", "cast", "nullif", "floor", "rank", "count_if", "coalesce"}
# Keywords that may stand before a parenthesis.
KEYWORDS = {"as", "in", "over", "from", "join", "on", "and", "or", "not", "when", "then", "else",
            "select", "where", "by", "exists", "using", "with", "having", "distinct", "all", "union"}

CENT = Decimal("0.01")


def fail(msg: str) -> None:
    print(f"gold: {msg}", file=sys.stderr)
    sys.exit(1)


# --------------------------------------------------------------------------- SQL file

def lex(sql: str) -> tuple[str, str]:
    """Returns (text, masked): comments replaced by spaces in both; in `masked` the
    contents of string literals and quoted identifiers are replaced by 'x', so that
    structure can be searched in `masked` and sliced out of `text` at the same offsets.
    Databricks string literals: '...' or "..." with backslash escapes."""
    out, mask = [], []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i)); mask.append(" " * (j - i)); i = j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            if j < 0:
                raise ValueError("unterminated /* comment")
            j += 2
            blank = re.sub(r"[^\n]", " ", sql[i:j])
            out.append(blank); mask.append(blank); i = j
        elif c in "'\"`":
            j = i + 1
            while j < n and sql[j] != c:
                j += 2 if (sql[j] == "\\" and c != "`") else 1
            if j >= n:
                raise ValueError(f"unterminated {c} quote at offset {i}")
            out.append(sql[i:j + 1]); mask.append(c + "x" * (j - i - 1) + c); i = j + 1
        else:
            out.append(c); mask.append(c); i += 1
    return "".join(out), "".join(mask)


def statements(sql: str) -> list[tuple[str, str]]:
    text, masked = lex(sql)
    result, start = [], 0
    for m in re.finditer(";", masked):
        result.append((text[start:m.start()], masked[start:m.start()]))
        start = m.end()
    result.append((text[start:], masked[start:]))
    return [(t, m) for t, m in result if t.strip()]


VIEW_HEAD = re.compile(r"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?([\w.`]+)", re.I)


def views(sql: str) -> dict[str, tuple[str, str]]:
    """name -> (query, masked query) for every CREATE VIEW statement."""
    found: dict[str, tuple[str, str]] = {}
    for text, masked in statements(sql):
        m = VIEW_HEAD.match(masked)
        if not m:
            continue
        name = text[m.start(1):m.end(1)].replace("`", "").split(".")[-1]
        depth, pos = 0, None
        for t in re.finditer(r"\(|\)|\bAS\b", masked[m.end():], re.I):
            if t.group() == "(":
                depth += 1
            elif t.group() == ")":
                depth -= 1
            elif depth == 0:
                pos = m.end() + t.end()
                break
        if pos is None:
            raise ValueError(f"view {name}: no AS before its query")
        found[name] = (text[pos:].strip(), masked[pos:].strip())
    return found


TABLE_REF = re.compile(r"(?<![\w.`])(?:`?\w+`?\.){0,2}`?" + SILVER_TABLE + r"`?(?![\w`])", re.I)


def sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def translate(name: str, query: str, masked: str, silver: str) -> tuple[str, list[str]]:
    """The DuckDB query, and the macros it needs."""
    edits: list[tuple[int, int, str]] = []
    macros: list[str] = []
    for m in re.finditer(r"\b([A-Za-z_]\w*)\s*\(", masked):
        fn = m.group(1).lower()
        if fn in KEYWORDS or fn in SAME_FUNCTIONS:
            continue
        if fn not in FUNCTION_MAP:
            raise ValueError(f"view {name}: function {m.group(1)}() is not in gold.py's mapping "
                             f"(add it to FUNCTION_MAP or SAME_FUNCTIONS with its DuckDB equivalent)")
        duck, macro, _ = FUNCTION_MAP[fn]
        edits.append((m.start(1), m.end(1), duck))
        if macro and macro not in macros:
            macros.append(macro)
    refs = list(TABLE_REF.finditer(masked))
    if not refs:
        raise ValueError(f"view {name} does not read {SILVER_TABLE}")
    for m in refs:
        edits.append((m.start(), m.end(), f"delta_scan({sql_str(silver)})"))
    out = query
    for start, end, new in sorted(edits, reverse=True):
        out = out[:start] + new + out[end:]
    return out, macros


# --------------------------------------------------------------------------- CSV (as lakestream reads it)

COLUMNS = ["TransactionNo", "Date", "ProductNo", "ProductName", "Price", "Quantity", "CustomerNo", "Country"]
PRICE_MAX_CENTS = 9_999_999_999
INT_RE = re.compile(r"^[+-]?[0-9]+$")
UINT_RE = re.compile(r"^\+?[0-9]+$")


def parse_price_cents(text: str) -> int:
    """src/order_line.rs Price::parse: plain decimal, at most 2 places, |v| <= 99,999,999.99."""
    t = text.strip()
    negative = t.startswith("-")
    digits = t[1:] if negative else t
    whole, _, frac = digits.partition(".")
    if (not whole and not frac) or not all(c in "0123456789" for c in whole + frac):
        raise ValueError(f"Price `{text}` is not a decimal number")
    if len(frac) > 2:
        raise ValueError(f"Price `{text}` has more than 2 decimal places")
    cents = int(whole or "0") * 100 + (int(frac) * (10 if len(frac) == 1 else 1) if frac else 0)
    if cents > PRICE_MAX_CENTS:
        raise ValueError(f"Price `{text}` is out of range for decimal(10,2)")
    return -cents if negative else cents


def parse_us_date(text: str) -> dt.date | None:
    parts = text.split("/")
    if len(parts) != 3 or not (UINT_RE.match(parts[0]) and UINT_RE.match(parts[1]) and INT_RE.match(parts[2])):
        return None
    try:
        return dt.date(int(parts[2]), int(parts[0]), int(parts[1]))
    except ValueError:
        return None


Line = collections.namedtuple("Line", "transaction_no line_no order_date product_no product_name "
                                      "price_cents quantity customer_no country")


def read_csv(path: str, limit: int | None) -> list[Line]:
    """src/dataset.rs read(): gzip by magic bytes, header checked, fields trimmed, `NA` or
    empty CustomerNo -> None, line_no = 1-based position within the transaction in file
    order (duplicate rows are distinct lines), first bad row is an error."""
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    raw = gzip.open(path, "rb") if gz else open(path, "rb")
    lines: list[Line] = []
    next_line_no: dict[str, int] = collections.Counter()
    with raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
        reader = csv.reader(text)
        header = next(reader, [])
        if [h.strip() for h in header] != COLUMNS:
            fail(f"{path}: the header must be `{','.join(COLUMNS)}`, found `{','.join(header)}`")
        for row in reader:
            if limit is not None and len(lines) >= limit:
                break
            if not row:  # the csv crate skips empty lines
                continue
            where = f"{path}, line {reader.line_num}"
            if len(row) != len(COLUMNS):
                fail(f"{where}: expected {len(COLUMNS)} fields, found {len(row)}")
            f = [x.strip() for x in row]
            txn = f[0]
            digits = txn[1:] if txn.startswith("C") else txn
            if not digits or not digits.isascii() or not digits.isdigit():
                fail(f"{where}: TransactionNo `{txn}` is not digits with an optional C prefix")
            order_date = parse_us_date(f[1])
            if order_date is None:
                fail(f"{where}: Date `{f[1]}` is not M/D/YYYY")
            if not f[2]:
                fail(f"{where}: ProductNo is empty")
            try:
                price = parse_price_cents(f[4])
            except ValueError as e:
                fail(f"{where}: {e}")
            if not INT_RE.match(f[5]) or not -2**31 <= int(f[5]) < 2**31:
                fail(f"{where}: Quantity `{f[5]}` is not a whole number")
            next_line_no[txn] += 1
            lines.append(Line(txn, next_line_no[txn], order_date, f[2], f[3], price, int(f[5]),
                              None if f[6] in ("", "NA") else f[6], f[7]))
    return lines


def money(cents: int) -> Decimal:
    return (Decimal(cents) * CENT).quantize(CENT)


# --------------------------------------------------------------------------- expected figures

def rank(values: dict, desc: bool = True) -> dict:
    """SQL RANK() over the values: ties share a rank, the next rank skips."""
    ordered = sorted(values.values(), reverse=desc)
    first = {}
    for i, v in enumerate(ordered, 1):
        first.setdefault(v, i)
    return {k: first[v] for k, v in values.items()}


class Agg:
    __slots__ = ("net", "gross", "cancelled", "orders", "cancellations", "sales_lines",
                 "cancellation_lines", "units", "names")

    def __init__(self):
        self.net = self.gross = self.cancelled = 0
        self.orders, self.cancellations = set(), set()
        self.sales_lines = self.cancellation_lines = self.units = 0
        self.names = set()

    def add(self, line: Line) -> None:
        total = line.price_cents * line.quantity
        self.net += total
        self.units += line.quantity
        self.names.add(line.product_name)
        if line.transaction_no.startswith("C"):
            self.cancelled -= total
            self.cancellations.add(line.transaction_no)
            self.cancellation_lines += 1
        else:
            self.gross += total
            self.orders.add(line.transaction_no)
            self.sales_lines += 1

    def common(self) -> dict:
        return {
            "net_revenue": money(self.net), "gross_sales": money(self.gross),
            "cancelled_value": money(self.cancelled), "orders": len(self.orders),
            "cancellations": len(self.cancellations), "sales_lines": self.sales_lines,
            "cancellation_lines": self.cancellation_lines, "net_units": self.units,
        }


def ratio(num, den) -> float | None:
    return None if den == 0 else float(num) / float(den)


def expected(lines: list[Line]) -> dict:
    daily: dict = collections.defaultdict(Agg)
    products: dict = collections.defaultdict(Agg)
    months: dict = collections.defaultdict(Agg)
    for ln in lines:
        daily[(ln.order_date, ln.country)].add(ln)
        products[(ln.product_no,)].add(ln)
        months[(ln.order_date.replace(day=1),)].add(ln)
    exp_daily = {k: {c: v for c, v in a.common().items()} for k, a in daily.items()}
    exp_top = {}
    rev_rank = rank({k: a.net for k, a in products.items()})
    unit_rank = rank({k: a.units for k, a in products.items()})
    for k, a in products.items():
        row = {c: v for c, v in a.common().items() if c not in ("sales_lines", "cancellation_lines")}
        row.update(product_name=max(a.names), revenue_rank=rev_rank[k], units_rank=unit_rank[k])
        exp_top[k] = row
    exp_rate = {}
    for k, a in months.items():
        row = {c: v for c, v in a.common().items() if c != "net_units"}
        row.update(
            cancellation_rate_value=ratio(money(a.cancelled), money(a.gross)),
            cancellation_rate_lines=ratio(a.cancellation_lines, a.sales_lines),
            cancellation_rate_orders=ratio(len(a.cancellations), len(a.orders)),
        )
        exp_rate[k] = row
    sales_txns = {ln.transaction_no for ln in lines if not ln.transaction_no.startswith("C")}
    cancel_txns = {ln.transaction_no for ln in lines if ln.transaction_no.startswith("C")}
    total = sum(ln.price_cents * ln.quantity for ln in lines)
    return {
        "base": {"rows": len(lines), "keys": len({(ln.transaction_no, ln.line_no) for ln in lines}),
                 "sum_line_total": money(total), "sum_quantity": sum(ln.quantity for ln in lines)},
        "daily_revenue": exp_daily,
        "top_products": exp_top,
        "cancellation_rate": exp_rate,
        "orders_per_hour": {"orders": len(sales_txns), "cancellations": len(cancel_txns),
                            "lines": len(lines), "net_revenue": money(total)},
    }


def perturb(exp: dict, check: str) -> str:
    if check == "base":
        exp["base"]["sum_line_total"] += CENT
        return "base: expected SUM(line_total) + 0.01"
    if check == "orders_per_hour":
        exp["orders_per_hour"]["orders"] += 1
        return "orders_per_hour: expected total orders + 1"
    rows = exp[check]
    key = min(rows)
    field = "cancelled_value" if check == "cancellation_rate" else "net_revenue"
    rows[key][field] += CENT
    return f"{check}: expected {field} of {key} + 0.01"


# --------------------------------------------------------------------------- DuckDB side

def load_reader():
    path = os.environ.get("LAKESTREAM_DUCKDB_DELTA") or os.path.join(REPO, "tests", "stack", "duckdb_delta.py")
    if not path.endswith(".py") or not os.path.isfile(path):
        path = os.path.join(REPO, "tests", "stack", "duckdb_delta.py")
    sys.dont_write_bytecode = True  # no __pycache__ next to the reader
    spec = importlib.util.spec_from_file_location("duckdb_delta", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fetch(con, query: str) -> list[dict]:
    rel = con.sql(query)
    cols, types = rel.columns, [str(t) for t in rel.types]
    if any(t == "TIMESTAMP WITH TIME ZONE" for t in types):
        proj = [f'epoch_us("{c}") AS "{c}"' if t == "TIMESTAMP WITH TIME ZONE" else f'"{c}"'
                for c, t in zip(cols, types)]
        rel = rel.project(", ".join(proj))
    return [dict(zip(cols, row)) for row in rel.fetchall()]


# --------------------------------------------------------------------------- comparison

def show(v) -> str:
    return repr(v) if isinstance(v, str) else str(v)


def compare_rows(name: str, key_cols: tuple, exp: dict, actual: list[dict], float_cols=()) -> list[str]:
    diffs: list[str] = []
    got: dict = {}
    for row in actual:
        k = tuple(row[c] for c in key_cols)
        if k in got:
            diffs.append(f"{name}: key {k} appears twice")
        got[k] = row
    missing = sorted(set(exp) - set(got))
    extra = sorted(set(got) - set(exp), key=repr)
    for k in missing[:10]:
        diffs.append(f"{name}: missing row {dict(zip(key_cols, k))}: expected {exp[k]}")
    for k in extra[:10]:
        diffs.append(f"{name}: unexpected row {got[k]}")
    if len(missing) > 10 or len(extra) > 10:
        diffs.append(f"{name}: {len(missing)} rows missing, {len(extra)} unexpected in all")
    bad = 0
    for k in sorted(set(exp) & set(got)):
        for col, want in exp[k].items():
            if col not in got[k]:
                diffs.append(f"{name}: column {col} is missing from the view")
                return diffs
            have = got[k][col]
            if col in float_cols:
                same = (want is None and have is None) or (
                    want is not None and have is not None and math.isclose(have, want, rel_tol=1e-12, abs_tol=0.0))
            else:
                same = type(want) is type(have) and want == have or (
                    isinstance(want, Decimal) and isinstance(have, Decimal) and want == have)
            if not same:
                bad += 1
                if bad <= 20:
                    delta = f" (actual - expected = {have - want})" if isinstance(want, (int, Decimal)) and isinstance(
                        have, (int, Decimal)) and not isinstance(have, bool) else ""
                    diffs.append(f"{name}: {dict(zip(key_cols, k))} {col}: expected {show(want)}, "
                                 f"actual {show(have)}{delta}")
    if bad > 20:
        diffs.append(f"{name}: {bad} differing values in all")
    return diffs


def check_hourly(name: str, exp: dict, actual: list[dict]) -> list[str]:
    diffs = []
    for col in ("orders", "cancellations", "lines", "net_revenue"):
        have = sum((r[col] for r in actual), Decimal(0) if col == "net_revenue" else 0)
        if have != exp[col]:
            diffs.append(f"{name}: SUM({col}) over all hours: expected {exp[col]} (from the CSV), "
                         f"actual {have} (actual - expected = {have - exp[col]})")
    hours = [r["event_hour_utc"] for r in actual]
    if any(h is None for h in hours):
        diffs.append(f"{name}: a row has no event_hour_utc (silver rows without _source_ts)")
    hours = [h for h in hours if h is not None]
    if len(set(hours)) != len(hours):
        diffs.append(f"{name}: an event_hour_utc appears twice")
    for r in actual:
        h = r["event_hour_utc"]
        if h is None:
            continue
        if h % 3_600_000_000:
            diffs.append(f"{name}: event_hour_utc {h} us is not on the hour")
        elif r["hour_of_day_utc"] != (h // 3_600_000_000) % 24:
            diffs.append(f"{name}: hour_of_day_utc {r['hour_of_day_utc']} for event_hour_utc "
                         f"{dt.datetime.fromtimestamp(h / 1e6, dt.timezone.utc).isoformat()}")
    return diffs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--silver", required=True, help="silver table: local path, file:// or a URI")
    ap.add_argument("--csv", required=True, help="the dataset lakestream produced (csv or csv.gz)")
    ap.add_argument("--limit", type=int, help="only the first N rows of the CSV (as produce --limit)")
    ap.add_argument("--views", default=DEFAULT_VIEWS, help="the Databricks gold views SQL file")
    ap.add_argument("--storage", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--perturb", choices=CHECKS, action="append", default=[],
                    help="change one expected figure of this check, which must then fail (repeatable)")
    ap.add_argument("--show-sql", action="store_true")
    args = ap.parse_args(argv)

    try:
        found = views(open(args.views, encoding="utf-8").read())
    except (OSError, ValueError) as e:
        fail(f"{args.views}: {e}")
    for v in VIEW_OF_CHECK.values():
        if v not in found:
            fail(f"{args.views} defines no view {v} (found: {', '.join(found) or 'none'})")

    reader = load_reader()
    opts = reader.parse_storage(args.storage)
    silver = reader.normalize_uri(args.silver, opts)
    if "://" not in silver:
        silver = os.path.abspath(silver)
    con = reader.connect(silver, opts)

    translated = {}
    for check, view in VIEW_OF_CHECK.items():
        query, masked = found[view]
        try:
            duck, macros = translate(view, query, masked, silver)
        except ValueError as e:
            fail(str(e))
        for macro in macros:
            try:
                con.execute(macro)
            except Exception as e:  # noqa: BLE001 (already defined)
                if "already exists" not in str(e):
                    raise
        translated[check] = duck
        if args.show_sql:
            print(f"-- {view} (DuckDB)\n{duck}\n")

    lines = read_csv(args.csv, args.limit)
    exp = expected(lines)
    notes = [perturb(exp, check) for check in dict.fromkeys(args.perturb)]

    diffs: list[str] = []
    report: list[str] = []
    scan = f"delta_scan({sql_str(silver)})"
    base = fetch(con, f"SELECT COUNT(*) AS rows, COUNT(DISTINCT (transaction_no, line_no)) AS keys, "
                      f"SUM(line_total) AS sum_line_total, SUM(quantity) AS sum_quantity FROM {scan}")[0]
    for col, want in exp["base"].items():
        if base[col] != want:
            diffs.append(f"base (silver): {col}: expected {want} (from the CSV), actual {base[col]} "
                         f"(actual - expected = {base[col] - want})")
    report.append(f"base: silver rows {base['rows']}, keys {base['keys']}, SUM(line_total) "
                  f"{base['sum_line_total']}, SUM(quantity) {base['sum_quantity']}; CSV rows {exp['base']['rows']}")

    results = {check: fetch(con, q) for check, q in translated.items()}

    d = results["daily_revenue"]
    diffs += compare_rows("gold_daily_revenue_by_country", ("order_date", "country"), exp["daily_revenue"], d)
    report.append(f"gold_daily_revenue_by_country: {len(d)} rows (expected {len(exp['daily_revenue'])} country-days "
                  f"over {len({k[0] for k in exp['daily_revenue']})} dates, "
                  f"{len({k[1] for k in exp['daily_revenue']})} countries), SUM(net_revenue) "
                  f"{sum((r['net_revenue'] for r in d), Decimal(0))}, SUM(gross_sales) "
                  f"{sum((r['gross_sales'] for r in d), Decimal(0))}, SUM(cancelled_value) "
                  f"{sum((r['cancelled_value'] for r in d), Decimal(0))}, all 8 figures per row compared exactly")

    t = results["top_products"]
    diffs += compare_rows("gold_top_products", ("product_no",), exp["top_products"], t)
    top = sorted(t, key=lambda r: r["revenue_rank"])[:3]
    report.append(f"gold_top_products: {len(t)} products (expected {len(exp['top_products'])}), top 3 by net revenue: "
                  + "; ".join(f"#{r['revenue_rank']} {r['product_no']} {r['product_name']!r} {r['net_revenue']}"
                              for r in top) + ", all 9 figures per row compared exactly")

    c = results["cancellation_rate"]
    diffs += compare_rows("gold_cancellation_rate", ("order_month",), exp["cancellation_rate"], c,
                          float_cols=("cancellation_rate_value", "cancellation_rate_lines", "cancellation_rate_orders"))
    gross = sum((r["gross_sales"] for r in c), Decimal(0))
    canc = sum((r["cancelled_value"] for r in c), Decimal(0))
    report.append(f"gold_cancellation_rate: {len(c)} months (expected {len(exp['cancellation_rate'])}), overall "
                  f"cancelled_value / gross_sales = {canc} / {gross} = {float(canc) / float(gross):.6f}; "
                  f"month rates {min(r['cancellation_rate_value'] for r in c):.6f}.."
                  f"{max(r['cancellation_rate_value'] for r in c):.6f}" if c and gross else
                  f"gold_cancellation_rate: {len(c)} months")

    h = results["orders_per_hour"]
    diffs += check_hourly("gold_orders_per_hour", exp["orders_per_hour"], h)
    e = exp["orders_per_hour"]
    report.append(f"gold_orders_per_hour: {len(h)} hour(s); totals checked against the CSV: orders {e['orders']}, "
                  f"cancellations {e['cancellations']}, lines {e['lines']}, net_revenue {e['net_revenue']}")

    for n in notes:
        print(f"gold: PERTURBED {n}")
    print("\n".join(report))
    if diffs:
        print(f"gold: FAILED, {len(diffs)} difference(s) between the views on {args.silver} and {args.csv}:")
        print("\n".join("  " + x for x in diffs))
        return 1
    print(f"gold: OK, 4 views and silver match {len(lines)} CSV rows")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # noqa: BLE001 (DuckDB errors: one line, exit 1)
        if type(e).__module__.split(".")[0] not in ("duckdb", "_duckdb"):
            raise
        fail(f"DuckDB: {type(e).__name__}: {e}")
