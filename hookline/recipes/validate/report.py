"""How `hookline check` reports a problem: the file, line and column, the step and field,
and a hint (``did you mean ...?``, or what is valid there)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hookline.recipes.errors import Problem
from hookline.recipes.yamlpos import Document, Path_


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """``did you mean 'x'?`` for the closest choice, or None."""
    pool = list(choices)
    hits = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    if not hits and "." in word:
        tail = word.rsplit(".", 1)[1]
        hits = [c for c in pool if c.rsplit(".", 1)[-1] == tail]
        if not hits:
            tails = {c.rsplit(".", 1)[-1]: c for c in pool}
            close = difflib.get_close_matches(tail, list(tails), n=1, cutoff=0.75)
            hits = [tails[close[0]]] if close else []
    return f"did you mean '{hits[0]}'?" if hits else None


def choices_hint(word: str, choices: Iterable[str], label: str) -> str:
    """`did_you_mean` and the list of ``label`` to choose from."""
    pool = sorted(set(choices))
    dym = did_you_mean(word, pool)
    listing = f"{label}: {', '.join(pool)}" if pool else f"there are no {label}"
    return f"{dym} ({listing})" if dym else listing


def kind_of(value: Any) -> str:
    """What ``value`` is, in a message: ``the text 'x'``, ``a list``."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


class Report:
    """The problems of one recipe file, each once, located in its YAML document."""

    def __init__(self, path: Path, doc: Document) -> None:
        self.path = path
        self.doc = doc
        self.problems: list[Problem] = []
        self._seen: set[str] = set()

    def add(
        self,
        path: Path_,
        message: str,
        *,
        hint: str | None = None,
        at_key: bool = False,
        line_offset: int = 0,
        field_: str | None = None,
        field_from: Path_ | None = None,
    ) -> None:
        """Record a problem at ``path`` (at its key with ``at_key``), unless already recorded."""
        pos = self.doc.pos(path)
        line, col = (pos.key_line, pos.key_column) if at_key else (pos.line, pos.column)
        if line_offset:
            line += line_offset
        step, fld = self._step_and_field(path if field_from is None else field_from)
        problem = Problem(self.path, line, col, message, step=step, field=field_ or fld, hint=hint)
        text = str(problem)
        if text not in self._seen:
            self._seen.add(text)
            self.problems.append(problem)

    def _step_and_field(self, path: Path_) -> tuple[str | None, str | None]:
        data = self.doc.data
        if len(path) >= 2 and path[0] in ("steps", "on_failure") and isinstance(path[1], int):
            items = data.get(path[0]) if isinstance(data, dict) else None
            step_id = None
            if isinstance(items, list) and path[1] < len(items):
                item = items[path[1]]
                if isinstance(item, dict) and isinstance(item.get("id"), str):
                    step_id = item["id"]
            rest = path[2:]
            if step_id is not None:
                return step_id, _dotted(rest) or None
            return None, _dotted(path)
        return None, _dotted(path) or None
