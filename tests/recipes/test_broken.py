"""Deliberately broken recipes: each must produce the intended message at the intended line."""

from __future__ import annotations

from pathlib import Path

import pytest

from hookline.config import HooklineConfig
from hookline.connectors import ACTIONS
from hookline.recipes.loader import check_recipes
from tests.recipes.conftest import Problems

# (id, recipe text, line, expected text in the message)
CASES: list[tuple[str, str, int, str]] = [
    (
        "unknown top-level key",
        """
        name: r
        on: service.status.changed
        step:
          - id: a
            uses: slack.post_message
            with: {channel: "#x"}
        """,
        3,
        "unknown key 'step'; did you mean 'steps'?",
    ),
    (
        "unknown step key",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            uses: slack.post_message
            width: {channel: "#x"}
        """,
        6,
        "step 'a': unknown key 'width'; did you mean 'with'?",
    ),
    (
        "unknown action",
        """
        name: r
        on: service.status.changed
        steps:
          - id: incident
            uses: servicenow.create_incidnt
            with: {short_description: x}
        """,
        5,
        "step 'incident': uses: unknown action 'servicenow.create_incidnt'; "
        "did you mean 'servicenow.create_incident'?",
    ),
    (
        "parameter the action does not take",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            uses: slack.post_message
            with:
              chanel: "#x"
        """,
        7,
        "slack.post_message takes no parameter 'chanel'; did you mean 'channel'?",
    ),
    (
        "missing required parameter",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            uses: servicenow.create_incident
            with:
              description: x
        """,
        6,
        "servicenow.create_incident needs 'short_description'",
    ),
    (
        "wrong literal type",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            uses: slack.post_alert
            with:
              channel: "#alerts"
              title: x
              severity: high
        """,
        9,
        "with.severity: 'high' is not a valid Literal['critical', 'major', 'minor', 'warning',",
    ),
    (
        "jinja syntax error",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            uses: slack.post_message
            with:
              channel: "#x"
              text: "{{ data.service_name }"
        """,
        8,
        "with.text: template syntax error: unexpected '}'",
    ),
    (
        "jinja syntax error inside a block scalar",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            uses: slack.post_message
            with:
              channel: "#x"
              text: |
                Service {{ data.service_name }}
                is {% if data.x %}down
                and that is all
        """,
        10,  # the line of the unclosed {% if %}
        "template syntax error: Unexpected end of template",
    ),
    (
        "reference to a missing step",
        """
        name: r
        on: service.status.changed
        steps:
          - id: alert
            uses: slack.post_message
            with: {channel: "#x"}
          - id: b
            uses: slack.post_message
            with: {channel: "{{ steps.alrt.channel }}"}
        """,
        9,
        "steps.alrt: there is no step 'alrt'; did you mean 'alert'?",
    ),
    (
        "reference to a later step",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            uses: slack.post_message
            with: {channel: "{{ steps.b.channel }}"}
          - id: b
            uses: slack.post_message
            with: {channel: "#x"}
        """,
        6,
        "steps.b refers to step 'b', which runs later",
    ),
    (
        "output the action does not have",
        """
        name: r
        on: service.status.changed
        steps:
          - id: alert
            uses: slack.post_message
            with: {channel: "#x"}
          - id: b
            uses: slack.post_message
            with:
              channel: "#x"
              thread_ts: "{{ steps.alert.tss }}"
        """,
        11,
        "steps.alert.tss: step 'alert' has no output 'tss'; did you mean 'ts'?",
    ),
    (
        "duplicate step ids",
        """
        name: r
        on: service.status.changed
        steps:
          - id: alert
            uses: slack.post_message
            with: {channel: "#x"}
          - id: alert
            uses: slack.post_message
            with: {channel: "#y"}
        """,
        7,
        "duplicate step id 'alert'; first used at line 4",
    ),
    (
        "bad duration on a step",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            uses: slack.post_message
            with: {channel: "#x"}
            retry_backoff: 2 secs
        """,
        7,
        "bad duration '2 secs'; write seconds (30, 1.5) or a duration such as",
    ),
    (
        "bad duration for a connector's duration parameter",
        """
        name: r
        on: service.status.changed
        steps:
          - id: later
            uses: timer.start
            with: {key: k, event_type: later.due, after: soon}
        """,
        6,
        "step 'later': with.after: 'soon' is not a valid duration: bad duration 'soon'",
    ),
    (
        "bad duration in defaults",
        """
        name: r
        on: service.status.changed
        defaults:
          timeout: soon
        steps:
          - id: a
            uses: slack.post_message
            with: {channel: "#x"}
        """,
        4,
        "defaults.timeout: bad duration 'soon'",
    ),
    (
        "when written as a template",
        """
        name: r
        on: service.status.changed
        when: "{{ data.current_status == 'outage' }}"
        steps:
          - id: a
            uses: slack.post_message
            with: {channel: "#x"}
        """,
        3,
        "when: this is an expression, not a template; "
        "drop the braces: data.current_status == 'outage'",
    ),
    (
        "if that is not an expression",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            if: data.impact ==
            uses: slack.post_message
            with: {channel: "#x"}
        """,
        5,
        "step 'a': if: template syntax error",
    ),
    (
        "if with trailing text",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            if: data.impact == 'high' and then some
            uses: slack.post_message
            with: {channel: "#x"}
        """,
        5,
        "if: template syntax error: unexpected 'some' after the expression",
    ),
    (
        "env name not in the allowlist",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            uses: slack.post_message
            with:
              channel: "{{ env.SLACK_TOKEN }}"
        """,
        7,
        "env.SLACK_TOKEN is not allowed by hookline.yaml",
    ),
    (
        "unknown variable",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            uses: slack.post_message
            with:
              channel: "#x"
              text: "{{ dat.service_name }}"
        """,
        8,
        "unknown variable 'dat'; did you mean 'data'?",
    ),
    (
        "steps used in when",
        """
        name: r
        on: service.status.changed
        when: steps.a.ok
        steps:
          - id: a
            uses: slack.post_message
            with: {channel: "#x"}
        """,
        3,
        "'steps' is not available in when",
    ),
    (
        "failure used outside on_failure",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            uses: slack.post_message
            with:
              channel: "#x"
              text: "{{ failure.error }}"
        """,
        8,
        "'failure' is not available in steps",
    ),
    (
        "unknown field of failure",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            uses: slack.post_message
            with: {channel: "#x"}
        on_failure:
          - uses: slack.post_message
            with:
              channel: "#oncall"
              text: "failed at {{ failure.stepp }}"
        """,
        11,
        "failure.stepp: 'failure' has no field 'stepp'; did you mean 'step'?",
    ),
    (
        "missing on",
        """
        name: r
        steps:
          - id: a
            uses: slack.post_message
            with: {channel: "#x"}
        """,
        1,
        "missing required key 'on'",
    ),
    (
        "missing step id",
        """
        name: r
        on: service.status.changed
        steps:
          - uses: slack.post_message
            with: {channel: "#x"}
        """,
        4,
        "missing required key 'id'; every step needs an id",
    ),
    (
        "step id that is not an identifier",
        """
        name: r
        on: service.status.changed
        steps:
          - id: send-alert
            uses: slack.post_message
            with: {channel: "#x"}
        """,
        4,
        "step id 'send-alert' is not a valid identifier; use letters, digits and '_' "
        "so that steps.<id> works; try 'send_alert'",
    ),
    (
        "reserved idempotency_key",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            uses: slack.post_message
            with:
              channel: "#x"
              idempotency_key: "{{ event_id }}"
        """,
        8,
        "'idempotency_key' is reserved: the engine sets it",
    ),
    (
        "key repeated in a mapping",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            uses: slack.post_message
            with:
              channel: "#x"
              channel: "#y"
        """,
        8,
        "key 'channel' appears twice in the same mapping; first at line 7",
    ),
    (
        "GitHub Actions syntax",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            uses: slack.post_message
            with:
              channel: "${{ env.SLACK_ALERT_CHANNEL }}"
        """,
        7,
        "'${{ ... }}' is GitHub Actions syntax",
    ),
    (
        "hookline.yaml-style ${VAR} in a recipe",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            uses: slack.post_message
            with:
              channel: "${SLACK_ALERT_CHANNEL}"
        """,
        7,
        "recipes read the environment as {{ env.SLACK_ALERT_CHANNEL }}",
    ),
    (
        "tab indentation",
        "name: r\non: x\nsteps:\n\t- id: a\n",
        4,
        "invalid YAML",
    ),
    (
        "unquoted template at the start of a value",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            uses: slack.post_message
            with:
              channel: {{ env.SLACK_ALERT_CHANNEL }}
        """,
        7,
        "quote a value that starts with '{{'",
    ),
    (
        "event type pattern with a space",
        """
        name: r
        on: [service.status.changed, "billing invoice"]
        steps:
          - id: a
            uses: slack.post_message
            with: {channel: "#x"}
        """,
        2,
        "bad event type pattern 'billing invoice'",
    ),
    (
        "negative retries",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            uses: slack.post_message
            with: {channel: "#x"}
            retries: -1
        """,
        7,
        "retries: input should be greater than or equal to 0",
    ),
    (
        "continue_on_error that is not a boolean",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            uses: slack.post_message
            with: {channel: "#x"}
            continue_on_error: maybe
        """,
        7,
        "continue_on_error: expected true or false, got the text 'maybe'",
    ),
    (
        "no steps",
        """
        name: r
        on: service.status.changed
        steps: []
        """,
        3,
        "a recipe needs at least one step",
    ),
    (
        "a step that is not a mapping",
        """
        name: r
        on: service.status.changed
        steps:
          - slack.post_message
        """,
        4,
        "steps[0]: expected a mapping, got the text 'slack.post_message'",
    ),
    (
        "step keys at the top level",
        """
        name: r
        on: service.status.changed
        uses: slack.post_message
        steps:
          - id: a
            uses: slack.post_message
            with: {channel: "#x"}
        """,
        3,
        "unknown key 'uses'; 'uses' belongs to a step, under steps:",
    ),
    (
        "recipe name with a space",
        """
        name: service outage
        on: service.status.changed
        steps:
          - id: a
            uses: slack.post_message
            with: {channel: "#x"}
        """,
        1,
        "recipe name 'service outage' may contain only letters",
    ),
    (
        "a step reading its own outputs",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            uses: slack.post_message
            with:
              channel: "#x"
              thread_ts: "{{ steps.a.ts }}"
        """,
        8,
        "steps.a is this step itself",
    ),
    (
        "unknown filter",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            uses: slack.post_message
            with:
              channel: "#x"
              text: "{{ data.service_name | titel }}"
        """,
        8,
        "template syntax error: No filter named 'titel'; did you mean 'title'?",
    ),
    (
        "text around the expression for a parameter that takes a number",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            uses: servicenow.create_incident
            with:
              short_description: x
              priority: "P{{ 1 }}"
        """,
        8,
        "this template always renders text ('P' around the expression), but priority takes",
    ),
    (
        "on written as a mapping",
        """
        name: r
        on: {type: service.status.changed}
        steps:
          - id: a
            uses: slack.post_message
            with: {channel: "#x"}
        """,
        2,
        "on: expected text or a list, got a mapping",
    ),
    (
        "a YAML 1.1 boolean is text here, so on: yes is an event type, but if: yes is an "
        "undefined name",
        """
        name: r
        on: service.status.changed
        steps:
          - id: a
            if: yes
            uses: slack.post_message
            with: {channel: "#x"}
        """,
        5,
        "unknown variable 'yes'",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_broken_recipe(problems: Problems, text: str, line: int, expected: str) -> None:
    found = problems(text)
    hits = [p for p in found if expected in str(p)]
    assert hits, f"expected {expected!r}; got:\n" + "\n".join(str(p) for p in found)
    assert hits[0].line == line, str(hits[0])


def test_there_are_at_least_twenty_broken_recipes() -> None:
    assert len(CASES) >= 20


def test_message_format_names_file_line_column_step_field_and_hint(problems: Problems) -> None:
    found = problems(
        """
        name: r
        on: service.status.changed
        steps:
          - id: incident
            uses: servicenow.create_incidnt
        """,
        name="outage.yaml",
    )
    text = [str(p) for p in found]
    assert any(
        t.endswith(
            "outage.yaml:5:11: step 'incident': uses: unknown action "
            "'servicenow.create_incidnt'; did you mean 'servicenow.create_incident'?"
        )
        for t in text
    ), text


def test_every_problem_in_a_file_is_reported_at_once(problems: Problems) -> None:
    found = problems(
        """
        name: r
        on: service.status.changed
        colour: blue
        steps:
          - id: a
            uses: slack.post_mesage
            with: {channel: "#x"}
          - id: b
            uses: slack.post_message
            with:
              channel: "{{ steps.zzz.ts }}"
              text: "{{ data.x }"
            timeout: forever
        """
    )
    lines = sorted(p.line for p in found)
    assert lines == [3, 6, 11, 12, 13], "\n".join(map(str, found))


def test_duplicate_recipe_names_across_files(write: object, tmp_path: Path) -> None:
    body = """
    name: same
    on: service.status.changed
    steps:
      - id: a
        uses: slack.post_message
        with: {channel: "#x"}
    """
    import textwrap

    (tmp_path / "a.yaml").write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    (tmp_path / "b.yaml").write_text(
        "# the second one\n" + textwrap.dedent(body).lstrip(), encoding="utf-8"
    )
    found = check_recipes([tmp_path], config=HooklineConfig(), actions=ACTIONS).problems
    assert len(found) == 1
    p = found[0]
    assert p.path == tmp_path / "b.yaml" and p.line == 2
    assert "duplicate recipe name 'same'" in str(p)
    assert f"first defined at {tmp_path / 'a.yaml'}:1" in str(p)


def test_empty_file(problems: Problems) -> None:
    (p,) = problems("")
    assert "the file is empty" in str(p)


def test_two_documents_in_one_file(problems: Problems) -> None:
    found = problems("name: a\n---\nname: b\n")
    assert "more than one YAML document" in str(found[0])
    assert "put one recipe per file" in str(found[0])
