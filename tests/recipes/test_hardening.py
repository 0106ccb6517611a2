"""Recipes against hostile payloads (issue 11): Slack mrkdwn injection, URLs whose host the
sender picks. With the real action registry, as `hookline check` and the engine load them."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hookline.cli import main
from hookline.config import HooklineConfig
from hookline.recipes import Event, Recipe, build_context, render_params
from hookline.recipes.loader import check_recipes

SLACK_RECIPE = """
name: tickets
on: support.ticket.created
steps:
  - id: alert
    uses: slack.post_alert
    with:
      channel: "#support"
      title: "Ticket {{ data.ticket_id }}: {{ data.title }}"
      summary: "{{ data.description }}"
      fields: { Customer: "{{ data.customer }}" }
      run_url: "{{ data.link }}"
  - id: link
    uses: slack.post_message
    with:
      channel: "#support"
      text: "Ticket <{{ data.link }}|{{ data.ticket_id }}> by {{ data.customer }}"
      blocks:
        - type: section
          text: { type: mrkdwn, text: "*{{ data.title }}*" }
          accessory:
            type: button
            text: { type: plain_text, text: "Open" }
            url: "{{ data.link }}"
            action_id: "open-{{ data.ticket_id }}"
  - id: trusted
    uses: slack.post_message
    with:
      channel: "#support"
      text: "{{ data.formatted | mrkdwn }} / {{ data.formatted }}"
  - id: keep
    uses: memory.remember
    with: { key: "t:{{ data.ticket_id }}", value: { title: "{{ data.title }}" } }
"""

HOSTILE = {
    "ticket_id": "T-1&2",
    "title": "<!channel> <https://evil.test|Re-authenticate here>",
    "description": "pay at <https://evil.test> & co",
    "customer": "<@U012345>",
    "link": "https://tickets.test/view?id=1&tab=2",
    "formatted": "*bold* <https://ok.test|docs>",
}


def _load(tmp_path: Path, text: str) -> tuple[list[Recipe], list[str]]:
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    result = check_recipes([path], config=HooklineConfig(env=[]))
    assert not result.problems, result.problems
    return result.recipes, result.warnings


def _params(recipe: Recipe, step: str, data: dict[str, Any]) -> dict[str, Any]:
    event = Event.from_envelope(
        {
            "event_id": "evt_1",
            "event_type": "support.ticket.created",
            "timestamp": "2024-01-01T00:00:00Z",
            "data": data,
        },
        source="solveforce",
    )
    return render_params(recipe.step(step), build_context(event, recipe=recipe))


def test_text_from_the_payload_cannot_mention_or_link_in_slack(tmp_path: Path) -> None:
    """A ticket titled `<!channel>` used to page the whole channel, and a phishing link in it
    was a real link; now both reach Slack as the text the customer typed."""
    [recipe], _ = _load(tmp_path, SLACK_RECIPE)

    alert = _params(recipe, "alert", HOSTILE)
    assert alert["title"] == (
        "Ticket T-1&amp;2: &lt;!channel&gt; &lt;https://evil.test|Re-authenticate here&gt;"
    )
    assert alert["summary"] == "pay at &lt;https://evil.test&gt; &amp; co"
    assert alert["fields"] == {"Customer": "&lt;@U012345&gt;"}
    assert alert["run_url"] == "https://tickets.test/view?id=1&amp;tab=2"
    assert alert["channel"] == "#support"

    link = _params(recipe, "link", HOSTILE)
    # the recipe's own <url|text> stays a link; what the payload put in it is escaped
    assert link["text"] == (
        "Ticket <https://tickets.test/view?id=1&amp;tab=2|T-1&amp;2> by &lt;@U012345&gt;"
    )
    [block] = link["blocks"]
    assert (
        block["text"]["text"] == "*&lt;!channel&gt; &lt;https://evil.test|Re-authenticate here&gt;*"
    )
    # a button's URL and ids are not mrkdwn: left as they are
    assert block["accessory"]["url"] == HOSTILE["link"]
    assert block["accessory"]["action_id"] == "open-T-1&2"


def test_the_mrkdwn_filter_opts_one_value_out(tmp_path: Path) -> None:
    [recipe], _ = _load(tmp_path, SLACK_RECIPE)
    text = _params(recipe, "trusted", HOSTILE)["text"]
    assert text == "*bold* <https://ok.test|docs> / *bold* &lt;https://ok.test|docs&gt;"


def test_only_slack_text_is_escaped(tmp_path: Path) -> None:
    [recipe], _ = _load(tmp_path, SLACK_RECIPE)
    assert _params(recipe, "keep", HOSTILE)["value"] == {"title": HOSTILE["title"]}


CALLBACK_RECIPE = """
name: callbacks
on: webhook.test
steps:
  - id: from_data
    uses: http.request
    with: { url: "{{ data.callback_url }}", json: { ok: true } }
  - id: host_from_data
    uses: http.request
    with: { url: "https://{{ data.host }}/hook" }
  - id: pinned
    uses: http.request
    with: { url: "https://api.example.com/hooks/{{ data.id }}" }
  - id: from_env
    uses: http.request
    with: { url: "{{ env.ACCOUNTING_API_URL }}/invoices" }
"""


def test_check_warns_when_a_urls_host_comes_from_the_event(tmp_path: Path) -> None:
    path = tmp_path / "recipes" / "callbacks.yaml"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(CALLBACK_RECIPE).lstrip("\n"), encoding="utf-8")
    (tmp_path / "hookline.yaml").write_text("env: [ACCOUNTING_API_URL]\n", encoding="utf-8")

    result = CliRunner().invoke(
        main,
        ["check", str(path)],
        env={
            "HOOKLINE_CONFIG": str(tmp_path / "hookline.yaml"),
            "ACCOUNTING_API_URL": "https://accounting.example.com",
        },
    )

    assert result.exit_code == 0, result.output
    warnings = [
        line
        for line in result.output.splitlines()
        if line.startswith("warning:") and "with.url" in line
    ]
    assert len(warnings) == 2, result.output
    assert "step 'from_data'" in warnings[0] and "comes from the event (data)" in warnings[0]
    assert "step 'host_from_data'" in warnings[1]
    assert "connections.http.allow_hosts" in warnings[0]


@pytest.mark.parametrize(
    "recipe_file", sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))
)
def test_shipped_recipes_raise_no_url_warning(recipe_file: Path) -> None:
    result = check_recipes([recipe_file], config=HooklineConfig(env=["ACCOUNTING_API_URL"]))
    assert not [w for w in result.warnings if "with.url" in w]
