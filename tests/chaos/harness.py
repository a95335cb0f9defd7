#!/usr/bin/env python3
"""lakestream reliability harness (issue 7): chaos against the real local broker and object stores.

Run it through tests/chaos/run.sh (which starts what it needs and installs the Python
Kafka client). What one run does:

1. starts its own services on free 127.0.0.1 ports, under --workdir:
   - a nisshi broker with sqlite storage (it keeps its data over restarts);
   - the object store: its own Azurite with on-disk persistence (--store azurite), or the
     stack's SeaweedFS (--store s3, a fresh prefix of the shared bucket);
   - the fault-injecting HTTP proxy (fault_proxy.py) in front of the store: every
     request lakestream makes to the lake goes through it;
2. creates the topic (6 partitions), starts 2 writers (`lakestream run`) in one group, then
   produces the dataset with mutations (`lakestream produce --rate ...`) and, meanwhile,
   rounds of hostile records (Python producer) while the writers run;
3. chaos: SIGKILLs a random writer every few seconds and restarts it (sometimes with a
   failpoint armed: it aborts after uploading Parquet before the commit, or between two
   tables' commits), varies the writer count between 1 and 3 (rebalances), restarts the
   broker and the object store, and the proxy fails, resets, slows and hangs requests;
4. drains: SIGKILLs the chaos writers, runs one `lakestream run --until-caught-up`
   (faults still on, no hangs) until every table holds every offset;
5. verifies with independent readers: the topic read back with librdkafka (the truth),
   the tables read with DuckDB's delta extension straight from the store (not through
   the proxy), the Delta logs replayed to check that every referenced file exists;
6. prints the summary and writes it to <workdir>/summary.json. Exit 0 iff every check
   passes and the kill and fault bars are met.
"""

from __future__ import annotations

import argparse
import base64
import email.utils
import gzip
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests" / "stack"))

import fault_proxy  # noqa: E402

HOST = "127.0.0.1"
AZ_ACCOUNT = "devstoreaccount1"
AZ_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
AZ_CONTAINER = "lakestream"
PARTITIONS = 6
MAX_RECORD_BYTES = 262144  # lakestream's decode.max_record_bytes for the run (nisshi refuses ~1 MB)
FAILPOINTS = [  # (point, weight): where a crash is most dangerous for exactly-once
    ("bronze.orders.files_written", 3),
    ("cycle.after_bronze", 3),
    ("cycle.after_quarantine", 2),
    ("cycle.after_tombstones", 2),
    ("cycle.after_silver", 2),
    ("quarantine.orders.files_written", 1),
    ("silver.order_lines_tombstones.files_written", 1),
]
TABLES: dict[str, str] = {}  # txn table name -> path below the lake: `lakestream tables` (see main)


def load_tables(binary: str) -> dict[str, str]:
    """The tables of the lake as the binary lists them (tables/*.toml), in commit order."""
    out = subprocess.run([binary, "tables"], check=True, capture_output=True, text=True).stdout
    return {t["name"]: t["path"] for t in map(json.loads, out.splitlines())}

