"""`hookline events` and `hookline events show` tell what happened, against a real Prefect
server: each run's state and link, the steps, no stale errors, the events no recipe matched."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from click.testing import CliRunner
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from hookline.config import get_settings
from hookline.engine.up import claim_home
from hookline.flows import runtime
from hookline.inbox import SQLiteInbox
from hookline.recipes.dryrun import MASK
from tests.engine.conftest import sample
from tests.engine.harness import EngineHarness
from vendor_fakes import FakeVendors

pytestmark = pytest.mark.anyio


@dataclass
class Shown:
    stdout: str
    stderr: str


async def cli(
    home: Path, *args: str, prefect_api: str | None, ui: str | None = None, **env: str
) -> Shown:
    """`hookline ARGS` with these Prefect settings only (``prefect_api`` None: none at all),
    in this process (a subprocess takes seconds to import Prefect) and in a thread: the
    command runs its own event loop next to the engine's."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    from hookline.cli import main

    updates: dict[Any, Any] = {PREFECT_API_URL: prefect_api} if prefect_api else {}
    if ui:
        updates[PREFECT_UI_URL] = ui
    unset = {s for s in (PREFECT_API_URL, PREFECT_UI_URL) if s not in updates}

    def invoke() -> Shown:
        get_settings.cache_clear()
        try:
            with temporary_settings(updates=updates, restore_defaults=unset):
                r = CliRunner().invoke(
                    main,
                    list(args),
                    env={**env, "HOOKLINE_HOME": str(home)},
                    catch_exceptions=False,
                )
        finally:
            get_settings.cache_clear()
        assert r.exit_code == 0, r.output
        return Shown(r.stdout, r.stderr)

    return await asyncio.to_thread(invoke)


def home_of(engine: EngineHarness) -> Path:
    inbox = engine.inbox
    assert isinstance(inbox, SQLiteInbox)
    return inbox.path.parent


async def settled_steps(engine: EngineHarness, run_id: str, count: int) -> None:
    """Wait until the run's ``count`` task runs are recorded in final states: they reach the
    server through its task-run recorder, after the flow run ended."""
    deadline = asyncio.get_running_loop().time() + 15
    while asyncio.get_running_loop().time() < deadline:
        runs = await engine.client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(run_id)]))
        )
        if len(runs) >= count and all(t.state is not None and t.state.is_final() for t in runs):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id}: fewer than {count} final task runs")


def steps_of(shown: dict[str, Any], recipe: str) -> dict[str, str | None]:
    return {s["id"]: s["state"] for s in shown["runs"][recipe]["steps"]}


async def test_links_and_states_come_from_the_running_hookline_up(
    engine: EngineHarness, prefect_api: str
) -> None:
    entry = await engine.run(sample(current_status="degraded"))
    assert entry.status == "done", entry.last_error
    run_id = entry.flow_runs["outage"]
    home = home_of(engine)
    ui = prefect_api.removesuffix("/api")

    # no PREFECT_* setting at all: nothing is known, so bare ids and a one-line hint
    bare = await cli(home, "events", prefect_api=None)
    head = f"done       solveforce:{entry.event_id}  service.status.changed"
    assert head + "\n" in bare.stdout  # a first success: no attempts, no failed tries
    assert f"    outage: {run_id}\n" in bare.stdout
    assert bare.stderr.count("\n") == 1 and "no Prefect address known" in bare.stderr
    assert "hookline up" in bare.stderr

    # `hookline up` is running with this HOOKLINE_HOME: its addresses, in up.json
    claim_home(home, {"prefect_ui_url": ui, "prefect_api_url": prefect_api})
    listed = await cli(home, "events", prefect_api=None)
    assert f"    outage: Completed  {ui}/runs/flow-run/{run_id}\n" in listed.stdout
    assert listed.stderr == ""
    [line] = (await cli(home, "events", "--json", prefect_api=None)).stdout.splitlines()
    assert json.loads(line)["runs"]["outage"] == {
        "id": run_id,
        "url": f"{ui}/runs/flow-run/{run_id}",
        "state": "Completed",
        "state_type": "COMPLETED",
    }

    # PREFECT_UI_URL wins over what `hookline up` wrote; the API is still up's
    other = await cli(home, "events", prefect_api=None, ui="https://prefect.example.com")
    assert f"    outage: Completed  https://prefect.example.com/runs/flow-run/{run_id}" in (
        other.stdout
    )


