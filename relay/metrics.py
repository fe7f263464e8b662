"""Prometheus metrics, each process (and each test) with its own registry.

Multi-process mode (``relay.workers.metrics``): worker processes record the serving
families into files; the owner's registry exposes those, summed, next to its own
families. This module only knows that the serving families may be exposed by a
collector someone else provides.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    values,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from relay import __version__
from relay.disk import DiskSpace
from relay.forward import shown_url
from relay.store.base import RouteBacklog
from relay.store.batch import BatchStats

# The *_created series double the exposition and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def recording_to_files() -> bool:
    """Whether this process records into multiprocess files (it was started with
    ``PROMETHEUS_MULTIPROC_DIR``). prometheus_client fixed its value class at import,
    so the environment variable now may lie."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


# From an in-line delivery (milliseconds) to a backlog after an outage (hours).
_LAG: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0, 86400.0,
)  # fmt: skip


def status_class(status: int | None) -> str:
    return "error" if status is None else f"{status // 100}xx"


# The serving families: everything the public listener and delivery record. In
# multi-process mode the worker processes write them and the owner exposes them from
# the workers' files; every other family (store backlog, orphans, commits, reloads,
# build info) comes from the owner's own registry.
SERVING_FAMILIES: Final[tuple[str, ...]] = (
    "relay_webhooks_received",
    "relay_webhooks_rejected",
    "relay_duplicates",
    "relay_payload_mismatches",
    "relay_ingest_duration_seconds",
    "relay_delivery_attempts",
    "relay_delivery_attempt_duration_seconds",
    "relay_delivery_lag_seconds",
    "relay_deliveries_stale",
    "relay_ordering_dead_heads",
    "relay_signature_failures",
    "relay_sync_duplicate_waits",
    "relay_upstream_breaker_state",
    "relay_upstream_breaker_transitions",
    "relay_deliveries_held",
    "relay_upstream_tls_failing",
    "relay_filtered",
    "relay_handshakes",
    "relay_shadow_duplicates",
    "relay_shadow_mismatches",
    "relay_shadow_stale",
    "relay_worker_processes",
)

# The delivery states the gauges count (delivered and stale are history, not backlog).
BACKLOG_STATES = ("pending", "in_flight", "dead")
ADMIN_REFUSALS = (
    "host",
    "cross_site",
    "cross_origin",
    "content_type",
    "unauthorized",
    "throttled",
    "role",
)


@dataclass(frozen=True, slots=True)
class ReloadInfo:
    ok: bool
    at: float  # UNIX seconds
    errors: tuple[str, ...] = ()