T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[chaos {time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def wait_for(what: str, cond, limit: float = 60.0, every: float = 0.2) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {limit}s waiting for {what}")
        time.sleep(every)


# ======================================================================================
# services
# ======================================================================================

class Service:
    """A process we started (own session), restartable with the same arguments."""

    def __init__(self, name: str, argv: list[str], logdir: Path, env: dict | None = None, cwd: Path | None = None):
        self.name, self.argv, self.logdir, self.env, self.cwd = name, argv, logdir, env, cwd
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        out = open(self.logdir / f"{self.name}.log", "ab")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     env=self.env, cwd=self.cwd, start_new_session=True)
        out.close()

    def stop(self, sig=signal.SIGTERM, limit: float = 15.0) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(limit)
        except subprocess.TimeoutExpired:
            log(f"{self.name} (pid {p.pid}) still alive {limit}s after {sig.name}: SIGKILL")
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


def kafka_api_versions_ok(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=2) as s:
            s.sendall(b"\x00\x00\x00\x0e\x00\x12\x00\x00\x00\x00\x4c\x53\x00\x04test")
            data = s.recv(8)
            return len(data) == 8 and data[4:8] == b"\x00\x00\x4c\x53"
    except OSError:
        return False


def azurite_ok(port: int) -> bool:
    try:
        c = http.client.HTTPConnection(HOST, port, timeout=3)
        c.request("GET", f"/{AZ_ACCOUNT}?comp=list")
        return c.getresponse().status > 0
    except OSError:
        return False


def az_create_container(port: int, name: str) -> None:
    ver = "2021-12-02"
    date = email.utils.formatdate(usegmt=True)
    sts = f"PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{ver}\n/{AZ_ACCOUNT}/{AZ_ACCOUNT}/{name}\nrestype:container"
    sig = base64.b64encode(hmac.new(base64.b64decode(AZ_KEY), sts.encode(), hashlib.sha256).digest()).decode()
    c = http.client.HTTPConnection(HOST, port, timeout=10)
    c.request("PUT", f"/{AZ_ACCOUNT}/{name}?restype=container",
              headers={"x-ms-date": date, "x-ms-version": ver, "Content-Length": "0",
                       "Authorization": f"SharedKey {AZ_ACCOUNT}:{sig}"})
    status = c.getresponse().status
    if status not in (201, 409):
        raise RuntimeError(f"creating Azurite container {name}: HTTP {status}")


# ======================================================================================
# hostile records
# ======================================================================================

def row(tx: str, line: int, qty: int = 1, price=10.65, name: str = "CHAOS MUG", date: str = "2019-12-09",
        customer="13069", country: str = "United Kingdom") -> dict:
    return {"transaction_no": tx, "line_no": line, "order_date": date, "product_no": "22596", "product_name": name,
            "price": price, "quantity": qty, "customer_no": customer, "country": country}


def env_of(op, seq, before=None, after=None) -> dict:
    return {"op": op, "ts_ms": 1_700_000_000_000 + (seq if isinstance(seq, int) else 0),
            "source": {"table": "order_lines", "seq": seq}, "before": before, "after": after}


def norm_row(r: dict) -> dict:
    """The silver image of a valid row image (what lakestream must store)."""
    price = r["price"]
    cents = Decimal(str(price)) * 100
    assert cents == cents.to_integral_value(), price
    cust = r.get("customer_no")
    if cust is None or cust in ("NA", ""):
        cust = None
    elif isinstance(cust, (int, float)) and not isinstance(cust, bool):
        cust = str(cust)
    return {"order_date": r["order_date"], "product_no": r["product_no"], "product_name": r["product_name"],
            "price_cents": int(cents), "quantity": int(r["quantity"]), "customer_no": cust, "country": r["country"]}


def jb(v) -> bytes:
    return json.dumps(v, separators=(",", ":")).encode()


def linekey(tx: str, line: int) -> bytes:
    return jb({"transaction_no": tx, "line_no": line})


class Hostile:
    """Builds rounds of hostile records; each carries a `chaos-case` header naming its case,
    and the harness keeps what lakestream must do with it: quarantine it with a kind, or
    apply it as a change event (seq None: the record's offset, as for plain rows and tombstones)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.expect: dict[str, tuple] = {}  # case id -> ("q", kind) | ("e", op, key, seq|None, norm_row|None)
        self.sent = 0

    def round(self, r: int) -> list[tuple]:
        rng = self.rng
        out: list[tuple] = []  # (case, key, value, headers, partition, expectation)
        n = 0

        def tx(i: int) -> str:
            return f"99{r:03d}{i:03d}"

        def add(key, value, exp, part=None, headers=None):
            nonlocal n
            case = f"{r}:{n}"
            n += 1
            p = rng.randrange(PARTITIONS) if part is None else part
            out.append((case, key, value, headers or [], p, exp))

        Q = lambda kind: ("q", kind)  # noqa: E731
        # ---------------- records that must be quarantined ----------------
        good = env_of("c", 5, None, row(tx(0), 1))
        gb = jb(good)
        add(tx(0).encode(), gb[:5] + b"\xff\xfe" + gb[5:], Q("not_utf8"))                      # invalid UTF-8
        add(tx(0).encode(), gb[: rng.randrange(1, len(gb) - 1)], Q("not_json"))                # truncated JSON
        add(tx(0).encode(), b"[" * 20000 + b"]" * 20000, Q("not_json"))                          # deeply nested
        deep = b'{"op":"c","source":{"seq":1},"after":' + b'{"a":' * 300 + b"1" + b"}" * 300 + b"}"
        add(tx(0).encode(), deep, Q("not_json"))                                                 # nested > limit
        add(tx(0).encode(), b"", Q("empty"))  # empty value: not_json, or tombstone_key if it reads back as null
        for v in (b"[1,2,3]", b'"just a string"', b"42", b"null", b"true"):
            add(tx(0).encode(), v, Q("not_an_object"))
        big = env_of("c", 6, None, row(tx(0), 1, name="B" * 300_000))
        add(tx(0).encode(), jb(big), Q("oversized"))                                             # 300 KB
        add(None, b"x" * 850_000, Q("oversized"))                                                # 850 KB (< nisshi cap)
        for field, val in (("quantity", "three"), ("price", True), ("customer_no", [1]), ("line_no", "1"),
                           ("product_name", 7)):
            bad = row(tx(0), 1)
            bad[field] = val
            add(tx(0).encode(), jb(env_of("c", 7, None, bad)), Q("wrong_type"))
        add(tx(0).encode(), jb({**good, "op": 5}), Q("wrong_type"))
        add(tx(0).encode(), jb({**good, "source": "x"}), Q("wrong_type"))
        add(tx(0).encode(), jb({**good, "after": [1]}), Q("wrong_type"))
        add(tx(0).encode(), jb({**good, "ts_ms": "yesterday"}), Q("wrong_type"))
        add(tx(0).encode(), jb({"schema": {}, "payload": 5}), Q("wrong_type"))
        add(tx(0).encode(), jb({k: v for k, v in good.items() if k != "source"}), Q("missing_field"))
        add(tx(0).encode(), jb(env_of("d", 8, None, None)), Q("missing_field"))
        add(tx(0).encode(), jb(env_of("c", 8, None, None)), Q("missing_field"))
        nocountry = row(tx(0), 1)
        del nocountry["country"]
        add(tx(0).encode(), jb(nocountry), Q("missing_field"))                                   # plain row
        for field, val in (("price", "ten"), ("price", 1.234), ("line_no", 0), ("order_date", "2019-13-45"),
                           ("transaction_no", "ABC"), ("quantity", 3_000_000_000)):
            bad = row(tx(0), 1)
            bad[field] = val
            add(tx(0).encode() if field != "transaction_no" else b"ABC", jb(env_of("c", 9, None, bad)),
                Q("invalid_value"))
        add(tx(0).encode(), jb({**good, "source": {"table": "order_lines", "seq": 1.5}}), Q("invalid_value"))
        for op in ("x", "truncate", ""):
            add(tx(0).encode(), jb({**good, "op": op}), Q("unknown_op"))
        add(b"999999", gb, Q("key_mismatch"))                                                    # other order
        add(b"\xff\xfe" + tx(0).encode(), gb, Q("key_mismatch"))                                 # key not UTF-8
        add(linekey(tx(0), 2), gb, Q("key_mismatch"))                                            # other line
        add(None, None, Q("tombstone_key"))                                                      # no key
        add(tx(0).encode(), None, Q("tombstone_key"))                                            # bare key
        add(jb({"transaction_no": tx(0)}), None, Q("tombstone_key"))                             # no line_no
        add(linekey(tx(0), 0), None, Q("tombstone_key"))                                         # line 0
        add(b"\x00\xff", None, Q("tombstone_key"))                                               # binary key
        odd = [("odd", b"\x00\xff\xfe\x80"), ("empty", b""), ("none", None), ("\u00e9t\u00e9", b"\xc3")]
        add(tx(0).encode(), jb({**good, "op": "?"}), Q("unknown_op"), headers=odd)              # odd headers too

        # ---------------- records that must be applied (fresh keys) ----------------
        def E(op, t, line, seq, img):  # noqa: N802
            return ("e", op, (t, line), seq, None if img is None else norm_row(img))

        # S1: insert, update, late older update (ignored)
        p = rng.randrange(PARTITIONS)
        t = tx(1)
        for op, seq, q in (("c", 100, 1), ("u", 300, 3), ("u", 200, 2)):
            img = row(t, 1, qty=q)
            add(t.encode(), jb(env_of(op, seq, row(t, 1), img)), E(op, t, 1, seq, img), p)
        # S2: plain row (seq = offset), Kafka tombstone (seq = offset), late envelope seq 1: stays deleted
        p, t = rng.randrange(PARTITIONS), tx(2)
        img = row(t, 1, qty=5, price="3.5", customer="NA")
        add(linekey(t, 1), jb(img), E("u", t, 1, None, img), p)
        add(linekey(t, 1), None, E("d", t, 1, None, None), p)
        img2 = row(t, 1, qty=9)
        add(t.encode(), jb(env_of("c", 0, None, img2)), E("c", t, 1, 0, img2), p)  # seq 0 < any tombstone offset
        # S3: plain row, tombstone, then a newer plain row (seq = offset): re-inserted
        p, t = rng.randrange(PARTITIONS), tx(3)
        for q in (4, None, 6):
            if q is None:
                add(linekey(t, 1), None, E("d", t, 1, None, None), p)
            else:
                img = row(t, 1, qty=q, customer=12345)
                add(linekey(t, 1), jb(img), E("u", t, 1, None, img), p)
        # S4: Kafka Connect wrapper, then a wrapped null payload (a tombstone, seq = offset)
        p, t = rng.randrange(PARTITIONS), tx(4)
        img = row(t, 1, qty=2)
        add(t.encode(), jb({"schema": {"type": "struct"}, "payload": env_of("c", 50, None, img)}),
            E("c", t, 1, 50, img), p)
        img = row(t, 2, qty=2)
        add(linekey(t, 2), jb({"schema": {"type": "struct"}, "payload": env_of("r", 0, None, img)}),
            E("r", t, 2, 0, img), p)
        add(linekey(t, 2), jb({"schema": {"type": "struct"}, "payload": None}), E("d", t, 2, None, None), p)
        # S5: snapshot read (op r), no Kafka key at all, a cancellation (C prefix)
        p, t = rng.randrange(PARTITIONS), "C" + tx(5)
        img = row(t, 1, qty=-2, price=0.1)
        add(None, jb(env_of("r", 10, None, img)), E("r", t, 1, 10, img), p)
        # S6: delete with a key-only before image
        p, t = rng.randrange(PARTITIONS), tx(6)
        img = row(t, 1)
        add(t.encode(), jb(env_of("c", 10, None, img)), E("c", t, 1, 10, img), p)
        add(t.encode(), jb(env_of("d", 20, {"transaction_no": t, "line_no": 1}, None)), E("d", t, 1, 20, None), p)
        # S7: odd headers on a valid event; unknown extra fields nested 60 deep are ignored
        p, t = rng.randrange(PARTITIONS), tx(7)
        img = row(t, 1, qty=7)
        ev = env_of("c", 10, None, img)
        ev["extra"] = json.loads('{"a":' * 60 + "1" + "}" * 60)
        add(t.encode(), jb(ev), E("c", t, 1, 10, img), p, headers=odd)
        # S8: a big but allowed value (a 200 KB product name), plain row with _seq
        p, t = rng.randrange(PARTITIONS), tx(8)
        img = row(t, 1, name="N" * 200_000)
        add(linekey(t, 1), jb({**img, "_seq": 77}), E("u", t, 1, 77, img), p)
        # S9: unicode, numbers as strings, price with one decimal
        p, t = rng.randrange(PARTITIONS), tx(9)
        img = row(t, 3, name="Tasse \u00e0 caf\u00e9 \u2615 \U0001F600", price="12.5", country="C\u00f4te d'Ivoire")
        add(t.encode(), jb(env_of("u", 11, None, img)), E("u", t, 3, 11, img), p)
        # S10: a line moved to another month by an update (before image in another month)
        p, t = rng.randrange(PARTITIONS), tx(10)
        a = row(t, 1, date="2019-01-31")
        b = row(t, 1, date="2019-03-01", qty=8)
        add(t.encode(), jb(env_of("c", 1, None, a)), E("c", t, 1, 1, a), p)
        add(t.encode(), jb(env_of("u", 2, a, b)), E("u", t, 1, 2, b), p)

        for case, _, _, _, _, exp in out:
            self.expect[case] = exp
        self.sent += len(out)
        return out


def send_hostile_round(producer, topic: str, records: list[tuple]) -> None:
    for case, key, value, headers, part, _ in records:
        hdrs = [("chaos-case", case.encode())] + list(headers)
        while True:
            try:
                producer.produce(topic, value=value, key=key, partition=part, headers=hdrs)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(120)
    if left:
        raise RuntimeError(f"{left} hostile records not acknowledged within 120 s")


# ======================================================================================
# writers
# ======================================================================================

class Writer:
    def __init__(self, wid: int, proc: subprocess.Popen, logpath: Path, failpoint: str | None):
        self.wid, self.proc, self.logpath, self.failpoint = wid, proc, logpath, failpoint
        self.started = time.monotonic()
        self._read, self._commits, self._rest = 0, 0, b""

    def commits(self) -> int:
        """Commits logged so far (reads only what the log gained since the last call)."""
        try:
            with open(self.logpath, "rb") as f:
                f.seek(self._read)
                data = f.read()
        except OSError:
            return self._commits
        self._read += len(data)
        data = self._rest + data
        cut = data.rfind(b"\n") + 1
        self._commits += data[:cut].count(b'"message":"committed"')
        self._rest = data[cut:]
        return self._commits


class Chaos:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.rng = random.Random(a.seed)
        self.work = Path(a.workdir)
        self.logs = self.work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.topic = "orders"
        self.group = "lakestream-chaos"
        self.writers: list[Writer] = []
        self.next_wid = 0
        self.counts: Counter = Counter()
        self.failpoint_hits: Counter = Counter()
        self.exits: list[str] = []
        self.leaving: list[tuple] = []  # (deadline, writer) sent SIGTERM
        self.target = 2  # writers wanted; the chaos moves it between 1 and 3
        self.recent_errors: list[float] = []
        self.want_busy: bool | None = None
        self.timeline: list[str] = []

    # ---------------- services ----------------
    def start_services(self) -> None:
        a = self.a
        self.kport = free_port()
        kdir = self.work / "kafka"
        kdir.mkdir(exist_ok=True)
        kenv = {k: v for k, v in os.environ.items()
                if k not in ("SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT", "GROUP_POLL_INTERVAL", "CLUSTER_ID",
                             "STORAGE_ENGINE", "LISTENER_URL", "ADVERTISED_LISTENER_URL")}
        self.kafka = Service("kafka", [a.nisshi, "broker", "--listener-url", f"tcp://{HOST}:{self.kport}",
                                       "--advertised-listener-url", f"tcp://{HOST}:{self.kport}",
                                       "--storage-engine", f"sqlite:///{kdir}/nisshi.db",
                                       "--group-initial-rebalance-delay", "0s"], self.logs, env=kenv, cwd=kdir)
        self.kafka.start()
        wait_for("the broker", lambda: kafka_api_versions_ok(self.kport))
        self.brokers = f"{HOST}:{self.kport}"
        self.pport = free_port()
        if a.store == "azurite":
            self.sport = free_port()
            adir = self.work / "azurite"
            adir.mkdir(exist_ok=True)
            self.store = Service("azurite", [a.azurite, "--blobHost", HOST, "--blobPort", str(self.sport),
                                             "--location", str(adir), "--silent", "--disableTelemetry"],
                                 self.logs, cwd=adir)
            self.store.start()
            wait_for("Azurite", lambda: azurite_ok(self.sport))
            az_create_container(self.sport, AZ_CONTAINER)
            self.lake = f"az://{AZ_CONTAINER}/chaos"
            self.storage = {"azure_storage_use_emulator": "true"}
            self.extra_env = {"AZURITE_BLOB_STORAGE_URL": f"http://{HOST}:{self.pport}"}
            self.reader_opts = {"azure_storage_use_emulator": "true",
                                "azure_storage_endpoint": f"http://{HOST}:{self.sport}/{AZ_ACCOUNT}"}
        else:
            endpoint = os.environ.get("LAKESTREAM_TEST_S3_ENDPOINT", "http://127.0.0.1:8333")
            self.sport = int(endpoint.rsplit(":", 1)[1].strip("/"))
            self.store = None
            if not port_open(self.sport):
                raise RuntimeError(f"SeaweedFS is not answering at {endpoint}: run tests/stack/stack.sh start seaweedfs")
            bucket = os.environ.get("LAKESTREAM_TEST_S3_BUCKET", "lakestream")
            self.lake = f"s3://{bucket}/chaos-{os.getpid()}-{int(time.time())}"
            creds = {"aws_access_key_id": os.environ.get("LAKESTREAM_TEST_S3_KEY", "lakestream"),
                     "aws_secret_access_key": os.environ.get("LAKESTREAM_TEST_S3_SECRET", "lakestream-secret"),
                     "aws_region": "us-east-1", "aws_allow_http": "true"}
            self.storage = {**creds, "aws_endpoint_url": f"http://{HOST}:{self.pport}"}
            self.extra_env = {}
            self.reader_opts = {**creds, "aws_endpoint_url": f"http://{HOST}:{self.sport}"}
        self.storage["timeout"] = f"{a.client_timeout}s"
        self.proxy = fault_proxy.FaultProxy(self.pport, self.sport, a.seed, 0.0, hang_seconds=a.client_timeout + 1.5,
                                            flavor="s3" if a.store == "s3" else "azure").start_in_thread()
        log(f"broker {self.brokers} (sqlite), store {a.store} at {HOST}:{self.sport}, fault proxy {HOST}:{self.pport}, "
            f"lake {self.lake}")

    def stop_services(self) -> None:
        for w in self.writers:
            self._kill(w, count=False)
        self.writers.clear()
        self.proxy.stop()
        if self.store:
            self.store.stop()
        self.kafka.stop()

    def restart_broker(self) -> None:
        """Every other restart is a crash (SIGKILL; nisshi's sqlite storage is crash-safe)."""
        t = time.monotonic()
        sig = signal.SIGKILL if self.counts["broker_restarts"] % 2 else signal.SIGTERM
        self.kafka.stop(sig)
        time.sleep(self.rng.uniform(0.5, 2.0))
        self.kafka.start()
        wait_for("the broker after its restart", lambda: kafka_api_versions_ok(self.kport))
        self.counts["broker_restarts"] += 1
        self.counts[f"broker_{sig.name}"] += 1
        log(f"broker restarted after {sig.name} (down {time.monotonic() - t:.1f}s)")

    def restart_store(self) -> None:
        t = time.monotonic()
        if self.store is not None:
            self.store.stop(signal.SIGTERM)  # Azurite flushes its on-disk metadata on TERM
            time.sleep(self.rng.uniform(0.5, 2.0))
            self.store.start()
            wait_for("Azurite after its restart", lambda: azurite_ok(self.sport))
        else:  # the shared SeaweedFS is not ours to restart: the proxy plays the outage
            self.proxy.outage(True)
            time.sleep(self.rng.uniform(2.0, 5.0))
            self.proxy.outage(False)
        self.counts["store_restarts"] += 1
        log(f"object store {'restarted' if self.store else 'outage (proxy) ended'} "
            f"(down {time.monotonic() - t:.1f}s)")

    # ---------------- writers ----------------
    def writer_env(self, failpoint: str | None) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("LAKESTREAM_") and k not in ("RUST_LOG", "AZURITE_BLOB_STORAGE_URL")
               and not k.startswith("AWS_") and not k.startswith("AZURE_")}
        env.update(self.extra_env)
        env.update({
            "LAKESTREAM_LOG_FORMAT": "json",
            "LAKESTREAM_BATCH__MAX_RECORDS": str(self.a.batch_records),
            "LAKESTREAM_BATCH__MAX_LATENCY_MS": "300",
            "LAKESTREAM_DECODE__MAX_RECORD_BYTES": str(MAX_RECORD_BYTES),
            "LAKESTREAM_KAFKA__PROPERTIES__session.timeout.ms": str(self.a.session_timeout_ms),
            "LAKESTREAM_KAFKA__PROPERTIES__heartbeat.interval.ms": "300",
        })
        for k, v in self.storage.items():
            env[f"LAKESTREAM_LAKE__STORAGE__{k.upper()}"] = v
        if failpoint:
            env["LAKESTREAM_FAILPOINTS"] = failpoint
        return env

    def start_writer(self, failpoint: str | None = None, until_caught_up: bool = False) -> Writer:
        wid = self.next_wid
        self.next_wid += 1
        path = self.logs / f"writer-{wid:03d}.log"
        argv = [self.a.binary, "run", "--brokers", self.brokers, "--topic", self.topic, "--group", self.group,
                "--lake", self.lake]
        if until_caught_up:
            argv.append("--until-caught-up")
        with open(path, "wb") as f:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f, env=self.writer_env(failpoint),
                                    start_new_session=True)
        w = Writer(wid, proc, path, failpoint)
        self.writers.append(w)
        self.counts["writers_started"] += 1
        return w

    def _kill(self, w: Writer, count: bool = True) -> None:
        if w.proc.poll() is None:
            try:
                os.kill(w.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            w.proc.wait()
            if count:
                self.counts["sigkills"] += 1

    def reap(self) -> None:
        """Notices writers that exited on their own (failpoint aborts, errors)."""
        for deadline, w in list(self.leaving):
            rc = w.proc.poll()
            if rc is None and time.monotonic() > deadline:
                log(f"writer-{w.wid:03d} still running 40s after SIGTERM: SIGKILL")
                self._kill(w)
                rc = w.proc.returncode
            if rc is not None:
                self.leaving.remove((deadline, w))
                if rc != 0 and rc != -signal.SIGKILL:
                    self.counts["writer_error_exits"] += 1
                    self.exits.append(f"writer-{w.wid:03d} after SIGTERM rc={rc}: {tail_text(w.logpath, 600)}")
        for w in list(self.writers):
            rc = w.proc.poll()
            if rc is None:
                continue
            self.writers.remove(w)
            if rc == -signal.SIGABRT and w.failpoint:
                self.counts["failpoint_aborts"] += 1
                self.failpoint_hits[w.failpoint.split("=")[0]] += 1
                log(f"writer-{w.wid:03d} crashed at failpoint {w.failpoint} after {time.monotonic() - w.started:.1f}s")
            else:
                last = tail_text(w.logpath, 600)
                self.counts["writer_error_exits"] += 1
                self.recent_errors.append(time.monotonic())
                self.exits.append(f"writer-{w.wid:03d} rc={rc}: {last}")
                log(f"writer-{w.wid:03d} exited rc={rc}: {last[-300:]}")

    def pick_failpoint(self) -> str:
        points, weights = zip(*FAILPOINTS)
        return f"{self.rng.choices(points, weights)[0]}={self.rng.randint(1, 2)}"

    # ---------------- production ----------------
    def create_topic(self) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": self.brokers})
        fut = admin.create_topics([NewTopic(self.topic, PARTITIONS, 1)])[self.topic]
        fut.result(30)
        wait_for("the topic's metadata", lambda: len(
            admin.list_topics(self.topic, timeout=5).topics[self.topic].partitions) == PARTITIONS)

    def start_produce(self, events_estimate: int) -> subprocess.Popen:
        rate = max(50.0, events_estimate / self.a.produce_seconds)
        argv = [self.a.binary, "produce", "--brokers", self.brokers, "--topic", self.topic, "--input", self.a.dataset,
                "--partitions", str(PARTITIONS), "--mutations", "0.05", "--seed", str(self.a.seed),
                "--limit", str(self.a.rows), "--rate", f"{rate:.1f}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAKESTREAM_")}
        env["LAKESTREAM_LOG_FORMAT"] = "json"
        f = open(self.logs / "produce.log", "wb")
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f, env=env, start_new_session=True)

    def hostile_thread(self, hostile: Hostile, rounds: int, span: float, errors: list) -> threading.Thread:
        def run():
            try:
                from confluent_kafka import Producer
                p = Producer({"bootstrap.servers": self.brokers, "enable.idempotence": True, "acks": "all",
                              "message.max.bytes": 1_000_000, "linger.ms": 5, "message.timeout.ms": 120000,
                              "log_level": 2})
                for r in range(rounds):
                    send_hostile_round(p, self.topic, hostile.round(r))
                    time.sleep(span / rounds)
            except Exception as e:  # noqa: BLE001
                errors.append(f"hostile producer: {type(e).__name__}: {e}")
        th = threading.Thread(target=run, name="hostile", daemon=True)
        th.start()
        return th

    # ---------------- the run ----------------
    def run(self) -> dict:
        a = self.a
        t_start = time.monotonic()
        self.start_services()
        self.create_topic()
        weights = dict(fault_proxy.DEFAULT_WEIGHTS)
        self.proxy.set_rate(a.fault_rate, weights)
        for _ in range(2):
            self.start_writer()
        hostile = Hostile(random.Random(a.seed * 7919 + 1))
        errors: list[str] = []
        events_estimate = int(a.rows * 1.065)
        produce = self.start_produce(events_estimate)
        hthread = self.hostile_thread(hostile, a.hostile_rounds, a.produce_seconds, errors)

        # Restarts of the broker and the store at fixed shares of the chaos time.
        chaos = a.seconds
        plan = sorted([(f * chaos, "broker") for f in a.broker_restarts_at] +
                      [(f * chaos, "store") for f in a.store_restarts_at])
        log(f"chaos for >= {chaos:.0f}s: kills >= {a.kills}, faults >= {a.faults}, rows {a.rows}, seed {a.seed}; "
            f"restarts planned at {[f'{t:.0f}s {w}' for t, w in plan]}")
        t_chaos = time.monotonic()
        next_action = t_chaos + self.rng.uniform(*a.kill_every)
        produce_rc = None
        hard_stop = t_chaos + chaos * 3
        while True:
            now = time.monotonic()
            el = now - t_chaos
            self.reap()
            if produce_rc is None and produce.poll() is not None:
                produce_rc = produce.returncode
                log(f"produce finished rc={produce_rc}")
                if produce_rc != 0:
                    errors.append(f"lakestream produce failed rc={produce_rc}: {tail_text(self.logs / 'produce.log', 800)}")
            producing = produce_rc is None or hthread.is_alive()
            while plan and el >= plan[0][0]:
                # Broker restarts wait until production is over: nisshi answers an idempotent
                # producer's retry after a restart with DuplicateSequenceNumber, and the
                # producer then stalls until its messages time out (seen in a long run).
                due = [i for i, (t, w) in enumerate(plan) if el >= t and not (w == "broker" and producing)]
                if not due:
                    break
                _, what = plan.pop(due[0])
                self.restart_broker() if what == "broker" else self.restart_store()
            done = (el >= chaos and self.counts["sigkills"] >= a.kills
                    and self.proxy.snapshot()["faults_total"] >= a.faults and produce_rc is not None
                    and not hthread.is_alive() and not plan)
            if len([t for t in self.recent_errors if t > now - 30]) >= 8:
                errors.append("writers keep exiting with errors (8 within 30 s): see the exits above; giving up")
            if done or now > hard_stop or errors:
                break
            if now >= next_action:
                # Half of the steps wait (up to kill_wait s) until some writer is processing
                # (has committed), so that kills land in the data path and not only in
                # start-ups and rebalances (where a restarted group spends a lot of its time).
                if self.want_busy is None:
                    self.want_busy = self.rng.random() < 0.5
                busy = any(w.commits() > 0 for w in self.writers if not w.failpoint and w.proc.poll() is None)
                if busy or not self.want_busy or now >= next_action + a.kill_wait:
                    next_action = now + self.rng.uniform(*a.kill_every)
                    self.want_busy = None
                    self.chaos_step()
            # keep at least one writer (a crash at a failpoint or an error exit may leave none)
            if not self.writers:
                fp = self.pick_failpoint() if self.rng.random() < a.failpoint_share else None
                nw = self.start_writer(fp)
                log(f"no writer left: started writer-{nw.wid:03d}" + (f" with failpoint {fp}" if fp else ""))
            time.sleep(0.05)
        chaos_s = time.monotonic() - t_chaos
        if produce_rc is None:
            produce.wait()
            produce_rc = produce.returncode
        hthread.join(300)

        # ---------------- drain ----------------
        t_drain = time.monotonic()
        self.reap()
        for w in list(self.writers):
            self._kill(w)
            self.writers.remove(w)
        for deadline, w in list(self.leaving):
            self._kill(w, count=False)
        self.reap()
        self.proxy.set_rate(a.fault_rate, {**weights, "hang": 0})
        log("chaos over: all writers SIGKILLed; draining with one --until-caught-up writer (faults on, no hangs)")
        drained = False
        for attempt in range(4):
            w = self.start_writer(until_caught_up=True)
            try:
                rc = w.proc.wait(a.drain_timeout)
            except subprocess.TimeoutExpired:
                self._kill(w, count=False)
                rc = "timeout"
            self.writers.remove(w)
            if rc == 0:
                drained = True
                break
            self.exits.append(f"drain writer-{w.wid:03d} rc={rc}: {tail_text(w.logpath, 600)}")
            log(f"drain writer exited rc={rc}; retrying")
        drain_s = time.monotonic() - t_drain
        self.proxy.set_rate(0.0)
        faults = self.proxy.snapshot()

        # ---------------- verify ----------------
        t_verify = time.monotonic()
        log("verifying: reading the topic back and the tables with DuckDB")
        result = verify(self, hostile)
        verify_s = time.monotonic() - t_verify
        logs = scan_logs(self.logs)
        summary = {
            "mode": a.mode, "seed": a.seed, "store": a.store, "lake": self.lake, "workdir": str(self.work),
            "seconds": {"total": round(time.monotonic() - t_start, 1), "chaos": round(chaos_s, 1),
                        "drain": round(drain_s, 1), "verify": round(verify_s, 1)},
            "kills": {"sigkill": self.counts["sigkills"], "sigkill_processing": self.counts["sigkills_processing"],
                      "sigterm": self.counts["sigterms"], "failpoint_aborts": self.counts["failpoint_aborts"],
                      "failpoints": dict(self.failpoint_hits)},
            "writers": {"started": self.counts["writers_started"], "error_exits": self.counts["writer_error_exits"],
                        "max_concurrent": self.counts["max_writers"] or 2, "exits": self.exits[-20:]},
            "restarts": {"broker": self.counts["broker_restarts"], "broker_sigkill": self.counts["broker_SIGKILL"],
                         "store": self.counts["store_restarts"]},
            "faults": faults, "writer_logs": logs, "produce_rc": produce_rc, "hostile_sent": hostile.sent,
            "drained": drained, "errors": errors, **result,
        }
        return summary

    def chaos_step(self) -> None:
        """One random action: mostly a SIGKILL (and a restart), sometimes a change of the
        writer count (1..3: joins, SIGTERM leaves and crashes all rebalance the group)."""
        a = self.a
        if self.rng.random() < 0.25:
            self.target = self.rng.randint(1, 3)
        live = [w for w in self.writers if w.proc.poll() is None]
        if len(live) < self.target:
            fp = self.pick_failpoint() if self.rng.random() < a.failpoint_share else None
            nw = self.start_writer(fp)
            log(f"scale up: writer-{nw.wid:03d} ({len(self.writers)} writers)" + (f", failpoint {fp}" if fp else ""))
        elif len(live) > self.target and self.rng.random() < 0.5:
            w = self.rng.choice(live)
            w.proc.send_signal(signal.SIGTERM)  # a graceful leave: a clean hand-over
            self.writers.remove(w)
            self.leaving.append((time.monotonic() + 40, w))
            self.counts["sigterms"] += 1
            log(f"scale down: SIGTERM writer-{w.wid:03d} ({len(self.writers)} writers)")
        elif live:
            # Kill at a random moment, preferably a writer that is processing (has committed),
            # and not one armed with a failpoint (let it reach its point).
            unarmed = [w for w in live if not w.failpoint] or live
            busy = [w for w in unarmed if w.commits() > 0]
            w = self.rng.choice(busy if busy and self.rng.random() < 0.9 else unarmed)
            n = w.commits()
            self._kill(w)
            self.counts["sigkills_processing"] += n > 0
            self.writers.remove(w)
            restart = len(self.writers) < self.target or self.rng.random() < 0.2
            log(f"SIGKILL writer-{w.wid:03d} after {time.monotonic() - w.started:.1f}s and {n} commits"
                + ("; restarting" if restart else f" ({len(self.writers)} writers)"))
            if restart:
                fp = self.pick_failpoint() if self.rng.random() < a.failpoint_share else None
                nw = self.start_writer(fp)
                if fp:
                    log(f"  restarted as writer-{nw.wid:03d} with failpoint {fp}")
        self.counts["max_writers"] = max(self.counts["max_writers"], len(self.writers))


