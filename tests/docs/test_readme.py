"""The README, run as written: the two commands, the recipe, the signed curl, `hookline send` and
`hookline events` against a real `hookline up` (fake vendors, the session's Prefect server), in a
folder laid out like a fresh clone. Then every seed sample, sent signed over HTTP, produces the
calls docs/operations.md and the recipes describe."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from hookline import samples
from hookline.config import load_config
from hookline.engine.prefect_server import free_port
from hookline.receiver.verify import sign_solveforce
from hookline.recipes import Event, build_context, load_recipes, render_params
from tests.docs.conftest import (
    REPO,
    Proc,
    bash,
    clean_env,
    code_block,
    console_block,
    start,
)
from vendor_fakes import FakeVendors
from vendor_fakes.slack import channel_id

pytestmark = pytest.mark.slow


def test_quick_start_is_make_up_and_make_test() -> None:
    commands, _ = console_block("README.md", "make up")
    assert commands == ["make up", "make test"]
    # `make -n` prints what the targets run without running them (make test would recurse).
    up = bash("make -n up", cwd=REPO, env=clean_env()).splitlines()
    assert up[-1] == ".venv/bin/hookline up"
    test = bash("make -n test", cwd=REPO, env=clean_env())
    for part in ("ruff check", "ruff format --check", "mypy", "hookline check"):
        assert part in test
    assert ".venv/bin/hookline test-recipes" in test
    assert test.splitlines()[-1] == ".venv/bin/python -m pytest"


def test_the_readme_recipe_loads_matches_and_renders(tmp_path: Path) -> None:
    path = tmp_path / "recipes" / "outage-to-slack.yaml"
    path.parent.mkdir()
    path.write_text(code_block("README.md", "yaml"), encoding="utf-8")
    recipes = load_recipes([path.parent], config=load_config(REPO / "hookline.yaml"))
    [recipe] = recipes.recipes
    degraded = samples.load("service.status.changed")
    assert not recipes.match(Event.from_envelope(degraded, source="solveforce"))[0].matched
    outage = samples.load("service.status.changed")
    outage["data"]["current_status"] = "outage"
    event = Event.from_envelope(outage, source="solveforce")
    assert recipes.match(event)[0].matched
    ctx = build_context(
        event, recipe=recipe, run={"id": "1", "name": "r", "url": "http://ui/runs/1"}, environ={}
    )
    params = render_params(recipe.steps[0], ctx)
    assert params == {
        "channel": "#service-alerts",
        "text": "Primary Voice Service is down (150 users): http://ui/runs/1",
    }


# -- the walkthrough ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fakes() -> Iterator[FakeVendors]:
    with FakeVendors() as f:
        yield f


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder shaped like a fresh clone after `make install`."""
    d = tmp_path_factory.mktemp("clone")
    for name in ("hookline.yaml", "recipes", ".venv", "Makefile", "pyproject.toml"):
        (d / name).symlink_to(REPO / name)
    return d


@pytest.fixture(scope="module")
def up(prefect_api: str, clone: Path, fakes: FakeVendors) -> Iterator[tuple[Proc, int]]:
    """`.venv/bin/hookline up` in the clone (on a free port instead of 8000; Prefect is the
    session's server, which `hookline up` uses when PREFECT_API_URL is set)."""
    port = free_port()
    env = clean_env(**fakes.env, PREFECT_API_URL=prefect_api)
    proc = start(
        [".venv/bin/hookline", "up", "--port", str(port)],
        cwd=clone,
        env=env,
        log=clone / "up.log",
    )
    try:
        proc.wait_http(f"http://127.0.0.1:{port}/healthz")
        proc.wait_for("Ctrl-C stops everything")
        yield proc, port
    finally:
        assert proc.stop() == 0, proc.output()


def statuses(clone: Path) -> dict[str, str]:
    """Delivered events' statuses (timers the outage recipe starts are not deliveries)."""
    with sqlite3.connect(clone / ".hookline" / "inbox.sqlite3") as db:
        query = "SELECT event_id, status FROM inbox WHERE source != 'hookline'"
        return dict(db.execute(query).fetchall())


