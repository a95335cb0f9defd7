#!/usr/bin/env python3
"""Independent Delta Lake reader for lakestream's tests: DuckDB + its delta extension.

DuckDB's delta extension builds on delta-kernel-rs, not on delta-rs, and reads the
parquet files with DuckDB's own reader. Extensions are loaded by path from the PyPI
packages installed by tests/stack/stack.sh (INSTALL needs the internet); nothing is
downloaded at run time. Run it with the stack's venv python ($LAKESTREAM_PYTHON).

  duckdb_delta.py --table URI [--storage KEY=VALUE ...] [--version N] [--sql "SELECT ... FROM t"]
      Exposes the table as view `t` (delta_scan) and prints each result row as one JSON
      object per line, keys in column order. Decimals -> strings ("12.34"), dates ->
      "YYYY-MM-DD", TIMESTAMP (tz) -> "YYYY-MM-DDTHH:MM:SS.ffffffZ" (UTC), TIMESTAMP_NTZ ->
      "YYYY-MM-DDTHH:MM:SS.ffffff", blobs -> hex, NULL -> null. Default SQL: SELECT * FROM t.
  duckdb_delta.py --table URI [--storage ...] --txn APP_ID
      Prints the table's application transaction version for APP_ID (latest snapshot) as
      one JSON value: an integer, or null if the app id has none.

URIs: a local path or file://...; s3://bucket/path (also s3a://); az://container/path,
azure://container/path, abfs[s]://container@account.dfs.core.windows.net/path.

--storage takes delta-rs/object_store style options (case-insensitive), so tests can pass
the same map they give deltalake:
  S3:    aws_access_key_id, aws_secret_access_key, aws_session_token, aws_region,
         aws_endpoint_url (or aws_endpoint / endpoint), aws_allow_http
  Azure: azure_storage_account_name, azure_storage_account_key,
         azure_storage_use_emulator (Azurite: dev account/key, http://127.0.0.1:10000),
         azure_storage_endpoint (blob endpoint incl. account, e.g. http://h:10000/acct),
         connection_string (a full Azure connection string; overrides the rest)
Unknown keys are ignored (e.g. aws_conditional_put), so one map fits both readers.
Exit status: 0 ok, 1 error (message on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import decimal
import glob
import json
import os
import re
import sys
import uuid

AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's built-in development key.
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE_DEFAULT_URL = "http://127.0.0.1:10000"

EXTENSIONS = ("delta", "httpfs", "azure")  # httpfs: S3, azure: az:// and abfss://


def die(msg: str, code: int = 1) -> None:
    print(f"duckdb_delta: {msg}", file=sys.stderr)
    sys.exit(code)


try:
    import duckdb
except ImportError:  # pragma: no cover
    die("the duckdb module is missing: run with the stack's venv python "
        "($LAKESTREAM_PYTHON, from `tests/stack/stack.sh env`)")


def extension_path(name: str) -> str:
    """Path of NAME.duckdb_extension shipped by the duckdb-extension-NAME PyPI package."""
    try:
        mod = __import__(f"duckdb_extension_{name}")
    except ImportError:
        die(f"PyPI package duckdb-extension-{name}=={duckdb.__version__} is not installed in "
            f"{sys.prefix} (run tests/stack/stack.sh install python)")
    base = os.path.join(os.path.dirname(mod.__file__), "extensions")
    exact = os.path.join(base, f"v{duckdb.__version__}", f"{name}.duckdb_extension")
    if os.path.isfile(exact):
        return exact
    found = sorted(glob.glob(os.path.join(base, "*", f"{name}.duckdb_extension")))
    if not found:
        die(f"no {name}.duckdb_extension under {base}")
    return found[-1]


def sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def ident(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def truthy(v: str | None) -> bool:
    return (v or "").strip().lower() in ("1", "true", "yes", "on")


def parse_storage(items: list[str]) -> dict[str, str]:
    opts: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            die(f"--storage expects KEY=VALUE, got {item!r}", 2)
        k, v = item.split("=", 1)
        opts[k.strip().lower()] = v
    return opts


def scheme_of(uri: str) -> str:
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", uri)
    return m.group(1).lower() if m else ""


def s3_secret(opts: dict[str, str]) -> str | None:
    get = lambda *ks: next((opts[k] for k in ks if opts.get(k)), None)  # noqa: E731
    key = get("aws_access_key_id", "access_key_id", "key_id")
    secret = get("aws_secret_access_key", "secret_access_key", "secret")
    endpoint = get("aws_endpoint_url", "aws_endpoint", "endpoint_url", "endpoint")
    region = get("aws_region", "region", "aws_default_region") or "us-east-1"
    token = get("aws_session_token", "session_token", "token")
    parts = ["TYPE s3", f"REGION {sql_str(region)}"]
    if key:
        parts.append(f"KEY_ID {sql_str(key)}")
    if secret:
        parts.append(f"SECRET {sql_str(secret)}")
    if token:
        parts.append(f"SESSION_TOKEN {sql_str(token)}")
    if endpoint:
        m = re.match(r"^(https?)://([^/]+)", endpoint)
        use_ssl = not (m and m.group(1) == "http")
        host = m.group(2) if m else endpoint.rstrip("/")
        parts += [f"ENDPOINT {sql_str(host)}", "URL_STYLE 'path'", f"USE_SSL {str(use_ssl).lower()}"]
    if not (key or endpoint):
        return None  # let DuckDB use its defaults (anonymous / environment)
    return "CREATE SECRET lakestream_s3 (" + ", ".join(parts) + ")"


def azure_connection_string(opts: dict[str, str]) -> str | None:
    get = lambda *ks: next((opts[k] for k in ks if opts.get(k)), None)  # noqa: E731
    cs = get("connection_string", "azure_storage_connection_string")
    if cs:
        return cs
    emulator = truthy(get("azure_storage_use_emulator", "use_emulator"))
    account = get("azure_storage_account_name", "account_name") or (AZURITE_ACCOUNT if emulator else None)
    key = get("azure_storage_account_key", "account_key", "access_key", "azure_storage_access_key") or (
        AZURITE_KEY if emulator else None)
    endpoint = get("azure_storage_endpoint", "endpoint", "blob_endpoint")
    if not account:
        return None
    if not endpoint and emulator:
        base = os.environ.get("AZURITE_BLOB_STORAGE_URL", AZURITE_DEFAULT_URL).rstrip("/")
        endpoint = f"{base}/{account}"
    proto = "http" if (endpoint or "").startswith("http://") else "https"
    cs = f"DefaultEndpointsProtocol={proto};AccountName={account};"
    if key:
        cs += f"AccountKey={key};"
    if endpoint:
        cs += f"BlobEndpoint={endpoint.rstrip('/')};"
    return cs


def normalize_uri(uri: str, opts: dict[str, str]) -> str:
    scheme = scheme_of(uri)
    if scheme == "s3a":
        return "s3://" + uri[len("s3a://"):]
    if scheme in ("abfs", "abfss"):
        # DuckDB's azure filesystem sends abfss:// to the account's DFS host and ignores the
        # BlobEndpoint of the connection string, so against Azurite (or any explicit
        # endpoint) read the same objects through the Blob API: az://container/path.
        m = re.match(r"^abfss?://([^@/]+)@([^/]+)(/.*)?$", uri, re.IGNORECASE)
        explicit = any(opts.get(k) for k in ("azure_storage_use_emulator", "use_emulator",
                                              "azure_storage_endpoint", "endpoint", "blob_endpoint",
                                              "connection_string"))
        if m and explicit:
            return f"az://{m.group(1)}{m.group(3) or ''}"
    return uri.rstrip("/") if scheme else uri


def connect(uri: str, opts: dict[str, str]):
    con = duckdb.connect(config={
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    })
    scheme = scheme_of(uri)
    needed = ["delta"]
    if scheme in ("s3", "s3a", "http", "https"):
        needed.append("httpfs")
    if scheme in ("az", "azure", "abfs", "abfss"):
        needed.append("azure")
    for name in needed:
        con.execute(f"LOAD {sql_str(extension_path(name))}")
    con.execute("SET TimeZone = 'UTC'")
    if "httpfs" in needed:
        stmt = s3_secret(opts)
        if stmt:
            con.execute(stmt)
    if "azure" in needed:
        cs = azure_connection_string(opts)
        if cs:
            con.execute(f"CREATE SECRET lakestream_az (TYPE azure, CONNECTION_STRING {sql_str(cs)})")
    return con


def jsonable(v):
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if v == v and v not in (float("inf"), float("-inf")) else str(v)
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, _dt.datetime):
        return v.isoformat(timespec="microseconds")
    if isinstance(v, (_dt.date, _dt.time)):
        return v.isoformat()
    if isinstance(v, _dt.timedelta):
        return str(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return str(v)


def run_sql(con, sql: str) -> None:
    rel = con.sql(sql)
    if rel is None:  # a statement without a result
        return
    cols, types = rel.columns, [str(t) for t in rel.types]
    # Python's duckdb needs pytz to build tz-aware datetimes: format those in SQL instead.
    proj = []
    for c, t in zip(cols, types):
        if t == "TIMESTAMP WITH TIME ZONE":
            proj.append(f"strftime({ident(c)}, '%Y-%m-%dT%H:%M:%S.%fZ') AS {ident(c)}")
        elif "WITH TIME ZONE" in t:  # nested types holding instants: DuckDB's text form
            proj.append(f"CAST({ident(c)} AS VARCHAR) AS {ident(c)}")
        else:
            proj.append(ident(c))
    if any("WITH TIME ZONE" in t for t in types):
        rel = rel.project(", ".join(proj))
    out = sys.stdout
    while True:
        rows = rel.fetchmany(2048)
        if not rows:
            break
        for row in rows:
            out.write(json.dumps({c: jsonable(v) for c, v in zip(cols, row)}, ensure_ascii=False))
            out.write("\n")
    out.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", required=True, help="Delta table URI or local path")
    ap.add_argument("--storage", action="append", default=[], metavar="KEY=VALUE",
                    help="storage option (repeatable), delta-rs style keys")
    ap.add_argument("--version", type=int, help="read this table version (time travel)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--sql", help='query over view t (default "SELECT * FROM t")')
    mode.add_argument("--txn", metavar="APP_ID", help="print the app transaction version")
    args = ap.parse_args(argv)

    opts = parse_storage(args.storage)
    uri = normalize_uri(args.table, opts)
    try:
        con = connect(uri, opts)
        if args.txn is not None:
            attach = f"ATTACH {sql_str(uri)} AS lake (TYPE delta"
            if args.version is not None:
                attach += f", VERSION {int(args.version)}"
            con.execute(attach + ")")
            row = con.execute("SELECT version FROM delta_get_transaction_version('lake', ?)",
                              [args.txn]).fetchone()
            print(json.dumps(None if row is None or row[0] is None else int(row[0])))
            return 0
        scan = f"delta_scan({sql_str(uri)}"
        if args.version is not None:
            scan += f", version := {int(args.version)}"
        con.execute(f"CREATE TEMP VIEW t AS SELECT * FROM {scan})")
        run_sql(con, args.sql or "SELECT * FROM t")
        return 0
    except duckdb.Error as e:
        die(f"{type(e).__name__}: {e}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