def commits_in(path: Path) -> int:
    try:
        return path.read_bytes().count(b'"message":"committed"')
    except OSError:
        return 0


def tail_text(path: Path, n: int) -> str:
    try:
        data = path.read_bytes()[-n:]
    except OSError:
        return ""
    return data.decode("utf-8", "replace").replace("\n", " | ")


def scan_logs(logdir: Path) -> dict:
    c: Counter = Counter()
    for p in logdir.glob("writer-*.log"):
        for line in p.read_text("utf-8", "replace").splitlines():
            if '"message":"committed"' in line:
                c["commits"] += 1
            elif "batch commit failed; retrying" in line:
                c["batch_retries"] += 1
            elif '"message":"commit conflict' in line:
                c["commit_conflicts"] += 1
            elif '"message":"partitions assigned"' in line:
                c["assignments"] += 1
            elif "failpoint" in line and "reached" in line:
                c["failpoint_reached"] += 1
            if '"level":"ERROR"' in line:
                c["error_lines"] += 1
    return dict(c)


# ======================================================================================
# verification
# ======================================================================================

def read_topic(brokers: str, topic: str) -> list[tuple]:
    """Every record of the topic: (partition, offset, key, value, headers)."""
    from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING
    c = Consumer({"bootstrap.servers": brokers, "group.id": f"chaos-reader-{os.getpid()}-{time.time_ns()}",
                  "enable.auto.commit": False, "fetch.message.max.bytes": 2_000_000})
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS)}
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    out, got = [], Counter()
    deadline = time.monotonic() + 300
    while any(got[p] < ends[p] for p in ends):
        if time.monotonic() > deadline:
            raise RuntimeError(f"read {dict(got)} of {ends} records of {topic}")
        for m in c.consume(2000, 1.0):
            if m.error():
                continue
            out.append((m.partition(), m.offset(), m.key(), m.value(), m.headers() or []))
            got[m.partition()] += 1
    c.close()
    out.sort(key=lambda r: (r[0], r[1]))
    return out, ends


