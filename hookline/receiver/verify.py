"""Signature schemes: pure functions over the raw body, the headers, the secrets and the time.

Each verifier has the shape ``verify(body, headers, *, secrets, now, tolerance)`` and returns
None when one of ``secrets`` signed ``body``, or raises `SignatureError` with a reason code
(``missing``, ``malformed``, ``expired``, ``mismatch``) and a message for the log. Every parse
failure of a header becomes a `SignatureError`, never a stray exception. Digests are compared
with `hmac.compare_digest`; every configured secret is tried (key rotation without downtime).

``secrets`` are keys as bytes: `secret_key` turns a configured secret string into the key its
scheme uses (Standard Webhooks' ``whsec_<base64>`` is base64-decoded; the others are UTF-8).
`MIN_KEY_BYTES` is the shortest key a source may be configured with (checked at start-up by
`hookline.receiver.sources`, not here: the published known-answer vectors use short keys).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from hookline.errors import ConfigError
from hookline.receiver.errors import SignatureError


class Verifier(Protocol):
    """``verify(body, headers, *, secrets, now, tolerance)``: None, or raises `SignatureError`."""

    def __call__(
        self,
        body: bytes,
        headers: Mapping[str, str],
        *,
        secrets: Sequence[bytes],
        now: float,
        tolerance: float = ...,
    ) -> None: ...


DEFAULT_TOLERANCE = 300.0  # seconds; Standard Webhooks, Slack and Stripe all use 5 minutes

# The shortest HMAC key accepted, after decoding. Standard Webhooks secrets are 24 to 64
# random bytes (the spec); for the others, 16 bytes (128 bits) is the floor that keeps a key
# out of reach of guessing, and refuses "" or " " left by an unset variable.
MIN_KEY_BYTES: dict[str, int] = {"standard": 24}
DEFAULT_MIN_KEY_BYTES = 16


def min_key_bytes(scheme: str) -> int:
    """The shortest key, in bytes after decoding, a source of ``scheme`` may use."""
    return MIN_KEY_BYTES.get(scheme, DEFAULT_MIN_KEY_BYTES)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Header ``name`` (lower-case) from a case-insensitive or a plain mapping."""
    value = headers.get(name)
    if value is None:
        for key, v in headers.items():
            if key.lower() == name:
                return v
    return value


def _required(headers: Mapping[str, str], name: str, display: str) -> str:
    value = _header(headers, name)
    if value is None or value.strip() == "":
        raise SignatureError("missing", f"missing header {display}")
    return value.strip()


def _ascii(value: str) -> bytes:
    # compare_digest on str raises TypeError for non-ASCII; compare bytes instead.
    return value.encode("utf-8", "backslashreplace")


def _hmac_hex(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).hexdigest().encode("ascii")


def _timestamp(value: str, display: str, now: float, tolerance: float) -> int:
    if not value.isdigit() or not value.isascii() or len(value) > 15:
        raise SignatureError("malformed", f"header {display} is not a Unix timestamp: {value!r}")
    ts = int(value)
    if abs(now - ts) > tolerance:
        raise SignatureError(
            "expired",
            f"header {display}={ts} is {now - ts:+.0f} s from now (tolerance {tolerance:.0f} s)",
        )
    return ts


def _match_any(candidates: Sequence[bytes], expected: Sequence[bytes]) -> bool:
    ok = False
    for e in expected:
        for c in candidates:
            # No early exit: the time taken does not depend on which secret matched.
            ok |= hmac.compare_digest(c, e)
    return ok


def _prefixed_hex(value: str, prefix: str, display: str) -> bytes:
    if not value.startswith(prefix):
        raise SignatureError("malformed", f"header {display} does not start with {prefix!r}")
    digest = value[len(prefix) :]
    if len(digest) != 64:
        raise SignatureError(
            "malformed", f"header {display}: expected 64 hex digits after {prefix}"
        )
    return _ascii(digest.lower())


@dataclass(frozen=True)
class _Signed:
    """What a request says was signed: the signatures it carries (in ``header``), the message
    they sign, and how a key signs it."""

    header: str
    signatures: list[bytes]
    message: bytes
    digest: Callable[[bytes, bytes], bytes] = _hmac_hex


_Reader = Callable[[bytes, Mapping[str, str], float, float], _Signed]


def _scheme(read: _Reader) -> Verifier:
    """The verifier of the scheme whose requests ``read`` parses (``read`` raises
    `SignatureError` for a missing, malformed or expired header): one of ``secrets`` must
    sign the message, every secret tried for every signature sent."""

    def verify(
        body: bytes,
        headers: Mapping[str, str],
        *,
        secrets: Sequence[bytes],
        now: float,
        tolerance: float = DEFAULT_TOLERANCE,
    ) -> None:
        signed = read(body, headers, now, tolerance)
        expected = [signed.digest(k, signed.message) for k in secrets]
        if not _match_any(signed.signatures, expected):
            raise SignatureError("mismatch", f"{signed.header} matches no configured secret")

    verify.__doc__ = read.__doc__
    verify.__name__ = verify.__qualname__ = f"verify{read.__name__}"  # _slack: verify_slack
    return verify


def _sha256_body(body: bytes, headers: Mapping[str, str], header: str) -> _Signed:
    """``<header>: sha256=<hex HMAC-SHA256(secret, raw body)>`` (SolveForce, GitHub)."""
    value = _required(headers, header.lower(), header)
    return _Signed(header, [_prefixed_hex(value, "sha256=", header)], body)