async def test_each_run_shows_its_own_state_while_the_event_is_dispatched(
    prefect_api: str, tmp_path: Path
) -> None:
    """One run failed, another waits for a retry, a third runs: all three are visible."""
    from prefect import flow, get_client
    from prefect.states import AwaitingRetry, Completed, Failed, Running

    @flow(name="hookline-events-test")
    def placeholder() -> None:  # runs created for it are in no work pool: nobody runs them
        pass

    states = {
        "alpha": Failed(message="step 'post' failed"),
        "beta": AwaitingRetry(),
        "gamma": Running(),
        "delta": Completed(name="Preview"),
    }
    async with get_client() as client:
        runs = {
            recipe: str((await client.create_flow_run(placeholder, state=state)).id)
            for recipe, state in states.items()
        }
    inbox = SQLiteInbox(tmp_path / "inbox.sqlite3")
    async with inbox:
        _, entry_id = await inbox.put(
            "solveforce", "evt_multi", "service.status.changed", b"{}", {}, None
        )
        # it failed once, was replayed, and runs again
        await inbox.mark_failed(entry_id, "alpha: failed: step 'post' failed")
        await inbox.requeue(entry_id)
        [claimed] = await inbox.claim(1, lease_seconds=60)
        assert await inbox.mark_dispatched(claimed.id, runs)

    out = (await cli(tmp_path, "events", prefect_api=prefect_api)).stdout
    ui = prefect_api.removesuffix("/api")
    assert "dispatched solveforce:evt_multi  service.status.changed  (1 failed try)" in out
    for recipe, state in [
        ("alpha", "Failed"),
        ("beta", "AwaitingRetry"),
        ("gamma", "Running"),
        ("delta", "Preview"),
    ]:
        assert f"    {recipe}: {state}  {ui}/runs/flow-run/{runs[recipe]}\n" in out
    # the error is the previous try's: not shown as the current one
    assert "    previous error: alpha: failed: step 'post' failed" in out
    assert "    error:" not in out

    [line] = (await cli(tmp_path, "events", "--json", prefect_api=prefect_api)).stdout.splitlines()
    shown = json.loads(line)
    assert {r: v["state"] for r, v in shown["runs"].items()} == {
        "alpha": "Failed",
        "beta": "AwaitingRetry",
        "gamma": "Running",
        "delta": "Preview",
    }
    assert shown["error"] is None
    assert shown["previous_error"] == "alpha: failed: step 'post' failed"
    assert shown["attempts"] == 1


async def test_more_runs_than_prefect_answers_at_once_all_show_their_state(
    prefect_api: str, tmp_path: Path
) -> None:
    """Prefect refuses a flow-run query for more than 200 runs; 230 entries are all shown."""
    from prefect import flow, get_client
    from prefect.states import Completed

    @flow(name="hookline-events-test")
    def placeholder() -> None:
        pass

    n = 230
    async with get_client() as client:
        sem = asyncio.Semaphore(8)

        async def one() -> str:
            async with sem:
                return str((await client.create_flow_run(placeholder, state=Completed())).id)

        runs = await asyncio.gather(*(one() for _ in range(n)))
    inbox = SQLiteInbox(tmp_path / "inbox.sqlite3")
    async with inbox:
        for i, rid in enumerate(runs):
            _, entry_id = await inbox.put("solveforce", f"evt_{i}", "webhook.test", b"{}", {}, None)
            [claimed] = await inbox.claim(1, lease_seconds=60)
            await inbox.mark_dispatched(claimed.id, {"r": rid})
    done = await cli(tmp_path, "events", "--json", "--limit", "500", prefect_api=prefect_api)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.stderr == ""
    assert len(lines) == n
    assert {d["runs"]["r"]["state"] for d in lines} == {"Completed"}


