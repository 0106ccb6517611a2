"""The action registry: what the recipe validator and the engine rely on."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from hookline.connectors import ACTIONS, CONNECTORS, get_action

PACKAGE = Path(__file__).parents[2] / "hookline" / "connectors"


def test_the_issue_s_actions_are_registered() -> None:
    assert set(ACTIONS) >= {
        "slack.post_message",
        "slack.update_message",
        "slack.post_alert",
        "slack.update_alert",
        "slack.post_webhook",
        "servicenow.create_incident",
        "servicenow.get_incident",
        "servicenow.update_incident",
        "servicenow.resolve_incident",
        "servicenow.create_record",
        "salesforce.update_record",
        "salesforce.upsert",
        "salesforce.update_account",
        "inventory.upsert_service",
        "inventory.remove_service",
        "http.request",
    }


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_action_signature_is_keyword_only_annotated_and_documented(name: str) -> None:
    action = ACTIONS[name]
    assert action.connector in CONNECTORS
    assert action.description and "\n" not in action.description
    params = action.params.parameters
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values())
    assert all(not isinstance(p.annotation, str) for p in params.values()), "evaluated types"
    assert all(p.annotation is not inspect.Parameter.empty for p in params.values())
    assert params["idempotency_key"].default is None
    assert action.outputs, "a TypedDict return"


def test_outputs_are_the_typed_dict_keys() -> None:
    assert get_action("servicenow.create_incident").outputs == (
        "number",
        "sys_id",
        "link",
        "created",
    )
    assert get_action("slack.post_message").outputs == ("ts", "channel", "permalink")


def test_unknown_action_lists_the_valid_ones() -> None:
    with pytest.raises(KeyError, match="unknown action 'slack.post'; valid: http.request, "):
        get_action("slack.post")


def test_connectors_import_nothing_of_prefect_or_other_layers() -> None:
    banned = ("prefect", "hookline.receiver", "hookline.flows", "hookline.engine",
              "hookline.recipes", "hookline.inbox")  # fmt: skip
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for imported in names:
                assert not imported.startswith(banned), f"{path.name} imports {imported}"
