from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from hookline.config import HooklineConfig, load_config
from hookline.connectors import ACTIONS
from hookline.recipes import (
    Event,
    EventError,
    RecipeLoadError,
    RecipeRenderError,
    build_context,
    load_recipes,
    render_params,
)
from hookline.recipes.templating import Template
from hookline.samples import load as sample

REPO = Path(__file__).resolve().parents[2]
Write = Callable[[str, str], Path]

SIMPLE = """
name: {name}
on: {on}
{extra}
steps:
  - id: a
    uses: slack.post_message
    with: {{channel: "#x", text: "{{{{ event_type }}}}"}}
"""


def recipe(name: str, on: str = "service.status.changed", extra: str = "") -> str:
    return SIMPLE.format(name=name, on=on, extra=extra)


def event(event_type: str = "service.status.changed", source: str = "solveforce") -> Event:
    body = sample(event_type) if "." in event_type else {"event_type": event_type}
    body.setdefault("event_id", "evt_x")
    return Event.from_envelope(body, source=source, event_type=event_type)


def test_shipped_recipes_pass_with_the_real_connectors() -> None:
    cfg = load_config(REPO / "hookline.yaml")
    rs = load_recipes([REPO / "recipes"], config=cfg, actions=ACTIONS)
    assert rs.get("service-outage") is not None


def test_real_connectors_catch_a_bad_parameter(write: Write) -> None:
    path = write(
        "r.yaml",
        """
        name: r
        on: x
        steps:
          - id: a
            uses: slack.post_message
            with: {channel: "#x", txt: hi}
        """,
    )
    with pytest.raises(RecipeLoadError) as info:
        load_recipes([path], config=HooklineConfig(), actions=ACTIONS)
    assert "takes no parameter 'txt'; did you mean 'text'?" in str(info.value)


def test_folders_are_searched_recursively_but_tests_and_hidden_are_skipped(
    write: Write, tmp_path: Path
) -> None:
    write("recipes/a.yaml", recipe("a"))
    write("recipes/team/b.yml", recipe("b"))
    write("recipes/tests/a-test.yaml", "this: is not a recipe")
    write("recipes/.hidden/c.yaml", "nor: this")
    write("recipes/notes.txt", "ignored")
    rs = load_recipes([tmp_path / "recipes"], config=HooklineConfig(), actions=ACTIONS)
    assert [r.name for r in rs.recipes] == ["a", "b"]


def test_hookline_recipes_replaces_the_default(
    write: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write("one/a.yaml", recipe("a"))
    write("two.yaml", recipe("two"))
    write("recipes/default.yaml", recipe("default"))
    monkeypatch.chdir(tmp_path)
    assert [r.name for r in load_recipes(config=HooklineConfig(), actions=ACTIONS)] == ["default"]
    monkeypatch.setenv("HOOKLINE_RECIPES", f"{tmp_path / 'one'}:{tmp_path / 'two.yaml'}")
    from hookline.config import get_settings

    get_settings.cache_clear()
    assert [r.name for r in load_recipes(config=HooklineConfig(), actions=ACTIONS)] == [
        "a",
        "two",
    ]


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RecipeLoadError, match="no such file or folder"):
        load_recipes([tmp_path / "nope"], config=HooklineConfig(), actions=ACTIONS)


def test_on_is_a_key_not_a_yaml_boolean(write: Write) -> None:
    path = write("r.yaml", recipe("r", on="'on'"))
    (r,) = load_recipes([path], config=HooklineConfig(), actions=ACTIONS).recipes
    assert r.on == ("on",)


def test_step_defaults_are_applied(write: Write) -> None:
    path = write(
        "r.yaml",
        """
        name: r
        on: x
        defaults: {retries: 1, retry_backoff: 1m30s, timeout: 500ms}
        steps:
          - id: a
            uses: slack.post_message
            with: {channel: "#x"}
          - id: b
            uses: slack.post_message
            with: {channel: "#x"}
            retries: 0
            timeout: 2
            continue_on_error: true
        on_failure:
          - uses: slack.post_message
            with: {channel: "#x"}
        """,
    )
    (r,) = load_recipes([path], config=HooklineConfig(), actions=ACTIONS).recipes
    a, b = r.steps
    assert (a.retries, a.retry_backoff, a.timeout, a.continue_on_error) == (1, 90.0, 0.5, False)
    assert (b.retries, b.retry_backoff, b.timeout, b.continue_on_error) == (0, 90.0, 2.0, True)
    assert r.on_failure[0].id == "on_failure_1"
    assert r.step("b") is b


def test_defaults_when_unset(write: Write) -> None:
    (r,) = load_recipes(
        [write("r.yaml", recipe("r"))], config=HooklineConfig(), actions=ACTIONS
    ).recipes
    s = r.steps[0]
    assert (s.retries, s.retry_backoff, s.timeout) == (3, 2.0, 30.0)


def test_templates_are_compiled_once_at_load(write: Write) -> None:
    (r,) = load_recipes(
        [write("r.yaml", recipe("r"))], config=HooklineConfig(), actions=ACTIONS
    ).recipes
    compiled = r.steps[0].compiled_with["text"]
    assert isinstance(compiled, Template)
    ctx = build_context(event(), recipe=r)
    render_params(r.steps[0], ctx)
    assert r.steps[0].compiled_with["text"] is compiled


