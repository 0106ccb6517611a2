"""Sustained benchmark: a long burst of one-step recipe runs (`slack.post_message`) through real
Hookline processes, the fake Slack served over HTTPS from another process with a SaaS-like
latency, next to bare Prefect flows making the same `chat_postMessage` call on the same server
in the same run.

    .venv/bin/python bench/sustained.py [--events 1000] [--latency-ms 50] [--profiles embedded]
    .venv/bin/python bench/sustained.py --profiles postgres --workers 1,2 \\
        --postgres postgresql://postgres@127.0.0.1:5432

Per profile:

- **embedded**: `hookline up` (its embedded Prefect server on SQLite, its in-process worker);
- **postgres**: `hookline prefect-server` on a fresh database of ``--postgres``, the inbox in
  a fresh schema of its ``test`` database, `hookline serve`, `hookline dispatch` and one
  `hookline worker` process per ``--workers`` entry (a fresh stack per entry).

Then, against that stack, after ``--warmup`` unmeasured events and bare runs, ``--rounds``
rounds in ABBA order (burst, baseline, baseline, burst; the ratio is of the means, a steady
drift of the machine's speed cancelling out), each phase with a speed probe's reading:
(1) a burst of ``--events`` signed events; Hookline's rate is
events / (first accepted -> all `done`); (2) the **baseline** on the same Prefect server:
``--events`` bare async flow runs (one task, the same `slack_sdk` call on one shared client)
created from a deployment and executed in this process ``--baseline-concurrency`` at a time
with what `hookline worker` shares between runs (`bench/prefect_ceiling.py`, *shared*);
(3) ``--paced-events`` events sent at ``--paced`` (0.8) x Hookline's rate, for the latency at
that load. Latency is accepted (the receiver's 200, here) -> the step's `chat.postMessage`
arriving at the fake (its wall clock; the event id is in the message text). Every sent event
must have reached the fake exactly once, and every baseline run too: exit 1 otherwise.

CPU per run comes from /proc (utime+stime) of Hookline's processes, Prefect's server and the
fake, over the burst. ``--py-spy DIR`` records the Hookline processes (and their children)
with `py-spy record --subprocesses -f raw` during the burst.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from hookline.engine.prefect_server import free_port  # noqa: E402
from hookline.engine.send import solveforce_signature  # noqa: E402
from tests.docs.conftest import Proc, clean_env, start  # noqa: E402

SECRET = "whsec-sustained-bench-0123456789"
CHANNEL = "#bench"
RECIPE = """
name: bench-slack
on: service.status.changed
defaults: { retries: 0 }
steps:
  - id: post
    uses: slack.post_message
    with:
      channel: "#bench"
      text: "bench {{ event_id }}"
"""
CONFIG = """
sources:
  solveforce: { scheme: solveforce, secrets: ["${SOLVEFORCE_WEBHOOK_SECRET}"] }
