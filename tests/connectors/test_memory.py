"""memory.remember / memory.recall: the key-value memory recipes use across events."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from hookline.connectors import ACTIONS, build_client, get_action
from hookline.connectors.errors import NotConfiguredError, PermanentError
from hookline.connectors.memory import (
    MAX_KEY_LENGTH,
    MAX_VALUE_BYTES,
    DictMemoryStore,
    MemoryStore,
    recall,
    remember,
)

THREAD = {"channel": "C024BE91L", "ts": "1705317300.000200", "priority": "high"}


def test_recall_finds_what_remember_stored() -> None:
    store = DictMemoryStore()
    out = remember(store, key="slack-thread:ticket:tkt_456789", value=THREAD)
    assert out == {"key": "slack-thread:ticket:tkt_456789"}
    assert recall(store, key="slack-thread:ticket:tkt_456789") == {"found": True, "value": THREAD}


def test_an_unknown_key_is_not_found_with_an_empty_value() -> None:
    assert recall(DictMemoryStore(), key="slack-thread:ticket:nope") == {
        "found": False,
        "value": {},
    }


def test_remember_replaces_the_earlier_value_and_keys_are_independent() -> None:
    store = DictMemoryStore()
    remember(store, key="service-alert:svc_1", value={"open": True, "ts": "1.1"})
    remember(store, key="service-alert:svc_2", value={"open": True, "ts": "2.2"})
    remember(store, key="service-alert:svc_1", value={"open": False})
    assert recall(store, key="service-alert:svc_1")["value"] == {"open": False}
    assert recall(store, key="service-alert:svc_2")["value"] == {"open": True, "ts": "2.2"}
    assert store.keys() == ["service-alert:svc_1", "service-alert:svc_2"]


def test_an_empty_value_is_found() -> None:
    store = DictMemoryStore()
    remember(store, key="k", value={})
    assert recall(store, key="k") == {"found": True, "value": {}}


def test_values_are_copies_so_a_caller_cannot_change_what_is_stored() -> None:
    store = DictMemoryStore()
    value: dict[str, Any] = {"items": [1, 2]}
    remember(store, key="k", value=value)
    value["items"].append(3)
    got = recall(store, key="k")["value"]
    got["items"].append(4)
    assert recall(store, key="k")["value"] == {"items": [1, 2]}


def test_values_come_back_as_json_would_give_them() -> None:
    store = DictMemoryStore()
    remember(store, key="k", value={"n": 1, "t": (1, 2), "none": None, "nested": {"a": True}})
    assert recall(store, key="k")["value"] == {
        "n": 1,
        "t": [1, 2],
        "none": None,
        "nested": {"a": True},
    }


@pytest.mark.parametrize("key", ["", "   "])
def test_an_empty_key_is_a_permanent_error(key: str) -> None:
    with pytest.raises(PermanentError, match="key is empty") as info:
        remember(DictMemoryStore(), key=key, value={})
    assert info.value.connector == "memory"
    with pytest.raises(PermanentError, match="key is empty"):
        recall(DictMemoryStore(), key=key)


def test_an_over_long_key_is_refused_with_the_limit() -> None:
    key = "x" * (MAX_KEY_LENGTH + 1)
    with pytest.raises(PermanentError, match=f"the limit is {MAX_KEY_LENGTH}"):
        remember(DictMemoryStore(), key=key, value={})
    remember(DictMemoryStore(), key="x" * MAX_KEY_LENGTH, value={})


def test_a_value_that_is_not_json_is_refused_and_nothing_is_stored() -> None:
    store = DictMemoryStore()
    with pytest.raises(PermanentError, match="value for 'k' is not JSON"):
        remember(store, key="k", value={"when": object()})
    with pytest.raises(PermanentError, match="not JSON"):
        remember(store, key="k", value={"x": float("nan")})
    assert recall(store, key="k")["found"] is False


def test_a_value_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(PermanentError, match="must be a mapping, got list"):
        remember(DictMemoryStore(), key="k", value=[1, 2])  # type: ignore[arg-type]


def test_a_too_large_value_is_refused_with_the_limit() -> None:
    big = {"blob": "x" * MAX_VALUE_BYTES}
    with pytest.raises(PermanentError, match=f"the limit is {MAX_VALUE_BYTES}"):
        remember(DictMemoryStore(), key="k", value=big)


class JsonFileLikeStore:
    """Another MemoryStore (what a database-backed one looks like: text in, dict out)."""

    def __init__(self) -> None:
        self.rows: dict[str, str] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        text = self.rows.get(key)
        return None if text is None else dict(json.loads(text))

    def set(self, key: str, value: dict[str, Any]) -> None:
        self.rows[key] = json.dumps(value)


def test_any_store_with_get_and_set_works() -> None:
    store: MemoryStore = JsonFileLikeStore()
    remember(store, key="k", value={"a": 1})
    assert recall(store, key="k") == {"found": True, "value": {"a": 1}}


def test_the_dict_store_is_safe_across_threads() -> None:
    store = DictMemoryStore()

    def work(n: int) -> None:
        for i in range(200):
            remember(store, key=f"k{n}", value={"i": i})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [recall(store, key=f"k{n}")["value"] for n in range(4)] == [{"i": 199}] * 4


def test_the_dict_store_can_start_with_values() -> None:
    store = DictMemoryStore({"k": {"a": 1}})
    assert recall(store, key="k") == {"found": True, "value": {"a": 1}}


def test_the_actions_are_registered_for_recipes() -> None:
    assert get_action("memory.remember").connector == "memory"
    assert get_action("memory.remember").outputs == ("key",)
    assert get_action("memory.recall").outputs == ("found", "value")
    assert list(ACTIONS["memory.remember"].params.parameters) == [
        "key",
        "value",
        "idempotency_key",
    ]
    assert list(ACTIONS["memory.recall"].params.parameters) == ["key", "idempotency_key"]


def test_build_client_says_the_worker_provides_the_store() -> None:
    with pytest.raises(NotConfiguredError, match="provided by the Hookline worker") as info:
        build_client("memory", environ={})
    assert info.value.connector == "memory"
