"""Which event loop a process runs on: asyncio's beside SQLite's writer thread,
uvloop otherwise (relay.lifecycle.run_loop says why)."""

from __future__ import annotations

import asyncio

import uvloop

from relay.lifecycle import run_loop


async def _on_uvloop() -> int:
    return int(isinstance(asyncio.get_running_loop(), uvloop.Loop))


def test_a_process_with_the_sqlite_writer_thread_runs_on_asyncios_loop() -> None:
    assert run_loop(_on_uvloop(), writer_thread=True) == 0


def test_other_processes_run_on_uvloop() -> None:
    assert run_loop(_on_uvloop()) == 1
