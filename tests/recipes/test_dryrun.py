from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from hookline import samples
from hookline.cli import main
from hookline.config import HooklineConfig
from hookline.connectors import ACTIONS
from hookline.recipes import Event, load_recipes
from hookline.recipes.dryrun import MASK, mask, preview, secret_values
from hookline.recipes.testing import deep_merge

REPO = Path(__file__).resolve().parents[2]
Write = Callable[[str, str], Path]

FAILING = """
name: r
on: service.status.changed
steps:
  - id: first
    uses: slack.post_message
    with: {channel: "#x", text: "{{ data.service_name }}"}
  - id: broken
    uses: slack.post_message
    with: {channel: "#x", text: "{{ data.no_such_field }}"}
  - id: after
    uses: slack.post_message
    with: {channel: "#x"}
on_failure:
  - uses: slack.post_message
    with: {channel: "#oncall", text: "{{ failure.step }}: {{ failure.error }}"}
"""


def test_preview_of_a_failing_step_runs_on_failure_with_the_real_failure(write: Write) -> None:
    rs = load_recipes([write("r.yaml", FAILING)], config=HooklineConfig(), actions=ACTIONS)
    event = Event.from_envelope(samples.load("service.status.changed"), source="solveforce")
    p = preview(rs.recipes[0], event, environ={})
    assert [s.status for s in p.steps] == ["run", "error", "not reached"]
    assert p.failed_step == "broken" and not p.ok
    assert "has no attribute 'no_such_field'" in (p.steps[1].error or "")
    (f,) = p.on_failure
    assert f.params["text"].startswith("broken: recipe 'r' step 'broken'")


def test_preview_of_an_unmatched_recipe_has_no_steps_unless_forced(write: Write) -> None:
    rs = load_recipes([write("r.yaml", FAILING)], config=HooklineConfig(), actions=ACTIONS)
    event = Event.from_envelope(samples.load("billing.invoice.generated"), source="solveforce")
    assert preview(rs.recipes[0], event, environ={}).steps == []
    assert len(preview(rs.recipes[0], event, environ={}, force=True).steps) == 3


def test_mask() -> None:
    environ = {"SLACK_BOT_TOKEN": "xoxb-123456", "CHANNEL": "#general", "API_KEY": "abc"}
    secrets = secret_values(environ)
    assert secrets == ["xoxb-123456"]  # too short to mask safely: "abc"
    value = {"text": "token xoxb-123456", "headers": {"Authorization": "Bearer x"}, "n": 1}
    assert mask(value, secrets) == {
        "text": f"token {MASK}",
        "headers": {"Authorization": MASK},
        "n": 1,
    }


def test_deep_merge_keeps_the_base_intact() -> None:
    base = {"data": {"a": 1, "b": {"c": 2}}, "x": [1]}
    out = deep_merge(base, {"data": {"b": {"d": 3}}, "x": [2]})
    assert out == {"data": {"a": 1, "b": {"c": 2, "d": 3}}, "x": [2]}
    assert base == {"data": {"a": 1, "b": {"c": 2}}, "x": [1]}


@pytest.mark.parametrize("event_type", samples.names())
def test_try_on_every_sample_payload(event_type: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    r = CliRunner().invoke(main, ["try", "--sample", event_type], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert f"event {event_type} " in r.output
    assert "recipe" in r.output.splitlines()[-1]


def test_fingerprint_changes_with_the_files(write: Write) -> None:
    path = write("r.yaml", FAILING)
    one = load_recipes([path], config=HooklineConfig(), actions=ACTIONS).fingerprint
    path.write_text(path.read_text() + "\n# edited\n")
    two = load_recipes([path], config=HooklineConfig(), actions=ACTIONS).fingerprint
    assert len(one) == 64 and one != two


def test_try_collapses_recipes_for_other_event_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    r = CliRunner().invoke(main, ["try", "--sample", "webhook.test"], catch_exceptions=False)
    assert "recipes for other event types: " in r.output and "(-v lists them)" in r.output
    r = CliRunner().invoke(main, ["try", "--sample", "webhook.test", "-v"])
    assert "for other event types" not in r.output
    assert "[no match] service-outage" in r.output


def test_unset_env_in_a_dry_run_is_missing_as_in_a_real_run(write: Write) -> None:
    text = """
    name: r
    on: service.status.changed
    steps:
      - id: a
        if: (env.SLACK_ALERT_CHANNEL | default('')) != ''
        uses: slack.post_message
        with: {channel: "{{ env.SLACK_ALERT_CHANNEL }}"}
      - id: b
        uses: slack.post_message
        with: {channel: "{{ env.SLACK_ALERT_CHANNEL | default('#fallback') }}"}
      - id: c
        uses: slack.post_message
        with:
          channel: "{{ env.SLACK_ALERT_CHANNEL if env.SLACK_ALERT_CHANNEL is defined else '#c' }}"
      - id: d
        uses: slack.post_message
        with: {channel: "{{ env.SLACK_ONCALL_CHANNEL }}/x"}
      - id: e
        uses: slack.post_message
        with: {channel: "#e"}
    """
    cfg = HooklineConfig(env=["SLACK_ALERT_CHANNEL", "SLACK_ONCALL_CHANNEL"])
    rs = load_recipes([write("r.yaml", text)], config=cfg, actions=ACTIONS)
    event = Event.from_envelope(samples.load("service.status.changed"), source="solveforce")
    p = preview(rs.recipes[0], event, environ={})
    a, b, c, d, e = p.steps
    assert a.status == "skipped"
    assert (b.params, c.params) == ({"channel": "#fallback"}, {"channel": "#c"})
    assert d.status == "error" and e.status == "not reached" and not p.ok
    assert d.error == (
        f"recipe 'r' step 'd' ({rs.recipes[0].path}:15): with.channel: env.SLACK_ONCALL_CHANNEL "
        "is not set: the environment has no SLACK_ONCALL_CHANNEL (or the env: list of "
        "hookline.yaml does not allow it); set it, or write env.SLACK_ONCALL_CHANNEL | default(...)"
    )
    a, b, c, d, e = preview(rs.recipes[0], event, environ={"SLACK_ALERT_CHANNEL": "#a"}).steps
    assert a.params == b.params == c.params == {"channel": "#a"}
    p = preview(rs.recipes[0], event, environ={"SLACK_ONCALL_CHANNEL": "#o"})
    assert p.ok and p.steps[3].params == {"channel": "#o/x"}