"""


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- processes and their CPU -------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for t in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (t / "children").read_text().split()]
    return out


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


@contextlib.contextmanager
def fake_vendors(work: Path, latency_ms: float) -> Iterator[tuple[dict[str, Any], int]]:
    """`python -m vendor_fakes` over HTTPS in another process; yields its info and pid."""
    port_file = work / "fakes.json"
    argv = [sys.executable, "-m", "vendor_fakes", "--port-file", str(port_file)]
    argv += ["--latency-ms", str(latency_ms), "--ca-dir", str(work / "ca")]
    with (work / "fakes.log").open("ab") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env=clean_env(), stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the fake vendors did not start; see {work / 'fakes.log'}")
            time.sleep(0.05)
        yield json.loads(port_file.read_text()), proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def slack_calls(fakes: dict[str, Any]) -> list[dict[str, Any]]:
    from vendor_fakes import RemoteFake

    slack = RemoteFake(fakes["control"]["slack"], ca_file=fakes["env"]["SSL_CERT_FILE"])
    return slack.calls()


def post_message_calls(fakes: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in slack_calls(fakes) if c["path"].endswith("/chat.postMessage")]


# -- the stack -----------------------------------------------------------------------------------


class Stack:
    """Hookline's processes for one profile, and where to read their progress."""

    def __init__(self, work: Path, env: dict[str, str], database_url: str | None) -> None:
        self.work, self.env, self.database_url = work, env, database_url
        self.procs: list[Proc] = []
        self.url = ""
        self.api_url = ""
        self.server_pids: list[int] = []
        self._pg: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self, name: str, *args: str, wrap: list[str] | None = None) -> Proc:
        argv = ["hookline", *args]
        if wrap:
            argv = [*wrap, sys.executable, "-m", "hookline", *args]
        self.procs.append(start(argv, cwd=self.work, env=self.env, log=self.work / f"{name}.log"))
        return self.procs[-1]

    def hookline_pids(self) -> list[int]:
        """Hookline's own processes (not Prefect's server, not py-spy)."""
        pids = [p for proc in self.procs for p in tree(proc.proc.pid)]
        return [p for p in pids if p not in self.server_pids and "py-spy" not in _cmd(p)]

    def statuses(self) -> Counter[str]:
        """The inbox's entries by status. On PostgreSQL through one connection kept for the
        whole run: a pool opened per poll (10 a second) cost the machine ~14 new PostgreSQL
        sessions a second, CPU the Hookline side was then measured without."""
        import sqlite3

        if self.database_url is None:
            db = self.work / "hookline-home" / "inbox.sqlite3"
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
                rows = conn.execute("SELECT status, count(*) FROM inbox GROUP BY status")
                return Counter(dict(rows.fetchall()))
        if self._pg is None:
            self._loop = asyncio.new_event_loop()
            self._pg = self._loop.run_until_complete(_pg_connect(self.database_url))
        assert self._loop is not None
        return self._loop.run_until_complete(_pg_statuses(self._pg, self.database_url))

    def stop(self) -> None:
        if self._pg is not None and self._loop is not None:
            self._loop.run_until_complete(self._pg.close())
            self._loop.close()
            self._pg = self._loop = None
        for p in reversed(self.procs):
            p.stop()


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


async def _pg_connect(database_url: str) -> Any:
    import asyncpg

    return await asyncpg.connect(database_url.split("?", 1)[0])


async def _pg_statuses(conn: Any, database_url: str) -> Counter[str]:
    import urllib.parse

    query = urllib.parse.parse_qs(urllib.parse.urlsplit(database_url).query)
    schema = query.get("schema", ["hookline"])[0]
    rows = await conn.fetch(f'SELECT status, count(*) AS n FROM "{schema}".inbox GROUP BY status')
    return Counter({r["status"]: r["n"] for r in rows})


def base_env(work: Path, fakes: dict[str, Any]) -> dict[str, str]:
    (work / "recipes").mkdir(exist_ok=True)
    (work / "recipes" / "bench-slack.yaml").write_text(textwrap.dedent(RECIPE))
    (work / "hookline.yaml").write_text(textwrap.dedent(CONFIG))
    return clean_env(
        **fakes["env"],
        SOLVEFORCE_WEBHOOK_SECRET=SECRET,
        HOOKLINE_HOME=str(work / "hookline-home"),
        PREFECT_HOME=str(work / "prefect-home"),
        PREFECT_LOGGING_LEVEL="WARNING",
    )


@contextlib.contextmanager
def embedded_stack(work: Path, env: dict[str, str], args: argparse.Namespace) -> Iterator[Stack]:
    stack = Stack(work, env, None)
    port = free_port()
    try:
        limit = ["--limit", str(args.up_limit)] if args.up_limit else []
        up = stack.run(
            "up",
            "up",
            "--port",
            str(port),
            "--no-preview",
            "--prefect-port",
            str(free_port()),
            *limit,
        )
        up.wait_for("Ctrl-C stops everything", timeout=120)
        state = json.loads((work / "hookline-home" / "up.json").read_text())
        stack.url, stack.api_url = state["receiver_url"], state["prefect_api_url"]
        stack.server_pids = [p for p in tree(up.proc.pid) if p != up.proc.pid]
        yield stack
    finally:
        stack.stop()


