"""The run artifact on its own: its key, what it shows of a failure, a preview and the event,
and the Next: line for the errors the real connectors raise. No Prefect server needed."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from hookline.config import load_config
from hookline.connectors import build_client
from hookline.connectors._http import error_for_exception, error_for_status
from hookline.connectors.errors import ConnectorError
from hookline.errors import ConfigError
from hookline.flows import artifact
from hookline.flows.artifact import PayloadSettings, artifact_key, next_step, payload_settings
from hookline.flows.recipe_flow import StepRecord
from hookline.recipes import Event, Recipe, build_context, load_recipes, render_params
from hookline.recipes.dryrun import MASK

RECIPE = """\
name: outage
on: service.status.changed
order_by: "{{ data.service_id }}"
steps:
  - id: alert
    uses: slack.post_message
    with: { channel: "#alerts", text: "{{ data.service_name }}" }
  - id: incident
    uses: servicenow.create_incident
    with:
      short_description: "{{ data.nope }}"
"""


@pytest.fixture
def recipe(tmp_path: Path) -> Recipe:
    (tmp_path / "outage.yaml").write_text(RECIPE)
    return load_recipes([tmp_path]).recipes[0]


def event(**data: Any) -> Event:
    body = {
        "event_id": "evt_42",
        "event_type": "service.status.changed",
        "timestamp": "2024-01-15T10:30:00Z",
        "account": {"account_id": "acc_1", "api_key": "k-123456"},
        "data": {"service_id": "svc_9", "service_name": "Voice", **data},
    }
    return Event.from_body(source="solveforce", body=json.dumps(body))


def failed(error: str, step: str = "incident", attempts: int = 1) -> dict[str, Any]:
    uses = "slack.post_message" if step == "alert" else "servicenow.create_incident"
    return {"step": step, "uses": uses, "error": error, "attempts": attempts}


def story(
    recipe: Recipe, ev: Event, records: list[StepRecord], failure: Any = None, **kw: Any
) -> str:
    settings = kw.pop("settings", PayloadSettings())
    return artifact.story(recipe, ev, {}, records, failure, settings=settings, **kw)


# -- key ----------------------------------------------------------------------------------------


def test_the_key_is_a_valid_prefect_artifact_key_named_after_recipe_and_event() -> None:
    from prefect.types.names import ArtifactKey

    valid = TypeAdapter(ArtifactKey)
    assert artifact_key("outage", "evt_1234") == "hookline-outage-evt-1234"
    assert artifact_key("billing.usage", "Evt:ABC/1") == "hookline-billing-usage-evt-abc-1"
    long_a, long_b = (
        artifact_key("outage", "x" * 300 + "a"),
        artifact_key("outage", "x" * 300 + "b"),
    )
    assert len(long_a) == artifact.KEY_MAX and long_a != long_b  # cut, told apart by a digest
    for key in (long_a, artifact_key("é ü", "évt_ü!")):
        assert valid.validate_python(key) == key


# -- Next: from the errors connectors really raise --------------------------------------------


def _not_configured() -> str:
    try:
        build_client("servicenow", None, environ={"SERVICENOW_INSTANCE": "acme"})
    except ConnectorError as exc:
        return str(exc)
    raise AssertionError("a half-configured servicenow built a client")


def _template_error(recipe: Recipe, ev: Event) -> str:
    step = recipe.step("incident")
    try:
        render_params(step, build_context(ev, recipe=recipe, steps={}, environ={}))
    except Exception as exc:
        return f"with: {exc}"
    raise AssertionError("an undefined variable rendered")


def test_next_names_the_fix_the_error_points_at_then_the_replay(recipe: Recipe) -> None:
    ev = event()
    replay = "`hookline replay evt_42 --source solveforce`"
    http_500 = error_for_status("servicenow", 500, {}, "boom", what="POST /api/now/table/incident")
    http_401 = error_for_status("servicenow", 401, {}, "no", what="POST /api/now/table/incident")
    http_400 = error_for_status("servicenow", 400, {}, "bad field", what="POST /x")
    refused = error_for_exception(
        "slack", ConnectionRefusedError(111, "refused"), what="chat.postMessage"
    )
    cases = {
        _not_configured(): "set SERVICENOW_USERNAME and SERVICENOW_PASSWORD for the worker",
        str(http_401): "fix servicenow's credentials (docs/connectors.md#servicenow)",
        str(http_500): "servicenow was unreachable or failing (4 attempt(s)): retry later",
        str(refused): "slack was unreachable or failing",
        _template_error(recipe, ev): "fix the template of step `incident` (outage.yaml:",
        str(http_400): "servicenow refused the request: fix what the error names (step "
        "`incident`'s parameters at outage.yaml:",
    }
    for error, fix in cases.items():
        step = "alert" if error.startswith("slack") else "incident"
        text = next_step(recipe, ev, failed(error, step, attempts=4))
        assert text.startswith(fix), (error, text)
        assert replay in text, text
    cancelled = next_step(recipe, ev, {"step": "incident", "uses": "x", "cancelled": True})
    assert cancelled.startswith(f"{replay} runs the steps that did not run")


# -- the story ----------------------------------------------------------------------------------


def test_a_failure_has_its_own_section_with_the_whole_error_wrapped(recipe: Recipe) -> None:
    url = "https://acme.service-now.com/api/now/table/incident/" + "a" * 90
    error = f"servicenow: POST {url} failed: HTTP 400: " + "field is invalid; " * 30
    records = [
        StepRecord("alert", "slack.post_message", "completed", 1, outputs={"ts": "1.2"}),
        StepRecord("incident", "servicenow.create_incident", "failed", 1, error=error),
    ]
    md = story(recipe, event(), records, failed(error))
    assert "**Outcome**: FAILED at step `incident`" in md
    failure = md.split("## Failure", 1)[1].split("## Steps", 1)[0]
    [shown] = [line for line in failure.splitlines() if "HTTP 400" in line]
    assert shown.startswith("`") and "```" not in failure  # inline code: both UIs wrap it
    assert shown.strip("`").replace(artifact.ZWSP, "") == error  # whole, long word included
    assert max(len(w) for w in shown.split()) > 100  # ... which has break opportunities:
    assert all(len(part) <= artifact.LONG_WORD for part in shown.split(artifact.ZWSP)[1:-1])
    assert "**Next:** servicenow refused the request" in failure
    assert (
        "| incident | `servicenow.create_incident` | failed | 1 | error: see Failure above |" in md
    )


def test_a_tolerated_failure_and_a_preview_are_said_in_the_outcome(recipe: Recipe) -> None:
    records = [
        StepRecord(
            "alert",
            "slack.post_message",
            "preview",
            reason="preview: slack is not configured; nothing was sent",
            outputs={"ts": "<preview:alert.ts>"},  # a placeholder: not shown (nor a link)
            params={"channel": "#a", "text": "hi"},
        ),
        StepRecord("incident", "servicenow.create_incident", "failed", 1, error="HTTP 400: no"),
    ]
    md = story(recipe, event(), records)
    assert (
        "**Outcome**: PREVIEW: nothing was sent (slack is not configured); step(s) `incident` "
        "failed (see below)"
    ) in md
    assert "| alert | `slack.post_message` | preview | 0 | see below |" in md
    assert (
        "- `alert`: preview: slack is not configured; nothing was sent; would send: "
        '`{"channel": "#a", "text": "hi"}`'
    ) in md
    assert "<preview:" not in md
    assert "- `incident`: failed after 1 attempt(s): `HTTP 400: no`" in md
    real = [StepRecord("memo", "memory.remember", "completed", 1), records[0]]
    assert artifact.outcome(None, real) == (
        "PREVIEW: nothing was sent to slack (not configured); the other steps ran"
    )


def test_the_event_fields_and_the_payload_are_shown_masked(recipe: Recipe) -> None:
    ev = event(ssn="123-45-6789", note="token xoxb-secret-value here", password="hunter22")
    md = story(
        recipe,
        ev,
        [],
        settings=payload_settings_of({"mask": ["SSN"]}),
        secrets=["xoxb-secret-value"],
    )
    assert "- **type**: `service.status.changed`" in md
    assert "- **id**: `evt_42`" in md
    assert "- **time**: `2024-01-15T10:30:00Z`" in md
    assert f'- **account**: `{{"account_id": "acc_1", "api_key": "{MASK}"}}`' in md
    assert "- **order key**: `svc_9`" in md
    payload = md.split("```json\n", 1)[1].split("\n```", 1)[0]
    assert json.loads(payload)["data"] == {
        "service_id": "svc_9",
        "service_name": "Voice",
        "ssn": MASK,
        "note": f"token {MASK} here",
        "password": MASK,
    }
    assert "hunter22" not in md and "xoxb-secret-value" not in md and "k-123456" not in md

    off = story(recipe, ev, [], settings=payload_settings_of({"payload": False}))
    assert "```json" not in off and "123-45-6789" not in off
    assert "Not shown: hookline.yaml sets `artifacts.payload: false`." in off


def test_a_huge_payload_is_cut_and_says_so(recipe: Recipe) -> None:
    md = story(recipe, event(blob=["x" * 100] * 5000), [])
    assert len(md) < artifact.PAYLOAD_MAX_CHARS + 5_000
    assert "The payload is 5" in md and f"the first {artifact.PAYLOAD_MAX_CHARS:,} are shown" in md


# -- settings -----------------------------------------------------------------------------------


def payload_settings_of(section: dict[str, Any]) -> PayloadSettings:
    from hookline.config import HooklineConfig

    return payload_settings(HooklineConfig(artifacts=section))


def test_the_artifacts_section_is_read_from_hookline_yaml_and_validated(tmp_path: Path) -> None:
    path = tmp_path / "hookline.yaml"
    path.write_text(
        textwrap.dedent("""
        artifacts:
          payload: true
          mask: [customer_ssn, iban]
    """)
    )
    assert payload_settings(load_config(path)) == PayloadSettings(mask=["customer_ssn", "iban"])
    assert payload_settings(None) == PayloadSettings(payload=True, mask=[])

    path.write_text("artifacts:\n  payload: no-thanks\n  masks: [x]\n")
    with pytest.raises(ConfigError) as err:
        payload_settings(load_config(path))
    message = str(err.value)
    assert message.startswith(f"{path}: artifacts.payload: Input should be a valid boolean")
    assert "artifacts.masks: Extra inputs are not permitted" in message
    assert message.endswith("(valid keys: payload: true|false, mask: [key names])")
