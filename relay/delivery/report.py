"""What one delivery attempt says to operators: its metrics and its log line, and
the stale-suppression verdict with its own. Free of the store and of I/O."""

from __future__ import annotations

from typing import Any

from relay import forward, versions
from relay.config import Route
from relay.metrics import Metrics, status_class
from relay.runtime import RouteRuntime
from relay.store.base import Lease, Outcome


class AttemptReport:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once: labels() takes a lock each call."""
        key = (id(metric), labels)
        if (found := self._children.get(key)) is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def answered(
        self, rt: RouteRuntime, lease: Lease, result: forward.Result, outcome: Outcome, now: float
    ) -> None:
        """An answered attempt's metrics and log line."""
        cfg = rt.cfg
        result_label = {"delivered": "delivered", "pending": "retry"}.get(outcome.state, "dead")
        self.child(self.metrics.attempts, cfg.name, result_label, status_class(result.status)).inc()
        self.child(self.metrics.attempt_seconds, cfg.name).observe(result.duration_ms / 1000.0)
        # lease.received_at: acceptance, or the replay that started this retry window,
        # on the store's clock (as ``now``, taken when the answer came).
        if lease.attempts == 0:
            lag = max(0.0, now - result.duration_ms / 1000.0 - lease.received_at)
            self.child(self.metrics.lag, cfg.name, "first_attempt").observe(lag)
        if outcome.state == "delivered":
            self.child(self.metrics.lag, cfg.name, "delivered").observe(
                max(0.0, now - lease.received_at)
            )
        log_fields = dict(
            delivery_id=lease.delivery_id,
            event_id=lease.event_id,
            key=lease.key,
            upstream=forward.shown_url(lease.upstream),
            attempt=lease.attempts + 1,
            status=result.status,
            error=result.error,
            ms=round(result.duration_ms, 2),
        )
        if outcome.state == "delivered":
            rt.log.info("delivery_succeeded", **log_fields)
        elif outcome.state == "pending":
            at = outcome.next_attempt_at
            retry_in = None if at is None else round(at - now, 3)
            rt.log.info("delivery_retry", retry_in=retry_in, **log_fields)
        else:
            rt.log.warning("delivery_dead", reason=outcome.reason, **log_fields)
            if cfg.ordering is not None and lease.ordering_key is not None:
                on_dead = cfg.ordering.on_dead
                self.metrics.ordering_dead_heads.labels(cfg.name, on_dead).inc()
                rt.log.warning(
                    "ordering_key_held" if on_dead == "hold" else "ordering_head_skipped",
                    ordering_key=lease.ordering_key,
                    delivery_id=lease.delivery_id,
                    event_id=lease.event_id,
                    upstream=forward.shown_url(lease.upstream),
                )

    def stale(self, log: Any, cfg: Route, lease: Lease) -> str | None:
        """Why the leased delivery is stale and must be dropped; None to send it.

        ``lease.delivered_version`` was read when the delivery was leased, and per-key
        ordering leases one delivery of a key at a time, so nothing can have raised it
        since; the drop itself is fenced by the lease like any other outcome.
        """
        stale = cfg.stale
        if (
            stale is None
            or lease.ordering_key is None
            or lease.version is None
            or lease.delivered_version is None
            or not versions.is_stale(lease.version, lease.delivered_version, stale.equal_is_stale)
        ):
            return None
        reason = f"version {lease.version} <= delivered {lease.delivered_version}"
        if cfg.dedupe == "shadow":  # would have been dropped: counted, and sent
            self.metrics.shadow_stale.labels(cfg.name).inc()
            return None
        self.metrics.stale.labels(cfg.name, stale.action).inc()
        log.info(
            "delivery_stale",
            action=stale.action,
            reason=reason,
            delivery_id=lease.delivery_id,
            event_id=lease.event_id,
            key=lease.key,
            ordering_key=lease.ordering_key,
            upstream=forward.shown_url(lease.upstream),
        )
        return None if stale.action == "deliver" else reason