@contextlib.contextmanager
def postgres_stack(
    work: Path, env: dict[str, str], args: argparse.Namespace, workers: int
) -> Iterator[Stack]:
    from tests.stack import pg, prefect_on_postgres

    schema = f"hl_sustained_{uuid.uuid4().hex[:8]}"
    dsn = args.postgres.rstrip("/")
    env = {**env, "HOOKLINE_DATABASE_URL": f"{dsn}/test?schema={schema}"}
    stack = Stack(work, env, env["HOOKLINE_DATABASE_URL"])
    try:
        with prefect_on_postgres(work, env) as (api, server):
            env["PREFECT_API_URL"] = stack.api_url = api
            stack.server_pids = tree(server.proc.pid)
            port = free_port()
            receiver = stack.run("serve", "serve", "--host", "127.0.0.1", "--port", str(port))
            limit = ["--limit", str(args.worker_limit)] if args.worker_limit else []
            poll = ["--poll", str(args.worker_poll)]
            # --dispatch-in-worker: each worker process runs a dispatcher too, which hands the
            # runs it creates straight to its worker (as `hookline up` does), instead of one
            # `hookline dispatch` whose runs reach the workers by polling.
            cap = ["--max-in-flight", str(args.max_in_flight)] if args.max_in_flight else []
            colocated = ["--dispatch", *cap] if args.dispatch_in_worker else []
            dispatcher = None if colocated else stack.run("dispatch", "dispatch", *cap)
            ws = [
                stack.run(f"worker{i}", "worker", *limit, *poll, *colocated) for i in range(workers)
            ]
            stack.url = f"http://127.0.0.1:{port}"
            receiver.wait_http(f"{stack.url}/healthz")
            if dispatcher is not None:
                dispatcher.wait_for("dispatcher running")
            for w in ws:
                w.wait_for("polling work pool")
            try:
                yield stack
            finally:
                stack.stop()
    finally:
        asyncio.run(pg(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


# -- sending -------------------------------------------------------------------------------------


async def send_events(url: str, ids: list[str], *, rate: float | None) -> dict[str, float]:
    """POST one signed event per id (all at once, 32 in flight, or ``rate`` per second);
    returns each id's accepted time (wall clock at the 200)."""
    import httpx

    from hookline import samples

    accepted: dict[str, float] = {}
    sem = asyncio.Semaphore(32)
    async with httpx.AsyncClient(timeout=30) as http:

        async def one(event_id: str) -> None:
            payload = samples.load("service.status.changed")
            payload["event_id"] = event_id
            body = json.dumps(payload).encode()
            headers = {
                "Content-Type": "application/json",
                "X-SolveForce-Signature": solveforce_signature(body, SECRET),
            }
            async with sem:
                answer = await http.post(
                    f"{url}/webhooks/solveforce", content=body, headers=headers
                )
            if answer.status_code != 200:
                raise SystemExit(f"receiver answered {answer.status_code}: {answer.text}")
            accepted[event_id] = time.time()

        jobs = []
        t0 = time.monotonic()
        for i, event_id in enumerate(ids):
            if rate:
                await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            jobs.append(asyncio.create_task(one(event_id)))
        await asyncio.gather(*jobs)
    return accepted


def settle(pids: list[int], *, busy: float = 0.10, limit: float = 180.0) -> tuple[float, float]:
    """Wait until the Prefect server uses under ``busy`` of a core over a second; returns the
    seconds waited and the CPU seconds it used meanwhile. After the inbox says `done`, the
    server still records the burst's task runs from their events: a baseline started at once
    would pay for that work (it measured 86-145 ms of server CPU per run, 6.4-10.7 runs/s)."""
    t0 = time.monotonic()
    c0 = last = cpu_seconds(pids)
    while time.monotonic() - t0 < limit:
        time.sleep(1.0)
        now = cpu_seconds(pids)
        if now - last < busy:
            break
        last = now
    return time.monotonic() - t0, cpu_seconds(pids) - c0


def wait_done(stack: Stack, total: int, timeout: float) -> float:
    """Wait until ``total`` inbox entries are final; the wall time when seen."""
    deadline = time.monotonic() + timeout
    while True:
        counts = stack.statuses()
        if counts.get("done", 0) + counts.get("failed", 0) >= total:
            if counts.get("failed", 0):
                raise SystemExit(f"failed events: {dict(counts)}; see {stack.work}/*.log")
            return time.time()
        if time.monotonic() > deadline:
            raise SystemExit(f"not finished after {timeout:.0f} s: {dict(counts)}")
        time.sleep(0.1)


# -- the baseline --------------------------------------------------------------------------------

_slack: Any = None


@task(name="post", persist_result=False, cache_policy=NO_CACHE)
async def bare_post(text: str) -> str:
    # the sync SDK call in a thread, as a Prefect user would write it in an async flow
    answer = await asyncio.to_thread(_slack.chat_postMessage, channel=CHANNEL, text=text)
    return str(answer["ts"])


@flow(name="bench-slack-bare", persist_result=False, validate_parameters=False)
async def bare_slack(event_id: str) -> None:
    await bare_post(f"bare {event_id}")


def baseline(api_url: str, fakes: dict[str, Any], ids: list[str], concurrency: int) -> float:
    """Bare flow runs on the stack's Prefect server; returns runs/s."""
    global _slack
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from slack_sdk import WebClient

    from bench.prefect_ceiling import run_bare

    env = fakes["env"]
    _slack = WebClient(
        token=env["SLACK_BOT_TOKEN"],
        base_url=env["SLACK_API_URL"],
        ssl=ssl.create_default_context(cafile=env["SSL_CERT_FILE"]),
        retry_handlers=[],
    )

    async def go() -> dict[str, float]:
        async with get_client() as client:
            return await run_bare(
                client,
                bare_slack,
                [{"event_id": i} for i in ids],
                concurrency=concurrency,
                shared=True,
                entrypoint="bench/sustained.py:bare_slack",
            )

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        return asyncio.run(go())["runs_per_s"]


# -- one profile -----------------------------------------------------------------------------


def machine_cpu() -> tuple[float, float]:
    """The whole machine's busy and stolen CPU seconds so far (/proc/stat: all but idle and
    iowait; steal is time the hypervisor gave this VM's vCPUs to someone else)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    busy = sum(fields) - fields[3] - fields[4] - fields[7]
    return busy / tick, fields[7] / tick


PROBE = """
import sys, time
while True:
    t0 = time.process_time()
    x = 0
    for i in range(100_000):
        x += i * i % 7
    print(f"{time.time():.3f} {1000 * (time.process_time() - t0):.3f}", flush=True)
    time.sleep(1.0)
"""


class SpeedProbe:
    """How fast this machine is, all along: another process runs a fixed pure-Python loop
    (~4 ms of CPU) every second and logs its CPU milliseconds. On this VM the same loop took
    up to 1.5x longer in one quarter of an hour than in the next, and the baseline's rate
    moved with it, so each phase reports the probe's mean over its own window."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PROBE], stdout=path.open("wb"), stderr=subprocess.DEVNULL
        )

    def mean_ms(self, t0: float, t1: float) -> float:
        values = []
        for line in self.path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                when, ms = (float(v) for v in line.split())
                if t0 <= when <= t1:
                    values.append(ms)
        return statistics.mean(values) if values else float("nan")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Meter:
    """CPU over one phase: Hookline's processes, Prefect's server, the fake, this process and
    the whole machine (the rest is PostgreSQL and anything else running)."""

    def __init__(self, stack: Stack, fake_pid: int, probe: SpeedProbe) -> None:
        self.probe = probe
        self.groups = {
            "hookline": stack.hookline_pids(),
            "prefect_server": stack.server_pids,
            "fake": [fake_pid],
        }
        self.start = self._read()
        self.t0 = time.time()

    def _read(self) -> dict[str, float]:
        now = {name: cpu_seconds(pids) for name, pids in self.groups.items()}
        now["bench"] = time.process_time()
        now["machine"], now["steal"] = machine_cpu()
        now["wall"] = time.monotonic()
        return now

    def per_run(self, runs: int) -> dict[str, float]:
        end = self._read()
        d = {k: end[k] - self.start[k] for k in end}
        out = {k: 1000 * v / runs for k, v in d.items() if k != "wall"}
        known = sum(d[k] for k in ("hookline", "prefect_server", "fake", "bench"))
        out["other"] = 1000 * (d["machine"] - known) / runs
        out["machine_busy_cores"] = d["machine"] / d["wall"]
        out["probe_ms"] = self.probe.mean_ms(self.t0, time.time())
        return out


def burst_phase(
    stack: Stack,
    fakes: dict[str, Any],
    meter: Meter,
    args: argparse.Namespace,
    ids: list[str],
) -> dict[str, Any]:
    """Send ``ids`` at once and wait until the inbox says each is done."""
    before = sum(stack.statuses().values())
    accepted = asyncio.run(send_events(stack.url, ids, rate=None))
    done = wait_done(stack, before + len(ids), args.timeout)
    cpu = meter.per_run(len(ids))
    first = min(accepted.values())
    wall = done - first
    return {
        "runs_per_s": len(ids) / wall,
        "wall_s": wall,
        "acked_s": max(accepted.values()) - first,
        "cpu_ms_per_run": cpu,
        "latency": latency(post_message_calls(fakes), accepted),
    }


def baseline_phase(
    stack: Stack,
    fakes: dict[str, Any],
    meter: Meter,
    args: argparse.Namespace,
    ids: list[str],
) -> dict[str, Any]:
    """Run ``ids`` as bare Prefect flow runs on the stack's server (`baseline`)."""
    rate = baseline(stack.api_url, fakes, ids, args.baseline_concurrency)
    return {"runs_per_s": rate, "cpu_ms_per_run": meter.per_run(len(ids))}


def measure(
    stack: Stack, fakes: dict[str, Any], fake_pid: int, args: argparse.Namespace, label: str
) -> dict[str, Any]:
    """``--rounds`` rounds of a Hookline burst and a baseline, in the order ABBA (burst,
    baseline, baseline, burst, ...), then the paced phase. The machine's speed drifts (see
    `SpeedProbe`): alternating cancels a steady drift from the ratio of the means."""
    tag = uuid.uuid4().hex[:6]
    result: dict[str, Any] = {"profile": label, "events": args.events, "load_before": load()}
    probe = SpeedProbe(stack.work / "speed-probe.log")
    sent: list[str] = []
    bare_sent: list[str] = []
    phases: list[dict[str, Any]] = []
    order = ["hookline", "baseline"] if args.baseline_events else ["hookline"]
    try:
        if args.warmup:
            # Hookline's first burst on a fresh stack ran ~12 % slower than its later ones
            # (PostgreSQL, 6.14-6.39 vs 7.20-7.24 runs/s), while the baseline always runs
            # on a stack already warm: both sides start warm instead, unmeasured.
            ids = [f"evt_warm_{tag}_{n:05d}" for n in range(args.warmup)]
            sent += ids
            burst_phase(stack, fakes, Meter(stack, fake_pid, probe), args, ids)
            if args.baseline_events:
                ids = [f"bare_warm_{tag}_{n:05d}" for n in range(args.warmup)]
                bare_sent += ids
                baseline(stack.api_url, fakes, ids, args.baseline_concurrency)
            settle(stack.server_pids)
        for r in range(args.rounds):
            for kind in order if r % 2 == 0 else order[::-1]:
                spies = start_spies(stack, args, label, kind) if r == 0 else []
                meter = Meter(stack, fake_pid, probe)
                if kind == "hookline":
                    ids = [f"evt_sus_{tag}_{r}_{n:05d}" for n in range(args.events)]
                    sent += ids
                    phase = burst_phase(stack, fakes, meter, args, ids)
                else:
                    ids = [f"bare_{tag}_{r}_{n:05d}" for n in range(args.baseline_events)]
                    bare_sent += ids
                    phase = baseline_phase(stack, fakes, meter, args, ids)
                for spy in spies:
                    spy.send_signal(signal.SIGINT)
                for spy in spies:
                    spy.wait(60)
                waited, tail = settle(stack.server_pids)
                phase.update(
                    kind=kind,
                    round=r + 1,
                    load_after=load(),
                    server_settle={"s": waited, "cpu_ms_per_run": 1000 * tail / len(ids)},
                )
                phases.append(phase)
        result["phases"] = phases
        rates = {k: [p["runs_per_s"] for p in phases if p["kind"] == k] for k in order}
        speed = {
            k: statistics.mean(p["cpu_ms_per_run"]["probe_ms"] for p in phases if p["kind"] == k)
            for k in order
        }
        result["hookline_runs_per_s"] = statistics.mean(rates["hookline"])
        if args.baseline_events:
            result["baseline_runs_per_s"] = statistics.mean(rates["baseline"])
            result["ratio"] = result["hookline_runs_per_s"] / result["baseline_runs_per_s"]
            # the same ratio if both sides had run on a machine as fast as in the other's
            # phases: the probe's CPU time for the same loop scales the rate
            result["ratio_speed_adjusted"] = result["ratio"] * speed["hookline"] / speed["baseline"]
        paced_ids: list[str] = []
        if args.paced_events:
            rate = args.paced_rate or args.paced * result["hookline_runs_per_s"]
            paced_ids = [f"evt_paced_{tag}_{n:05d}" for n in range(args.paced_events)]
            before = sum(stack.statuses().values())
            meter = Meter(stack, fake_pid, probe)
            paced_accepted = asyncio.run(send_events(stack.url, paced_ids, rate=rate))
            wait_done(stack, before + len(paced_ids), args.timeout)
            result["paced_cpu_ms_per_run"] = meter.per_run(len(paced_ids))
            result["paced_rate"] = rate
            result["paced_latency"] = latency(post_message_calls(fakes), paced_accepted)
            result["paced_stages"] = stages(
                stack.api_url, post_message_calls(fakes), paced_accepted
            )
            result["load_after_paced"] = load()
    finally:
        probe.stop()
    every = slack_calls(fakes)
    calls = [c for c in every if c["path"].endswith("/chat.postMessage")]
    result["exactly_once"] = exactly_once(calls, [*sent, *paced_ids], bare_sent)
    # a permalink is built locally: one auth.test per client, no chat.getPermalink
    result["slack_calls"] = dict(Counter(c["path"] for c in every))
    return result


def start_spies(
    stack: Stack, args: argparse.Namespace, label: str, kind: str
) -> list[subprocess.Popen[bytes]]:
    """py-spy on the Hookline process (with its children: `hookline up`'s embedded server);
    on PostgreSQL the last worker, and the Prefect server separately. The first round's
    phases only, into ``<label>[-server]-<kind>.txt``."""
    if not args.py_spy:
        return []
    args.py_spy.mkdir(parents=True, exist_ok=True)
    targets = {label: stack.procs[0].proc.pid if label == "embedded" else stack.procs[-1].proc.pid}
    if label != "embedded":
        targets[f"{label}-server"] = stack.server_pids[0]
    spies = [
        subprocess.Popen(
            [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid)]
            + ["--subprocesses", "--nonblocking", "-f", "raw", "-r", "50"]
            + ["-o", str(args.py_spy / f"{name}-{kind}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=(args.py_spy / f"{name}-{kind}.log").open("wb"),
        )
        for name, pid in targets.items()
    ]
    time.sleep(1.0)
    return spies


def latency(calls: list[dict[str, Any]], accepted: dict[str, float]) -> dict[str, float]:
    first: dict[str, float] = {}
    for c in calls:
        event_id = str((c.get("json") or {}).get("text", "")).removeprefix("bench ")
        if event_id in accepted and event_id not in first:
            first[event_id] = c["received_wall"]
    values = [first[e] - accepted[e] for e in first]
    # the slowest events and when they were accepted (s from the first): a stall of the
    # stack shows as a cluster, a slow path as a spread
    t0 = min(accepted.values(), default=0.0)
    worst = sorted(((first[e] - accepted[e], accepted[e] - t0) for e in first), reverse=True)
    return {
        "p50_s": pct(values, 0.5),
        "p90_s": pct(values, 0.9),
        "p99_s": pct(values, 0.99),
        "max_s": max(values, default=0.0),
        "n": len(values),
        "worst": [{"latency_s": round(v, 3), "accepted_at_s": round(at, 1)} for v, at in worst[:8]],
    }


def stages(api_url: str, calls: list[dict[str, Any]], accepted: dict[str, float]) -> dict[str, Any]:
    """Where the paced events' latency went, from the runs' own records in Prefect: accepted
    -> run created (the dispatcher saw the event and its create returned) -> Pending (the
    worker took and claimed it) -> Running (the flow engine started it) -> the vendor call
    (the flow loaded, the step rendered and sent). p50/p99 of each, and each stage of the
    slowest events: a stage that grows with the load is where the queue is."""
    import httpx

    vendor: dict[str, float] = {}
    for c in calls:
        event_id = str((c.get("json") or {}).get("text", "")).removeprefix("bench ")
        if event_id in accepted:
            vendor.setdefault(event_id, c["received_wall"])
    runs: dict[str, dict[str, Any]] = {}
    after = min(accepted.values()) - 5.0
    with httpx.Client(base_url=api_url, timeout=60) as http:
        offset = 0
        while True:
            page = http.post(
                "/flow_runs/filter",
                json={
                    "flow_runs": {"expected_start_time": {"after_": _iso(after)}},
                    "sort": "EXPECTED_START_TIME_ASC",
                    "limit": 200,
                    "offset": offset,
                },
            ).json()
            for run in page:
                event_id = (run.get("parameters") or {}).get("event_id")
                if event_id in accepted:
                    runs[event_id] = run
            if len(page) < 200:
                break
            offset += 200
        rows = []
        for event_id, run in runs.items():
            states = http.get("/flow_run_states/", params={"flow_run_id": run["id"]}).json()
            at = {st["type"]: _epoch(st["timestamp"]) for st in states}
            if not {"PENDING", "RUNNING"} <= at.keys() or event_id not in vendor:
                continue
            t = [accepted[event_id], _epoch(run["created"]), at["PENDING"], at["RUNNING"]]
            rows.append([b - a for a, b in zip(t, [*t[1:], vendor[event_id]], strict=True)])
    names = ["to_created", "to_pending", "to_running", "to_vendor"]
    out: dict[str, Any] = {"n": len(rows)}
    for i, name in enumerate(names):
        values = [r[i] for r in rows]
        out[name] = {"p50_s": pct(values, 0.5), "p99_s": pct(values, 0.99)}
    out["slowest"] = [
        dict(zip(names, (round(v, 3) for v in r), strict=True))
        for r in sorted(rows, key=sum, reverse=True)[:5]
    ]
    return out


def _iso(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def exactly_once(
    calls: list[dict[str, Any]], ids: list[str], bare_ids: list[str]
) -> dict[str, Any]:
    texts = Counter(str((c.get("json") or {}).get("text", "")) for c in calls)
    wanted = Counter({f"bench {i}": 1 for i in ids}) + Counter({f"bare {i}": 1 for i in bare_ids})
    missing = [t for t in wanted if texts[t] == 0]
    repeated = [t for t, k in texts.items() if k > 1]
    unexpected = [t for t in texts if t not in wanted]
    return {
        "ok": not (missing or repeated or unexpected),
        "calls": sum(texts.values()),
        "expected": sum(wanted.values()),
        "missing": len(missing),
        "repeated": len(repeated),
        "unexpected": len(unexpected),
    }


def _cpu(c: dict[str, float]) -> str:
    return (
        f"CPU ms/run: hookline {c['hookline']:.0f}, prefect server {c['prefect_server']:.0f}, "
        f"fake {c['fake']:.0f}, bench {c['bench']:.0f}, other (PostgreSQL...) {c['other']:.0f}; "
        f"machine {c['machine_busy_cores']:.2f} cores busy, steal {c['steal']:.1f} ms/run; "
        f"probe {c['probe_ms']:.1f} ms"
    )


def show(r: dict[str, Any]) -> None:
    print(f"\n== {r['profile']}: {r['events']} events per burst, load {r['load_before']}")
    for p in r["phases"]:
        t = p["server_settle"]
        if p["kind"] == "hookline":
            b = p["latency"]
            what = (
                f"hookline {p['runs_per_s']:.2f} runs/s (all acked in {p['acked_s']:.1f} s, "
                f"drained in {p['wall_s']:.1f} s; accepted -> vendor call p50 "
                f"{b['p50_s']:.1f} s)"
            )
        else:
            what = f"baseline bare Prefect flows {p['runs_per_s']:.2f} runs/s"
        print(
            f"round {p['round']}: {what}; load {p['load_after']}; server settled in "
            f"{t['s']:.0f} s (+{t['cpu_ms_per_run']:.0f} ms CPU/run)\n  {_cpu(p['cpu_ms_per_run'])}"
        )
    if "ratio" in r:
        print(
            f"mean: hookline {r['hookline_runs_per_s']:.2f} runs/s, baseline "
            f"{r['baseline_runs_per_s']:.2f} runs/s, ratio {r['ratio']:.2f} "
            f"(adjusted for the machine's speed in each side's phases: "
            f"{r['ratio_speed_adjusted']:.2f})"
        )
    if "paced_latency" in r:
        p = r["paced_latency"]
        print(
            f"paced at {r['paced_rate']:.2f}/s: accepted -> vendor call p50 {p['p50_s']:.3f} s, "
            f"p90 {p['p90_s']:.3f} s, p99 {p['p99_s']:.3f} s, max {p['max_s']:.3f} s "
            f"(n={p['n']}); load {r['load_after_paced']}\n  {_cpu(r['paced_cpu_ms_per_run'])}"
        )
        slowest = ", ".join(
            f"{w['latency_s']:.2f} s at {w['accepted_at_s']:.0f} s" for w in p["worst"]
        )
        print(f"  slowest (latency at accepted time from the first): {slowest}")
        st = r["paced_stages"]
        print(
            "  stages (p50 / p99 s): "
            + ", ".join(
                f"{k.removeprefix('to_')} {st[k]['p50_s']:.3f} / {st[k]['p99_s']:.3f}"
                for k in ("to_created", "to_pending", "to_running", "to_vendor")
            )
            + f" (n={st['n']}); slowest: {st['slowest']}"
        )
    print(f"slack API calls at the fake: {r['slack_calls']}")
    e = r["exactly_once"]
    print(
        f"exactly once: {e['ok']} ({e['calls']} calls for {e['expected']} expected; missing "
        f"{e['missing']}, repeated {e['repeated']}, unexpected {e['unexpected']})"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--profiles", default="embedded", help="embedded,postgres")
    ap.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    ap.add_argument("--workers", default="1,2", help="postgres: `hookline worker` processes")
    ap.add_argument("--worker-limit", type=int, help="postgres: `hookline worker --limit`")
    ap.add_argument("--worker-poll", type=float, default=0.25, help="`hookline worker --poll`")
    ap.add_argument(
        "--dispatch-in-worker",
        action="store_true",
        help="postgres: `hookline worker --dispatch` (a dispatcher in each worker process, "
        "handing runs over in-process) instead of a separate `hookline dispatch`",
    )
    ap.add_argument("--max-in-flight", type=int, help="postgres: the dispatcher's --max-in-flight")
    ap.add_argument("--up-limit", type=int, help="embedded: `hookline up --limit`")
    ap.add_argument("--baseline-events", type=int, help="default: --events; 0: no baseline")
    ap.add_argument("--baseline-concurrency", type=int, default=4)
    ap.add_argument(
        "--warmup",
        type=int,
        default=200,
        help="unmeasured Hookline events and baseline runs before the first round",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="rounds of a burst and a baseline, ABBA order; the ratio is of the means",
    )
    ap.add_argument("--paced", type=float, default=0.8, help="fraction of Hookline's rate")
    ap.add_argument(
        "--paced-rate",
        type=float,
        help="events/s instead of --paced: two variants compared at the same load",
    )
    ap.add_argument("--paced-events", type=int, help="default: --events // 2; 0: none")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--py-spy", type=Path, help="record the Hookline processes into DIR")
    ap.add_argument(
        "--keep", type=Path, help="work in DIR and keep it (the stack's logs), not a temp dir"
    )
    args = ap.parse_args()
    if args.baseline_events is None:
        args.baseline_events = args.events
    if args.paced_events is None:
        args.paced_events = args.events // 2
    results = []
    kept = contextlib.nullcontext(str(args.keep)) if args.keep else None
    with kept or tempfile.TemporaryDirectory(prefix="hookline-sustained-") as tmp:
        for profile in args.profiles.split(","):
            counts = [1] if profile == "embedded" else [int(w) for w in args.workers.split(",")]
            for workers in counts:
                label = profile if profile == "embedded" else f"postgres-{workers}w"
                if profile != "embedded" and args.dispatch_in_worker:
                    label += "+dispatch"
                work = Path(tmp) / label
                work.mkdir(parents=True)
                with fake_vendors(work, args.latency_ms) as (fakes, fake_pid):
                    env = base_env(work, fakes)
                    stack_cm = (
                        embedded_stack(work, env, args)
                        if profile == "embedded"
                        else postgres_stack(work, env, args, workers)
                    )
                    with stack_cm as stack:
                        results.append(measure(stack, fakes, fake_pid, args, label))
                show(results[-1])
    print("\n" + json.dumps(results, indent=1))
    return 0 if all(r["exactly_once"]["ok"] for r in results) else 1


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # Every stack is stopped by now; Prefect's events worker in this process would otherwise
    # keep retrying the baseline runs' events against the stopped servers before exiting.
    os._exit(code)
