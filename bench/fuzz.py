"""Fuzz a real receiver at volume: zero 5xx (other than 503 with Retry-After), zero crashes.

    .venv/bin/python bench/fuzz.py [--examples 20000] [--schemathesis 2000]

Starts ``python -m hookline serve`` on a free port with one source of every scheme, then
sends (1) schemathesis cases generated from the receiver's OpenAPI document and (2)
hypothesis-generated headers and bodies, a share of them correctly signed (SolveForce, and
Standard Webhooks under both the webhook-* and Svix's svix-* names), including ids and types
with lone surrogates or NUL, JSON nested up to 5000 levels and X-Forwarded-For on several
lines behind a trusted proxy. Prints the
number of requests per status and exits 1 on any 5xx, transport error or server death.
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookline.engine.prefect_server import free_port
from hookline.receiver.openapi import openapi_schema

SECRET = "fuzz-secret-0123456789"
CONFIG = f"""\
sources:
  solveforce: {{scheme: solveforce, secrets: ["{SECRET}"]}}
  limited: {{scheme: solveforce, secrets: ["{SECRET}"], rate_limit: {{per_second: 5, burst: 5}}}}
  office: {{scheme: solveforce, secrets: ["{SECRET}"], allow_ips: ["10.0.0.0/8"]}}
  github: {{scheme: github, secrets: ["{SECRET}"]}}
  slack: {{scheme: slack, secrets: ["{SECRET}"]}}
  stripe: {{scheme: stripe, secrets: ["{SECRET}"]}}
  standard: {{scheme: standard, secrets: ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}}
