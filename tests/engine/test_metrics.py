"""`hookline up`'s /metrics reports its engine: the documented figures, counted for real."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from hookline.engine.metrics import EngineCollector
from tests.engine.conftest import sample
from tests.engine.harness import EngineHarness
from vendor_fakes import FakeVendors

pytestmark = pytest.mark.anyio

DOC = Path(__file__).parents[2] / "docs" / "operations.md"


def _scrape(engine: EngineHarness) -> str:
    registry = CollectorRegistry()
    registry.register(EngineCollector(engine.dispatcher, engine.worker))
    return generate_latest(registry).decode()


async def test_engine_metrics_count_events_and_runs_as_documented(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    fakes.servicenow.fail_next(100, status=500, path="/api/now/table/incident")
    assert (await engine.run(sample(current_status="degraded"))).status == "done"
    assert (await engine.run(sample(current_status="outage", impact="high"))).status == "failed"
    assert (await engine.run(sample("billing.invoice.generated"))).status == "done"  # no recipe

    text = _scrape(engine)
    values = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^(hookline_\S+) (\S+)$", text, flags=re.M)
    }
    assert values['hookline_dispatcher_events_total{outcome="dispatched"}'] == 2
    assert values['hookline_dispatcher_events_total{outcome="done"}'] == 2
    assert values['hookline_dispatcher_events_total{outcome="failed"}'] == 1
    assert values["hookline_dispatcher_flow_runs_created_total"] == 2
    assert values['hookline_worker_runs_total{outcome="completed"}'] == 1
    assert values['hookline_worker_runs_total{outcome="failed"}'] == 1
    assert values["hookline_worker_busy"] == 0

    exposed = set(re.findall(r"^# TYPE (hookline_\w+) (\w+)", text, flags=re.M))
    documented = set(
        re.findall(r"^\| `(hookline_(?:dispatcher|worker)_\w+)` \| (\w+) \|", DOC.read_text(), re.M)
    )
    assert documented == exposed
