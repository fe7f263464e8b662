"""Multi-process metrics, on prometheus_client's own multiprocess mode.

Worker processes are started with ``PROMETHEUS_MULTIPROC_DIR`` set (``worker_env``), so
prometheus_client backs every value they record with a per-process mmap file in that
directory. The owner process (started without it: plain in-memory values) builds
``OwnerMetrics``: its registry exposes the serving families through ``WorkerFamilies``,
which merges those files with prometheus_client's own ``MultiProcessCollector``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from relay.metrics import Metrics

# prometheus_client reads this once, at import, to pick its value class.
ENV_VAR: Final = "PROMETHEUS_MULTIPROC_DIR"


def worker_env(multiproc_dir: str | os.PathLike[str]) -> dict[str, str]:
    """The environment variables a worker process must be started with.

    The directory must exist already (the owner creates it, empty, before the first worker):
    prometheus_client in the worker would only fail at its first recorded value."""
    path = os.path.abspath(os.fspath(multiproc_dir))  # a worker may run from another cwd
    if not os.path.isdir(path):
        raise ValueError(f"metrics directory {path!r} does not exist or is not a directory")
    return {ENV_VAR: path}


class WorkerFamilies:
    """Collector for the owner's registry: the serving families, summed over the files of
    every worker (live or dead: a dead worker's counts stay in the totals).

    The workers' files hold every family a worker's ``Metrics`` created, the owner-side
    ones too (a worker builds them all, and zeros or stray values land in its files); only
    the families in ``described`` are exposed, so each family comes from one place."""

    def __init__(self, path: str | os.PathLike[str], described: Sequence[Metric]) -> None:
        # Raises ValueError when the directory is missing: better at start-up than at a scrape.
        self._files = MultiProcessCollector(None, os.fspath(path))  # type: ignore[no-untyped-call]
        self._described = tuple(described)
        # Exposition order follows ``described``, not the order of the files on disk.
        self._order = {m.name: i for i, m in enumerate(self._described)}

    def describe(self) -> Iterable[Metric]:
        # The registry checks these names against every other collector's at register():
        # an owner-side family of the same name fails loudly instead of being exposed twice.
        return self._described

    def collect(self) -> Iterable[Metric]:
        merged = self._files.collect()  # type: ignore[no-untyped-call]
        wanted = [m for m in merged if m.name in self._order]
        return sorted(wanted, key=lambda m: self._order[m.name])


def forget_worker(path: str | os.PathLike[str], pid: int) -> None:
    """Drop a dead worker's live gauges (``multiprocess_mode`` live*); its counters and
    histograms stay, so totals never go backwards when a worker is replaced."""
    mark_process_dead(pid, os.fspath(path))  # type: ignore[no-untyped-call]


class OwnerMetrics(Metrics):
    """The owner's ``Metrics``: the serving families come from the workers' files in
    ``workers_dir``; the owner's own families from its registry."""

    def __init__(
        self, workers_dir: str | os.PathLike[str], registry: CollectorRegistry | None = None
    ) -> None:
        self.workers_dir = os.fspath(workers_dir)
        # Raises ValueError when the directory is missing: better at start-up than at a scrape.
        super().__init__(
            registry, serving=lambda described: WorkerFamilies(self.workers_dir, described)
        )

    def worker_exited(self, pid: int) -> None:
        """A worker process ended (reaped): its live gauges leave the scrape; its counters
        and histograms stay in the totals."""
        forget_worker(self.workers_dir, pid)
