"""Multi-process metrics with real worker processes: new interpreters started with
worker_env record into the directory; the owner's registry exposes their sums next to its
own families, each family once. Parsed with prometheus-client's own parser."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.parser import text_string_to_metric_families

from relay.admin import build_admin_app
from relay.metrics import SERVING_FAMILIES, Metrics
from relay.runtime import RELAY
from relay.serve import OWN_STORE
from relay.store.base import RouteBacklog
from relay.workers.metrics import OwnerMetrics, worker_env
from tests.integration.conftest import Backend, RelayFactory, route
from tests.integration.test_metrics import Scrape

Client = TestClient[web.Request, web.Application]

# What a worker does: build a plain Metrics() and record, then exit. It also writes
# owner-side families (a worker's Metrics builds them all): none of that may reach the
# owner's scrape, which would then show those families twice or with summed values.
WORKER = """
import sys
from prometheus_client import values
from relay.metrics import Metrics
from relay.store.base import RouteBacklog

assert values.ValueClass._multiprocess, "prometheus_client did not start in multiprocess mode"
route, n = sys.argv[1], int(sys.argv[2])
m = Metrics()
m.received.labels(route, "accepted").inc(n)
m.received.labels(route, "duplicate").inc()
m.rejected.labels("", "too_many_connections").inc()
for _ in range(n):
    m.attempt_seconds.labels(route).observe(0.25)
