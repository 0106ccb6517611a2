"""timer.start / timer.cancel over the dict store: due times from the store's clock, the
fired event's envelope, replace, cancel, and clear errors for bad input."""

from __future__ import annotations

import json

import pytest

from hookline.connectors import ACTIONS, build_client, get_action
from hookline.connectors.errors import NotConfiguredError, PermanentError
from hookline.connectors.timer import (
    MAX_KEY_LENGTH,
    DictTimerStore,
    cancel,
    start,
    started_by,
)

T0 = 1_705_314_600.0  # 2024-01-15T10:30:00Z


def store() -> DictTimerStore:
    return DictTimerStore(clock=lambda: T0)


@pytest.mark.parametrize(
    ("after", "seconds"),
    [("15m", 900), ("90s", 90), ("1h30m", 5400), (30, 30), ("2.5", 2.5), ("500ms", 0.5)],
)
def test_start_is_due_after_the_duration(after: str | float, seconds: float) -> None:
    s = store()
    out = start(s, key="escalate:svc_1", after=after, event_type="outage.escalate")
    [timer] = s.pending().values()
    assert timer.due == T0 + seconds
    assert out["key"] == "escalate:svc_1" and out["event_id"] == timer.event_id
    assert out["event_id"].startswith("timer:escalate:svc_1:")


def test_the_fired_event_carries_data_and_the_timer() -> None:
    s = store()
    out = start(
        s,
        key="escalate:svc_1",
        after="15m",
        event_type="outage.escalate",
        data={"service_id": "svc_1", "ts": "1.2"},
        idempotency_key="solveforce:evt_9:outage:alert:with:colons:escalate",
    )
    assert out["due"] == "2024-01-15T10:45:00.000Z"
    timer = s.pending()["escalate:svc_1"]
    assert timer.event_type == "outage.escalate"
    assert json.loads(timer.body) == {
        "event_id": out["event_id"],
        "event_type": "outage.escalate",
        "timestamp": "2024-01-15T10:45:00.000Z",
        "data": {"service_id": "svc_1", "ts": "1.2"},
        "timer": {
            "key": "escalate:svc_1",
            "after": "15m",
            "started_at": "2024-01-15T10:30:00.000Z",
            "started_by": {
                "source": "solveforce",
                "event_id": "evt_9:outage:alert:with",
                "recipe": "colons",
                "step": "escalate",
            },
        },
    }


def test_started_by_reads_the_engine_key() -> None:
    assert started_by("hookline:timer:k:1:escalation:notify") == {
        "source": "hookline",
        "event_id": "timer:k:1",
        "recipe": "escalation",
        "step": "notify",
    }
    assert started_by(None) is None and started_by("a:b") is None


def test_starting_a_key_again_replaces_it_and_keys_are_independent() -> None:
    s = store()
    first = start(s, key="k", after="1m", event_type="e")
    start(s, key="other", after="1m", event_type="e")
    second = start(s, key="k", after="2m", event_type="e")
    assert first["event_id"] != second["event_id"]
    assert s.pending()["k"].event_id == second["event_id"]
    assert [t.event_id for t in s.cancelled] == [first["event_id"]]
    assert set(s.pending()) == {"k", "other"}


def test_cancel_stops_a_pending_timer_and_an_unknown_key_is_not_an_error() -> None:
    s = store()
    start(s, key="k", after="1m", event_type="e")
    assert cancel(s, key="k") == {"key": "k", "cancelled": True}
    assert s.pending() == {}
    assert cancel(s, key="k") == {"key": "k", "cancelled": False}
    assert cancel(s, key="never") == {"key": "never", "cancelled": False}


@pytest.mark.parametrize("after", ["soon", "15 minutes", "-5", "1d", "", None, True, "inf"])
def test_a_bad_duration_is_permanent_and_names_what_is_valid(after: object) -> None:
    s = store()
    with pytest.raises(PermanentError, match=r"timer 'k': after: bad duration") as info:
        start(s, key="k", after=after, event_type="e")  # type: ignore[arg-type]
    assert info.value.connector == "timer"
    assert s.pending() == {}


@pytest.mark.parametrize("key", ["", "   "])
def test_an_empty_key_is_permanent(key: str) -> None:
    with pytest.raises(PermanentError, match="timer: key is empty"):
        start(store(), key=key, after="1m", event_type="e")
    with pytest.raises(PermanentError, match="timer: key is empty"):
        cancel(store(), key=key)


def test_an_over_long_key_and_an_empty_event_type_are_refused() -> None:
    with pytest.raises(PermanentError, match=f"the limit is {MAX_KEY_LENGTH}"):
        start(store(), key="k" * (MAX_KEY_LENGTH + 1), after="1m", event_type="e")
    with pytest.raises(PermanentError, match="event_type is empty"):
        start(store(), key="k", after="1m", event_type=" ")


def test_data_that_is_not_a_json_object_is_refused_and_nothing_is_stored() -> None:
    s = store()
    with pytest.raises(PermanentError, match="data must be a mapping"):
        start(s, key="k", after="1m", event_type="e", data=["x"])  # type: ignore[arg-type]
    with pytest.raises(PermanentError, match="data is not JSON"):
        start(s, key="k", after="1m", event_type="e", data={"x": {1, 2}})
    with pytest.raises(PermanentError, match="keep ids and links"):
        start(s, key="k", after="1m", event_type="e", data={"x": "y" * 70_000})
    assert s.pending() == {}


def test_the_actions_are_registered_for_recipes() -> None:
    assert get_action("timer.start").connector == "timer"
    assert get_action("timer.start").outputs == ("key", "event_id", "due")
    assert get_action("timer.cancel").outputs == ("key", "cancelled")
    assert list(ACTIONS["timer.start"].params.parameters) == [
        "key",
        "after",
        "event_type",
        "data",
        "idempotency_key",
    ]
    assert list(ACTIONS["timer.cancel"].params.parameters) == ["key", "idempotency_key"]


def test_build_client_says_the_worker_provides_the_store() -> None:
    with pytest.raises(NotConfiguredError, match="provided by the Hookline worker"):
        build_client("timer", environ={})
