"""The dry run (`hookline try`, `hookline test-recipes`) and the real flow agree on every step.

Each case of the table is one recipe and one event. The real flow runs it through the engine
(real Prefect, fake vendors) and the dry run previews it with the same environment; both must
give each step the outcome the table expects (run, skipped, error, not reached, in `steps`
and in `on_failure`), the same error texts, and the same parameters where the dry run knows
them (not the placeholders of vendor outputs and run fields)."""

from __future__ import annotations

import asyncio
import os
import textwrap
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from hookline.config import HooklineConfig
from hookline.recipes import Event
from hookline.recipes.dryrun import StepPreview, _contains_placeholder, preview
from tests.engine.conftest import sample
from tests.engine.harness import EngineHarness, running_engine
from vendor_fakes import FakeVendors

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CONFIG = HooklineConfig(env=["SEM_CHANNEL", "SEM_MISSING"])  # SEM_MISSING is never set
TELL = """
on_failure:
  - id: tell
    uses: slack.post_message
    with:
      channel: "#oncall"
      text: "{{ failure.step }} ({{ failure.uses }}, {{ failure.attempts }}): {{ failure.error }}"
"""


@dataclass
class Case:
    name: str
    steps: str
    steps_expected: dict[str, str]
    on_failure_expected: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # step -> text its error contains
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # the dry run's fakes
    on_failure: str = TELL


CASES = [
    Case(
        "runs",
        """
        steps:
          - id: post
            uses: slack.post_message
            with: {channel: "{{ env.SEM_CHANNEL }}", text: "{{ data.service }} is down"}
          - id: guarded
            uses: slack.post_message
            with:
              channel: "{{ env.SEM_MISSING | default('#fallback') }}"
              text: "{{ 'set' if env.SEM_MISSING is defined else 'unset' }}"
        """,
        {"post": "run", "guarded": "run"},
    ),
    Case(
        "if-false",
        """
        steps:
          - id: quiet
            if: data.service == 'Data'
            uses: slack.post_message
            with: {channel: "#sem", text: "never"}
          - id: post
            uses: slack.post_message
            with: {channel: "#sem", text: "{{ 'ran' if steps.quiet is defined else 'skipped' }}"}
        """,
        {"quiet": "skipped", "post": "run"},
    ),
    Case(
        "unset-env",
        """
        steps:
          - id: post
            uses: slack.post_message
            with: {channel: "{{ env.SEM_MISSING }}", text: "down"}
          - id: after
            uses: slack.post_message
            with: {channel: "#sem", text: "after"}
        """,
        {"post": "error", "after": "not reached"},
        {"tell": "run"},
        {"post": "with.channel: env.SEM_MISSING is not set: the environment has no SEM_MISSING"},
    ),
    Case(
        "if-error",
        """
        steps:
          - id: post
            if: data.nope.deeper == 1
            uses: slack.post_message
            with: {channel: "#sem", text: "down"}
        """,
        {"post": "error"},
        {"tell": "run"},
        {"post": "if: 'dict object' has no attribute 'nope'"},
    ),
    Case(
        "render-error",
        """
        steps:
          - id: post
            uses: slack.post_message
            with: {channel: "#sem", text: "{{ data.nope }}"}
        """,
        {"post": "error"},
        {"tell": "run"},
        {"post": "with.text: 'dict object' has no attribute 'nope'"},
    ),
    Case(
        "wrong-type",
        """
        steps:
          - id: post
            uses: slack.post_message
            with:
              channel: "#sem"
              text: "x"
              thread_ts: "1.2"
              reply_broadcast: "{{ data.service }}"
        """,
        {"post": "error"},
        {"tell": "run"},
        {"post": "with.reply_broadcast: rendered 'Voice', but the parameter takes"},
    ),
    Case(
        "output-of-a-skipped-step",
        """
        steps:
          - id: first
            if: false
            uses: slack.post_message
            with: {channel: "#sem", text: "never"}
          - id: second
            uses: slack.post_message
            with: {channel: "#sem", text: "{{ steps.first.ts }}"}
        """,
        {"first": "skipped", "second": "error"},
        {"tell": "run"},
        {"second": "steps.first is undefined: step 'first' did not run"},
    ),
    Case(
        "output-not-returned",
        """
        steps:
          - id: recall
            uses: memory.recall
            with: {key: "sem:never-stored"}
          - id: reply
            uses: slack.post_message
            with: {channel: "{{ steps.recall.value.channel }}", text: "x"}
        """,
        {"recall": "run", "reply": "error"},
        {"tell": "run"},
        {"reply": "with.channel: 'dict object' has no attribute 'channel'"},
        {"recall": {"found": False, "value": {}}},  # what memory.recall returns
    ),
    Case(
        "continue-on-error",
        """
        steps:
          - id: optional
            uses: slack.post_message
            with: {channel: "{{ env.SEM_MISSING }}", text: "x"}
            continue_on_error: true
          - id: post
            uses: slack.post_message
            with:
              channel: "#sem"
              text: "{{ 'optional failed' if steps.optional is not defined else 'ok' }}"
        """,
        {"optional": "error", "post": "run"},
        {},  # nothing stopped the recipe: on_failure does not run
        {"optional": "env.SEM_MISSING is not set"},
    ),
    Case(
        "on-failure",
        """
        steps:
          - id: alert
            uses: slack.post_message
            with: {channel: "#sem", text: "alert"}
          - id: broken
            uses: slack.post_message
            with: {channel: "#sem", text: "{{ data.nope }}"}
          - id: never
            uses: slack.post_message
            with: {channel: "#sem", text: "never"}
        on_failure:
          - id: in_thread                  # sees the outputs of the steps that ran
            uses: slack.post_message
            with:
              channel: "{{ steps.alert.channel }}"
              thread_ts: "{{ steps.alert.ts }}"
              text: "{{ failure.step }} failed after {{ failure.attempts }}: {{ failure.error }}"
          - id: broken_too                 # stops on_failure like any section
            uses: slack.post_message
            with: {channel: "#oncall", text: "{{ data.nope_either }}"}
          - id: last
            uses: slack.post_message
            with: {channel: "#oncall", text: "last"}
        """,
        {"alert": "run", "broken": "error", "never": "not reached"},
        {"in_thread": "run", "broken_too": "error", "last": "not reached"},
        {
            "broken": "with.text: 'dict object' has no attribute 'nope'",
            "broken_too": "with.text: 'dict object' has no attribute 'nope_either'",
        },
        on_failure="",
    ),
]

