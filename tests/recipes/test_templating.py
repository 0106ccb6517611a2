from __future__ import annotations

import time
from typing import Any

import pytest

from hookline.recipes import (
    Event,
    RecipeEvalError,
    RecipeRenderError,
    Step,
    build_context,
    evaluate,
    render_params,
    render_template,
)
from hookline.recipes.templating import MATCH_SECONDS, RENDER_SECONDS
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


# --- resource limits (issue 11, item 5) ------------------------------------------------------


@pytest.fixture
def hostile_ctx(ctx: dict[str, Any]) -> dict[str, Any]:
    """The sample event, with numbers a sender chose to hurt us."""
    return {**ctx, "data": {**ctx["data"], "width": 10**9, "n": 100_000}}


@pytest.mark.parametrize(
    ("template", "limit"),
    [
        ("{{ '%050000000d' % 1 }}", "a width of 50000000 is too large"),
        ("{{ 'x' | center(data.width) }}", "center: a width of 1000000000 is too large"),
        ("{{ (['a' * 100000] * 1000) | join }}", "join would build a text of"),
        ("{{ (10**1000)**1000 }}", "is too large (results of at most 14300 bits)"),
        ("{{ (10**1000) * (10**1000) * (10**1000) * (10**1000) * (10**1000) }}", "bits"),
        ("{{ '{:>50000000}'.format(1) }}", "a width of 50000000 is too large"),
        ("{{ '%*d' % (data.width, 1) }}", "a width of 1000000000 is too large"),
        ("{{ '%0100000000d' | format(1) }}", "a width of 100000000 is too large"),
        ("{{ 'x'.ljust(data.width) }}", "ljust(): a width of"),
        ("{{ ('a' * 100000).replace('a', 'a' * 1000) }}", "replace() would build a text"),
        (
            "{{ ('a' * 100000) | replace('a', 'a' * 50) }}",
            "replace",
        ),
        ("{{ {'a': 1} | tojson(data.width) }}", "tojson: an indent of"),
        ("{{ 'a' | indent(data.width) }}", "indent: a width of"),
        ("{{ [1] | batch(data.width, 0) | list }}", "batch(1000000000) is too large"),
        ("{{ lipsum(data.width) }}", "lipsum"),
        (
            "{% set ns = namespace(s='a' * 100000) %}{% for i in range(10) %}"
            "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
            "the template built a text of",
        ),
        ("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}", "output is longer than"),
    ],
)
def test_templates_cannot_allocate_without_bound(
    hostile_ctx: dict[str, Any], template: str, limit: str
) -> None:
    """Each of these used to build tens of megabytes (or a 3-million-bit integer) in one go."""
    start = time.perf_counter()
    with pytest.raises(RecipeRenderError, match="over a limit") as info:
        render_template(template, hostile_ctx)
    assert limit in str(info.value)
    assert time.perf_counter() - start < 0.5  # refused before the work, not after it


@pytest.mark.parametrize(
    "template",
    [
        # loops that output nothing: only the per-iteration check can stop them
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% for i in range(data.n) %}{% for j in range(30) %}{{ i }}{% endfor %}{% endfor %}",
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(30) }}",
    ],
)
def test_rendering_has_a_time_limit(hostile_ctx: dict[str, Any], template: str) -> None:
    start = time.perf_counter()
    with pytest.raises(RecipeRenderError, match="took longer than 1s"):
        render_template(template, hostile_ctx)
    assert time.perf_counter() - start < RENDER_SECONDS + 0.5


def test_when_has_a_shorter_time_limit(hostile_ctx: dict[str, Any]) -> None:
    start = time.perf_counter()
    with pytest.raises(RecipeEvalError, match=f"took longer than {MATCH_SECONDS:g}s"):
        evaluate(
            "range(100000) | map('string') | map('int') | list | length * 0 or "
            "(range(100000) | map('string') | list | length) * 0 or "
            "range(100000) | select | list | length > 0 and "
            "(range(100000) | map('string') | join | length) * 0 and "
            "lipsum(100) and range(100000) | map('string') | join",
            hostile_ctx,
        )
    assert time.perf_counter() - start < 1.0


def test_render_params_shares_one_time_limit_across_parameters(
    hostile_ctx: dict[str, Any],
) -> None:
    """Ten parameters of 0.3 s each would take 3 s: the step's limit is for all of them."""
    from hookline.connectors import ACTIONS

    slow = "{% for i in range(100000) %}{% for j in range(1) %}{% endfor %}{% endfor %}x"
    step = _step_with({f"p{i}": slow for i in range(10)}, ACTIONS)
    start = time.perf_counter()
    with pytest.raises(RecipeRenderError, match="took longer than 1s"):
        render_params(step, hostile_ctx)
    assert time.perf_counter() - start < RENDER_SECONDS + 0.5


def _step_with(with_: dict[str, Any], actions: Any) -> Step:
    from hookline.recipes.templating import compile_value

    return Step(
        id="s",
        uses="test.anything",
        with_=with_,
        if_=None,
        retries=0,
        retry_backoff=1.0,
        timeout=1.0,
        continue_on_error=False,
        recipe="r",
        compiled_with={k: compile_value(v) for k, v in with_.items()},
    )


def test_limits_leave_ordinary_templates_alone(ctx: dict[str, Any]) -> None:
    assert render_template("{{ '{:,.2f}'.format(1234.5) }}", ctx) == "1,234.50"
    assert render_template("{{ '%05d' % 42 }}", ctx) == "00042"
    assert render_template("{{ 2 ** 64 }}", ctx) == 2**64
    assert render_template("{{ range(1000) | map('string') | join(',') | length }}", ctx) == 3889
    text = render_template(
        "{% for k, v in data.items() %}{{ loop.index }}:{{ k }}"
        "{% if loop.last %}/{{ loop.length }}{% endif %} {% endfor %}",
        ctx,
    )
    assert text.startswith("1:service_id 2:service_name") and text.endswith("/8 ")
    assert render_template("{{ 'x' | center(9) }}", ctx) == "    x    "
    assert render_template("{{ data | tojson | length > 100 }}", ctx) is True