def md5(b: bytes | None) -> str | None:
    return None if b is None else hashlib.md5(b).hexdigest()


def decode_dataset(value: bytes) -> tuple:
    """A record `lakestream produce` wrote: (op, key, seq, norm_row|None)."""
    v = json.loads(value)
    img = v["before"] if v["op"] == "d" else v["after"]
    key = (img["transaction_no"], img["line_no"])
    return v["op"], key, v["source"]["seq"], (None if v["op"] == "d" else norm_row(v["after"]))


def month_of(date: str) -> str:
    return date[:8] + "01"


def verify(ch: Chaos, hostile: Hostile) -> dict:
    if ch.store is not None:  # DuckDB's delta extension finds Azurite through this variable
        os.environ["AZURITE_BLOB_STORAGE_URL"] = f"http://{HOST}:{ch.sport}"
    import duckdb_delta as dd
    records, ends = read_topic(ch.brokers, ch.topic)
    res: dict = {"records": len(records), "end_offsets": ends}
    problems: list[str] = []

    # ---- what lakestream must have made of each record ----
    expected_q: dict[tuple, str] = {}
    events: list[tuple] = []  # (partition, offset, op, key, seq, row)
    dataset_n = hostile_n = 0
    for part, off, key, value, headers in records:
        case = next((v.decode() for k, v in headers if k == "chaos-case" and v is not None), None)
        if case is None:
            dataset_n += 1
            op, k, seq, img = decode_dataset(value)
            events.append((part, off, op, k, seq, img))
            continue
        hostile_n += 1
        exp = hostile.expect.get(case)
        if exp is None:
            problems.append(f"record {part}/{off} has unknown case {case}")
            continue
        if exp[0] == "q":
            kind = exp[1]
            if kind == "empty":  # librdkafka may hand an empty value over as null
                kind = "not_json" if value is not None else "tombstone_key"
            expected_q[(part, off)] = kind
        else:
            _, op, k, seq, img = exp
            events.append((part, off, op, k, off if seq is None else seq, img))
    res["dataset_records"], res["hostile_records"] = dataset_n, hostile_n
    key_parts: dict[tuple, set] = defaultdict(set)
    state: dict[tuple, tuple] = {}
    deletes: set[tuple] = set()
    for part, off, op, k, seq, img in events:  # sorted by (partition, offset)
        key_parts[k].add(part)
        cur = state.get(k)
        if cur is None or seq >= cur[0]:  # ties: the later offset (same partition)
            state[k] = (seq, op, img)
        if op == "d":
            deletes.add((part, off))
    spread = [k for k, ps in key_parts.items() if len(ps) > 1]
    if spread:
        problems.append(f"harness: {len(spread)} keys span partitions, e.g. {spread[:3]}")
    expected_silver = {k: v for k, v in state.items() if v[1] != "d"}

    con = dd.connect(ch.lake, ch.reader_opts)

    def scan(path: str, sql: str) -> list[tuple]:
        uri = f"{ch.lake}/{path}"
        return con.execute(sql.replace("FROM t", f"FROM delta_scan('{uri}')")).fetchall()

    # ---- bronze: every record exactly once, byte for byte ----
    rows = scan("bronze/orders", 'SELECT "partition", "offset", count(*), '
                'min(md5(coalesce(key_bytes, encode(key)))), min(md5(coalesce(value_bytes, encode(value)))), '
                'min(topic) FROM t GROUP BY ALL')
    truth = {(p, o): (md5(k), md5(v)) for p, o, k, v, _ in records}
    got = {(r[0], r[1]): r for r in rows}
    bronze_dups = sum(r[2] - 1 for r in rows)
    bronze_lost = [po for po in truth if po not in got]
    bronze_extra = [po for po in got if po not in truth]
    altered = [po for po, r in got.items() if (po in truth and (r[3], r[4]) != truth[po]) or r[5] != ch.topic]
    res["bronze"] = {"rows": sum(r[2] for r in rows), "duplicates": bronze_dups, "lost": len(bronze_lost),
                     "extra": len(bronze_extra), "altered": len(altered)}
    if bronze_dups or bronze_lost or bronze_extra or altered:
        problems.append(f"bronze: dups {bronze_dups}, lost {bronze_lost[:5]}, extra {bronze_extra[:5]}, "
                        f"altered {altered[:5]}")

    # ---- quarantine: exactly the hostile records that must be quarantined, with their kind ----
    rows = scan("quarantine/orders", 'SELECT "partition", "offset", count(*), min(error_kind), min(error) FROM t GROUP BY ALL')
    q_got = {(r[0], r[1]): r for r in rows}
    q_dups = sum(r[2] - 1 for r in rows)
    q_lost = [po for po in expected_q if po not in q_got]
    q_extra = [(po, r[3], r[4][:120]) for po, r in q_got.items() if po not in expected_q]
    q_kind = [(po, r[3], expected_q[po]) for po, r in q_got.items() if po in expected_q and r[3] != expected_q[po]]
    res["quarantine"] = {"rows": sum(r[2] for r in rows), "expected": len(expected_q), "duplicates": q_dups,
                         "lost": len(q_lost), "unexpected": len(q_extra), "wrong_kind": len(q_kind),
                         "kinds": dict(Counter(expected_q.values()))}
    if q_dups or q_lost or q_extra or q_kind:
        problems.append(f"quarantine: dups {q_dups}, lost {q_lost[:5]}, unexpected {q_extra[:5]}, "
                        f"wrong kind {q_kind[:5]}")

    # ---- tombstones side table: every delete event exactly once ----
    rows = scan("silver/order_lines_tombstones",
                'SELECT _kafka_partition, _kafka_offset, count(*) FROM t GROUP BY ALL')
    t_got = {(r[0], r[1]): r[2] for r in rows}
    t_dups = sum(n - 1 for n in t_got.values())
    t_lost = [po for po in deletes if po not in t_got]
    t_extra = [po for po in t_got if po not in deletes]
    res["tombstones"] = {"rows": sum(t_got.values()), "expected": len(deletes), "duplicates": t_dups,
                         "lost": len(t_lost), "extra": len(t_extra)}
    if t_dups or t_lost or t_extra:
        problems.append(f"tombstones: dups {t_dups}, lost {t_lost[:5]}, extra {t_extra[:5]}")

    # ---- silver: the fold of the events, every column ----
    rows = scan("silver/order_lines",
                "SELECT transaction_no, line_no, CAST(order_date AS VARCHAR), product_no, product_name, "
                "CAST(price AS VARCHAR), quantity, customer_no, country, is_cancellation, CAST(line_total AS VARCHAR), "
                "_op, _seq, CAST(order_month AS VARCHAR), _kafka_partition FROM t")
    silver: dict[tuple, tuple] = {}
    s_dups = 0
    for r in rows:
        k = (r[0], r[1])
        if k in silver:
            s_dups += 1
        silver[k] = r
    s_missing = [k for k in expected_silver if k not in silver]
    s_extra = [k for k in silver if k not in expected_silver]
    s_diff = []
    for k, (seq, op, img) in expected_silver.items():
        r = silver.get(k)
        if r is None:
            continue
        cents = lambda t: int(Decimal(t) * 100)  # noqa: E731
        want = (img["order_date"], img["product_no"], img["product_name"], img["price_cents"], img["quantity"],
                img["customer_no"], img["country"], k[0].startswith("C"), img["price_cents"] * img["quantity"],
                op, seq, month_of(img["order_date"]))
        have = (r[2], r[3], r[4], cents(r[5]), r[6], r[7], r[8], r[9], cents(r[10]), r[11], r[12], r[13])
        if want != have:
            s_diff.append((k, [f"{n}: want {w!r:.60} have {h!r:.60}" for n, w, h in zip(
                ("order_date", "product_no", "product_name", "price", "quantity", "customer_no", "country",
                 "is_cancellation", "line_total", "_op", "_seq", "order_month"), want, have) if w != h]))
    res["silver"] = {"rows": len(rows), "expected": len(expected_silver), "duplicates": s_dups,
                     "missing": len(s_missing), "extra": len(s_extra), "different": len(s_diff)}
    if s_dups or s_missing or s_extra or s_diff:
        problems.append(f"silver: dup keys {s_dups}, missing {s_missing[:5]}, extra {s_extra[:5]}, "
                        f"different {s_diff[:3]}")

    # ---- txn versions: every table holds every offset of every partition ----
    behind = []
    for name, path in TABLES.items():
        alias = name.replace(".", "_")
        con.execute(f"ATTACH '{ch.lake}/{path}' AS {alias} (TYPE delta)")
        for p in range(PARTITIONS):
            app = f"lakestream:{name}:{ch.topic}:{p}"
            v = con.execute(f"SELECT version FROM delta_get_transaction_version('{alias}', ?)", [app]).fetchone()
            v = None if v is None else v[0]
            if ends[p] > 0 and v != ends[p] - 1:
                behind.append((app, v, ends[p] - 1))
    res["txn"] = {"app_ids": len(TABLES) * PARTITIONS, "not_at_end": len(behind)}
    if behind:
        problems.append(f"txn versions not at the end offset: {behind[:6]}")

    # ---- the Delta logs: every file they reference exists ----
    files = {"referenced": 0, "missing": 0, "unreferenced": 0, "commits": 0}
    for name, path in TABLES.items():
        base = f"{ch.lake}/{path}"
        logs = con.execute(f"SELECT filename, content FROM read_text('{base}/_delta_log/*.json')").fetchall()
        versions = sorted(int(re.search(r"(\d+)\.json$", f).group(1)) for f, _ in logs)
        if versions and versions != list(range(versions[-1] + 1)):
            problems.append(f"{name}: the log is not contiguous from 0 (log files cleaned up or lost): "
                            f"{len(versions)} files up to {versions[-1]}")
        live: set[str] = set()
        for _, content in sorted(logs, key=lambda fc: int(re.search(r"(\d+)\.json$", fc[0]).group(1))):
            for line in content.splitlines():
                if not line.strip():
                    continue
                act = json.loads(line)
                if "add" in act:
                    live.add(urllib.parse.unquote(act["add"]["path"]))
                elif "remove" in act:
                    live.discard(urllib.parse.unquote(act["remove"]["path"]))
        present = {f[len(base) + 1:] for (f,) in con.execute(f"SELECT file FROM glob('{base}/**/*.parquet')").fetchall()}
        present = {urllib.parse.unquote(f) for f in present}
        missing = sorted(live - present)
        files["commits"] += len(versions)
        files["referenced"] += len(live)
        files["missing"] += len(missing)
        files["unreferenced"] += len(present - live)
        if missing:
            problems.append(f"{name}: {len(missing)} files referenced by the log are missing: {missing[:3]}")
    res["files"] = files
    res["problems"] = problems
    return res


