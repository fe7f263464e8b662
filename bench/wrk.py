"""Find (or install) wrk, run it with one thread, parse the summary line of bench.lua."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Mode = Literal["unique", "dup"]
# A request slower than this counts as a timeout error rather than a latency.
REQUEST_TIMEOUT = "10s"


class WrkMissing(RuntimeError):
    pass


def ensure_wrk() -> str:
    """wrk's path; installs Debian's package when running as root and it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise WrkMissing(
            "wrk is not installed: run `sudo apt-get install -y wrk` (Debian/Ubuntu)"
            " or `brew install wrk` (macOS), then `make bench` again"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    print("wrk is not installed; installing Debian's package: " + " ".join(install))
    if subprocess.run(install, env=env, check=False, timeout=600).returncode != 0:
        # A fresh machine may have no package lists yet.
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False, timeout=600)
        subprocess.run(install, env=env, check=False, timeout=600)
    found = shutil.which("wrk")
    if not found:
        raise WrkMissing("could not install wrk; install it with `apt-get install -y wrk`")
    return found


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    duration_s: float
    status_errors: int  # answers of 4xx/5xx
    socket_errors: int  # connect, read, write errors and timeouts
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float

    @property
    def rate(self) -> float:
        """Requests per second answered without an error."""
        good = self.requests - self.status_errors
        return good / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def errors(self) -> int:
        return self.status_errors + self.socket_errors


def parse(output: str) -> WrkResult:
    for line in output.splitlines():
        if line.startswith("BENCH "):
            d = json.loads(line[len("BENCH ") :])
            return WrkResult(
                requests=int(d["requests"]),
                duration_s=int(d["duration_us"]) / 1e6,
                status_errors=int(d["status"]),
                socket_errors=int(d["connect"] + d["read"] + d["write"] + d["timeout"]),
                p50_ms=d["p50_us"] / 1000,
                p90_ms=d["p90_us"] / 1000,
                p99_ms=d["p99_us"] / 1000,
                mean_ms=d["mean_us"] / 1000,
                max_ms=d["max_us"] / 1000,
            )
    raise RuntimeError(f"wrk printed no summary line:\n{output[-2000:]}")


@dataclass(frozen=True, slots=True)
class Load:
    """What one wrk run sends."""

    url: str
    mode: Mode = "unique"
    prefix: str = "run"
    delay_ms: float = 0.0  # per-connection pause between requests; 0: as fast as possible
    keys: int = 100  # dup mode: how many distinct requests


def run(
    wrk: str,
    script: Path,
    load: Load,
    *,
    duration: int,
    connections: int,
    tick: Callable[[], None] | None = None,
) -> WrkResult:
    """One wrk run, one thread; ``tick`` is called about every half second meanwhile."""
    argv = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        f"--timeout={REQUEST_TIMEOUT}",
        "-s",
        str(script),
        load.url,
        "--",
        load.mode,
        load.prefix,
        f"{load.delay_ms:.3f}",
        str(load.keys),
    ]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + duration + 30
    try:
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"wrk ran past {duration + 30}s: {' '.join(argv)}")
            if tick is not None:
                tick()
            time.sleep(0.5)
        output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proc.stdout:
            proc.stdout.close()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}:\n{output[-2000:]}")
    return parse(output)
