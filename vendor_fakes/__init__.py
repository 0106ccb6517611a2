"""Fake vendor servers for connector, end-to-end and demo use.

In process::

    with FakeVendors() as fakes:               # HTTPS with a throwaway trustme CA
        env = fakes.env                        # SLACK_API_URL, SERVICENOW_INSTANCE, ...,
                                               # SSL_CERT_FILE and REQUESTS_CA_BUNDLE
        fakes.slack.fail_next(1, status=429, retry_after=2)
        ...
        assert fakes.servicenow.incidents[0]["correlation_id"] == "..."
        fakes.slack.calls_to("chat.postMessage")

From another process: ``python -m vendor_fakes --port-file F`` writes
``{"env": {...}, "control": {"slack": "https://127.0.0.1:PORT/_hookline", ...}}`` to F, and
`RemoteFake` (or plain HTTP) reads calls and injects failures through the control endpoints.
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
from pathlib import Path
from typing import Any

import httpx
import trustme

from vendor_fakes.base import Call, FakeServer
from vendor_fakes.echo import FakeEcho
from vendor_fakes.inventory import FakeInventory
from vendor_fakes.salesforce import FakeSalesforce
from vendor_fakes.servicenow import FakeServiceNow
from vendor_fakes.slack import FakeSlack

__all__ = [
    "Call",
    "FakeEcho",
    "FakeInventory",
    "FakeSalesforce",
    "FakeServer",
    "FakeServiceNow",
    "FakeSlack",
    "FakeVendors",
    "RemoteFake",
]


class FakeVendors:
    """All five fakes, sharing one throwaway CA when ``tls`` (the default); every vendor call
    answers after ``latency`` seconds."""

    def __init__(
        self, *, tls: bool = True, ca_dir: Path | None = None, latency: float = 0.0
    ) -> None:
        self._tmp: str | None = None
        self.ca_file: Path | None = None
        context: ssl.SSLContext | None = None
        if tls:
            ca = trustme.CA(organization_name="Hookline fake vendors")
            cert = ca.issue_cert("127.0.0.1", "localhost")
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(context)
            if ca_dir is None:
                self._tmp = tempfile.mkdtemp(prefix="hookline-fakes-")
                ca_dir = Path(self._tmp)
            ca_dir.mkdir(parents=True, exist_ok=True)
            self.ca_file = ca_dir / "hookline-fake-ca.pem"
            ca.cert_pem.write_to_path(str(self.ca_file))
        self.slack = FakeSlack(tls=context, latency=latency)
        self.servicenow = FakeServiceNow(tls=context, latency=latency)
        self.salesforce = FakeSalesforce(tls=context, latency=latency)
        self.inventory = FakeInventory(tls=context, latency=latency)
        self.echo = FakeEcho(tls=context, latency=latency)

    @property
    def servers(self) -> list[FakeServer]:
        return [self.slack, self.servicenow, self.salesforce, self.inventory, self.echo]

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point every connector at the fakes."""
        env: dict[str, str] = {}
        for server in self.servers:
            env.update(server.env())
        if self.ca_file is not None:
            env["SSL_CERT_FILE"] = str(self.ca_file)
            env["REQUESTS_CA_BUNDLE"] = str(self.ca_file)
        return env

    @property
    def control(self) -> dict[str, str]:
        """Control endpoint base URL per fake."""
        return {server.name: server.control_url for server in self.servers}

    def start(self) -> FakeVendors:
        for server in self.servers:
            server.start()
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def reset(self) -> None:
        for server in self.servers:
            server.reset()

    def __enter__(self) -> FakeVendors:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RemoteFake:
    """Drive a fake running in another process through its control endpoints."""

    def __init__(self, control_url: str, *, ca_file: str | None = None) -> None:
        self.control_url = control_url.rstrip("/")
        self._verify: Any = ssl.create_default_context(cafile=ca_file) if ca_file else True

    def _client(self) -> httpx.Client:
        return httpx.Client(verify=self._verify, timeout=10)

    def calls(self) -> list[dict[str, Any]]:
        with self._client() as client:
            response = client.get(f"{self.control_url}/calls")
            response.raise_for_status()
            result: list[dict[str, Any]] = response.json()
            return result

    def state(self) -> Any:
        with self._client() as client:
            response = client.get(f"{self.control_url}/state")
            response.raise_for_status()
            return response.json()

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int | None = 500,
        retry_after: float | None = None,
        delay: float = 0.0,
        path: str | None = None,
        method: str | None = None,
    ) -> None:
        spec = {
            "method": method,
            "count": count,
            "status": status,
            "retry_after": retry_after,
            "delay": delay,
            "path": path,
        }
        with self._client() as client:
            client.post(f"{self.control_url}/fail", json=spec).raise_for_status()

    def reset(self) -> None:
        with self._client() as client:
            client.post(f"{self.control_url}/reset").raise_for_status()
