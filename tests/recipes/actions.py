"""A small action registry shaped like `hookline.connectors.ACTIONS`, for loader tests."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypedDict


class PostMessageOutput(TypedDict):
    channel: str
    ts: str


def post_message(
    client: Any,
    *,
    channel: str,
    text: str | None = None,
    thread_ts: str | None = None,
    blocks: list[dict[str, Any]] | None = None,
    idempotency_key: str | None = None,
) -> PostMessageOutput:
    """Post a message to a Slack channel."""
    raise NotImplementedError


class IncidentOutput(TypedDict):
    number: str
    sys_id: str
    link: str


def create_incident(
    client: Any,
    *,
    short_description: str,
    description: str | None = None,
    priority: Literal[1, 2, 3, 4, 5] = 3,
    assignment_group: str | None = None,
    idempotency_key: str | None = None,
) -> IncidentOutput:
    """Open a ServiceNow incident."""
    raise NotImplementedError


class RequestOutput(TypedDict):
    status: int
    body: Any


def request(
    client: Any,
    *,
    url: str,
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST",
    json: Any = None,
    headers: dict[str, str] | None = None,
    timeout_seconds: float = 10.0,
    idempotency_key: str | None = None,
) -> RequestOutput:
    """Send an HTTP request."""
    raise NotImplementedError


@dataclass(frozen=True)
class Action:
    name: str
    connector: str
    func: Callable[..., Any]
    description: str
    params: inspect.Signature
    outputs: tuple[str, ...]


def _action(name: str, func: Callable[..., Any], output: type) -> Action:
    sig = inspect.signature(func, eval_str=True)
    params = sig.replace(parameters=list(sig.parameters.values())[1:])
    return Action(
        name=name,
        connector=name.split(".")[0],
        func=func,
        description=(func.__doc__ or "").strip(),
        params=params,
        outputs=tuple(output.__annotations__),
    )


ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        _action("slack.post_message", post_message, PostMessageOutput),
        _action("servicenow.create_incident", create_incident, IncidentOutput),
        _action("http.request", request, RequestOutput),
    )
}