def _solveforce(body: bytes, headers: Mapping[str, str], now: float, tolerance: float) -> _Signed:
    """SolveForce: ``X-SolveForce-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>``.

    As the seed's ``verify_webhook_signature`` computes it. The scheme signs no timestamp,
    so ``now`` and ``tolerance`` are unused; replays are caught by deduplication.
    """
    return _sha256_body(body, headers, "X-SolveForce-Signature")


def _github(body: bytes, headers: Mapping[str, str], now: float, tolerance: float) -> _Signed:
    """GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, raw body)>``."""
    return _sha256_body(body, headers, "X-Hub-Signature-256")


def _slack(body: bytes, headers: Mapping[str, str], now: float, tolerance: float) -> _Signed:
    """Slack v0: ``X-Slack-Signature: v0=<hex HMAC-SHA256(secret, "v0:" ts ":" body)>``."""
    ts_raw = _required(headers, "x-slack-request-timestamp", "X-Slack-Request-Timestamp")
    value = _required(headers, "x-slack-signature", "X-Slack-Signature")
    ts = _timestamp(ts_raw, "X-Slack-Request-Timestamp", now, tolerance)
    got = _prefixed_hex(value, "v0=", "X-Slack-Signature")
    return _Signed("X-Slack-Signature", [got], b"v0:" + str(ts).encode("ascii") + b":" + body)


def _stripe(body: bytes, headers: Mapping[str, str], now: float, tolerance: float) -> _Signed:
    """Stripe: ``Stripe-Signature: t=<ts>,v1=<hex HMAC-SHA256(secret, ts "." body)>[,v1=...]``."""
    value = _required(headers, "stripe-signature", "Stripe-Signature")
    ts_raw: str | None = None
    candidates: list[bytes] = []
    for item in value.split(","):
        key, sep, val = item.strip().partition("=")
        if not sep:
            raise SignatureError("malformed", f"Stripe-Signature item {item.strip()!r} has no '='")
        if key == "t":
            ts_raw = val
        elif key == "v1":
            candidates.append(_ascii(val.lower()))
    if ts_raw is None:
        raise SignatureError("malformed", "Stripe-Signature has no t=<timestamp>")
    if not candidates:
        raise SignatureError("malformed", "Stripe-Signature has no v1=<signature>")
    ts = _timestamp(ts_raw, "Stripe-Signature t", now, tolerance)
    return _Signed("Stripe-Signature", candidates, str(ts).encode("ascii") + b"." + body)


def _standard_header(headers: Mapping[str, str], name: str) -> str:
    # Svix, the reference implementation, sends the same headers as svix-id / svix-...
    value = _header(headers, f"webhook-{name}")
    if value is None:
        value = _header(headers, f"svix-{name}")
    if value is None or value.strip() == "":
        raise SignatureError("missing", f"missing header webhook-{name}")
    return value.strip()


def _hmac_base64(key: bytes, message: bytes) -> bytes:
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest())


def _standard(body: bytes, headers: Mapping[str, str], now: float, tolerance: float) -> _Signed:
    """Standard Webhooks: ``webhook-signature: v1,<base64 HMAC-SHA256(key, id.ts.body)> ...``."""
    msg_id = _standard_header(headers, "id")
    ts_raw = _standard_header(headers, "timestamp")
    value = _standard_header(headers, "signature")
    ts = _timestamp(ts_raw, "webhook-timestamp", now, tolerance)
    candidates: list[bytes] = []
    for item in value.split():
        version, sep, sig = item.partition(",")
        if not sep:
            raise SignatureError("malformed", f"webhook-signature item {item!r} is not v1,<sig>")
        if version == "v1":
            candidates.append(_ascii(sig))
    if not candidates:
        raise SignatureError("malformed", "webhook-signature has no v1 signature")
    signed = _ascii(msg_id) + b"." + str(ts).encode("ascii") + b"." + body
    return _Signed("webhook-signature", candidates, signed, _hmac_base64)


verify_solveforce = _scheme(_solveforce)
verify_github = _scheme(_github)
verify_slack = _scheme(_slack)
verify_stripe = _scheme(_stripe)
verify_standard = _scheme(_standard)

SCHEMES: dict[str, Verifier] = {
    "solveforce": verify_solveforce,
    "github": verify_github,
    "slack": verify_slack,
    "stripe": verify_stripe,
    "standard": verify_standard,
}

# Header names whose values are signatures; they are never stored with the event.
SIGNATURE_HEADERS: frozenset[str] = frozenset(
    {
        "x-solveforce-signature",
        "x-hub-signature",
        "x-hub-signature-256",
        "x-slack-signature",
        "stripe-signature",
        "webhook-signature",
        "svix-signature",
    }
)


def secret_key(scheme: str, secret: str, *, where: str) -> bytes:
    """The HMAC key ``scheme`` derives from a configured secret string.

    Raises:
        ConfigError: a Standard Webhooks secret is not ``whsec_<base64>`` or base64.
    """
    if scheme == "standard":
        raw = secret.removeprefix("whsec_")
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(
                f"{where}: a Standard Webhooks secret is 'whsec_' followed by base64"
            ) from None
    return secret.encode("utf-8")


def sign_solveforce(body: bytes, secret: str) -> str:
    """The ``X-SolveForce-Signature`` value for ``body`` (for tests, `hookline send`, benches)."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
