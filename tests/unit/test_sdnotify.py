"""The notify protocol against a real AF_UNIX datagram socket, as systemd listens."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.sdnotify import Notifier, watchdog_interval


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer.
    d = Path(tempfile.mkdtemp(prefix="sd", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _listener(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + address[1:] if address.startswith("@") else address)
    sock.settimeout(2.0)  # bounded: a missing datagram fails the test, never hangs it
    return sock


def _recv(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_without_notify_socket_nothing_is_sent_and_nothing_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled
    assert n.ready("x") is False
    assert n.watchdog() is False
    n.close()


def test_messages_reach_a_filesystem_socket(short_dir: Path) -> None:
    path = str(short_dir / "notify")
    with _listener(path) as sock:
        n = Notifier(path)
        assert n.enabled
        assert n.ready("serving 2 routes")
        assert _recv(sock) == ["READY=1", "STATUS=serving 2 routes"]
        assert n.ready()
        assert _recv(sock) == ["READY=1"]
        assert n.status("draining")
        assert _recv(sock) == ["STATUS=draining"]
        assert n.stopping()
        assert _recv(sock) == ["STOPPING=1"]
        assert n.stopping("draining")
        assert _recv(sock) == ["STOPPING=1", "STATUS=draining"]
        assert n.watchdog()
        assert _recv(sock) == ["WATCHDOG=1"]
        n.close()
        assert n.watchdog() is False  # closed: a no-op, not an error


def test_reloading_carries_the_monotonic_clock(short_dir: Path) -> None:
    path = str(short_dir / "notify")
    with _listener(path) as sock:
        n = Notifier(path)
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert n.reloading()
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        first, second = _recv(sock)
        n.close()
    assert first == "RELOADING=1"
    name, _, value = second.partition("=")
    assert name == "MONOTONIC_USEC"
    assert before - 1 <= int(value) <= after + 1


def test_an_abstract_socket_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    address = f"@relay-test-{uuid.uuid4().hex}"
    with _listener(address) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        n = Notifier()
        assert n.ready("up")
        assert _recv(sock) == ["READY=1", "STATUS=up"]
        n.close()


def test_a_vanished_socket_is_reported_not_raised(short_dir: Path) -> None:
    path = short_dir / "notify"
    _listener(str(path)).close()
    path.unlink()
    n = Notifier(str(path))
    assert n.enabled
    assert n.ready("nobody listens") is False
    n.close()


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("2000000", None, 1.0),
        ("2000000", "self", 1.0),
        ("30000000", None, 15.0),
        ("2000000", "1", None),  # meant for another process
        ("soon", None, None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout_for_this_process(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(os.getpid()) if value == "self" else value)
    assert watchdog_interval() == expected
