"""``http.request``: any HTTP API (accounting systems and everything else) over `httpx.Client`.

`make_client` builds the client: TLS verified (a private CA via ``SSL_CERT_FILE``), no
redirects followed silently, no retries (the step runner owns them), and every request's host
checked by a `HostPolicy` (``connections.http.allow_hosts`` / ``deny_hosts`` in hookline.yaml):
link-local and cloud metadata addresses are refused unless allowed by name, so a URL taken from
a payload cannot reach ``169.254.169.254``.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import httpx
from pydantic import Field

from hookline.connectors._http import (
    error_for_exception,
    error_for_status,
    json_or_text,
    safe_url,
)
from hookline.connectors.errors import PermanentError
from hookline.connectors.registry import ClientContext, Connector
from hookline.connectors.settings import ConnectorSettings

Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Refused unless ``allow_hosts`` names them: link-local (where cloud metadata services live)
#: and the metadata endpoints of AWS (IPv6), Alibaba, Azure, Oracle and GCP.
DEFAULT_DENY = (
    "169.254.0.0/16",
    "fe80::/10",
    "fd00:ec2::254",
    "100.100.100.200",
    "168.63.129.16",
    "192.0.0.192",
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
)


def _network(entry: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(entry.strip("[]"), strict=False)
    except ValueError:
        return None


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True)
class _Rules:
    names: tuple[str, ...]  # exact or glob ("*.example.com"), lower case
    networks: tuple[IPNetwork, ...]

    @classmethod
    def of(cls, entries: Iterable[str]) -> _Rules:
        names, networks = [], []
        for entry in entries:
            net = _network(entry)
            if net is not None:
                networks.append(net)
            else:
                names.append(entry.strip().lower().rstrip("."))
        return cls(tuple(names), tuple(networks))

    def has_name(self, host: str) -> bool:
        return any(host == n or fnmatch.fnmatchcase(host, n) for n in self.names)

    def has_address(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(ip.version == n.version and ip in n for n in self.networks)


Resolver = Callable[[str], list[str]]


def resolve_host(host: str) -> list[str]:
    """Every address ``host`` resolves to (empty when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return [str(info[4][0]) for info in infos]


class HostPolicy:
    """Which hosts ``http.request`` may call.

    - a host in ``deny_hosts`` (name, ``*.glob``, IP or CIDR) is refused;
    - with ``allow_hosts`` set, only the hosts it lists are allowed;
    - a host, or any address it resolves to, in `DEFAULT_DENY` is refused unless
      ``allow_hosts`` lists that host or address explicitly.
    """

    def __init__(
        self,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        *,
        resolver: Resolver = resolve_host,
    ) -> None:
        self.allow = _Rules.of(allow)
        self.deny = _Rules.of(deny)
        self.default = _Rules.of(DEFAULT_DENY)
        self._resolve = resolver

    def check(self, host: str) -> None:
        """Raises `PermanentError` naming the host and the setting that refuses it."""
        name = host.strip("[]").lower().rstrip(".")
        literal = _address(name)
        addresses = [literal] if literal is not None else None

        def refuse(why: str) -> PermanentError:
            return PermanentError(
                f"http.request: host {name!r} is not allowed: {why} "
                "(connections.http.allow_hosts / deny_hosts in hookline.yaml; "
                "docs/connectors.md#http)",
                connector="http",
            )

        def listed(rules: _Rules) -> bool:
            nonlocal addresses
            if rules.has_name(name):
                return True
            if not rules.networks:
                return False
            if addresses is None:
                addresses = [a for a in map(_address, self._resolve(name)) if a is not None]
            return any(rules.has_address(a) for a in addresses)

        if listed(self.deny):
            raise refuse("it is in deny_hosts")
        allowed = bool(self.allow.names or self.allow.networks) and listed(self.allow)
        if (self.allow.names or self.allow.networks) and not allowed:
            raise refuse("it is not in allow_hosts")
        if not allowed and listed(self.default):
            raise refuse(
                "link-local and cloud metadata addresses are refused unless allow_hosts names them"
            )

    def hook(self, request: httpx.Request) -> None:
        """An httpx request event hook: check the host before anything is sent."""
        self.check(request.url.host)


class HttpSettings(ConnectorSettings):
    """``connections.http``: defaults for http.request."""

    timeout: float = Field(default=30.0, gt=0, description="Default seconds per request.")
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="If set, the only hosts http.request may call: names, '*.example.com', "
        "IPs or CIDRs.",
        json_schema_extra={"env": None},
    )
    deny_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts http.request must never call, on top of link-local and cloud "
        "metadata addresses (always refused unless allow_hosts names them).",
        json_schema_extra={"env": None},
    )


def make_client(settings: HttpSettings, context: ClientContext) -> httpx.Client:
    """An httpx client whose every request's host is checked by `HostPolicy`."""
    policy = HostPolicy(settings.allow_hosts, settings.deny_hosts)
    return httpx.Client(
        verify=context.verify(),
        timeout=settings.timeout,
        event_hooks={"request": [policy.hook]},
    )


class RequestOutput(TypedDict):
    status: int
    headers: dict[str, str]
    body: Any


def _message(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("message", "error", "detail", "errors"):
            if key in body:
                value = body[key]
                if isinstance(value, dict) and "message" in value:
                    return str(value["message"])
                return str(value)
    return str(body)


def request(
    client: httpx.Client,
    *,
    url: str,
    method: Method = "POST",
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    json: dict[str, Any] | list[Any] | None = None,
    form: dict[str, str] | None = None,
    expected_status: list[int] | None = None,
    timeout: float | None = None,
    idempotency_header: str | None = None,
    idempotency_key: str | None = None,
) -> RequestOutput:
    """Send one HTTP request; outputs the status, headers and parsed (JSON or text) body.

    Any 2xx is success unless ``expected_status`` lists the accepted statuses. Otherwise 429
    and 5xx raise TransientError, the rest PermanentError with the server's message.
    ``idempotency_header`` (e.g. ``Idempotency-Key``) sends the step's idempotency key.
    """
    if json is not None and form is not None:
        raise PermanentError("http.request: give json or form, not both", connector="http")
    if not url.startswith(("https://", "http://")):
        raise PermanentError(
            f"http.request: url must start with https:// or http://, not {url[:40]!r}",
            connector="http",
        )
    sent = dict(headers or {})
    if idempotency_header and idempotency_key:
        sent.setdefault(idempotency_header, idempotency_key)
    what = f"{method} {safe_url(url)}"
    try:
        response = client.request(
            method,
            url,
            headers=sent,
            params=params,
            json=json,
            data=form,
            timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
        )
    except httpx.HTTPError as exc:
        mapped = error_for_exception("http", exc, what=what)
        if mapped is None:
            raise PermanentError(f"http: {what} failed: {exc}", connector="http") from None
        raise mapped from None
    body = json_or_text(response) if response.content else None
    ok = (
        response.status_code in expected_status
        if expected_status
        else 200 <= response.status_code < 300
    )
    if not ok:
        raise error_for_status(
            "http", response.status_code, response.headers, _message(body), what=what
        )
    return {"status": response.status_code, "headers": dict(response.headers), "body": body}


CONNECTOR = Connector(name="http", settings=HttpSettings, client=make_client, actions=(request,))
