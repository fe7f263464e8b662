"""Multi-process metrics, on prometheus_client's own multiprocess mode.

Worker processes are started with ``PROMETHEUS_MULTIPROC_DIR`` set (``worker_env``), so
prometheus_client backs every value they record with a per-process mmap file in that
directory. The owner process (started without it: plain in-memory values) adds a
``WorkerFamilies`` collector to its registry, which merges those files with
prometheus_client's own ``MultiProcessCollector`` and keeps only the worker families.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Final

from prometheus_client import values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

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


def in_worker_process() -> bool:
    """Whether this process records into multiprocess files (it was started by
    ``worker_env``). The value class was fixed at import, so the env var now may lie."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


class WorkerFamilies:
    """Collector for the owner's registry: the worker families, summed over the files of
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

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._order)

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
