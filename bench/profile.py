"""Optional: sample the relay with py-spy during a measured run, rank functions by own time."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench import procs


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def start(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes] | None:
    """``py-spy record --format raw`` for ``seconds``; None when py-spy is not installed."""
    exe = py_spy()
    if exe is None:
        print("  --profile: py-spy not found (pip install py-spy)", file=sys.stderr)
        return None
    argv = [exe, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200"]
    argv += ["--format", "raw", "--nolineno", "--gil", "--output", str(out), "--nonblocking"]
    log = open(out.with_suffix(".log"), "wb")  # noqa: SIM115 - closed with the process
    try:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def finish(proc: subprocess.Popen[bytes] | None, out: Path, top: int = 10) -> str:
    if proc is None:
        return ""
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    if not out.exists():
        return f"(py-spy wrote nothing; see {out.with_suffix('.log')})"
    return render(own_time(out), top)


def own_time(raw: Path) -> Counter[str]:
    """Samples whose innermost frame is each function (py-spy's collapsed stacks)."""
    counts: Counter[str] = Counter()
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        counts[leaf] += int(n)
    return counts


def render(counts: Counter[str], top: int) -> str:
    total = sum(counts.values()) or 1
    lines = ["| # | own % | samples | function (file) |", "| --- | --- | --- | --- |"]
    for i, (frame, n) in enumerate(counts.most_common(top), 1):
        lines.append(f"| {i} | {100 * n / total:.1f} | {n} | `{_short(frame)}` |")
    return "\n".join(lines)


def _short(frame: str) -> str:
    return frame.replace(str(procs.ROOT) + "/", "")