m.record_reload(True)
m.observe_commit(4, 0.5, True)
m.set_orphans({(route, "http://gone.invalid"): 7})
m.set_backlog({route: RouteBacklog(route, pending=9)}, [], 0.0)
"""

# Today's single-process exposition, family by family and in order.
SINGLE_PROCESS_FAMILIES = [
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
    "relay_events",
    "relay_oldest_pending_age_seconds",
    "relay_orphaned_deliveries",
    "relay_replicas",
    "relay_store_commit_duration_seconds",
    "relay_store_batch_size",
    "relay_store_commit_failures",
    "relay_upstream_certificate_expiry_timestamp_seconds",
    "relay_listener_certificate_expiry_timestamp_seconds",
    "relay_store_size_bytes",
    "relay_store_free_bytes",
    "relay_store_disk_low",
    "relay_store_capped",
    "relay_store_full",
    "relay_store_file_lost",
    "relay_config_reloads",
    "relay_config_last_reload_successful",
    "relay_console_refused",
    "relay_admin_refused",
    "relay_build_info",
]
OWNER_FAMILIES = [f for f in SINGLE_PROCESS_FAMILIES if f not in SERVING_FAMILIES]


def run_workers(workers_dir: Path, jobs: Sequence[tuple[str, int]]) -> list[int]:
    """Start one worker per job, all at once, and wait for each to exit; their pids."""
    env = {k: v for k, v in os.environ.items() if k.upper() != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(worker_env(workers_dir))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, name, str(n)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, n in jobs
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    return [p.pid for p in procs]


def families(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [f.name for f in text_string_to_metric_families(text)]


def test_owner_scrape_sums_the_workers_and_shows_each_family_once(tmp_path: Path) -> None:
    pids = run_workers(tmp_path, [("orders", 3), ("orders", 5)])
    owner = OwnerMetrics(tmp_path)
    owner.set_backlog({"orders": RouteBacklog("orders", pending=2)}, ["orders"], 0.0)
    owner.record_reload(True)
    # The owner's own copy of a worker family is not exposed: the workers' files are.
    owner.received.labels("orders", "accepted").inc(100)

    names = families(owner.registry)
    twice = [n for n, c in Counter(names).items() if c > 1]
    assert not twice, f"families exposed more than once: {twice}"
    assert set(OWNER_FAMILIES) <= set(names)
    assert set(names) <= set(SINGLE_PROCESS_FAMILIES) | set(SERVING_FAMILIES)

    m = Scrape(generate_latest(owner.registry).decode())
    assert m("relay_webhooks_received_total", route="orders", outcome="accepted") == 8
    assert m("relay_webhooks_received_total", route="orders", outcome="duplicate") == 2
    assert m("relay_webhooks_rejected_total", route="", reason="too_many_connections") == 2
    assert m("relay_delivery_attempt_duration_seconds_count", route="orders") == 8
    assert m("relay_delivery_attempt_duration_seconds_bucket", route="orders", le="0.25") == 8
    assert m("relay_delivery_attempt_duration_seconds_bucket", route="orders", le="0.1") == 0
    assert m("relay_delivery_attempt_duration_seconds_sum", route="orders") == 2.0
    assert m("relay_worker_processes") == 2

    # Owner families carry the owner's values only, not the workers' strays.
    assert m("relay_config_reloads_total", result="ok") == 1
    assert m("relay_store_batch_size_count") == 0
    assert m("relay_events", route="orders", state="pending") == 2
    assert m.total("relay_orphaned_deliveries") == 0
    assert m("relay_build_info", version=__import__("relay").__version__) == 1
    assert not any("pid" in dict(labels) for _, labels in m.samples)

    # A dead worker's live gauge goes; its counts stay in the totals.
    owner.worker_exited(pids[0])
    m = Scrape(generate_latest(owner.registry).decode())
    assert m("relay_worker_processes") == 1
    assert m("relay_webhooks_received_total", route="orders", outcome="accepted") == 8
    owner.worker_exited(pids[1])
    m = Scrape(generate_latest(owner.registry).decode())
    assert m.names("relay_worker_processes") == []
    assert m("relay_webhooks_received_total", route="orders", outcome="accepted") == 8


def test_single_process_exposition_is_unchanged(tmp_path: Path) -> None:
    assert families(Metrics().registry) == SINGLE_PROCESS_FAMILIES
    # The owner, before any worker wrote: owner families in the same order, none twice.
    assert families(OwnerMetrics(tmp_path).registry) == OWNER_FAMILIES


def test_worker_families_are_exactly_the_families_workers_write() -> None:
    # Every worker family but the worker gauge is in today's exposition: nothing renamed.
    assert set(SERVING_FAMILIES) - set(SINGLE_PROCESS_FAMILIES) == {"relay_worker_processes"}
    assert len(set(SERVING_FAMILIES)) == len(SERVING_FAMILIES)


def test_a_clashing_family_in_the_owner_registry_fails_at_construction(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    PromCounter("relay_webhooks_received_total", "someone else's", registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        OwnerMetrics(tmp_path, registry)


def test_worker_env_wants_an_existing_directory(tmp_path: Path) -> None:
    assert worker_env(tmp_path) == {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path.resolve())}
    with pytest.raises(ValueError, match="not a directory"):
        worker_env(tmp_path / "missing")
    with pytest.raises(ValueError):
        OwnerMetrics(tmp_path / "missing")


async def test_admin_metrics_endpoint_of_an_owner(
    tmp_path: Path, upstream: Backend, make_relay: RelayFactory
) -> None:
    workers_dir = tmp_path / "metrics"
    workers_dir.mkdir()
    run_workers(workers_dir, [("orders", 2), ("orders", 4)])
    public = await make_relay(route(upstream, "orders"), start_dispatcher=False)
    relay = public.app[RELAY]
    relay.metrics = OwnerMetrics(workers_dir)
    admin: Client = TestClient(TestServer(build_admin_app(relay, public.app[OWN_STORE])))
    await admin.start_server()
    try:
        assert (await public.post("/hooks/orders", headers={"Idempotency-Key": "a"})).status == 202
        resp = await admin.get("/metrics")
        assert resp.status == 200
        text = await resp.text()
    finally:
        await admin.close()
    names = [f.name for f in text_string_to_metric_families(text)]
    assert len(names) == len(set(names))
    m = Scrape(text)
    assert m("relay_webhooks_received_total", route="orders", outcome="accepted") == 6
    assert m("relay_events", route="orders", state="pending") == 1  # the owner's store
    assert m("relay_worker_processes") == 2  # no worker_exited yet
