"""The relay under test: its config file, its process, its metrics and its store's counts."""

from __future__ import annotations

import re
import sqlite3
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench import procs
from bench.context import Context
from bench.payload import ROUTE, ROUTE_PATH
from relay import config
from relay.errors import ConfigError
from relay.store.sealing import new_key

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True, slots=True)
class RouteSpec:
    mode: Literal["queue", "sync", "hybrid"]
    upstream: str
    # Q1 and G1 fill the queue on purpose: the default (100,000) would answer 503.
    max_pending: int = 100_000_000
    # With the hanging upstream the dispatcher's attempts must not time out mid-run.
    timeout_total: str | None = None
    dedupe: Literal["enforce", "shadow"] = "enforce"
    storage_url: str | None = None  # default: the SQLite file
    filtered: bool = False  # five filter rules, none of which the bench's events meet
    tls: bool = False  # the webhook listener serves HTTPS (a certificate made for the run)
    encrypted: bool = False  # storage.encryption with a key made for the run
    storage_extra: str = ""  # more of the storage section, as YAML flow entries


# Five rules of every kind, none met by the bench's events, so each is evaluated in
# full (the JSON ones parse the body, which Q1's header key never needs).
FILTERS: tuple[str, ...] = (
    "{name: ping, when: {header: {X-GitHub-Event: {eq: ping}}}, action: drop}",
    '{name: test, when: {json: {"$.livemode": {eq: false}}}, action: drop}',
    '{name: types, when: {json: {"$.type": {in: [a.b, c.d, e.f]}}}, action: drop}',
    '{name: invoices, when: {json: {"$.type": {matches: "^invoice\\\\."}}}, action: drop}',
    "{name: combo, when: {all: [{query: {t: {exists: true}}}, {not: {header: {X-A: {eq: b}}}}]},"
    " action: drop}",
)


def config_text(spec: RouteSpec, *, port: int, admin_port: int, db: Path, workers: int = 0) -> str:
    """Defaults everywhere except what a benchmark must set (ports, file, backlog cap)."""
    storage = spec.storage_url or f"sqlite:///{db.resolve()}"
    sealed = ", encryption: {key_file: store.key}" if spec.encrypted else ""
    sealed += f", {spec.storage_extra}" if spec.storage_extra else ""
    lines = [
        f"workers: {workers}",
        f'listen: "127.0.0.1:{port}"',
        *(["tls: {cert_file: tls.pem, key_file: tls.key}"] if spec.tls else []),
        f'admin: {{listen: "127.0.0.1:{admin_port}"}}',
        f'storage: {{url: "{storage}"{sealed}}}',
        "log: {format: json}",
        "shutdown_grace: 1s",
        "routes:",
        f"  - name: {ROUTE}",
        f"    path: {ROUTE_PATH}",
        f"    upstream: {spec.upstream}",
        f"    mode: {spec.mode}",
        f"    max_pending: {spec.max_pending}",
    ]
    if spec.dedupe != "enforce":
        lines.append(f"    dedupe: {spec.dedupe}")
    if spec.timeout_total is not None:
        lines.append(f"    timeout: {{total: {spec.timeout_total}}}")
    if spec.filtered:
        lines += ["    filters:", *(f"      - {rule}" for rule in FILTERS)]
    return "\n".join(lines) + "\n"


def check_config(path: Path) -> None:
    """What ``webhook-relay check-config`` checks: a config it refuses is a harness bug."""
    try:
        config.load(path)
    except ConfigError as exc:
        raise RuntimeError(f"relay refused {path}:\n" + "\n".join(exc.errors)) from None


@dataclass(slots=True)
class Relay:
    proc: procs.Proc
    port: int
    admin_port: int
    db: Path
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{ROUTE_PATH}"

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """The admin /metrics samples, by name and labels."""
        url = f"http://127.0.0.1:{self.admin_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for line in text.splitlines():
            if line.startswith("#") or not (m := _SAMPLE.match(line)):
                continue
            labels = frozenset(_LABEL.findall(m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
        return out

    def metric(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels``."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.metrics().items() if n == name and want <= ls)

    def pending(self) -> int:
        """Events with an open delivery, counted in the SQLite file itself."""
        return pending_in(self.db)


def pending_in(db: Path) -> int:
    conn = sqlite3.connect(db, timeout=30)
    try:
        conn.execute("PRAGMA query_only = 1")
        row = conn.execute(
            "SELECT count(DISTINCT event_id) FROM deliveries WHERE state IN ('pending', 'in_flight')"
        ).fetchone()
        return int(row[0])
    finally:
        conn.close()


def _write_secrets(workdir: Path, spec: RouteSpec) -> None:
    """The run's own certificate (for 127.0.0.1) and store key, where the config names them."""
    if spec.tls:
        import trustme  # a test dependency, as the bench's other tools

        cert = trustme.CA().issue_cert("127.0.0.1")
        cert.cert_chain_pems[0].write_to_path(str(workdir / "tls.pem"))
        cert.private_key_pem.write_to_path(str(workdir / "tls.key"))
    if spec.encrypted:
        (workdir / "store.key").write_text(new_key() + "\n")


def start(workdir: Path, spec: RouteSpec, db: Path | None = None, *, workers: int = 0) -> Relay:
    """Write the config, check it, start ``python -m relay serve``, wait for /readyz."""
    workdir.mkdir(parents=True, exist_ok=True)
    db = db or workdir / "relay.db"
    port, admin_port = procs.free_port(), procs.free_port()
    config = workdir / "relay.yaml"
    _write_secrets(workdir, spec)
    config.write_text(config_text(spec, port=port, admin_port=admin_port, db=db, workers=workers))
    check_config(config)
    proc = procs.spawn(
        "relay",
        procs.python_module("relay", "serve", "-c", str(config)),
        workdir / "relay.log",
        cwd=workdir,
    )
    if workers:
        proc.watch_group()
    relay = Relay(proc, port, admin_port, db, "https" if spec.tls else "http")
    try:
        procs.wait_http(proc, f"http://127.0.0.1:{admin_port}/readyz", timeout=120)
    except BaseException:
        proc.stop()
        raise
    return relay


def start_in(
    stack: ExitStack, ctx: Context, folder: Path, spec: RouteSpec, db: Path | None = None
) -> Relay:
    """``start`` with the run's workers setting, stopped when ``stack`` closes."""
    relay = start(folder, spec, db, workers=ctx.opts.workers)
    stack.callback(relay.proc.stop)
    return relay
