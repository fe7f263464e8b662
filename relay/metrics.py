"""Prometheus metrics, each process (and each test) with its own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

# The *_created series double the exposition and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def status_class(status: int | None) -> str:
    return "error" if status is None else f"{status // 100}xx"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "relay_webhooks_received_total",
            "Webhooks received, by outcome (accepted, duplicate, rejected).",
            ["route", "outcome"],
            registry=r,
        )
        self.rejected = Counter(
            "relay_webhooks_rejected_total",
            "Webhooks refused, by reason.",
            ["route", "reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "relay_duplicates_total",
            "Duplicate deliveries absorbed, by the key source that identified them.",
            ["route", "source"],
            registry=r,
        )
        self.mismatches = Counter(
            "relay_payload_mismatches_total",
            "Duplicates whose body differed from the first delivery's.",
            ["route"],
            registry=r,
        )
        self.ingest_seconds = Histogram(
            "relay_ingest_duration_seconds",
            "Time from request received to answer sent to the sender.",
            ["route", "mode"],
            buckets=_LATENCY,
            registry=r,
        )
        self.attempts = Counter(
            "relay_delivery_attempts_total",
            "Upstream attempts, by result (delivered, retry, dead) and status class.",
            ["route", "result", "status_class"],
            registry=r,
        )
        self.attempt_seconds = Histogram(
            "relay_delivery_attempt_duration_seconds",
            "Duration of one upstream attempt.",
            ["route"],
            buckets=_LATENCY,
            registry=r,
        )
        self.signature_failures = Counter(
            "relay_signature_failures_total",
            "Webhooks whose signature did not verify, by reason.",
            ["route", "reason"],
            registry=r,
        )
        self.sync_waits = Counter(
            "relay_sync_duplicate_waits_total",
            "Sync-mode duplicates that arrived while the original was in flight, by how it ended.",
            ["route", "result"],
            registry=r,
        )
        self.events = Gauge(
            "relay_events",
            "Undelivered events by state, as last counted.",
            ["route", "state"],
            registry=r,
        )
        self.oldest_pending = Gauge(
            "relay_oldest_pending_age_seconds",
            "Age of the oldest event not yet delivered.",
            ["route"],
            registry=r,
        )
        self.commit_seconds = Histogram(
            "relay_store_commit_duration_seconds",
            "Time to commit one ingest batch.",
            buckets=_LATENCY,
            registry=r,
        )
        self.batch_size = Histogram(
            "relay_store_batch_size",
            "Events per ingest commit (group commit).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