async def test_prefect_unreachable_is_one_line_and_the_inbox_view_stays(tmp_path: Path) -> None:
    from hookline.engine.prefect_server import free_port

    run_id = str(uuid.uuid4())
    inbox = SQLiteInbox(tmp_path / "inbox.sqlite3")
    async with inbox:
        _, entry_id = await inbox.put("solveforce", "evt_down", "webhook.test", b"{}", {}, None)
        [claimed] = await inbox.claim(1, lease_seconds=60)
        await inbox.mark_dispatched(claimed.id, {"r": run_id})
    api = f"http://127.0.0.1:{free_port()}/api"
    done = await cli(tmp_path, "events", prefect_api=api)
    [problem] = done.stderr.splitlines()
    assert problem.startswith(f"cannot reach Prefect at {api} (ConnectError")
    assert problem.endswith("run states are not shown")
    assert "dispatched solveforce:evt_down  webhook.test" in done.stdout
    assert f"    r: {api.removesuffix('/api')}/runs/flow-run/{run_id}\n" in done.stdout

    shown = await cli(tmp_path, "events", "show", "evt_down", "--json", prefect_api=api)
    assert json.loads(shown.stdout)["runs"]["r"]["state"] is None
    assert shown.stderr.startswith("cannot reach Prefect at")


async def test_an_event_no_recipe_matched_says_so(engine: EngineHarness, prefect_api: str) -> None:
    entry = await engine.run(sample(current_status="healthy"))  # `when` is false
    assert (entry.status, entry.flow_runs, entry.note) == ("done", {}, "no recipe matched")
    home = home_of(engine)

    out = (await cli(home, "events", prefect_api=prefect_api)).stdout
    assert out == (
        f"{entry.received_at:%Y-%m-%d %H:%M:%S}  done       solveforce:{entry.event_id}  "
        "service.status.changed\n    no recipe matched\n"
    )
    listed = json.loads((await cli(home, "events", "--json", prefect_api=prefect_api)).stdout)
    assert (listed["note"], listed["runs"]) == ("no recipe matched", {})

    shown = (await cli(home, "events", "show", entry.event_id, prefect_api=prefect_api)).stdout
    assert "\nnote        no recipe matched (`hookline try` says why, recipe by recipe)\n" in shown
    assert shown.rstrip().endswith("runs: none")

    # replayed, it still matches nothing: the note stays; a matching replay would clear it
    await engine.inbox.requeue(entry.id)
    engine.dispatcher.notify()
    again = await engine.wait_final(entry.id)
    assert (again.status, again.note) == ("done", "no recipe matched")