# ======================================================================================
# main
# ======================================================================================

def print_summary(s: dict, bars: dict) -> bool:
    f = s["faults"]
    b, q, sv, t = s["bronze"], s["quarantine"], s["silver"], s["tombstones"]
    wl = s["writer_logs"]
    dups = b["duplicates"] + q["duplicates"] + sv["duplicates"] + t["duplicates"]
    lost = b["lost"] + q["lost"] + sv["missing"] + t["lost"]
    ok_checks = not s["problems"] and not s["errors"] and s["drained"] and s["produce_rc"] == 0
    bar_fail = []
    if s["kills"]["sigkill"] < bars["kills"]:
        bar_fail.append(f"kills {s['kills']['sigkill']} < {bars['kills']}")
    if f["faults_total"] < bars["faults"]:
        bar_fail.append(f"faults {f['faults_total']} < {bars['faults']}")
    passed = ok_checks and not bar_fail and dups == 0 and lost == 0
    fk = ", ".join(f"{k} {v}" for k, v in sorted(f["faults"].items()))
    fps = ", ".join(f"{k} {v}" for k, v in sorted(s["kills"]["failpoints"].items())) or "none"
    lines = [
        f"== lakestream chaos summary: {s['mode']} form, seed {s['seed']}, store {s['store']} ==",
        f"time         {s['seconds']['total']} s (chaos {s['seconds']['chaos']} s, drain {s['seconds']['drain']} s, "
        f"verify {s['seconds']['verify']} s)",
        f"records      {s['records']} in the topic ({s['dataset_records']} dataset events, "
        f"{s['hostile_records']} hostile), {PARTITIONS} partitions",
        f"kills        {s['kills']['sigkill']} SIGKILL at random moments ({s['kills']['sigkill_processing']} of a writer "
        f"that had committed, the rest in start-up/rebalance; the last ones at the end of the chaos); "
        f"{s['kills']['failpoint_aborts']} crashes at failpoints ({fps}); {s['kills']['sigterm']} SIGTERM leaves",
        f"writers      {s['writers']['started']} started (1..3 at once), {s['writers']['error_exits']} exited with an "
        f"error, {wl.get('assignments', 0)} partition assignments, {wl.get('commit_conflicts', 0)} commit conflicts, "
        f"{wl.get('batch_retries', 0)} batch retries",
        f"restarts     broker {s['restarts']['broker']} ({s['restarts']['broker_sigkill']} by SIGKILL), "
        f"object store {s['restarts']['store']}",
        f"faults       {f['faults_total']} injected of {f['stats'].get('requests', 0)} requests ({fk}); "
        f"{f['stats'].get('outage_resets', 0)} outage resets, {f['stats'].get('upstream_down', 0)} while the store was down",
        f"bronze       {b['rows']} rows: duplicates {b['duplicates']}, lost {b['lost']}, extra {b['extra']}, "
        f"altered {b['altered']}",
        f"quarantine   {q['rows']} rows, expected {q['expected']}: duplicates {q['duplicates']}, lost {q['lost']}, "
        f"unexpected {q['unexpected']}, wrong kind {q['wrong_kind']}",
        f"silver       {sv['rows']} rows, expected {sv['expected']}: duplicate keys {sv['duplicates']}, missing "
        f"{sv['missing']}, extra {sv['extra']}, different {sv['different']}",
        f"tombstones   {t['rows']} rows, expected {t['expected']}: duplicates {t['duplicates']}, lost {t['lost']}, "
        f"extra {t['extra']}",
        f"offsets      {s['txn']['app_ids'] - s['txn']['not_at_end']}/{s['txn']['app_ids']} txn app ids at the end offset",
        f"files        {s['files']['referenced']} referenced by {s['files']['commits']} commits, "
        f"{s['files']['missing']} missing ({s['files']['unreferenced']} unreferenced uploads left by crashes)",
        f"duplicates   {dups}",
        f"lost         {lost}",
    ]
    for p in s["problems"] + s["errors"] + bar_fail:
        lines.append(f"PROBLEM      {p}")
    if not s["drained"]:
        lines.append("PROBLEM      the final --until-caught-up writer did not finish")
    lines.append(f"RESULT       {'PASS' if passed else 'FAIL'}   (details: {s['workdir']})")
    print("\n".join(lines), flush=True)
    return passed


