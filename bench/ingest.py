"""Ingest benchmark: the receiver (verified + durable + deduplicated) vs a bare HMAC endpoint.

    .venv/bin/python bench/ingest.py [--duration 10] [--connections 64] [--runs 2]
                                     [--synchronous FULL|NORMAL] [--postgres DSN]

Both servers run under uvicorn with one worker and the same loop/HTTP stack (uvloop +
httptools when installed), and are loaded by ``wrk -t2 -c64 --latency`` with ~1 KB signed
SolveForce events, each with a distinct event id (pre-signed, since wrk cannot compute an
HMAC). The receiver answers 200 only after its batch committed; after each run the script
counts the inbox rows and checks they equal the 200 answers.

wrk is required (``apt-get install -y wrk``): a Python load generator on the same 2 cores is
the bottleneck, not the server. The script checks for it and says so if it is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx

from hookline.engine.prefect_server import free_port

SECRET = "bench-secret-0123456789"
ROOT = Path(__file__).resolve().parent.parent

BASELINE_APP = """
import hashlib, hmac, os
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

SECRET = os.environ["SOLVEFORCE_WEBHOOK_SECRET"].encode()

async def webhook(request):
    body = await request.body()
    expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request.headers.get("x-solveforce-signature", "")):
        return JSONResponse({"error": "invalid_signature"}, status_code=401)
    return JSONResponse({"status": "accepted"})

async def healthz(request):
    return JSONResponse({"status": "ok"})

app = Starlette(routes=[Route("/webhooks/{source}", webhook, methods=["POST"]),
                        Route("/healthz", healthz)])
