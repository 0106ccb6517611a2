from __future__ import annotations

from typing import Any

import pytest

from hookline.recipes import (
    Event,
    RecipeEvalError,
    RecipeRenderError,
    build_context,
    evaluate,
    render_template,
)
from hookline.samples import load as sample


@pytest.fixture
def ctx() -> dict[str, Any]:
    event = Event.from_envelope(sample("service.status.changed"), source="solveforce")
    return build_context(event)


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ data.__class__ }}",
        "{{ data.service_name.__class__.__base__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ '{0.__class__}'.format(data) }}",
        "{% set x = data.update({'a': 1}) %}{{ x }}",
        "{{ data.clear() }}",
        "{{ '-' * 10**9 }}",
        "{{ [0] * 10**7 }}",
        "{{ 2 ** 100000 }}",
    ],
)
def test_sandbox_keeps_templates_away_from_python_internals(
    ctx: dict[str, Any], template: str
) -> None:
    with pytest.raises(RecipeRenderError) as info:
        render_template(template, ctx)
    assert "unsafe" in str(info.value) or "not allowed" in str(info.value)


def test_sandbox_does_not_mutate_the_event(ctx: dict[str, Any]) -> None:
    with pytest.raises(RecipeRenderError):
        render_template("{{ data.pop('service_id') }}", ctx)
    assert ctx["data"]["service_id"] == "svc_voice_001"


def test_strict_undefined_is_an_error_not_an_empty_string(ctx: dict[str, Any]) -> None:
    with pytest.raises(RecipeRenderError, match="has no attribute 'nope'"):
        render_template("Service {{ data.nope }} down", ctx)
    with pytest.raises(RecipeRenderError, match="has no attribute 'nope'"):
        render_template("{{ data.nope }}", ctx)  # a single node, rendered natively
    with pytest.raises(RecipeRenderError, match="'nope' is undefined"):
        render_template("{{ [nope] }}", ctx)  # hidden inside a list
    with pytest.raises(RecipeEvalError, match="has no attribute 'nope'"):
        evaluate("data.nope == 1", ctx)


def test_default_and_is_defined_handle_expected_absence(ctx: dict[str, Any]) -> None:
    assert render_template("{{ data.nope | default('n/a') }}", ctx) == "n/a"
    assert evaluate("data.nope is defined", ctx) is False


def test_native_types(ctx: dict[str, Any]) -> None:
    assert render_template("{{ 1 if data.impact == 'medium' else 2 }}", ctx) == 1
    assert render_template("{{ data.affected_users }}", ctx) == 150
    assert render_template("{{ data.affected_users > 100 }}", ctx) is True
    assert render_template("{{ data }}", ctx)["service_id"] == "svc_voice_001"
    assert render_template("{{ [data.service_id, 2] }}", ctx) == ["svc_voice_001", 2]
    assert render_template("users: {{ data.affected_users }}", ctx) == "users: 150"
    assert render_template("{{ none }}", ctx) is None


def test_strings_are_never_literal_evaluated() -> None:
    event = Event.from_envelope(
        {"event_type": "t", "event_id": "e", "data": {"zip": "01234", "n": "7", "l": "[1]"}},
        source="s",
    )
    ctx = build_context(event)
    assert render_template("{{ data.zip }}", ctx) == "01234"
    assert render_template("{{ data.n }}", ctx) == "7"
    assert render_template("{{ data.l }}", ctx) == "[1]"


def test_payload_keys_win_over_dict_methods() -> None:
    event = Event.from_envelope(
        {"event_type": "t", "event_id": "e", "data": {"items": [1, 2], "keys": "k"}},
        source="s",
    )
    ctx = build_context(event)
    assert render_template("{{ data.items }}", ctx) == [1, 2]
    assert render_template("{{ data.keys }}", ctx) == "k"


def test_a_function_is_not_a_value(ctx: dict[str, Any]) -> None:
    with pytest.raises(RecipeRenderError, match="did you forget to call it"):
        render_template("{{ data.values }}", ctx)


def test_template_context_names(ctx: dict[str, Any]) -> None:
    assert render_template("{{ event_type }}/{{ event_id }}/{{ source }}", ctx) == (
        "service.status.changed/evt_1234567890/solveforce"
    )
    assert render_template("{{ timestamp }}", ctx) == "2024-01-15T10:30:00Z"
    assert render_template("{{ account.name }}", ctx) == "Acme Corporation"
    assert render_template("{{ event.data.location }}", ctx) == "Chicago Data Center"


def test_syntax_error_is_a_render_error(ctx: dict[str, Any]) -> None:
    with pytest.raises(RecipeRenderError, match="unexpected"):
        render_template("{{ data.x }", ctx)


def test_constants_keep_their_type(ctx: dict[str, Any]) -> None:
    assert render_template("{{ 5 }}", ctx) == 5
    assert render_template("{{ true }}", ctx) is True
    assert render_template("{{ '5' }}", ctx) == "5"
    assert render_template("a{{ 5 }}", ctx) == "a5"
    assert render_template("{{ '-' * 3 }}{{ 2 ** 10 }}", ctx) == "---1024"


def test_unset_env_and_skipped_steps_are_explained() -> None:
    event = Event.from_envelope({"event_type": "t", "event_id": "e"}, source="s")
    ctx = build_context(event, steps={"alert": {"ts": "1.2"}})
    with pytest.raises(RecipeRenderError, match="env.SLACK_ALERT_CHANNEL is not set"):
        render_template("{{ env.SLACK_ALERT_CHANNEL }}", ctx)
    with pytest.raises(RecipeRenderError, match="step 'incident' did not run"):
        render_template("{{ steps.incident.number }}", ctx)
    with pytest.raises(RecipeRenderError, match="step 'incident' did not run"):
        render_template("{{ steps['incident'].number }}", ctx)
    assert render_template("{{ steps.alert.ts }}", ctx) == "1.2"
    assert evaluate("steps.incident is defined", ctx) is False
    guarded = "{{ steps.incident.number if steps.incident is defined else 'none' }}"
    assert render_template(guarded, ctx) == "none"
