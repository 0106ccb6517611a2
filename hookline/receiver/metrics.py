"""Prometheus metrics of one receiver app, in the app's own registry (not the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from hookline.inbox import STATUSES

ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ReceiverMetrics:
    """Counters, gauges and the ack-latency histogram of the receiver."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "hookline_webhook_requests",
            "Webhook requests by source and outcome.",
            ["source", "outcome"],
            registry=r,
        )
        self.signature_failures = Counter(
            "hookline_signature_failures",
            "Signature verification failures by source and reason.",
            ["source", "reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "hookline_duplicates", "Events already in the inbox.", ["source"], registry=r
        )
        self.inbox_depth = Gauge(
            "hookline_inbox_entries", "Inbox entries by status.", ["status"], registry=r
        )
        self.inbox_oldest = Gauge(
            "hookline_inbox_oldest_seconds",
            "Seconds since the least recently changed pending / dispatched entry changed.",
            ["status"],
            registry=r,
        )
        self.ack_seconds = Histogram(
            "hookline_ack_seconds",
            "Time from request to answer for stored (accepted or duplicate) events.",
            ["source"],
            buckets=ACK_BUCKETS,
            registry=r,
        )
        for status in STATUSES:
            self.inbox_depth.labels(status)
