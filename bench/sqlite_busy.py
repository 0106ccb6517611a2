"""SQLite write-lock waits under contention: SQLite's own busy handler against Hookline's
(hookline/engine/sqlite_busy.py: try every millisecond), in the same run.

    .venv/bin/python bench/sqlite_busy.py [--threads 8] [--hold-ms 20] [--busy 0.75]
                                          [--seconds 20] [--gil-load 0.8] [--rounds 2]

Each of ``--threads`` threads stands for one of the Prefect server's connections: it begins a
write transaction (``BEGIN IMMEDIATE``), holds it for an exponentially distributed time of mean
``--hold-ms`` (an insert, then a sleep, as the server's event loop takes that long to come
back to it), commits, and waits before the next so that together they keep the lock busy
``--busy`` of the time. ``--gil-load`` keeps one more thread running Python that share of the
time, as the server's event loop does (the callback of Hookline's handler needs the GIL).
Prints, per handler, the waits for the lock (p50/p90/p99/max) and the transactions per second;
the rounds alternate A B B A ... so a drift of the machine's speed falls on both.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hookline.engine import sqlite_busy  # noqa: E402


def _gil_load(stop: threading.Event, share: float) -> None:
    while not stop.is_set():
        end = time.perf_counter() + 0.01 * share
        while time.perf_counter() < end:  # Python bytecode, holding the GIL
            pass
        time.sleep(0.01 * (1 - share))


def _writer(
    path: Path, handler: str, args: argparse.Namespace, stop: threading.Event, waits: list[float]
) -> None:
    conn = sqlite3.connect(path, isolation_level=None, timeout=60, check_same_thread=False)
    if handler == "hookline" and not sqlite_busy.install(conn, str(path), timeout=60):
        raise SystemExit("cannot install Hookline's busy handler here")
    rng = random.Random()
    hold = args.hold_ms / 1000
    # each thread's cycle: wait, hold; the holds of all threads fill `busy` of the time
    gap = hold * args.threads / args.busy - hold
    while not stop.is_set():
        time.sleep(rng.expovariate(1 / gap))
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        waits.append(time.perf_counter() - started)
        conn.execute("INSERT INTO t (x) VALUES (?)", (rng.random(),))
        if args.hold_cpu:
            end = time.perf_counter() + rng.expovariate(1 / hold)
            while time.perf_counter() < end:  # the holder needs the GIL, as the event loop
                pass
        else:
            time.sleep(rng.expovariate(1 / hold))
        conn.execute("COMMIT")
    conn.close()


def one(handler: str, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        setup = sqlite3.connect(path, isolation_level=None)
        setup.execute("PRAGMA journal_mode = WAL")
        setup.execute("CREATE TABLE t (x)")
        setup.close()
        stop = threading.Event()
        waits: list[float] = []
        threads = [
            threading.Thread(target=_writer, args=(path, handler, args, stop, waits))
            for _ in range(args.threads)
        ]
        if args.gil_load:
            threads.append(threading.Thread(target=_gil_load, args=(stop, args.gil_load)))
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        stop.set()
        for t in threads:
            t.join()
    waits.sort()

    def q(p: float) -> float:
        return waits[min(len(waits) - 1, int(p * len(waits)))]

    return {
        "tx_per_s": len(waits) / args.seconds,
        "p50": q(0.5),
        "p90": q(0.9),
        "p99": q(0.99),
        "max": waits[-1],
        "mean": statistics.fmean(waits),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--hold-ms", type=float, default=20.0)
    ap.add_argument("--busy", type=float, default=0.75, help="share of time the lock is held")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--gil-load", type=float, default=0.8, help="0: no Python thread")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--hold-cpu", action="store_true", help="holders run Python (need the GIL)")
    args = ap.parse_args()
    order = ["sqlite", "hookline"]
    results: dict[str, list[dict[str, float]]] = {h: [] for h in order}
    for r in range(args.rounds):
        for handler in order if r % 2 == 0 else order[::-1]:
            res = one(handler, args)
            results[handler].append(res)
            print(
                f"round {r + 1} {handler:8}: {res['tx_per_s']:.1f} tx/s, wait p50 "
                f"{res['p50'] * 1000:.1f} ms, p90 {res['p90'] * 1000:.1f}, p99 "
                f"{res['p99'] * 1000:.1f}, max {res['max'] * 1000:.1f}",
                flush=True,
            )
    base = statistics.fmean(r["p99"] for r in results["sqlite"])
    ours = statistics.fmean(r["p99"] for r in results["hookline"])
    print(
        f"wait p99: sqlite's handler {base * 1000:.1f} ms, hookline's {ours * 1000:.1f} ms "
        f"(ratio {ours / base:.2f})"
    )


if __name__ == "__main__":
    main()
