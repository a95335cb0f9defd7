#!/usr/bin/env python3
"""CPU of a running writer by thread, sampled every 100 ms from /proc, for
tests/bench/pipeline.sh: which threads use the cores, and how often the
writer leaves a core idle. Usage: threads.py PARENT_PID (the writer is the
child of PARENT_PID whose command line holds "run"; /usr/bin/time's, here).
Prints two lines when the writer exits.

Threads are grouped by name: `tokio-rt-worker` (the table commits),
`run loop + decode` (the main thread and the decode threads it starts
per batch, which take its name; those gone before the next sample count
as what the process used beyond its live threads), `kafka-consumer` (the poll loop), `rdk:*`
(librdkafka's own), `jemalloc_bg_thd`.
"""
import os
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def writer_of(parent):
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            for child in open(f"/proc/{parent}/task/{parent}/children").read().split():
                if b"run" in open(f"/proc/{child}/cmdline", "rb").read().split(b"\0"):
                    return child
        except OSError:
            return None
        time.sleep(0.01)
    return None


def group(name, main):
    if name == main:
        return "run loop + decode"
    for prefix in ("tokio-rt-worker", "kafka-consumer", "jemalloc"):
        if name.startswith(prefix):
            return prefix
    return "rdk:*" if name.startswith("rdk:") else name


def sample(pid, main):
    """CPU ticks so far per thread id, with the thread's group."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = open(f"/proc/{pid}/task/{tid}/stat").read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[tid] = (group(name, main), int(fields[11]) + int(fields[12]))
    return out


def process_ticks(pid):
    """CPU ticks of the whole process so far, exited threads included."""
    stat = open(f"/proc/{pid}/stat").read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def main():
    pid = writer_of(sys.argv[1])
    if pid is None:
        return
    main_name = open(f"/proc/{pid}/comm").read().strip()
    totals, busy, last, last_t, last_process = {}, [], {}, time.time(), 0
    while True:
        time.sleep(0.1)
        try:
            now, process = sample(pid, main_name), process_ticks(pid)
        except OSError:
            break  # the writer exited
        t = time.time()
        live = 0
        for tid, (g, ticks) in now.items():
            d = ticks - last.get(tid, (g, 0))[1]
            totals[g] = totals.get(g, 0) + d
            live += d
        used = process - last_process
        totals["run loop + decode"] = totals.get("run loop + decode", 0) + max(used - live, 0)
        busy.append(used / TICK / (t - last_t))
        last, last_t, last_process = now, t, process
    if not busy:
        return
    by_thread = ", ".join(f"{g} {ticks / TICK:.2f} s" for g, ticks in sorted(totals.items(), key=lambda x: -x[1]) if ticks)
    print(f"CPU by thread:      {by_thread}")
    n = len(busy)
    low = sum(b < 0.5 for b in busy) * 100 // n
    high = sum(b >= 1.5 for b in busy) * 100 // n
    print(f"cores busy:         under 0.5 in {low} % of the run, 0.5-1.5 in {100 - low - high} %, 1.5 or more in {high} % ({n} samples of 100 ms)")


main()