receiver: {{max_body_bytes: 65536, trusted_proxies: ["127.0.0.0/8"]}}
"""
STD_KEY = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
SOURCES = ["solveforce", "limited", "office", "github", "slack", "stripe", "standard"]

counts: collections.Counter[int] = collections.Counter()
problems: list[str] = []


def record(status: int, where: str, detail: str = "", headers: Any = None) -> None:
    counts[status] += 1
    if status >= 500 and not (status == 503 and headers and "retry-after" in headers):
        problems.append(f"{where}: {status} {detail[:200]}")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
    max_leaves=12,
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "event_type": st.one_of(st.text(max_size=30), json_values),
        "event_id": st.one_of(st.text(max_size=300), json_values),
        "timestamp": st.one_of(
            st.datetimes().map(lambda d: d.isoformat()), st.text(max_size=30), json_values
        ),
        "data": json_values,
        "account": json_values,
    },
)
valid_events = st.fixed_dictionaries(
    {
        "event_type": st.text(min_size=1, max_size=30).filter(str.strip),
        "event_id": st.text(min_size=1, max_size=40).filter(str.strip),
        "timestamp": st.datetimes().map(lambda d: d.isoformat()),
        "data": st.dictionaries(st.text(max_size=10), json_values, max_size=4),
    }
)
# Ids and types no store takes: lone surrogates and NUL (json.dumps escapes them).
bad_text = st.text(
    alphabet=st.one_of(st.characters(categories=["Cs"]), st.sampled_from(["\x00", "\n", "a", "-"])),
    min_size=1,
    max_size=12,
)
bad_ids = st.fixed_dictionaries(
    {
        "event_type": st.one_of(bad_text, st.just("service.status.changed")),
        "event_id": st.one_of(bad_text, st.text(min_size=1, max_size=8)),
        "timestamp": st.just("2024-01-15T10:30:00Z"),
        "data": st.just({}),
    }
)


def deep(levels: int, kind: int) -> bytes:
    """An envelope whose ``data`` nests ``levels`` deep (lists, objects, or both)."""
    opens = "".join(("[", '{"k":')[(i + kind) % 2] if kind < 2 else "[" for i in range(levels))
    closes = "".join(("]", "}")[(i + kind) % 2] if kind < 2 else "]" for i in range(levels))[::-1]
    env = '{"event_type":"t","event_id":"deep","timestamp":"2024-01-15T10:30:00Z","data":{"d":'
    return (env + opens + "1" + closes + "}}").encode()


bodies = st.one_of(
    valid_events.map(lambda d: json.dumps(d).encode()),
    envelopes.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=5000),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    bad_ids.map(lambda d: json.dumps(d).encode()),
    st.builds(deep, st.integers(1, 5000), st.integers(0, 2)),
)
# X-Forwarded-For on several lines (the receiver trusts 127.0.0.0/8 as its proxy).
xff_lines = st.lists(
    st.sampled_from(["10.1.2.3", "203.0.113.9", "10.0.0.1, 198.51.100.7", "::1", "garbage", ""]),
    max_size=3,
)
header_names = st.sampled_from(
    [
        "content-type",
        "x-solveforce-signature",
        "x-hub-signature-256",
        "x-github-delivery",
        "x-github-event",
        "x-slack-signature",
        "x-slack-request-timestamp",
        "stripe-signature",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "svix-id",
        "svix-timestamp",
        "svix-signature",
        "x-forwarded-for",
        "x-anything",
    ]
)
header_values = st.one_of(
    st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", ""]),
    # h11 refuses to send values with leading/trailing whitespace; strip so they are sent.
    st.text(
        alphabet=st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"),
        max_size=80,
    ).map(str.strip),
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--examples", type=int, default=20_000, help="hypothesis requests")
    p.add_argument("--schemathesis", type=int, default=2_000, help="schemathesis cases (POST)")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="hookline-fuzz-"))
    (work / "hookline.yaml").write_text(CONFIG)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")},
        "HOOKLINE_HOME": str(work),
        "HOOKLINE_CONFIG": str(work / "hookline.yaml"),
        "HOOKLINE_LOG_LEVEL": "ERROR",
    }
    log = (work / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hookline", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    for _ in range(300):
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    started = time.monotonic()
    client = httpx.Client(base_url=url, timeout=10)

    # 1. schemathesis, from the OpenAPI document the receiver serves
    schema = schemathesis.openapi.from_dict(openapi_schema(SOURCES))
    for op in schema.get_all_operations():
        operation = op.ok()  # type: ignore[union-attr]
        strategy = operation.as_strategy()
        n = args.schemathesis if operation.method.upper() == "POST" else 20

        @settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def run_case(case: Any) -> None:
            try:
                r = case.call(base_url=url, timeout=10)
            except Exception as exc:
                problems.append(f"schemathesis transport error: {exc!r}")
                return
            record(
                r.status_code,
                f"schemathesis {case.method} {case.formatted_path}",
                r.text,
                r.headers,
            )

        run_case()

    # 2. hypothesis headers and bodies
    @settings(max_examples=args.examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        source=st.sampled_from([*SOURCES, "nobody"]),
        body=bodies,
        headers=st.dictionaries(header_names, header_values, max_size=6),
        xff=xff_lines,
        sign=st.sampled_from(["no", "no", "solveforce", "solveforce", "webhook", "svix"]),
        msg_id=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=12),
        method=st.sampled_from(["POST"] * 8 + ["GET", "PUT"]),
    )
    def run_raw(
        source: str,
        body: bytes,
        headers: dict[str, str],
        xff: list[str],
        sign: str,
        msg_id: str,
        method: str,
    ) -> None:
        if sign == "solveforce":
            headers = {
                **headers,
                "content-type": "application/json",
                "x-solveforce-signature": "sha256="
                + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(),
            }
        elif sign != "no":  # Standard Webhooks, as webhook-* or Svix's svix-* names
            ts = str(int(time.time()))
            mac = hmac.new(STD_KEY, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
            headers = {
                **headers,
                "content-type": "application/json",
                f"{sign}-id": msg_id,
                f"{sign}-timestamp": ts,
                f"{sign}-signature": "v1," + base64.b64encode(mac).decode(),
            }
        raw = [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]
        raw += [(b"x-forwarded-for", v.encode()) for v in xff]
        try:
            r = client.request(method, f"/webhooks/{source}", content=body, headers=raw)
        except httpx.LocalProtocolError:
            counts[0] += 1  # the client refused to send it (e.g. trailing space in a header)
            return
        except httpx.TransportError as exc:
            if proc.poll() is not None:
                problems.append(f"server died: {exc!r}")
            else:
                problems.append(f"transport error: {exc!r}")
            return
        record(r.status_code, f"raw {method} {source}", r.text, r.headers)

    run_raw()
    elapsed = time.monotonic() - started
    alive = proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    total = sum(counts.values())
    print(f"{total} requests in {elapsed:.0f} s against {url}; server alive at the end: {alive}")
    print("by status: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    five = sum(v for k, v in counts.items() if k >= 500)
    print("(status 0: not sent, the HTTP client refused the generated header)")
    print(f"5xx: {five}; problems: {len(problems)}")
    for line in problems[:20]:
        print("  " + line)
    if problems or not alive:
        sys.exit(f"server log and inbox kept in {work}")
    import shutil

    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