class Metrics:
    """Every metric of the relay, registered in ``registry`` (a fresh one by default).

    ``serving`` builds the collector that exposes the serving families instead of this
    process (the owner's, in multi-process mode: ``relay.workers.metrics``); it is handed
    this process's own copies of them, which are kept so shared code can still record,
    in a registry nobody scrapes. A worker process builds a plain ``Metrics()``.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        serving: Callable[[Sequence[Metric]], Collector] | None = None,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # --- serving families (SERVING_FAMILIES), registered in w ---
        w = r if serving is None else CollectorRegistry()
        self.received = Counter(
            "relay_webhooks_received_total",
            "Webhooks received, by outcome (accepted, duplicate, rejected).",
            ["route", "outcome"],
            registry=w,
        )
        self.rejected = Counter(
            "relay_webhooks_rejected_total",
            "Webhooks refused, by reason.",
            ["route", "reason"],
            registry=w,
        )
        self.duplicates = Counter(
            "relay_duplicates_total",
            "Duplicate deliveries absorbed, by the key source that identified them.",
            ["route", "source"],
            registry=w,
        )
        self.mismatches = Counter(
            "relay_payload_mismatches_total",
            "Duplicates whose body differed from the first delivery's.",
            ["route"],
            registry=w,
        )
        self.ingest_seconds = Histogram(
            "relay_ingest_duration_seconds",
            "Time from request received to answer sent to the sender.",
            ["route", "mode"],
            buckets=_LATENCY,
            registry=w,
        )
        self.attempts = Counter(
            "relay_delivery_attempts_total",
            "Upstream attempts, by result (delivered, retry, dead) and status class.",
            ["route", "result", "status_class"],
            registry=w,
        )
        self.attempt_seconds = Histogram(
            "relay_delivery_attempt_duration_seconds",
            "Duration of one upstream attempt.",
            ["route"],
            buckets=_LATENCY,
            registry=w,
        )
        self.lag = Histogram(
            "relay_delivery_lag_seconds",
            "Time from a delivery's acceptance (or its replay) to its first attempt"
            " (to=first_attempt) and to its delivery (to=delivered).",
            ["route", "to"],
            buckets=_LAG,
            registry=w,
        )
        self.stale = Counter(
            "relay_deliveries_stale_total",
            "Deliveries whose version was not newer than the last delivered for their ordering"
            " key, by action (drop: not forwarded, state stale; deliver: forwarded anyway).",
            ["route", "action"],
            registry=w,
        )
        self.ordering_dead_heads = Counter(
            "relay_ordering_dead_heads_total",
            "Ordered deliveries that went dead at the head of their key, by on_dead (skip: the"
            " key's later events go on; hold: they wait for a revive, requeue or purge).",
            ["route", "on_dead"],
            registry=w,
        )
        self.signature_failures = Counter(
            "relay_signature_failures_total",
            "Webhooks whose signature did not verify, by reason.",
            ["route", "reason"],
            registry=w,
        )
        self.sync_waits = Counter(
            "relay_sync_duplicate_waits_total",
            "Sync-mode duplicates that arrived while the original was in flight, by how it ended.",
            ["route", "result"],
            registry=w,
        )
        # Each delivering process has its own breaker per upstream: with workers the
        # scrape shows the most alarmed one (open 1 < half-open 2 only by number).
        self.breaker_state = Gauge(
            "relay_upstream_breaker_state",
            "Circuit breaker per upstream: 0 closed, 1 open, 2 half-open (probing).",
            ["route", "upstream"],
            multiprocess_mode="livemax",
            registry=w,
        )
        self.breaker_transitions = Counter(
            "relay_upstream_breaker_transitions_total",
            "Circuit breaker transitions per upstream, by the state entered.",
            ["route", "upstream", "to"],
            registry=w,
        )
        self.deliveries_held = Gauge(
            "relay_deliveries_held",
            "Deliveries due now that are held back: paused, breaker open, or rate limit.",
            ["route", "upstream", "reason"],
            multiprocess_mode="livemax",
            registry=w,
        )
        self.tls_failing = Gauge(
            "relay_upstream_tls_failing",
            "1 while attempts to this upstream fail TLS for this reason (tls_verify_failed,"
            " tls_client_cert_refused); 0 once one gets an answer.",
            ["route", "upstream", "reason"],
            multiprocess_mode="livemax",
            registry=w,
        )
        self.filtered = Counter(
            "relay_filtered_total",
            "Webhooks a filter rule dropped or sent to an alternate upstream (under dedupe:"
            " shadow: would have), by rule and action.",
            ["route", "rule", "action"],
            registry=w,
        )
        self.handshakes = Counter(
            "relay_handshakes_total",
            "Provider URL checks the relay answered itself (never stored or forwarded),"
            " by outcome (answered, refused).",
            ["route", "provider", "outcome"],
            registry=w,
        )
        # dedupe: shadow: what enforcing would have done, while everything goes through.
        self.shadow_duplicates = Counter(
            "relay_shadow_duplicates_total",
            "Copies a shadow route passed on that enforcing would have absorbed, by key source.",
            ["route", "key_source"],
            registry=w,
        )
        self.shadow_mismatches = Counter(
            "relay_shadow_mismatches_total",
            "Of those, copies whose body differed from the first one's.",
            ["route"],
            registry=w,
        )
        self.shadow_stale = Counter(
            "relay_shadow_stale_total",
            "Deliveries a shadow route sent that stale suppression would have dropped.",
            ["route"],
            registry=w,
        )
        worker_mode = serving is not None or recording_to_files()
        self.worker_processes = Gauge(
            "relay_worker_processes",
            "Worker processes alive (multi-process mode).",
            # Each worker sets 1; livesum sums live workers only (see worker_exited).
            multiprocess_mode="livesum",
            # Single-process mode keeps today's exposition: the family is not registered.
            registry=w if worker_mode else None,
        )
        if serving is not None:
            self._expose_serving(r, w, serving)
        # --- owner families: the store, its backlog, reloads, build info ---
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
        self.replicas = Gauge(
            "relay_replicas",
            "Relay processes registered in the store, by state (live, or dead: silent too long).",
            ["state"],
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
        self.certificate_expiry = Gauge(
            "relay_upstream_certificate_expiry_timestamp_seconds",
            "When an upstream's CA file (file=ca) or client certificate (file=cert) expires.",
            ["route", "upstream", "file"],
            registry=r,
        )
        self.listener_certificate_expiry = Gauge(
            "relay_listener_certificate_expiry_timestamp_seconds",
            "When a listener's certificate (file=cert) or client CA (file=client_ca) expires.",
            ["listener", "file"],
            registry=r,
        )
        self.store_size = Gauge(
            "relay_store_size_bytes", "The SQLite store's file and its WAL.", registry=r
        )
        self.store_free = Gauge(
            "relay_store_free_bytes", "Free space on the SQLite store's filesystem.", registry=r
        )
        self.store_disk_low = Gauge(
            "relay_store_disk_low",
            "1 while free space is below storage.min_free (ingest answers 503 disk_low).",
            registry=r,
        )
        self.capped = Counter(
            "relay_store_capped_total",
            "What a storage cap removed: bodies (and their attempts), events past their"
            " dedupe window, keys (cap_policy: drop_keys).",
            ["what"],
            registry=r,
        )
        for what in ("bodies", "events", "keys"):
            self.capped.labels(what)
        self.store_full = Gauge(
            "relay_store_full",
            "1 while a storage cap refuses new events (only in-window keys left).",
            registry=r,
        )
        self.store_file_lost = Gauge(
            "relay_store_file_lost",
            "1 when the SQLite database file was deleted or replaced under the running"
            " relay (new events are refused until a restart; see the README).",
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
        self.console_refused = Counter(
            "relay_console_refused_total",
            "Console requests refused, by reason (csrf, login, session, role).",
            ["reason"],
            registry=r,
        )
        for reason in ("csrf", "login", "session", "role"):
            self.console_refused.labels(reason)
        self.admin_refused = Counter(
            "relay_admin_refused_total",
            "Admin requests refused at the door, by reason (host, cross_site, cross_origin,"
            " content_type, unauthorized, throttled, role).",
            ["reason"],
            registry=r,
        )
        for reason in ADMIN_REFUSALS:
            self.admin_refused.labels(reason)
        self.info = Gauge("relay_build_info", "The relay's version.", ["version"], registry=r)
        self.info.labels(__version__).set(1)
        self.last_reload: ReloadInfo | None = None
        self.orphans: dict[tuple[str, str], int] = {}
        if serving is None and recording_to_files():
            self.worker_processes.set(1)

    # --- multi-process mode ---------------------------------------------------

    @staticmethod
    def _expose_serving(
        r: CollectorRegistry,
        w: CollectorRegistry,
        serving: Callable[[Sequence[Metric]], Collector],
    ) -> None:
        """Register the serving families' collector in ``r``, described by this process's
        unexposed copies in ``w`` (registered before the owner families: the exposition
        keeps the single-process order)."""
        described = list(w.collect())
        if sorted(m.name for m in described) != sorted(SERVING_FAMILIES):
            # Someone added a metric to one group and not the other: the scrape would
            # lose that family or show it twice.
            raise RuntimeError("SERVING_FAMILIES does not match the serving metrics built")
        r.register(serving(described))

    # --- feeding the gauges ---------------------------------------------------

    def bind_store(self, store: object) -> None:
        """Feed the commit histograms from the store's group committer, if it has one."""
        self.store_full.set_function(lambda: float(getattr(store, "full", None) is not None))
        stats = getattr(store, "stats", None)
        if isinstance(stats, BatchStats):
            stats.observer = self.observe_commit
        watch = getattr(store, "watch", None)  # the SQLite store's look at its file
        if watch is not None:
            self.store_file_lost.set_function(lambda: float(watch.lost is not None))

    def breakers(self) -> list[tuple[str, str, int, str | None]]:
        """Breakers not closed, as ``(route, upstream, state, TLS failure or None)``, from
        the gauge every delivering process sets (an owner's registry merges its workers')."""
        found: list[tuple[str, str, int]] = []
        tls: dict[tuple[str, str], str] = {}
        for family in self.registry.collect():
            if family.name not in ("relay_upstream_tls_failing", "relay_upstream_breaker_state"):
                continue
            for s in family.samples:
                route, upstream = s.labels.get("route", ""), s.labels.get("upstream", "")
                if family.name == "relay_upstream_tls_failing" and s.value:
                    tls[(route, upstream)] = s.labels["reason"]
                elif family.name == "relay_upstream_breaker_state" and s.value:
                    found.append((route, upstream, int(s.value)))
        return [(r, u, state, tls.get((r, u))) for r, u, state in sorted(found)]

    def bind_disk(self, disk: DiskSpace) -> None:
        """The store's size and its disk's room, read when scraped (SQLite only)."""
        if disk.path is None:
            return
        self.store_size.set_function(lambda: float(r.store) if (r := disk.room()) else 0.0)
        self.store_free.set_function(lambda: float(r.free) if (r := disk.room()) else 0.0)
        self.store_disk_low.set_function(lambda: float(disk.low()))

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

    def set_certificates(self, expiring: Iterable[tuple[str, str, str, float]]) -> None:
        """``(route, upstream, file, unix time)`` for every upstream certificate configured."""
        self.certificate_expiry.clear()
        for route, upstream, file, at in expiring:
            self.certificate_expiry.labels(route, shown_url(upstream), file).set(at)

    def set_listener_certificates(
        self, listener: str, expiring: Iterable[tuple[str, float]]
    ) -> None:
        for file in ("cert", "client_ca"):
            with contextlib.suppress(KeyError):
                self.listener_certificate_expiry.remove(listener, file)
        for file, at in expiring:
            self.listener_certificate_expiry.labels(listener, file).set(at)

    def set_orphans(self, orphans: Mapping[tuple[str, str], int]) -> None:
        self.orphans = dict(orphans)
        self.orphaned.clear()
        for (route, upstream), n in orphans.items():
            self.orphaned.labels(route, shown_url(upstream)).set(n)

    def record_reload(self, ok: bool, errors: Iterable[str] = ()) -> None:
        self.reloads.labels("ok" if ok else "refused").inc()
        self.last_reload_ok.set(1 if ok else 0)
        self.last_reload = ReloadInfo(ok, time.time(), tuple(errors))
