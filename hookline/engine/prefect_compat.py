"""The Prefect internals Hookline reaches into, checked once when an engine process starts.

Hookline runs recipe flows in-process and shares Prefect's per-run machinery between runs
(docs/architecture.md#execution-prefects-work-pool-in-process-runs); for that it calls
functions Prefect does not promise to keep: `run_flow_async`, `propose_state`, the suspension
and cancellation observers, and (in the embedded server) `AioSqliteConfiguration`'s
`begin_transaction`. pyproject.toml pins the tested minor release, but an install that
ignores the pin (another constraints file, a hand upgrade) must not fail later in the middle
of a run: `check_prefect` fails at start-up, naming what moved and what to do.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from dataclasses import dataclass
from typing import Any

from hookline.errors import HooklineError

log = logging.getLogger("hookline.engine")

#: The Prefect minor release Hookline is tested with (pyproject.toml: prefect>=3.9.1,<3.10).
TESTED = (3, 9)

FIX = (
    "install the tested Prefect release: `make install` (pip install -c constraints.txt -e .), "
    "or `pip install 'prefect>=3.9.1,<3.10'`; to move Hookline to a new Prefect, re-run its "
    "tests (tests/engine) and bench/e2e.py, then `make lock` (docs/operations.md#upgrading-prefect)"
)


class PrefectCompatError(HooklineError):
    """The installed Prefect lacks an internal Hookline uses, or changed its signature."""


@dataclass(frozen=True)
class Internal:
    """One Prefect internal: where it lives, the parameters Hookline passes, and why."""

    module: str
    name: str  # may be dotted: Class.method
    params: tuple[str, ...]
    used_for: str


INTERNALS: tuple[Internal, ...] = (
    Internal(
        "prefect.flow_engine",
        "run_flow_async",
        ("flow", "flow_run", "parameters", "return_type"),
        "the worker runs recipe flows in its own process",
    ),
    Internal(
        "prefect.utilities.engine",
        "propose_state",
        ("client", "state", "flow_run_id"),
        "the worker claims a run (Scheduled -> Pending)",
    ),
    Internal(
        "prefect.flow_engine",
        "observe_flow_run_suspension",
        ("flow_run_id", "suspension_request"),
        "one suspension observer shared by every run (Suspend/Resume from the UI)",
    ),
    Internal(
        "prefect._flow_run_suspension",
        "mark_flow_run_suspension_requested",
        ("flow_run_id", "state"),
        "the shared suspension observer's callback",
    ),
    Internal(
        "prefect._internal.observers",
        "FlowRunSuspendingObserver",
        ("on_suspended",),
        "one suspension observer shared by every run",
    ),
    Internal(
        "prefect._internal.observers",
        "FlowRunCancellingObserver",
        ("on_cancelling",),
        "Cancel from the Prefect UI stops a recipe run before its next step",
    ),
    Internal(
        "prefect.server.database.configurations",
        "AioSqliteConfiguration.begin_transaction",
        ("self", "session", "with_for_update"),
        "the embedded Prefect server's IMMEDIATE SQLite transactions",
    ),
)


def _version(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _problem(internal: Internal) -> str | None:
    where = f"{internal.module}.{internal.name}"
    try:
        obj: Any = importlib.import_module(internal.module)
    except ImportError as exc:
        return f"{where}: cannot import {internal.module} ({exc})"
    for attr in internal.name.split("."):
        obj = getattr(obj, attr, None)
        if obj is None:
            return f"{where}: missing (used for: {internal.used_for})"
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError) as exc:
        return f"{where}: cannot read its signature ({exc})"
    missing = [p for p in internal.params if p not in params]
    if missing:
        return (
            f"{where}{inspect.signature(obj)}: no parameter {', '.join(missing)} "
            f"(used for: {internal.used_for})"
        )
    return None


def problems() -> list[str]:
    """What is missing or changed in the installed Prefect, one line each (empty: all good)."""
    return [p for p in map(_problem, INTERNALS) if p is not None]


def check_prefect() -> None:
    """Fail loudly, before anything starts, if the installed Prefect cannot run Hookline.

    Raises:
        PrefectCompatError: an internal is missing or its signature changed; the message lists
            each one and says what to do.
    """
    import prefect

    version = str(prefect.__version__)
    found = problems()
    tested = ".".join(map(str, TESTED))
    if found:
        raise PrefectCompatError(
            f"prefect {version} is not compatible with this Hookline (tested with prefect "
            f"{tested}.x): " + "; ".join(found) + f". To fix: {FIX}"
        )
    if _version(version) != TESTED:
        log.warning(
            "prefect %s is installed; Hookline is tested with %s.x. The internals it uses are "
            "still there, but re-run the tests before relying on it (%s)",
            version,
            tested,
            FIX,
        )
