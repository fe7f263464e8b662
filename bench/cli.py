"""``python -m bench``: run the selected scenarios, print the tables and the targets."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from bench import (
    lua,
    machine,
    options,
    report,
    scen_baseline,
    scen_delivery,
    scen_ingest,
    scen_pg,
    scen_store,
)
from bench.context import Context
from bench.procs import ROOT
from bench.results import Row
from bench.targets import evaluate
from bench.wrk import WrkMissing, ensure_wrk

SETTLE_SECONDS = 60
# Measured once per run, whatever the relay's workers setting.
BASELINES = ("B0", "B1")
Scenario = Callable[[Context], list[Row]]
RUNNERS: dict[str, Scenario] = {
    "B0": scen_baseline.b0,
    "B1": scen_baseline.b1,
    "Q1": scen_ingest.q1,
    "F1": scen_ingest.f1,
    "QT": scen_ingest.qt,
    "QE": scen_ingest.qe,
    "L1": scen_ingest.l1,
    "Q2": scen_ingest.q2,
    "Q3": scen_delivery.q3,
    "S1": scen_ingest.s1,
    "SH": scen_ingest.sh,
    "H1": scen_ingest.h1,
    "D1": scen_delivery.d1,
    "G1": scen_store.g1,
    "M1": scen_store.m1,
    "QP": scen_store.qp,
    "QC": scen_store.qc,
    "E1": scen_pg.e1,
    "PQ1": scen_pg.q1_pg,
    "PD1": scen_pg.d1_pg,
    "PE1": scen_pg.e1_pg,
    "R2": scen_pg.r2_pg,
}


def _terminate(_signum: int, _frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so every started process is stopped on the way out.
    raise KeyboardInterrupt


def _revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except OSError:
        rev = ""
    return rev or "unknown"


def _header(opts: options.Options) -> str:
    import relay

    load = os.getloadavg()[0]
    where = Path(relay.__file__).parent
    return (
        f"webhook-relay {_revision()} ({where}) · Python {platform.python_version()} · "
        f"{os.cpu_count()} CPUs · load {load:.2f} · wrk -t1 -c{opts.connections} · "
        f"{opts.duration}s runs after {opts.warmup}s warm-up"
        + (f" · relay workers: {opts.workers}" if opts.workers else " · relay: one process")
        + (" · --quick" if opts.quick else "")
    )


def _run_one(ctx: Context, name: str) -> None:
    print(f"== {name}: {options.SCENARIOS[name]}", flush=True)
    # Other work on the machine skews everything: wait a little for quiet, and say so.
    busy = machine.settle(0 if ctx.opts.quick else SETTLE_SECONDS)
    if busy > machine.QUIET:
        print(f"   the machine is {busy:.0%} busy before starting: figures will be low")
    started = time.monotonic()
    try:
        rows = RUNNERS[name](ctx)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        traceback.print_exc()
        ctx.results[name] = Row(name, options.SCENARIOS[name], notes=f"FAILED: {exc}"[:200])
        return
    for row in rows:
        if busy > machine.QUIET:
            row.notes = f"{row.notes}; machine {busy:.0%} busy at start".lstrip("; ")
        ctx.results[row.name] = row
        rate = "-" if row.rate is None else f"{row.rate:,.0f}/s"
        print(f"   {row.name}: {rate} {row.notes}", flush=True)
    print(f"   ({time.monotonic() - started:.0f}s)", flush=True)


def _print_results(ctx: Context, header: str) -> None:
    print()
    print(f"### Results ({header})")
    print()
    print(report.results_table(ctx.results))
    print()
    print("### Targets")
    print()
    print(report.targets_table(evaluate(ctx.results)))
    for name, text in ctx.profiles.items():
        print()
        print(f"### py-spy: {name}, top functions by own time")
        print()
        print(text)


def _write_json(path: Path, runs: list[tuple[Context, str]]) -> None:
    doc = {
        "runs": [
            {
                "header": header,
                "options": {k: str(v) for k, v in dataclasses.asdict(ctx.opts).items()},
                "results": [dataclasses.asdict(r) for r in ctx.results.values()],
                "targets": [dataclasses.asdict(t) for t in evaluate(ctx.results)],
            }
            for ctx, header in runs
        ]
    }
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    opts = options.parse(argv)
    try:
        wrk = ensure_wrk()
    except WrkMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    workdir = Path(tempfile.mkdtemp(prefix="webhook-relay-bench-"))
    script = lua.write_script(workdir)
    # One context per workers setting; the baselines run once and every table uses them.
    runs: list[tuple[Context, str]] = []
    interrupted = False
    try:
        for i, workers in enumerate(opts.workers_list):
            first = runs[0][0].results if runs else {}
            ctx = Context(
                opts=dataclasses.replace(opts, workers=workers),
                wrk=wrk,
                script=script,
                workdir=workdir / f"w{workers}" if len(opts.workers_list) > 1 else workdir,
                results={k: v for k, v in first.items() if k in BASELINES},
            )
            header = _header(ctx.opts)
            runs.append((ctx, header))
            print(header, flush=True)
            for name in opts.only:
                if i == 0 or name not in BASELINES:
                    _run_one(ctx, name)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: processes stopped; results so far:", file=sys.stderr)
    finally:
        failed = any(r.notes.startswith("FAILED") for c, _ in runs for r in c.results.values())
        if opts.keep or failed:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    for ctx, header in runs:
        _print_results(ctx, header)
    if opts.json_path is not None:
        _write_json(opts.json_path, runs)
    return 130 if interrupted else (1 if failed else 0)
