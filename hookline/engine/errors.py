"""The engine's errors (dispatcher, worker, embedded Prefect server, `hookline up`/`send`).

HooklineError
└── EngineError
    ├── PrefectCompatError    the installed Prefect lacks an internal Hookline uses
    ├── PrefectServerError    the embedded Prefect server did not start
    ├── PrefectUnavailable    the Prefect API cannot be reached now (readiness)
    ├── AlreadyRunningError   another `hookline up` owns this HOOKLINE_HOME
    └── SendError             `hookline send` could not build or send its event
"""

from __future__ import annotations

from hookline.errors import HooklineError


class EngineError(HooklineError):
    """Base class of the engine's errors."""


class PrefectUnavailable(EngineError):  # noqa: N818 - a state, as starlette's HTTPException
    """The Prefect API cannot be reached now; events wait in the inbox (the message says how
    many)."""
