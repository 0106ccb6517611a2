"""Errors of the receiver layer.

    HooklineError
    └── ReceiverError
        ├── SignatureError    the request is not signed by a configured secret (-> 401)
        └── EnvelopeError     the body is not the event the source promises (-> 400)

The HTTP answers stay generic for signatures; the log line carries the reason.
"""

from __future__ import annotations

from typing import Literal

from hookline.errors import HooklineError

SignatureReason = Literal["missing", "malformed", "expired", "mismatch"]


class ReceiverError(HooklineError):
    """Base class of the receiver's errors."""


class SignatureError(ReceiverError):
    """Signature verification failed; ``reason`` is a short code for metrics."""

    def __init__(self, reason: SignatureReason, detail: str) -> None:
        super().__init__(detail)
        self.reason: SignatureReason = reason
        self.detail = detail


class EnvelopeError(ReceiverError):
    """The body is not a valid event; ``field`` names the offending field."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail
