"""Child processes: each in its own process group, always stopped, peak RSS read from /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kib(path: str, field: str) -> int | None:
    """A ``Name:  123 kB`` line of a /proc file, in KiB."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def proc_status_kib(pid: int, field: str) -> int | None:
    """A field of /proc/PID/status (VmHWM: peak RSS, VmRSS: current)."""
    return _kib(f"/proc/{pid}/status", field)


def smaps_kib(pid: int, field: str) -> int | None:
    """A field of /proc/PID/smaps_rollup (Pss: this process's share of its pages)."""
    return _kib(f"/proc/{pid}/smaps_rollup", field)


@dataclass(slots=True)
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    peak_kib: int | None = None  # last VmHWM read, kept once the process is gone
    # VmHWM of each process in the group (a relay with workers is several processes).
    peaks: dict[int, int] = field(default_factory=dict)
    group_pss_kib: int = 0  # peak of the group's summed PSS (see watch_group)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def peak_rss_mib(self) -> float | None:
        """Peak memory since start, in MiB.

        One process: its peak resident set (VmHWM). A group (the relay with
        workers): the peak of the group's summed proportional set size (PSS),
        sampled every second by ``watch_group``; RSS summed over processes would
        count the interpreter's shared pages once per process.
        """
        if self.alive():
            for pid in group_pids(self.pid):
                if (kib := proc_status_kib(pid, "VmHWM")) is not None:
                    self.peaks[pid] = kib
            if self.peaks:
                self.peak_kib = sum(self.peaks.values())
        if len(self.peaks) > 1 and self.group_pss_kib:
            return self.group_pss_kib * 1024 / MIB
        return None if self.peak_kib is None else self.peak_kib * 1024 / MIB

    @property
    def group_size(self) -> int:
        return len(self.peaks)

    def watch_group(self, interval: float = 1.0) -> None:
        """Sample the group's summed PSS until the process exits (a daemon thread)."""

        def run() -> None:
            while self.alive():
                pids = group_pids(self.pid)
                if len(pids) > 1:
                    total = sum(smaps_kib(pid, "Pss") or 0 for pid in pids)
                    self.group_pss_kib = max(self.group_pss_kib, total)
                    for pid in pids:
                        if (kib := proc_status_kib(pid, "VmHWM")) is not None:
                            self.peaks[pid] = kib
                time.sleep(interval)

        threading.Thread(target=run, name=f"watch-{self.name}", daemon=True).start()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM the process group, then SIGKILL what is left after ``timeout``."""
        self.peak_rss_mib()
        if self.alive():
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"  {self.name} did not stop in {timeout:.0f}s: killing it", file=sys.stderr)
        # The group may hold children even after the leader exited.
        _signal_group(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        return self.popen.returncode


def group_pids(pgid: int) -> list[int]:
    """The processes whose process group is ``pgid`` (the leader and its children)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                # The command name (field 2) may hold spaces: fields count from its ")".
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(pgid):
            pids.append(int(entry))
    return pids


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def spawn(name: str, argv: Sequence[str], log: Path, cwd: Path | None = None) -> Proc:
    """Start ``argv`` in a new session (its own process group), output to ``log``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("WEBHOOK_RELAY_CONFIG", None)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            list(argv),
            cwd=cwd or ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Proc(name, popen, log)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def wait_http(proc: Proc, url: str, timeout: float = 30.0) -> None:
    """Poll ``url`` until it answers 200; fail early if the process died."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(
                f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} not ready at {url} after {timeout:.0f}s ({last})")
