"""`Transition`: one step of an inbox entry's life cycle, as both backends apply it."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Transition:
    """One step of an entry's life cycle (`Inbox.mark_done` and the like): its new status and
    what else changes. Every step also clears the lease and sets ``updated_at`` to ``at``."""

    status: str
    at: float
    texts: Mapping[str, str | None] = field(default_factory=dict)
    """Text columns set (``last_error``, ``note``)."""
    not_before: float | None = None
    count_attempt: bool = False
    flow_runs: Mapping[str, str] | None = None
    """Merged into the entry's (recipe -> flow run id)."""
    leave_lanes: bool = False
    """A final status: the entry leaves its lanes and its burst."""

    def sets(
        self, param: Callable[[int], str], time: Callable[[float], Any], merge_json: str
    ) -> tuple[str, list[Any]]:
        """The SET list of this step and its parameters, in one backend's dialect:
        ``param(n)`` is the n-th parameter, ``time`` turns epoch seconds into a stored time,
        ``merge_json`` merges a JSON parameter (``{}``) into ``flow_runs``."""
        values: list[Any] = [self.status, time(self.at)]
        sets = [f"status = {param(1)}", "lease_until = NULL", f"updated_at = {param(2)}"]
        for column, text in self.texts.items():
            values.append(text)
            sets.append(f"{column} = {param(len(values))}")
        if self.not_before is not None:
            values.append(time(self.not_before))
            sets.append(f"not_before = {param(len(values))}")
        if self.count_attempt:
            sets.append("attempts = attempts + 1")
        if self.flow_runs is not None:
            values.append(json.dumps(dict(self.flow_runs)))
            sets.append("flow_runs = " + merge_json.format(param(len(values))))
        return ", ".join(sets), values