def wait_settled(clone: Path, timeout: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        now = statuses(clone)
        if now and all(s in ("done", "failed", "superseded", "late") for s in now.values()):
            return now
        assert time.monotonic() < deadline, now
        time.sleep(0.1)


def test_walkthrough(
    up: tuple[Proc, int], clone: Path, fakes: FakeVendors, prefect_api: str
) -> None:
    proc, port = up
    url = f"http://127.0.0.1:{port}/webhooks/solveforce"
    assert f"Hookline receiver  http://127.0.0.1:{port}/webhooks/solveforce" in proc.output()

    # The signed curl, exactly as written (the port is the test's).
    commands, output = console_block("README.md", "secret=")
    script = "\n".join(commands).replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    assert bash(script, cwd=clone, env=clean_env()).strip() == "\n".join(output)
    # ... its HMAC is the receiver's: the same body, signed wrongly, is refused.
    bad = script.replace('-hmac "$secret"', '-hmac "not-the-secret"')
    assert '"invalid_signature"' in bash(bad, cwd=clone, env=clean_env())

    # hookline send, then hookline events (HOOKLINE_URL points send at the test's port).
    commands, _ = console_block("README.md", ".venv/bin/hookline send")
    assert commands == [
        ".venv/bin/hookline send service.status.changed --set data.current_status=outage",
        ".venv/bin/hookline events",
    ]
    env = clean_env(HOOKLINE_URL=url)
    sent = bash(commands[0], cwd=clone, env=env).strip()
    m = re.fullmatch(
        r'service\.status\.changed (evt_\w+) -> 200 \{"status":"accepted","event_id":"(evt_\w+)"\}',
        sent,
    )
    assert m and m.group(1) == m.group(2), sent
    # ... and what it sent is an event the README's recipe reacts to
    with sqlite3.connect(clone / ".hookline" / "inbox.sqlite3") as db:
        [(body,)] = db.execute("SELECT body FROM inbox WHERE event_id = ?", (m.group(1),))
    readme_recipe = clone / "readme-recipe" / "outage-to-slack.yaml"
    readme_recipe.parent.mkdir()
    readme_recipe.write_text(code_block("README.md", "yaml"), encoding="utf-8")
    recipes = load_recipes([readme_recipe.parent], config=load_config(REPO / "hookline.yaml"))
    [match] = recipes.match(Event.from_body(source="solveforce", body=body))
    assert match.matched, match.reason
    # Both are about one service: sent within the outage recipe's quiet period (3 s) they are
    # one burst, run once for the later event (the curl'd one is then `superseded`).
    settled = wait_settled(clone)
    assert settled[m.group(1)] == "done", settled
    assert settled["evt_readme_1"] in ("done", "superseded"), settled
    events = bash(commands[1], cwd=clone, env=env)
    first = settled["evt_readme_1"]
    assert re.search(first + r"\s+solveforce:evt_readme_1\s+service\.status\.changed", events), (
        events
    )
    assert events.count("    service-outage: ") == (2 if first == "done" else 1)
    # no PREFECT_* setting in this shell: the run's state and link come from `hookline up`
    ui = re.escape(prefect_api.removesuffix("/api"))
    assert re.search(
        rf"^    service-outage: Completed  {ui}/runs/flow-run/[0-9a-f-]{{36}}$", events, re.M
    ), events

    # The curl'd outage (impact high) opened a priority-1 incident; one alert for the service
    # (the later event edits it in place), in the default alerts channel, linking its run.
    [incident] = fakes.servicenow.incidents
    assert incident["short_description"] == "SOLVEFORCE Service Outage: Primary Voice Service"
    assert incident["priority"] == "1"
    alerts = [m for m in fakes.slack.messages if m.get("attachments")]
    assert [a["channel"] for a in alerts] == [channel_id("#service-alerts")]
    assert all("/runs/flow-run/" in json.dumps(a["attachments"]) for a in alerts)


def test_every_seed_sample_sent_signed_makes_the_documented_calls(
    up: tuple[Proc, int], clone: Path, fakes: FakeVendors
) -> None:
    _, port = up
    fakes.reset()
    secret = (clone / ".hookline" / "dev-secret").read_text().strip()
    before = set(statuses(clone))
    for name in samples.names():
        payload = samples.load(name)
        payload["event_id"] = f"{payload['event_id']}_all"
        # sent now, as SolveForce would: the walkthrough above already ran a newer event of the
        # sample's service, so the sample's own (2024) time would make it a late arrival
        payload["timestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = json.dumps(payload).encode()
        r = httpx.post(
            f"http://127.0.0.1:{port}/webhooks/solveforce",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-SolveForce-Signature": sign_solveforce(body, secret),
            },
        )
        assert r.json() == {"status": "accepted", "event_id": payload["event_id"]}
    settled = wait_settled(clone)
    assert {k: v for k, v in settled.items() if k not in before} == {
        f"{samples.load(n)['event_id']}_all": "done" for n in samples.names()
    }

    def texts(channel: str) -> list[str]:
        """Top-level messages of ``channel`` (not thread replies)."""
        return [
            m["text"]
            for m in fakes.slack.messages
            if m["channel"] == channel_id(channel) and "thread_ts" not in m
        ]

    # events run concurrently: compare each channel's messages in any order
    seen = [
        (m["channel"], m["text"], m.get("thread_ts"), m.get("edited")) for m in fakes.slack.messages
    ]
    assert sorted(texts("#service-alerts")) == [
        "MAJOR: SOLVEFORCE Primary Voice Service is degraded",
        "MAJOR: Support ticket tkt_456789: Voice Quality Issues",
    ], seen
    assert texts("#billing") == [
        "WARNING: Usage threshold exceeded: bandwidth usage on svc_data_001"
    ]
    provisioned, maintenance = sorted(texts("#service-ops"))
    assert maintenance == "INFO: Scheduled maintenance: Network Equipment Upgrade"
    assert provisioned.startswith(
        ":white_check_mark: New SolveForce service *svc_data_002* (fiber_internet, 1000mbps)"
    )
    oncall = texts("#oncall")
    assert oncall[0].startswith("CRITICAL: SOLVEFORCE security alert (critical)")
    # The resolution found the ticket's thread in Hookline's memory and replied in it.
    ticket = next(m for m in fakes.slack.messages if "Support ticket" in m["text"])
    [reply] = [m for m in fakes.slack.messages if m.get("thread_ts") == ticket["ts"]]
    assert reply["text"] == (
        ":white_check_mark: Ticket tkt_456789 resolved by John Smith in 4h 30m: "
        "Replaced faulty network equipment (customer satisfaction 5/5)"
    )
    assert texts("#support") == []
    [incident] = fakes.servicenow.incidents
    assert (incident["category"], incident["priority"]) == ("Security", "1")
    assert fakes.inventory.services["svc_data_002"]["status"] == "active"
    assert sorted((c.method, c.path) for c in fakes.echo.calls) == [
        ("POST", "/accounting/invoices"),
        ("POST", "/accounting/payments"),
    ]