def main() -> int:
    ap = argparse.ArgumentParser(description="lakestream chaos harness")
    ap.add_argument("--mode", choices=("short", "long"), default="short")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--store", choices=("azurite", "s3"), default="azurite")
    ap.add_argument("--seconds", type=float, help="minimum chaos time")
    ap.add_argument("--kills", type=int, help="minimum SIGKILLs (bar)")
    ap.add_argument("--faults", type=int, help="minimum injected faults (bar)")
    ap.add_argument("--rows", type=int, help="dataset rows (produce --limit)")
    ap.add_argument("--fault-rate", type=float, default=0.02, help="share of storage requests that get a fault")
    ap.add_argument("--workdir")
    ap.add_argument("--binary", default=os.environ.get("LAKESTREAM_BIN",
                                                      str(Path.home() / ".cache/lakestream/target/release/lakestream")))
    ap.add_argument("--nisshi", default=str(Path.home() / ".cache/lakestream/nisshi/bin/nisshi"))
    ap.add_argument("--azurite", default=str(Path.home() / ".cache/lakestream/azurite/node_modules/.bin/azurite-blob"))
    ap.add_argument("--dataset", default=os.environ.get("LAKESTREAM_DATASET",
                                                       str(REPO.parent / "shared/data/sales-transaction-v4a.csv.gz")))
    ap.add_argument("--keep", action="store_true", help="keep the workdir after a passing run")
    a = ap.parse_args()
    long_form = a.mode == "long"
    a.seed = a.seed if a.seed is not None else int(time.time()) % 100000
    a.seconds = a.seconds or (1800.0 if long_form else 150.0)
    a.kills = a.kills if a.kills is not None else (300 if long_form else 20)
    a.faults = a.faults if a.faults is not None else (1000 if long_form else 100)
    a.rows = a.rows or (100_000 if long_form else 30_000)
    a.produce_seconds = a.seconds * 0.5
    a.hostile_rounds = 20 if long_form else 4
    a.kill_every = (1.0, 4.0)
    a.kill_wait = 12.0
    a.failpoint_share = 0.35
    a.batch_records = 1000
    a.session_timeout_ms = 3000  # a dead member holds its partitions this long
    a.client_timeout = 4
    a.drain_timeout = 600
    a.broker_restarts_at = [0.55, 0.7, 0.85] if long_form else [0.6, 0.85]  # after production
    a.store_restarts_at = [0.4, 0.65, 0.9] if long_form else [0.5, 0.85]
    a.workdir = a.workdir or f"/tmp/lakestream-chaos/{a.mode}-{time.strftime('%Y%m%d-%H%M%S')}-{a.seed}"
    for path, what in ((a.binary, "lakestream binary"), (a.nisshi, "nisshi"), (a.dataset, "dataset")):
        if not Path(path).exists():
            print(f"chaos: {what} not found at {path}", file=sys.stderr)
            return 2
    Path(a.workdir).mkdir(parents=True, exist_ok=True)
    # Pin the binary: the release build may be replaced while we run (others rebuild it),
    # and a run must use one version throughout. A copy, not a hard link: a rebuild may
    # rewrite the build's inode in place, which a hard link shares.
    import shutil
    pinned = Path(a.workdir) / "lakestream"
    shutil.copy2(a.binary, pinned)
    a.binary = str(pinned)
    TABLES.update(load_tables(a.binary))
    ch = Chaos(a)
    try:
        s = ch.run()
    finally:
        ch.stop_services()
    (Path(a.workdir) / "summary.json").write_text(json.dumps(s, indent=2, default=str))
    ok = print_summary(s, {"kills": a.kills, "faults": a.faults})
    if ok and not a.keep:
        # keep only the logs and the summary of a passing run
        import shutil
        for sub in ("kafka", "azurite"):
            shutil.rmtree(Path(a.workdir) / sub, ignore_errors=True)
        pinned.unlink(missing_ok=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
