"""The systemd notify protocol (sd_notify), spoken directly over the datagram socket.

Does nothing when ``NOTIFY_SOCKET`` is unset, so the daemon runs the same
outside systemd.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self._address: str | None = None
        self._sock: socket.socket | None = None
        if not address:
            return
        # "@name" is an abstract socket: a leading NUL byte on Linux.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *lines: str) -> bool:
        """Send ``READY=1``-style lines in one datagram; False if it could not be sent."""
        if self._sock is None or self._address is None:
            return False
        try:
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError:
            # systemd gone or socket full: notification is advisory, never fatal.
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *((f"STATUS={status}",) if status else ()))

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd order the reload (Type=notify-reload semantics).
        usec = int(_monotonic_usec())
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *((f"STATUS={status}",) if status else ()))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _monotonic_usec() -> float:
    import time

    return time.clock_gettime(time.CLOCK_MONOTONIC) * 1_000_000


def watchdog_interval() -> float | None:
    """Half the watchdog timeout systemd asked for, in seconds; None when not watched."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000
