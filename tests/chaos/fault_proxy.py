#!/usr/bin/env python3
"""Fault-injecting HTTP/1.1 reverse proxy for lakestream's reliability harness.

Sits between lakestream (object_store) and an object store emulator (Azurite or
SeaweedFS) on 127.0.0.1 and, for a seeded random share of the requests, injects
one fault instead of (or around) forwarding the request:

  error_before  answer 503 (ServerBusy/SlowDown) without forwarding: nothing happened
  error_after   forward, let the store apply the request, then answer 500 instead of
                its response: an *ambiguous* failure (the write may have landed)
  reset_before  reset the connection (TCP RST) without forwarding
  reset_after   forward, let the store apply it, then reset the connection
  slow          delay the request by 0.2-1.5 s, then forward it normally
  hang          hold the connection, answering nothing, past the client timeout
                (--hang-seconds), then close it

Every forwarded request goes to the upstream on a fresh connection with
`Connection: close`; the response is streamed back byte for byte (any framing:
Content-Length, chunked or close-delimited) with `Connection: close`, and the
client connection is closed after it. Request bodies are read completely first
(Content-Length or chunked; chunked bodies are forwarded as they came), so a
fault never leaves half a request at the store. `Expect: 100-continue` is
answered by the proxy itself.

`outage(True)` makes the proxy reset every new request (as if the store were
down) until `outage(False)`; requests that reach a stopped upstream are reset
too (counted as `upstream_down`, not as injected faults).

Standalone:  fault_proxy.py --listen 127.0.0.1:20001 --upstream 127.0.0.1:20000
                 --seed 7 --rate 0.05 [--kinds error_before=3,slow=2,...]
             prints its counters as JSON on SIGINT/SIGTERM; SIGUSR1 starts an
             outage, SIGUSR2 ends it.
In the harness it runs in a thread of the harness process (FaultProxy.start_in_thread).
Standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import struct
import sys
import threading
import time
from collections import Counter

KINDS = ("error_before", "error_after", "reset_before", "reset_after", "slow", "hang")
DEFAULT_WEIGHTS = {"error_before": 4, "error_after": 2, "reset_before": 2, "reset_after": 1, "slow": 3, "hang": 0.5}
MAX_HEAD = 64 * 1024
# FAULT_PROXY_TRACE=FILE: append each request's method and target to FILE (benchmarks count them).
TRACE = open(os.environ["FAULT_PROXY_TRACE"], "a") if os.environ.get("FAULT_PROXY_TRACE") else None


class BadRequest(Exception):
    pass


def parse_head(raw: bytes) -> tuple[str, list[tuple[str, str]]]:
    """First line and headers of an HTTP head (without the final CRLFCRLF)."""
    text = raw.decode("latin-1")
    lines = text.split("\r\n")
    first = lines[0]
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        if ":" not in line:
            raise BadRequest(f"bad header line {line!r}")
        k, v = line.split(":", 1)
        headers.append((k.strip(), v.strip()))
    return first, headers


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    name = name.lower()
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def build_head(first: str, headers: list[tuple[str, str]]) -> bytes:
    return ("\r\n".join([first] + [f"{k}: {v}" for k, v in headers]) + "\r\n\r\n").encode("latin-1")


HOP = {"connection", "keep-alive", "proxy-connection", "te", "upgrade"}


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    """Reads a chunked body; returns it raw (framing included)."""
    out = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        out += size_line
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while True:  # trailers, up to the empty line
                line = await reader.readuntil(b"\r\n")
                out += line
                if line == b"\r\n":
                    return bytes(out)
        out += await reader.readexactly(size + 2)


def rst(writer: asyncio.StreamWriter) -> None:
    """Closes the connection with a TCP reset (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


class FaultProxy:
    def __init__(self, listen_port: int, upstream_port: int, seed: int, rate: float = 0.0,
                 weights: dict[str, float] | None = None, hang_seconds: float = 6.0, host: str = "127.0.0.1",
                 flavor: str = "azure"):
        self.host = host
        self.listen_port = listen_port
        self.upstream_port = upstream_port
        self.rng = random.Random(seed)
        self.rate = rate
        self.weights = dict(weights or DEFAULT_WEIGHTS)
        self.hang_seconds = hang_seconds
        self.flavor = flavor
        self.faults: Counter = Counter()
        self.stats: Counter = Counter()
        self._outage = False
        self._lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._tasks: set = set()

    # ---- control (thread-safe) -----------------------------------------------------------
    def set_rate(self, rate: float, weights: dict[str, float] | None = None) -> None:
        with self._lock:
            self.rate = rate
            if weights is not None:
                self.weights = dict(weights)

    def outage(self, on: bool) -> None:
        with self._lock:
            self._outage = on

    def snapshot(self) -> dict:
        with self._lock:
            return {"faults": dict(self.faults), "faults_total": sum(self.faults.values()), "stats": dict(self.stats)}

    def _decide(self) -> str | None:
        with self._lock:
            self.stats["requests"] += 1
            if self._outage:
                self.stats["outage_resets"] += 1
                return "outage"
            if self.rate <= 0 or self.rng.random() >= self.rate:
                return None
            kinds = [k for k, w in self.weights.items() if w > 0]
            kind = self.rng.choices(kinds, weights=[self.weights[k] for k in kinds])[0]
            self.faults[kind] += 1
            self._slow = self.rng.uniform(0.2, 1.5)
            self._status = self.rng.choice((500, 503)) if kind == "error_before" else 500
            return kind

    # ---- serving ---------------------------------------------------------------------------
    def error_response(self, status: int) -> bytes:
        reason = {500: "Internal Server Error", 503: "Service Unavailable"}[status]
        if self.flavor == "s3":
            code = "SlowDown" if status == 503 else "InternalError"
            body = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>injected by fault_proxy</Message></Error>'
            ctype = "application/xml"
        else:
            code = "ServerBusy" if status == 503 else "InternalError"
            body = f'\ufeff<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>injected by fault_proxy</Message></Error>'
            ctype = "application/xml"
        data = body.encode("utf-8")
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
                f"x-ms-error-code: {code}\r\nConnection: close\r\n\r\n")
        return head.encode("latin-1") + data

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)  # a strong reference: asyncio keeps only weak ones
        try:
            await self._handle(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, BadRequest, OSError):
            self.stats["client_errors"] += 1
            writer.transport.abort()
        except Exception as e:  # noqa: BLE001 - keep serving; count it
            self.stats["proxy_errors"] += 1
            print(f"fault_proxy: unexpected {type(e).__name__}: {e}", file=sys.stderr)
            writer.transport.abort()
        finally:
            self._tasks.discard(task)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            if not e.partial:  # the client closed an idle connection
                writer.close()
                return
            raise
        first, headers = parse_head(raw[:-4])
        if len(first.split(" ")) != 3:
            raise BadRequest(first)
        method = first.split(" ", 1)[0].upper()
        if TRACE is not None:
            print(first.rsplit(" ", 1)[0], file=TRACE, flush=True)
        if (header(headers, "expect") or "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        te = (header(headers, "transfer-encoding") or "").lower()
        if "chunked" in te:
            body = await read_chunked(reader)
        else:
            body = await reader.readexactly(int(header(headers, "content-length") or 0))
        fwd_headers = [(k, v) for k, v in headers if k.lower() not in HOP and k.lower() != "expect"]
        fwd_headers.append(("Connection", "close"))
        request = build_head(first, fwd_headers) + body

        kind = self._decide()
        if kind in ("outage", "reset_before"):
            rst(writer)
            return
        if kind == "error_before":
            writer.write(self.error_response(self._status))
            await writer.drain()
            writer.close()
            return
        if kind == "hang":
            await asyncio.sleep(self.hang_seconds)
            writer.transport.abort()
            return
        if kind == "slow":
            await asyncio.sleep(self._slow)

        try:
            up_r, up_w = await asyncio.wait_for(asyncio.open_connection(self.host, self.upstream_port), 5)
        except (OSError, asyncio.TimeoutError):
            self.stats["upstream_down"] += 1
            rst(writer)
            return
        phase = "send"
        try:
            up_w.write(request)
            await up_w.drain()
            phase = "head"
            if kind in ("error_after", "reset_after"):
                # Let the store finish the request, then lose its answer.
                while await up_r.read(65536):
                    pass
                if kind == "reset_after":
                    rst(writer)
                else:
                    writer.write(self.error_response(500))
                    await writer.drain()
                    writer.close()
                return
            resp_raw = await up_r.readuntil(b"\r\n\r\n")
            phase = "body"
            status_line, resp_headers = parse_head(resp_raw[:-4])
            resp_headers = [(k, v) for k, v in resp_headers if k.lower() not in ("connection", "keep-alive")]
            resp_headers.append(("Connection", "close"))
            writer.write(build_head(status_line, resp_headers))
            if method != "HEAD":
                while True:
                    phase = "body_read"
                    chunk = await up_r.read(65536)
                    if not chunk:
                        break
                    phase = "body_write"
                    writer.write(chunk)
                    await writer.drain()
            await writer.drain()
            self.stats["forwarded"] += 1
            writer.close()
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as e:
            if phase == "body_write":
                # The client stopped reading (object_store drops a response stream it no
                # longer needs): normal, not a fault.
                self.stats["client_closed_early"] += 1
            else:
                self.stats["upstream_errors"] += 1
                self.stats[f"upstream_error_{type(e).__name__}_{method}_{phase}"] += 1
            rst(writer)
        finally:
            up_w.transport.abort()

    async def _serve(self) -> None:
        self.server = await asyncio.start_server(self.handle, self.host, self.listen_port, limit=MAX_HEAD,
                                                 reuse_address=True, backlog=256)
        self._ready.set()
        async with self.server:
            await self.server.serve_forever()

    def start_in_thread(self) -> "FaultProxy":
        def run():
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(self._serve())
            except asyncio.CancelledError:
                pass
        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"fault proxy did not start on {self.host}:{self.listen_port}")
        return self

    def stop(self) -> None:
        if self.loop and self.server:
            self.loop.call_soon_threadsafe(self.server.close)


