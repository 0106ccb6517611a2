"""Slack mrkdwn in templates: what a ``{{ }}`` puts into a mrkdwn parameter is escaped.

Parameters an action declares as Slack mrkdwn (``Action.mrkdwn``: the text, title, summary,
fields, blocks of ``slack.*``) are compiled in the environment's ``MRKDWN_ENV``, whose
finalize is `escape_value`: ``&``, ``<`` and ``>`` in every value become entities, so a ticket
title ``<!channel>`` reaches Slack as text, not as a mention. The recipe's own text is left
alone (``"<{{ steps.incident.link }}|{{ steps.incident.number }}>"`` stays a link), and so are
values under keys such as ``url`` or ``action_id`` (`raw_key`). ``{{ value | mrkdwn }}`` opts
one value out: it is sent as written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hookline.recipes.templating.limits import MAX_DEPTH


class Mrkdwn(str):
    """Text a recipe marked as Slack mrkdwn with ``| mrkdwn``: sent as written."""

    __slots__ = ()


class MrkdwnList(list[Any]):
    """A list marked with ``| mrkdwn`` (e.g. Block Kit blocks built elsewhere)."""


class MrkdwnDict(dict[str, Any]):
    """A mapping marked with ``| mrkdwn``."""


def mrkdwn(value: Any) -> Any:
    """The ``mrkdwn`` filter: mark ``value`` as Slack mrkdwn the recipe vouches for."""
    if isinstance(value, str):
        return Mrkdwn(value)
    if isinstance(value, Mapping):
        return MrkdwnDict(value)
    if isinstance(value, list | tuple):
        return MrkdwnList(value)
    return value


def escape_mrkdwn(text: str) -> str:
    """Slack's three control characters as entities: the text shows as typed."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_RAW_KEYS = frozenset({"type", "style", "color", "action_id", "block_id", "callback_id", "value"})


def raw_key(key: object) -> bool:
    """Keys inside Block Kit / attachments whose values are not mrkdwn (URLs, ids, enums)."""
    if not isinstance(key, str):
        return False
    k = key.lower()
    return k in _RAW_KEYS or k.endswith(("url", "_link", "_icon"))


def escape_value(value: Any, depth: int = 0) -> Any:
    """``value`` with its text escaped (`escape_mrkdwn`), except what ``| mrkdwn`` marked."""
    if isinstance(value, Mrkdwn | MrkdwnList | MrkdwnDict):
        return value
    if isinstance(value, str):
        return escape_mrkdwn(value)
    if depth > MAX_DEPTH:
        return value
    if isinstance(value, Mapping):
        return {k: v if raw_key(k) else escape_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [escape_value(v, depth + 1) for v in value]
    return value
