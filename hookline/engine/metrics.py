"""The engine's own figures on `hookline up`'s /metrics, read from the dispatcher's and the
worker's counters at each scrape (nothing is counted twice or kept elsewhere)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from hookline.engine.dispatcher import Dispatcher
    from hookline.engine.worker import Worker


class EngineCollector(Collector):
    """``hookline_dispatcher_*`` and ``hookline_worker_*`` from one process's engine."""

    def __init__(self, dispatcher: Dispatcher, worker: Worker) -> None:
        self.dispatcher = dispatcher
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        d, w = self.dispatcher.stats, self.worker.stats
        events = CounterMetricFamily(
            "hookline_dispatcher_events",
            "Events the dispatcher settled or handed to Prefect, by outcome.",
            labels=["outcome"],
        )
        for outcome, n in (("dispatched", d.dispatched), ("done", d.done), ("failed", d.failed)):
            events.add_metric([outcome], n)
        yield events
        yield CounterMetricFamily(
            "hookline_dispatcher_flow_runs_created", "Flow runs created.", value=d.created
        )
        yield CounterMetricFamily(
            "hookline_dispatcher_prefect_errors",
            "Times the Prefect API could not be reached or refused a create (events waited).",
            value=d.prefect_errors,
        )
        yield GaugeMetricFamily(
            "hookline_dispatcher_last_lag_seconds",
            "Seconds from an event's arrival to its dispatch, for the last one dispatched.",
            value=d.last_dispatch_lag,
        )
        yield GaugeMetricFamily(
            "hookline_dispatcher_in_flight",
            "Events dispatched and not yet settled (their runs in Prefect); at the dispatcher's "
            "max_in_flight, the next ones wait in the inbox.",
            value=self.dispatcher.in_flight,
        )
        runs = CounterMetricFamily(
            "hookline_worker_runs",
            "Recipe runs this worker executed, by how they ended.",
            labels=["outcome"],
        )
        for outcome, n in (("completed", w.completed), ("failed", w.failed)):
            runs.add_metric([outcome], n)
        yield runs
        yield CounterMetricFamily(
            "hookline_worker_lost_claims",
            "Runs another worker claimed first (several workers on one work pool).",
            value=w.lost_claims,
        )
        yield GaugeMetricFamily(
            "hookline_worker_busy", "Recipe runs in flight in this worker.", value=self.worker.busy
        )