def parse_weights(text: str | None) -> dict[str, float]:
    if not text:
        return dict(DEFAULT_WEIGHTS)
    weights = {}
    for item in text.split(","):
        k, _, v = item.partition("=")
        if k not in KINDS:
            raise SystemExit(f"unknown fault kind {k!r}; kinds: {', '.join(KINDS)}")
        weights[k] = float(v or 1)
    return weights


def main() -> int:
    ap = argparse.ArgumentParser(description="fault-injecting HTTP reverse proxy (127.0.0.1 only)")
    ap.add_argument("--listen", required=True, help="127.0.0.1:PORT")
    ap.add_argument("--upstream", required=True, help="127.0.0.1:PORT")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate", type=float, default=0.05, help="share of requests that get a fault")
    ap.add_argument("--kinds", help="weights, e.g. error_before=4,slow=2 (default: all kinds)")
    ap.add_argument("--hang-seconds", type=float, default=6.0)
    ap.add_argument("--flavor", choices=("azure", "s3"), default="azure", help="error body style")
    a = ap.parse_args()
    lh, lp = a.listen.rsplit(":", 1)
    uh, up = a.upstream.rsplit(":", 1)
    if lh != "127.0.0.1" or uh != "127.0.0.1":
        raise SystemExit("listen and upstream must be on 127.0.0.1")
    p = FaultProxy(int(lp), int(up), a.seed, a.rate, parse_weights(a.kinds), a.hang_seconds, flavor=a.flavor)
    stop = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: stop.set())
    # SIGUSR1 starts an outage (every request reset, as if the store were down), SIGUSR2 ends it.
    signal.signal(signal.SIGUSR1, lambda *_: p.outage(True))
    signal.signal(signal.SIGUSR2, lambda *_: p.outage(False))
    p.start_in_thread()
    print(f"fault_proxy: 127.0.0.1:{lp} -> 127.0.0.1:{up}, rate {a.rate}, seed {a.seed}", file=sys.stderr, flush=True)
    while not stop.wait(0.5):
        pass
    p.stop()
    print(json.dumps(p.snapshot()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
