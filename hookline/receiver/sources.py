"""The ``sources:`` and ``receiver:`` sections of hookline.yaml.

    sources:
      solveforce:
        scheme: solveforce              # solveforce | github | slack | stripe | standard
        secrets: ["${SOLVEFORCE_WEBHOOK_SECRET}", "${SOLVEFORCE_WEBHOOK_SECRET_PREVIOUS:-}"]
        allow_ips: ["203.0.113.0/24"]   # optional; CIDRs allowed to send (default: any)
        rate_limit: {per_second: 50, burst: 200}   # optional
        # where the event id / type / time are (defaults depend on the scheme); the id must
        # be signed: "json:<path>" (in the body), "body:sha256" (the body's digest: GitHub),
        # or Standard Webhooks' "header:webhook-id"
        event_id: "json:event_id"
        event_type: "json:event_type"
        event_time: "json:timestamp"
      slack:
        scheme: slack                   # JSON events, and interactivity forms (payload=...)
        secrets: ["${SLACK_SIGNING_SECRET:-}", "${SLACK_SIGNING_SECRET_PREVIOUS:-}"]
        optional: true                  # no secret set: disabled (404), not an error
    receiver:
      max_body_bytes: 1048576
      store_timeout_seconds: 10
      retry_after_seconds: 5
      trusted_proxies: []                # peers whose X-Forwarded-For is believed
      sqlite_synchronous: FULL           # FULL | NORMAL
      sqlite_writer: loop                # loop | thread (see hookline.inbox.SQLiteInbox)
      admin_token: ${HOOKLINE_ADMIN_TOKEN:-}   # Bearer token for /metrics, /readyz, /openapi.json

Secrets that resolve to an empty string (``${OLD:-}``, or ``whsec_${OLD:-}`` once decoded) are
skipped, so a rotation slot can stay in the file; a source with no secret left is a
configuration error, and so is a key shorter than its scheme's minimum after decoding (24
bytes for Standard Webhooks, 16 for the others): an unset variable must never leave a source
that accepts bodies signed with an empty or guessable key.

Unless the source says ``optional: true`` (the shipped ``slack`` source: not everyone uses
Slack): with no secret left (unset variables included) it is *disabled*. The receiver then
logs one WARNING naming the variables at start-up and answers its requests 404
``source_not_configured``; it never accepts an unsigned body. A secret that is set but too
short is still an error.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from hookline.config import HooklineConfig, referenced_variables, resolve
from hookline.errors import ConfigError
from hookline.inbox.base import TIMER_SOURCE
from hookline.receiver.verify import (
    DEFAULT_TOLERANCE,
    SCHEMES,
    Verifier,
    min_key_bytes,
    secret_key,
)

Scheme = Literal["solveforce", "github", "slack", "stripe", "standard"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MIN_ADMIN_TOKEN = 16

# The event id as the SHA-256 of the signed body, for senders whose id header is not signed.
BODY_DIGEST = "body:sha256"

# Where each scheme's senders put the event id, type and time.
SCHEME_DEFAULTS: dict[str, dict[str, str | None]] = {
    "solveforce": {
        "event_id": "json:event_id",
        "event_type": "json:event_type",
        "event_time": "json:timestamp",
    },
    "github": {
        # GitHub signs the body only: X-GitHub-Delivery could be changed on a captured body.
        "event_id": BODY_DIGEST,
        "event_type": "header:X-GitHub-Event",  # not signed either: see unsigned_warnings
        "event_time": None,
    },
    "slack": {"event_id": "json:event_id", "event_type": "json:event.type", "event_time": None},
    "stripe": {"event_id": "json:id", "event_type": "json:type", "event_time": "json:created"},
    "standard": {
        "event_id": "header:webhook-id",
        "event_type": "json:type",
        "event_time": "header:webhook-timestamp",
    },
}


class RateLimitConfig(BaseModel):
    """A token bucket per source: ``per_second`` sustained, ``burst`` at once."""

    model_config = ConfigDict(extra="forbid")

    per_second: float = Field(gt=0, description="Sustained events per second.")
    burst: int = Field(default=0, ge=0, description="Bucket size; 0 means max(1, per_second).")


def _cidrs(v: list[str]) -> list[str]:
    for cidr in v:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ValueError(f"{cidr!r} is not an IP address or CIDR") from None
    return v


Cidrs = Annotated[list[str], AfterValidator(_cidrs)]
"""IP addresses or networks (``10.0.0.0/8``), each checked."""


def _locator(value: str | None, where: str) -> str | None:
    if value is None or value == BODY_DIGEST:
        return value
    kind, sep, name = value.partition(":")
    if not sep or kind not in ("json", "header") or not name:
        raise ValueError(f"{where} must be 'json:<dotted.path>' or 'header:<Name>', not {value!r}")
    return value


class SourceConfig(BaseModel):
    """One webhook sender."""

    model_config = ConfigDict(extra="forbid")

    scheme: Scheme = Field(description="Signature scheme.")
    secrets: list[str] = Field(min_length=1, description="Secrets accepted at once (rotation).")
    optional: bool = Field(
        default=False,
        description="With no secret set, the source is disabled (404) instead of an error.",
    )
    allow_ips: Cidrs = Field(default_factory=list, description="CIDRs allowed; empty = any.")
    rate_limit: RateLimitConfig | None = None
    tolerance_seconds: float = Field(default=DEFAULT_TOLERANCE, gt=0)
    max_body_bytes: int | None = Field(default=None, gt=0)
    event_id: str | None = None
    event_type: str | None = None
    event_time: str | None = None

    @field_validator("event_id")
    @classmethod
    def _id_locator(cls, v: str | None) -> str | None:
        return _locator(v, f"event_id (or {BODY_DIGEST!r})")

    @field_validator("event_type", "event_time")
    @classmethod
    def _locators(cls, v: str | None) -> str | None:
        if v == BODY_DIGEST:
            raise ValueError(f"{BODY_DIGEST!r} is for event_id only")
        return _locator(v, "event_type/event_time")


class ReceiverConfig(BaseModel):
    """HTTP settings of the receiver."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(default=1024 * 1024, gt=0, description="Larger bodies get 413.")
    store_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Answer 503 if the inbox has not committed by then."
    )
    retry_after_seconds: int = Field(default=5, ge=1, description="Retry-After on 503.")
    trusted_proxies: Cidrs = Field(
        default_factory=list, description="Peers (CIDRs) whose X-Forwarded-For is believed."
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    sqlite_writer: Literal["loop", "thread"] = "loop"
    admin_token: str = Field(
        default="",
        description="Bearer token /metrics, /readyz and /openapi.json require; empty means "
        "open (default: the HOOKLINE_ADMIN_TOKEN environment variable).",
    )

    @field_validator("admin_token")
    @classmethod
    def _token(cls, v: str) -> str:
        if v and len(v) < MIN_ADMIN_TOKEN:
            raise ValueError(
                f"is {len(v)} characters; use at least {MIN_ADMIN_TOKEN}"
                " (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return v

    @property
    def proxy_networks(self) -> tuple[Network, ...]:
        return tuple(ipaddress.ip_network(c, strict=False) for c in self.trusted_proxies)


@dataclass(frozen=True)
class Source:
    """A source ready to verify requests: resolved secrets, parsed networks, locators."""

    name: str
    scheme: str
    verify: Verifier
    keys: tuple[bytes, ...]
    secret_texts: tuple[str, ...]  # to keep any header carrying a secret out of the store
    networks: tuple[Network, ...]
    rate_limit: RateLimitConfig | None
    tolerance: float
    max_body_bytes: int
    event_id: str
    event_type: str
    event_time: str | None
    # Why an optional source with no secret is off (naming the variables to set); None: on.
    disabled: str | None = None


def _problems(exc: ValidationError, prefix: str) -> str:
    return "; ".join(
        f"{prefix}.{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
    )


def load_receiver_config(
    config: HooklineConfig, *, environ: Mapping[str, str] | None = None
) -> ReceiverConfig:
    """Validate the ``receiver:`` section; ``admin_token`` defaults to HOOKLINE_ADMIN_TOKEN.

    Raises:
        ConfigError: naming the file and the field (or the variable).
    """
    env = os.environ if environ is None else environ
    raw = resolve(config.receiver, where=f"{config.path}: receiver", environ=env)
    if not raw.get("admin_token") and env.get("HOOKLINE_ADMIN_TOKEN"):
        raw = {**raw, "admin_token": env["HOOKLINE_ADMIN_TOKEN"]}
    try:
        return ReceiverConfig.model_validate(raw)
    except ValidationError as exc:
        problems = _problems(exc, "receiver")
        if "admin_token" in problems:
            problems += " (receiver.admin_token or HOOKLINE_ADMIN_TOKEN)"
        raise ConfigError(f"{config.path}: {problems}") from None


def _secrets(
    sc: SourceConfig, where: str, environ: Mapping[str, str] | None
) -> tuple[tuple[str, ...], tuple[bytes, ...]]:
    """The source's secret texts and their keys, empty rotation slots skipped.

    Raises:
        ConfigError: no secret is left (none left for an optional source: empty tuples), or
            a key is shorter than the scheme's minimum; the message names the source, the
            slot and the environment variable.
    """
    minimum = min_key_bytes(sc.scheme)
    texts: list[str] = []
    keys: list[bytes] = []
    for i, raw in enumerate(sc.secrets):
        slot = f"{where}.secrets[{i}]"
        variables = referenced_variables(raw)
        try:
            text = resolve(raw, where=slot, environ=environ)
        except ConfigError:
            if sc.optional:
                continue  # "${SLACK_SIGNING_SECRET}" unset: the optional source is disabled
            raise
        if text == "":
            continue  # "${OLD:-}": an empty rotation slot
        # Decoded first: "whsec_${OLD:-}" is not empty, but its key is.
        key = secret_key(sc.scheme, text, where=slot)
        if key == b"" and variables:
            continue  # "whsec_${OLD:-}": an empty rotation slot too
        if len(key) < minimum:
            origin = (
                "environment variable " + "/".join(variables)
                if variables
                else "secret written in the file"
            )
            hint = (
                "'whsec_' followed by the base64 of 24 to 64 random bytes"
                if sc.scheme == "standard"
                else "e.g. python -c 'import secrets; print(secrets.token_hex(32))'"
            )
            raise ConfigError(
                f"{slot}: the key from the {origin} is {len(key)} bytes"
                f"{' after base64 decoding' if sc.scheme == 'standard' else ''}; a {sc.scheme}"
                f" source needs at least {minimum} bytes ({hint})"
            )
        texts.append(text)
        keys.append(key)
    if not keys and not sc.optional:
        variables = [v for raw in sc.secrets for v in referenced_variables(raw)]
        todo = f"; set {' or '.join(variables)}" if variables else ""
        raise ConfigError(f"{where}.secrets: every secret resolved to an empty string{todo}")
    return tuple(texts), tuple(keys)


def load_sources(
    config: HooklineConfig,
    receiver: ReceiverConfig,
    *,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Source]:
    """Validate the ``sources:`` section and resolve its secrets.

    Raises:
        ConfigError: an unknown key or scheme, a bad CIDR, an unset secret variable or a key
            too short; the message names the file, the source and the field (or the variable).
    """
    out: dict[str, Source] = {}
    for name, raw in config.sources.items():
        where = f"{config.path}: sources.{name}"
        if name == TIMER_SOURCE:  # its events are fired by timers, never posted
            raise ConfigError(f"{where}: {name!r} is reserved for timer events; rename it")
        try:
            sc = SourceConfig.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(
                f"{config.path}: {_problems(exc, f'sources.{name}')}"
                f" (valid schemes: {', '.join(SCHEMES)})"
            ) from None
        texts, keys = _secrets(sc, where, environ)
        defaults = SCHEME_DEFAULTS[sc.scheme]
        if sc.event_id is not None and not signs(sc.scheme, sc.event_id):
            raise ConfigError(
                f"{where}.event_id: {sc.event_id!r} is not signed by the {sc.scheme} scheme,"
                " so a captured body could be stored again under new ids; use"
                f" 'json:<path>' for an id inside the signed body, or {BODY_DIGEST!r}"
            )
        out[name] = Source(
            name=name,
            scheme=sc.scheme,
            verify=SCHEMES[sc.scheme],
            keys=keys,
            secret_texts=texts,
            networks=tuple(ipaddress.ip_network(c, strict=False) for c in sc.allow_ips),
            rate_limit=sc.rate_limit,
            tolerance=sc.tolerance_seconds,
            max_body_bytes=sc.max_body_bytes or receiver.max_body_bytes,
            event_id=sc.event_id or str(defaults["event_id"]),
            event_type=sc.event_type or str(defaults["event_type"]),
            event_time=sc.event_time if sc.event_time is not None else defaults["event_time"],
            disabled=None if keys else _disabled(sc),
        )
    return out


def _disabled(sc: SourceConfig) -> str:
    """Why an optional source is off: the variable that would turn it on."""
    variables = [v for raw in sc.secrets for v in referenced_variables(raw)]
    return f"{variables[0]} is not set" if variables else "no secret is set"


def disabled_warnings(sources: Mapping[str, Source]) -> list[str]:
    """One line per disabled optional source: what to set to turn it on."""
    return [
        f"sources.{s.name}: disabled ({s.disabled}); POST /webhooks/{s.name} answers 404"
        " source_not_configured until it is set"
        for s in sources.values()
        if s.disabled is not None
    ]


def signs(scheme: str, locator: str) -> bool:
    """Whether ``scheme``'s signature covers what ``locator`` points at."""
    kind, _, name = locator.partition(":")
    if kind in ("json", "body"):
        return True
    # Standard Webhooks signs "<id>.<timestamp>.<body>" (Svix names the headers svix-*).
    return scheme == "standard" and name.lower() in (
        "webhook-id",
        "svix-id",
        "webhook-timestamp",
        "svix-timestamp",
    )


def unsigned_warnings(sources: Mapping[str, Source]) -> list[str]:
    """One line per source whose event type (or time) comes from a header its signature does
    not cover: whoever captured a signed body could re-send it as another type, unless the
    body was stored first (the event id is always signed, so a replay is a duplicate)."""
    out = []
    for s in sources.values():
        for what, locator in (("event_type", s.event_type), ("event_time", s.event_time)):
            if locator is not None and not signs(s.scheme, locator):
                out.append(
                    f"sources.{s.name}.{what}: {locator!r} is not signed by the {s.scheme}"
                    " scheme; a captured body re-sent first with another value would be"
                    " stored with it (restrict the sender with allow_ips)"
                )
    return out


def describe(sources: Mapping[str, Source]) -> dict[str, Any]:
    """A loggable summary of the sources (never a secret)."""
    return {
        n: {
            "scheme": s.scheme,
            "secrets": len(s.keys),
            "allow_ips": [str(x) for x in s.networks],
            **({"disabled": s.disabled} if s.disabled is not None else {}),
        }
        for n, s in sources.items()
    }