FLOW_OUTCOME = {"Completed": "run", "Skipped": "skipped", "Failed": "error"}


def _recipe(case: Case) -> str:
    head = f"""
    name: {case.name}
    on: webhook.test
    when: data.case == '{case.name}'
    defaults: {{ retries: 0, timeout: 5s }}
    """
    return textwrap.dedent(head) + textwrap.dedent(case.steps) + case.on_failure


@pytest.fixture
async def engine(
    prefect_api: str, tmp_path: Path, fakes: FakeVendors
) -> AsyncIterator[tuple[EngineHarness, dict[str, str]]]:
    folder = tmp_path / "recipes"
    folder.mkdir()
    for case in CASES:
        (folder / f"{case.name}.yaml").write_text(_recipe(case), encoding="utf-8")
    environ = {**os.environ, **fakes.env, "SEM_CHANNEL": "#sem"}
    environ.pop("SEM_MISSING", None)
    async with running_engine(
        prefect_api, tmp_path / "home", str(folder), CONFIG, environ
    ) as harness:
        yield harness, environ


async def _flow_steps(
    harness: EngineHarness, run_id: str, count: int
) -> dict[str, tuple[str, str]]:
    """Task run (step) name -> (outcome, state message), once ``count`` are final."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = asyncio.get_running_loop().time() + 10
    while True:
        runs = await harness.client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(run_id)]))
        )
        final = [tr for tr in runs if tr.state is not None and tr.state.is_final()]
        if len(final) >= count or asyncio.get_running_loop().time() > deadline:
            return {
                tr.name: (FLOW_OUTCOME.get(tr.state.name, tr.state.name), tr.state.message or "")
                for tr in final
                if tr.state is not None
            }
        await asyncio.sleep(0.05)


def _known(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters a dry run knows (no placeholder) and a vendor receives (not None)."""
    return {k: v for k, v in params.items() if v is not None and not _contains_placeholder(v)}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_dry_run_and_flow_agree(
    case: Case, engine: tuple[EngineHarness, dict[str, str]], fakes: FakeVendors
) -> None:
    harness, environ = engine
    payload = sample("webhook.test", case=case.name, service="Voice")
    recipe = harness.recipes.get(case.name)
    assert recipe is not None
    dry = preview(
        recipe,
        Event.from_envelope(payload, source="solveforce"),
        environ=environ,
        outputs=case.outputs,
    )
    entry = await harness.run(payload)

    # the dry run gives each step the outcome the table expects
    assert {s.step.id: s.status for s in dry.steps} == case.steps_expected
    dry_errors = {s.step.id: s.error or "" for s in [*dry.steps, *dry.on_failure] if s.error}
    for step_id, text in case.errors.items():
        assert text in dry_errors[step_id], dry_errors[step_id]
    assert set(dry_errors) == set(case.errors)
    failed = dry.failed_step is not None
    if failed:
        assert {s.step.id: s.status for s in dry.on_failure} == case.on_failure_expected

    # ... and so does the flow, with the same error texts
    expected = {
        **case.steps_expected,
        **{f"on_failure.{k}": v for k, v in case.on_failure_expected.items()},
    }
    reached = {k: v for k, v in expected.items() if v != "not reached"}
    flow = await _flow_steps(harness, entry.flow_runs[case.name], len(reached))
    assert {k: outcome for k, (outcome, _) in flow.items()} == reached
    for step_id, error in dry_errors.items():
        name = step_id if step_id in case.steps_expected else f"on_failure.{step_id}"
        assert error in flow[name][1], (error, flow[name][1])
    assert entry.status == ("failed" if failed else "done"), entry.last_error
    if failed:
        assert dry_errors[dry.failed_step or ""] in (entry.last_error or "")

    # what the vendor received is what the dry run rendered
    ran: list[StepPreview] = [
        s
        for s in [*dry.steps, *(dry.on_failure if failed else [])]
        if s.status == "run" and s.step.uses == "slack.post_message"
    ]
    posts = fakes.slack.calls_to("chat.postMessage")
    assert len(posts) == len(ran)
    for step, call in zip(ran, posts, strict=True):
        known = _known(step.params)
        assert {k: call.json.get(k) for k in known} == known, step.step.id
