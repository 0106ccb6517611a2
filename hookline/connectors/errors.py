"""Errors raised by connector actions.

    HooklineError                        (hookline.errors)
    └── ConnectorError                   a vendor call failed, in the vendor's own words
        ├── TransientError               retry: timeout, connection refused/reset, 429, 5xx
        │                                (``retry_after``: seconds the vendor asked us to wait)
        └── PermanentError               fail fast: auth, validation, not found, other 4xx
            └── NotConfiguredError       the connection is missing settings (names the variable);
                                         ``unset`` when it has no configuration at all

The engine's step runner retries ``TransientError`` only. Connectors never retry themselves.
Messages never contain tokens, passwords or full URLs with query strings.
"""

from __future__ import annotations

from hookline.errors import HooklineError


class ConnectorError(HooklineError):
    """A vendor call failed.

    Attributes:
        connector: ``slack``, ``servicenow``, ... (the connection that failed).
        status: the HTTP status the vendor answered, if any.
    """

    def __init__(self, message: str, *, connector: str, status: int | None = None) -> None:
        super().__init__(message)
        self.connector = connector
        self.status = status


class TransientError(ConnectorError):
    """The call may succeed if retried later (timeouts, connection errors, 429, 5xx)."""

    def __init__(
        self,
        message: str,
        *,
        connector: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, connector=connector, status=status)
        self.retry_after = retry_after


class PermanentError(ConnectorError):
    """Retrying will not help: bad credentials, invalid input, missing record, other 4xx."""


class NotConfiguredError(PermanentError):
    """A connection lacks a required setting; the message names the environment variable.

    Attributes:
        unset: True only when the connection has no configuration at all (none of its required
            settings is set). `hookline up`'s preview mode applies to such a connector only; a
            half-configured one, a missing Prefect Secret block or an invalid value fails.
    """

    def __init__(self, message: str, *, connector: str, unset: bool = False) -> None:
        super().__init__(message, connector=connector)
        self.unset = unset