"""

# Each wrk thread takes every other line of the request file, so no event id is sent twice.
LUA = r"""
local counter = 0
local threads = {}

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  sigs = {}
  bodies = {}
  local path = args[1]
  local nthreads = tonumber(args[2])
  local i = 0
  for line in io.lines(path) do
    if i % nthreads == tid then
      local tab = string.find(line, "\t", 1, true)
      sigs[#sigs + 1] = string.sub(line, 1, tab - 1)
      bodies[#bodies + 1] = string.sub(line, tab + 1)
    end
    i = i + 1
  end
  n = 0
  wrapped = 0
end

function request()
  n = n + 1
  if n > #bodies then n = 1; wrapped = wrapped + 1 end
  local headers = {}
  headers["Content-Type"] = "application/json"
  headers["X-SolveForce-Signature"] = sigs[n]
  return wrk.format("POST", nil, headers, bodies[n])
end

function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    io.write(string.format("wrapped %d\n", t:get("wrapped")))
  end
end
"""


def make_requests(path: Path, count: int, run: str) -> None:
    """``count`` distinct signed ~1 KB events, one ``signature<TAB>body`` per line."""
    filler = "x" * 560
    key = SECRET.encode()
    with path.open("w") as f:
        for i in range(count):
            body = json.dumps(
                {
                    "event_type": "service.status.changed",
                    "event_id": f"evt_{run}_{i:08d}",
                    "timestamp": "2024-01-15T10:30:00Z",
                    "data": {
                        "service_id": "svc_voice_001",
                        "service_name": "Primary Voice Service",
                        "previous_status": "healthy",
                        "current_status": "degraded",
                        "location": "Chicago Data Center",
                        "impact": "medium",
                        "affected_users": 150,
                        "notes": filler,
                    },
                    "account": {"id": "acc_123456", "name": "Acme Corporation"},
                },
                separators=(",", ":"),
            )
            sig = "sha256=" + hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
            f.write(f"{sig}\t{body}\n")


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    sys.exit(f"server did not start:\n{log.read_text()[-3000:]}")


def start(
    kind: str, work: Path, port: int, env_extra: dict[str, str], workers: int
) -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")},
        "SOLVEFORCE_WEBHOOK_SECRET": SECRET,
        "HOOKLINE_HOME": str(work / "home"),
        "HOOKLINE_CONFIG": str(work / "hookline.yaml"),
        **env_extra,
    }
    log = work / f"{kind}-{port}.log"
    if kind == "baseline":
        (work / "baseline_app.py").write_text(BASELINE_APP)
        cmd = [sys.executable, "-m", "uvicorn", "baseline_app:app", "--port", str(port)]
        cmd += ["--log-level", "warning", "--no-access-log"]
        cmd += ["--loop", "uvloop", "--http", "httptools", "--workers", str(workers)]
        cwd = work
    else:
        cmd = [sys.executable, "-m", "hookline", "serve", "--port", str(port)]
        cmd += ["--workers", str(workers)]
        cwd = ROOT
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    wait_ready(f"http://127.0.0.1:{port}", proc, log)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNIT[m.group(2)]


def run_wrk(url: str, lua: Path, reqs: Path, duration: int, connections: int) -> dict[str, Any]:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(lua)]
    cmd += [url, "--", str(reqs), "2"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    res: dict[str, Any] = {"raw": out}
    res["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    res["requests"] = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(non2xx.group(1)) if non2xx else 0
    errors = re.search(r"Socket errors: (.*)", out)
    res["socket_errors"] = errors.group(1) if errors else ""
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}%\s+([\d.]+(?:us|ms|s))", out)
        res[f"p{pct}"] = _ms(m.group(1)) if m else float("nan")
    res["wrapped"] = sum(int(x) for x in re.findall(r"wrapped (\d+)", out))
    return res


def warm(url: str, lua: Path, reqs: Path) -> None:
    subprocess.run(
        ["wrk", "-t1", "-c8", "-d2s", "-s", str(lua), url, "--", str(reqs), "1"],
        capture_output=True,
        check=True,
    )


def inbox_rows(work: Path, pg: str | None, schema: str) -> int:
    if pg:
        import asyncio

        import asyncpg

        async def count() -> int:
            conn = await asyncpg.connect(pg)
            try:
                return int(await conn.fetchval(f'SELECT COUNT(*) FROM "{schema}".inbox'))
            finally:
                await conn.close()

        return asyncio.run(count())
    conn = sqlite3.connect(work / "home" / "inbox.sqlite3")
    try:
        return int(conn.execute("SELECT COUNT(*) FROM inbox").fetchone()[0])
    finally:
        conn.close()


def drop_schema(dsn: str, schema: str) -> None:
    import asyncio

    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument(
        "--workers",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1],
        help="uvicorn worker counts to compare, e.g. 1,2 (both servers get the same)",
    )
    p.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    p.add_argument("--postgres", metavar="DSN", help="keep the inbox in PostgreSQL instead")
    p.add_argument("--events", type=int, default=0, help="pre-signed events (default: auto)")
    args = p.parse_args()

    if shutil.which("wrk") is None:
        sys.exit(
            "bench/ingest.py needs wrk (a C load generator; a Python client on the same 2 cores "
            "would be the bottleneck).\nInstall it with:  apt-get update && apt-get install -y wrk"
        )

    work = Path(tempfile.mkdtemp(prefix="hookline-bench-"))
    (work / "home").mkdir()
    (work / "hookline.yaml").write_text(
        textwrap.dedent(
            f"""\
            sources:
              solveforce:
                scheme: solveforce
                secrets: ["${{SOLVEFORCE_WEBHOOK_SECRET}}"]
            receiver:
              sqlite_synchronous: {args.synchronous}
            """
        )
    )
    lua = work / "ingest.lua"
    lua.write_text(LUA)
    events = args.events or 25_000 * args.duration
    schema = f"bench_{os.getpid()}"
    env_extra = {"HOOKLINE_LOG_LEVEL": "INFO"}
    if args.postgres:
        env_extra["HOOKLINE_DATABASE_URL"] = f"{args.postgres}?schema={schema}"
    print(f"work dir {work}; generating {events} signed events ...", flush=True)

    failed = False
    summary: list[str] = []
    for workers in args.workers:
        results: dict[str, list[dict[str, Any]]] = {"baseline": [], "hookline": []}
        for run in range(args.runs):
            # Interleaved, so both servers see the same background load on average.
            for kind in ("baseline", "hookline"):
                tag = f"{kind}{workers}w{run}"
                reqs = work / f"requests-{tag}.tsv"
                make_requests(reqs, events, tag)
                warm_reqs = work / f"warm-{tag}.tsv"
                make_requests(warm_reqs, 40_000, f"warm{tag}")
                port = free_port()
                proc = start(kind, work, port, env_extra, workers)
                url = f"http://127.0.0.1:{port}/webhooks/solveforce"
                try:
                    warm(url, lua, warm_reqs)
                    before = inbox_rows(work, args.postgres, schema) if kind == "hookline" else 0
                    res = run_wrk(url, lua, reqs, args.duration, args.connections)
                    if kind == "hookline":
                        time.sleep(0.5)
                        res["stored"] = inbox_rows(work, args.postgres, schema) - before
                finally:
                    stop(proc)
                results[kind].append(res)
                stored = f" stored={res['stored']}" if "stored" in res else ""
                print(
                    f"{workers} worker(s) run {run + 1} {kind:9s} {res['rps']:9.0f} req/s"
                    f"  p50 {res['p50']:6.2f} ms  p99 {res['p99']:6.2f} ms"
                    f"  answered={res['requests']} non2xx={res['non2xx']}"
                    f" wrapped={res['wrapped']}{stored} {res['socket_errors']}",
                    flush=True,
                )
                for f in (reqs, warm_reqs):
                    f.unlink()

        b = max(results["baseline"], key=lambda r: r["rps"])
        h = max(results["hookline"], key=lambda r: r["rps"])
        ratio = h["rps"] / b["rps"]
        summary += [
            f"| {workers} | bare HMAC endpoint | {b['rps']:.0f} | {b['p50']:.2f} "
            f"| {b['p99']:.2f} | {b['non2xx']} | - | |",
            f"| {workers} | hookline receiver | {h['rps']:.0f} | {h['p50']:.2f} "
            f"| {h['p99']:.2f} | {h['non2xx']} | {h['stored']} | {ratio:.2f} |",
        ]
        for r in results["hookline"]:
            answered = r["requests"] - r["non2xx"]
            # wrk does not count the requests still in flight when it stops (<= connections);
            # the receiver may have stored those. Fewer rows than answers would be a lost event.
            if r["non2xx"] or r["wrapped"] or not answered <= r["stored"] <= r["requests"] + 64:
                failed = True
                print(f"PROBLEM: {workers} workers: {r}")

    backend = f"PostgreSQL ({args.postgres})" if args.postgres else f"SQLite {args.synchronous}"
    print()
    print(f"inbox: {backend}; wrk -t2 -c{args.connections} -d{args.duration}s; best of {args.runs}")
    print("| workers | server | events/s | p50 ms | p99 ms | non-2xx | stored | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(summary))
    print("goal: ratio >= 0.5 and receiver p99 < 25 ms")
    if args.postgres:
        drop_schema(args.postgres, schema)
    if failed:
        sys.exit(1)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
