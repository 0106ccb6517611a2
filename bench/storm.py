"""Storm benchmark: a flapping regional outage through `hookline up` and the shipped
`service-outage` recipe, against the fake Slack and ServiceNow in another process.

    .venv/bin/python bench/storm.py [--events 200] [--services 5] [--seconds 20] [--no-baseline]

Sends ``--events`` service.status.changed events for ``--services`` services over ``--seconds``
(each service flaps degraded <-> outage, timestamps strictly increasing), then one `healthy`
event per service, all signed, to the receiver. Then waits until every event is final and
prints, per run: events sent, flow runs created, top-level Slack posts per service, ServiceNow
incidents per service, whether each service's final state matches its last event (incident
resolved, alert green), whether every event is accounted for (ran, superseded or late; none
lost), and the drain time after the last event.

The baseline is the same storm, same machine, same run, with the recipe's `coalesce` line
removed (Hookline's behaviour before coalescing): ratios compare the two.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hookline.engine.prefect_server import free_port  # noqa: E402
from hookline.engine.send import send  # noqa: E402
from vendor_fakes import RemoteFake  # noqa: E402
from vendor_fakes.slack import channel_id  # noqa: E402

SECRET = "whsec-storm-bench-0123456789abcdef"
FINAL = ("done", "failed", "late", "superseded")


def clean_env(**extra: str) -> dict[str, str]:
    drop = ("HOOKLINE_", "PREFECT_", "SLACK_", "SERVICENOW_", "SALESFORCE_", "INVENTORY_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


@contextlib.contextmanager
def fake_vendors(home: Path) -> Iterator[dict[str, Any]]:
    port_file = home / "fakes.json"
    with (home / "fakes.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vendor_fakes", "--port-file", str(port_file)],
            cwd=ROOT,
            env=clean_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the fake vendors did not start; see fakes.log")
            time.sleep(0.05)
        yield json.loads(port_file.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


@contextlib.contextmanager
def hookline_up(home: Path, env: dict[str, str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    log = (home / "up.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hookline",
            "up",
            "--port",
            str(port),
            "--no-preview",
            "--prefect-port",
            str(free_port()),
        ],
        cwd=home,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while b"Ctrl-C stops everything" not in (home / "up.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"hookline up did not start; see {home / 'up.log'}")
            time.sleep(0.1)
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def storm(events: int, services: int, seconds: float) -> list[dict[str, Any]]:
    """The flapping events, then one recovery per service, in send order."""
    from hookline import samples

    base = time.time()
    out: list[dict[str, Any]] = []
    status = {s: "healthy" for s in range(services)}
    for n in range(events):
        s = n % services
        new = "outage" if status[s] != "outage" else "degraded"
        out.append(event(n, s, status[s], new, base + n * seconds / events, samples))
        status[s] = new
    for s in range(services):
        out.append(event(events + s, s, status[s], "healthy", base + seconds + s * 0.01, samples))
    return out


def event(n: int, s: int, before: str, after: str, t: float, samples: Any) -> dict[str, Any]:
    payload = samples.load("service.status.changed")
    payload["event_id"] = f"evt_storm_{n:05d}_{os.getpid()}"
    payload["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + (
        f".{int(t * 1000) % 1000:03d}Z"
    )
    payload["data"].update(
        service_id=f"svc_storm_{s}",
        service_name=f"Storm Service {s}",
        previous_status=before,
        current_status=after,
        impact="high",
    )
    return payload


def run_storm(args: argparse.Namespace, *, coalesce: bool, work: Path) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="storm-", dir=work))
    shutil.copy(ROOT / "hookline.yaml", home / "hookline.yaml")
    shutil.copytree(ROOT / "recipes", home / "recipes")
    recipe = home / "recipes" / "service-outage.yaml"
    if not coalesce:
        recipe.write_text(
            "".join(
                line
                for line in recipe.read_text().splitlines(keepends=True)
                if not line.startswith("coalesce:")
            )
        )
    with fake_vendors(home) as fakes:
        port = free_port()
        env = clean_env(
            **fakes["env"],
            SOLVEFORCE_WEBHOOK_SECRET=SECRET,
            HOOKLINE_HOME=str(home / ".hookline"),
            PREFECT_HOME=str(home / "prefect-home"),
        )
        slack = RemoteFake(fakes["control"]["slack"], ca_file=fakes["env"]["SSL_CERT_FILE"])
        servicenow = RemoteFake(
            fakes["control"]["servicenow"], ca_file=fakes["env"]["SSL_CERT_FILE"]
        )
        with hookline_up(home, env, port):
            url = f"http://127.0.0.1:{port}/webhooks/solveforce"
            payloads = storm(args.events, args.services, args.seconds)
            started = time.monotonic()
            spacing = args.seconds / args.events
            for i, p in enumerate(payloads):
                wait = started + min(i, args.events) * spacing - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                answer = send(p, url=url, secret=SECRET)
                if answer.status_code != 200:
                    raise SystemExit(f"event {i}: {answer.status_code} {answer.text}")
            last_sent = time.monotonic()
            db = home / ".hookline" / "inbox.sqlite3"
            while True:
                with sqlite3.connect(db) as conn:
                    rows = conn.execute("SELECT event_id, status, flow_runs FROM inbox").fetchall()
                if len(rows) == len(payloads) and all(r[1] in FINAL for r in rows):
                    break
                if time.monotonic() - last_sent > args.timeout:
                    raise SystemExit(
                        f"not settled after {args.timeout}s: {Counter(r[1] for r in rows)}"
                    )
                time.sleep(0.2)
            drain = time.monotonic() - last_sent
        messages = slack.state()["messages"]
        incidents = servicenow.state()["incident"]
    alerts = channel_id("#service-alerts")
    per: dict[str, dict[str, Any]] = {}
    for s in range(args.services):
        name = f"Storm Service {s}"
        top = [
            m
            for m in messages
            if m["channel"] == alerts and "thread_ts" not in m and name in json.dumps(m)
        ]
        mine = [i for i in incidents if i.get("correlation_id") == f"solveforce:svc_storm_{s}"]
        green = bool(top) and all(
            "RESOLVED" in m.get("text", "").upper() or "recovered" in m.get("text", "") for m in top
        )
        per[name] = {
            "top_level_posts": len(top),
            "incidents": len(mine),
            "final_matches": green and all(i.get("state") == "6" for i in mine) and len(mine) >= 1,
        }
    statuses = Counter(r[1] for r in rows)
    runs = sum(len(json.loads(r[2])) for r in rows)
    return {
        "coalesce": coalesce,
        "events": len(payloads),
        "runs": runs,
        "statuses": dict(statuses),
        "accounted": statuses["done"] + statuses["superseded"] + statuses["late"] == len(payloads),
        "per_service": per,
        "drain_s": drain,
        "slack_posts_total": sum(
            1 for m in messages if m["channel"] == alerts and "thread_ts" not in m
        ),
        "thread_replies": sum(1 for m in messages if "thread_ts" in m),
    }


def show(r: dict[str, Any]) -> None:
    label = "coalesce on (shipped)" if r["coalesce"] else "coalesce off (baseline)"
    print(f"\n== {label}")
    print(f"events sent {r['events']}, flow runs {r['runs']}, statuses {r['statuses']}")
    print(f"every event accounted for (done/superseded/late, none lost): {r['accounted']}")
    print(f"top-level alert posts {r['slack_posts_total']}, thread replies {r['thread_replies']}")
    for name, p in r["per_service"].items():
        print(
            f"  {name}: top-level posts {p['top_level_posts']}, incidents {p['incidents']}, "
            f"final state matches last event: {p['final_matches']}"
        )
    print(f"drain after the last event: {r['drain_s']:.1f}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--services", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hookline-storm-") as work:
        shipped = run_storm(args, coalesce=True, work=Path(work))
        show(shipped)
        if not args.no_baseline:
            base = run_storm(args, coalesce=False, work=Path(work))
            show(base)
            print("\n== ratios (shipped / baseline)")
            print(f"flow runs {shipped['runs'] / max(1, base['runs']):.2f}")
            print(
                "top-level posts "
                f"{shipped['slack_posts_total'] / max(1, base['slack_posts_total']):.2f}"
            )
            print(f"drain time {shipped['drain_s'] / max(0.001, base['drain_s']):.2f}")


if __name__ == "__main__":
    main()
