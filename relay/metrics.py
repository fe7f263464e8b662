"""Prometheus metrics, each process (and each test) with its own registry."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from relay import __version__
from relay.store.base import RouteBacklog
from relay.store.batch import BatchStats

# The *_created series double the exposition and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def status_class(status: int | None) -> str:
    return "error" if status is None else f"{status // 100}xx"


# The delivery states the gauges count (delivered and stale are history, not backlog).
BACKLOG_STATES = ("pending", "in_flight", "dead")


@dataclass(frozen=True, slots=True)
class ReloadInfo:
    ok: bool
    at: float  # UNIX seconds
    errors: tuple[str, ...] = ()


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
        self.stale = Counter(
            "relay_deliveries_stale_total",
            "Deliveries whose version was not newer than the last delivered for their ordering"
            " key, by action (drop: not forwarded, state stale; deliver: forwarded anyway).",
            ["route", "action"],
            registry=r,
        )
        self.ordering_dead_heads = Counter(
            "relay_ordering_dead_heads_total",
            "Ordered deliveries that went dead at the head of their key, by on_dead (skip: the"
            " key's later events go on; hold: they wait for a revive, requeue or purge).",
            ["route", "on_dead"],
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
            "Events with a delivery in this state (pending, in_flight, dead), counted at scrape time.",
            ["route", "state"],
            registry=r,
        )
        self.oldest_pending = Gauge(
            "relay_oldest_pending_age_seconds",
            "Age of the oldest event still pending or in flight, since it was received; 0 when none.",
            ["route"],
            registry=r,
        )
        self.orphaned = Gauge(
            "relay_orphaned_deliveries",
            "Deliveries pending or in flight whose route or upstream is no longer configured"
            " (counted at start-up and at each reload).",
            ["route", "upstream"],
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
        self.commit_failures = Counter(
            "relay_store_commit_failures_total",
            "Ingest batches whose commit failed (every sender in it got 503).",
            registry=r,
        )
        self.reloads = Counter(
            "relay_config_reloads_total",
            "Configuration reloads (SIGHUP), by result (ok, refused).",
            ["result"],
            registry=r,
        )
        self.last_reload_ok = Gauge(
            "relay_config_last_reload_successful",
            "1 if the last reload was applied (or there was none), 0 if it was refused.",
            registry=r,
        )
        self.last_reload_ok.set(1)
        for result in ("ok", "refused"):
            self.reloads.labels(result)
        self.info = Gauge("relay_build_info", "The relay's version.", ["version"], registry=r)
        self.info.labels(__version__).set(1)
        self.last_reload: ReloadInfo | None = None
        self.orphans: dict[tuple[str, str], int] = {}

    # --- feeding the gauges ---------------------------------------------------

    def bind_store(self, store: object) -> None:
        """Feed the commit histograms from the store's group committer, if it has one."""
        stats = getattr(store, "stats", None)
        if isinstance(stats, BatchStats):
            stats.observer = self.observe_commit

    def observe_commit(self, size: int, seconds: float, ok: bool) -> None:
        if ok:
            self.commit_seconds.observe(seconds)
            self.batch_size.observe(size)
        else:
            self.commit_failures.inc()

    def set_backlog(
        self, backlog: Mapping[str, RouteBacklog], routes: Iterable[str], now: float
    ) -> None:
        """Replace the backlog gauges: every configured route (zeros included) and
        every route the store still holds work for (a removed route's leftovers)."""
        self.events.clear()
        self.oldest_pending.clear()
        for route in sorted({*routes, *backlog}):
            b = backlog.get(route, RouteBacklog(route))
            for state in BACKLOG_STATES:
                self.events.labels(route, state).set(getattr(b, state))
            age = 0.0 if b.oldest_open_at is None else max(0.0, now - b.oldest_open_at)
            self.oldest_pending.labels(route).set(age)

    def set_orphans(self, orphans: Mapping[tuple[str, str], int]) -> None:
        self.orphans = dict(orphans)
        self.orphaned.clear()
        for (route, upstream), n in orphans.items():
            self.orphaned.labels(route, upstream).set(n)

    def record_reload(self, ok: bool, errors: Iterable[str] = ()) -> None:
        self.reloads.labels("ok" if ok else "refused").inc()
        self.last_reload_ok.set(1 if ok else 0)
        self.last_reload = ReloadInfo(ok, time.time(), tuple(errors))