def test_render_params_coerces_to_the_parameter_type(write: Write) -> None:
    path = write(
        "r.yaml",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            uses: servicenow.create_incident
            with:
              short_description: "{{ data.affected_users }}"
              priority: "{{ 1 if data.impact == 'medium' else 2 }}"
          - id: b
            uses: servicenow.create_incident
            with:
              short_description: x
              priority: "{{ data.impact }}"
        """,
    )
    r = load_recipes([path], config=HooklineConfig(), actions=ACTIONS).recipes[0]
    ctx = build_context(event(), recipe=r)
    assert render_params(r.steps[0], ctx) == {"short_description": "150", "priority": 1}
    with pytest.raises(RecipeRenderError) as info:
        render_params(r.steps[1], ctx)
    assert "recipe 'r' step 'b'" in str(info.value)
    assert "with.priority: rendered 'medium', but the parameter takes" in str(info.value)


def test_env_is_filtered_by_the_allowlist(write: Write) -> None:
    path = write(
        "r.yaml",
        """
        name: r
        on: x
        steps:
          - id: a
            uses: slack.post_message
            with: {channel: "{{ env.SLACK_ALERT_CHANNEL }}"}
        """,
    )
    cfg = HooklineConfig(env=["SLACK_ALERT_CHANNEL"])
    r = load_recipes([path], config=cfg, actions=ACTIONS).recipes[0]
    environ = {"SLACK_ALERT_CHANNEL": "#alerts", "SLACK_BOT_TOKEN": "xoxb-secret"}
    ctx = build_context(event(), recipe=r, environ=environ)
    assert ctx["env"] == {"SLACK_ALERT_CHANNEL": "#alerts"}
    assert render_params(r.steps[0], ctx) == {"channel": "#alerts"}
    with pytest.raises(RecipeRenderError, match="SLACK_ALERT_CHANNEL"):
        render_params(r.steps[0], build_context(event(), recipe=r, environ={}))


# -- matcher --------------------------------------------------------------------------------


def _set(write: Write, *texts: str) -> list[Path]:
    return [write(f"r{i}.yaml", t) for i, t in enumerate(texts)]


def test_match_by_type_list_glob_and_source_in_name_order(write: Write) -> None:
    paths = _set(
        write,
        recipe("zeta", on="'billing.*'"),
        recipe("alpha", on="[service.status.changed, billing.payment.processed]"),
        recipe("mid", on="'*'", extra="source: other"),
        recipe("exact", on="billing.invoice.generated"),
    )
    rs = load_recipes(paths, config=HooklineConfig(), actions=ACTIONS)
    results = rs.match(event("billing.payment.processed"))
    assert [m.recipe.name for m in results] == ["alpha", "exact", "mid", "zeta"]
    assert [m.matched for m in results] == [True, False, False, True]
    assert "matches 'billing.*'" in results[3].reason
    assert "source 'solveforce' is not other" in results[2].reason
    assert [r.name for r in rs.matching(event("billing.invoice.generated"))] == ["exact", "zeta"]


def test_when_true_false(write: Write) -> None:
    paths = _set(
        write,
        recipe("degraded", extra="when: data.current_status in ['degraded', 'outage']"),
        recipe("outage", extra="when: data.current_status == 'outage'"),
    )
    rs = load_recipes(paths, config=HooklineConfig(), actions=ACTIONS)
    yes, no = rs.match(event())
    assert yes.matched and "is True" in yes.reason
    assert not no.matched and "but when" in no.reason and no.error is None


def test_when_error_is_reported_with_recipe_and_event_id(
    write: Write, caplog: pytest.LogCaptureFixture
) -> None:
    paths = _set(write, recipe("broken", extra="when: data.nope > 1"), recipe("fine"))
    rs = load_recipes(paths, config=HooklineConfig(), actions=ACTIONS)
    with caplog.at_level(logging.ERROR, logger="hookline.recipes"):
        broken, fine = rs.match(event())
    assert fine.matched
    assert not broken.matched and broken.error is not None
    msg = str(broken.error)
    assert "recipe 'broken'" in msg and "'evt_1234567890'" in msg and "nope" in msg
    assert any("evt_1234567890" in r.getMessage() for r in caplog.records)


def test_disabled_recipe_never_matches(write: Write) -> None:
    rs = load_recipes(
        _set(write, recipe("off", extra="enabled: false")),
        config=HooklineConfig(),
        actions=ACTIONS,
    )
    (m,) = rs.match(event())
    assert not m.matched and "disabled" in m.reason


def test_order_key(write: Write) -> None:
    rs = load_recipes(
        _set(write, recipe("o", extra='order_by: "{{ data.service_id }}"')),
        config=HooklineConfig(),
        actions=ACTIONS,
    )
    r = rs.recipes[0]
    assert r.order_key(build_context(event(), recipe=r)) == "svc_voice_001"


# -- events ---------------------------------------------------------------------------------


def test_event_from_body() -> None:
    e = Event.from_body(
        source="solveforce", body=b'{"event_type": "a.b", "event_id": "e1", "data": {"x": 1}}'
    )
    assert (e.event_type, e.event_id, e.data, e.account) == ("a.b", "e1", {"x": 1}, {})
    assert e.timestamp is None
    e2 = Event.from_body(source="gh", body=b'{"action": "opened"}', event_type="pr", event_id="9")
    assert e2.data == {"action": "opened"}
    ts = Event.from_envelope(sample("service.status.changed"), source="s").timestamp
    assert ts is not None and ts.isoformat() == "2024-01-15T10:30:00+00:00"


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"not json", "not JSON"),
        (b'{"event_id": "1"}', "no event_type"),
        (b'{"type": "x"}', "no event_id"),
    ],
)
def test_event_errors(body: bytes, match: str) -> None:
    with pytest.raises(EventError, match=match):
        Event.from_body(source="s", body=body)