async def test_a_failed_then_replayed_event_shows_no_stale_error_and_every_step(
    engine: EngineHarness, fakes: FakeVendors, prefect_api: str
) -> None:
    fakes.servicenow.fail_next(100, status=400, path="/api/now/table/incident")
    token = fakes.env["SLACK_BOT_TOKEN"]
    payload = sample(current_status="outage", impact="high")
    payload["data"]["api_token"] = "sk_live_not_for_your_eyes"
    payload["data"]["comment"] = f"pasted by mistake: {token}"
    entry = await engine.run(payload)
    assert entry.status == "failed"
    first_run = entry.flow_runs["outage"]
    await settled_steps(engine, first_run, 3)
    home = home_of(engine)
    env = {"SLACK_BOT_TOKEN": token}
    ui = prefect_api.removesuffix("/api")

    out = (await cli(home, "events", prefect_api=prefect_api, **env)).stdout
    assert f"failed     solveforce:{entry.event_id}  service.status.changed  (1 failed try)" in out
    assert f"    outage: Failed  {ui}/runs/flow-run/{first_run}\n" in out
    assert "    error: outage: failed: " in out

    failed = json.loads(
        (
            await cli(home, "events", "show", entry.event_id, "--json", prefect_api=prefect_api)
        ).stdout
    )
    assert steps_of(failed, "outage") == {
        "alert": "Completed",
        "incident": "Failed",
        "on_failure.tell_oncall": "Completed",
    }
    assert failed["error"].startswith("outage: failed: ")

    fakes.servicenow.reset()  # ServiceNow is back: replay
    await engine.inbox.requeue(entry.id)
    engine.dispatcher.notify()
    entry = await engine.wait_final(entry.id)
    assert entry.status == "done", entry.last_error
    run_id = entry.flow_runs["outage"]
    await settled_steps(engine, run_id, 3)

    out = (await cli(home, "events", prefect_api=prefect_api)).stdout
    assert f"done       solveforce:{entry.event_id}  service.status.changed  (1 failed try)" in out
    assert f"    outage: Completed  {ui}/runs/flow-run/{run_id}\n" in out
    assert "error" not in out
    listed = json.loads((await cli(home, "events", "--json", prefect_api=prefect_api)).stdout)
    assert listed["error"] is None and listed["previous_error"].startswith("outage: failed: ")

    text = (
        await cli(home, "events", "show", entry.event_id, prefect_api=prefect_api, **env)
    ).stdout
    assert f"event                     solveforce:{entry.event_id}\n" in text
    assert "status                    done (after 1 failed try)\n" in text
    assert "earlier error (resolved)  outage: failed: " in text
    assert f'    "api_token": "{MASK}",\n' in text
    assert f'    "comment": "pasted by mistake: {MASK}"\n' in text
    assert token not in text and "sk_live_not_for_your_eyes" not in text
    assert f"  outage: Completed  {ui}/runs/flow-run/{run_id}\n" in text
    assert "    alert     Replayed    already succeeded for this event; outputs reused\n" in text
    assert "    incident  Completed\n" in text
    assert "    link      Completed\n" in text
    [incident] = fakes.servicenow.incidents
    [outputs] = [line for line in text.splitlines() if f'"number": "{incident["number"]}"' in line]
    assert outputs.lstrip().startswith('outputs: {"created": true,')

    shown = json.loads(
        (
            await cli(
                home,
                "events",
                "show",
                f"solveforce:{entry.event_id}",
                "--json",
                **env,
                prefect_api=prefect_api,
            )
        ).stdout
    )
    assert steps_of(shown, "outage") == {
        "alert": "Replayed",
        "incident": "Completed",
        "link": "Completed",
    }
    assert shown["error"] is None
    assert shown["previous_error"].startswith("outage: failed: ")
    assert shown["payload"]["data"]["api_token"] == MASK
    assert shown["headers"] == {}
    assert all(s["in_step_log"] for s in shown["runs"]["outage"]["steps"])


async def test_show_names_skipped_and_preview_steps(
    engine: EngineHarness, prefect_api: str
) -> None:
    rt = runtime.current()
    rt.preview = True  # as `hookline up`, with ServiceNow not configured
    rt.environ = {k: v for k, v in rt.environ.items() if not k.startswith("SERVICENOW_")}
    outage = await engine.run(sample(current_status="outage"))
    degraded = await engine.run(sample(current_status="degraded"))
    assert (outage.status, degraded.status) == ("done", "done")
    await settled_steps(engine, outage.flow_runs["outage"], 3)
    await settled_steps(engine, degraded.flow_runs["outage"], 3)
    home = home_of(engine)

    async def steps(event_id: str) -> dict[str, str | None]:
        done = await cli(home, "events", "show", event_id, "--json", prefect_api=prefect_api)
        return steps_of(json.loads(done.stdout), "outage")

    assert await steps(outage.event_id) == {
        "alert": "Completed",
        "incident": "Preview",
        "link": "Completed",
    }
    assert await steps(degraded.event_id) == {
        "alert": "Completed",
        "incident": "Skipped",
        "link": "Skipped",
    }
    text = (await cli(home, "events", "show", degraded.event_id, prefect_api=prefect_api)).stdout
    assert "    incident  Skipped     if \"data.current_status == 'outage'\" is false\n" in text
