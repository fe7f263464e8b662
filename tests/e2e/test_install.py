"""The documented server install, as a server gets it: a wheel built from this
checkout, installed with the postgres extra into a fresh venv, whose entry point
checks a config and serves until SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from .support import HOST, free_port

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str | Path, cwd: Path) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_a_wheel_installs_into_a_fresh_venv_and_serves(tmp_path: Path) -> None:
    # `make dist`, then the install line of systemd/README.md with the wheel for '.'.
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "-w",
        tmp_path / "dist",
        ROOT,
        cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("webhook_relay-*-py3-none-any.whl")
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    _run(venv / "bin" / "pip", "install", "-q", f"{wheel}[postgres]", cwd=tmp_path)
    relay = venv / "bin" / "webhook-relay"
    # The package data came along: migrations, the console's templates, the OpenAPI file.
    _run(venv / "bin" / "python", "-c", "import asyncpg, relay.store.postgres", cwd=tmp_path)

    port, admin = free_port(), free_port()
    config = tmp_path / "config.yaml"
    doc = yaml.safe_load((ROOT / "config.example.yaml").read_text(encoding="utf-8"))
    doc["listen"], doc["admin"] = f"{HOST}:{port}", {"listen": f"{HOST}:{admin}"}
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    assert "ok, 2 route(s)" in _run(relay, "check-config", "-c", config, cwd=tmp_path)

    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen(
            [relay, "serve", "-c", config], cwd=tmp_path, stdout=log, stderr=log, env=env
        )
    try:

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://{HOST}:{admin}/readyz", timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                return False

        deadline = time.monotonic() + 30
        while not ready():  # a condition polled, bounded
            assert time.monotonic() < deadline, "the installed relay was not ready in 30 s"
            time.sleep(0.05)
        with urllib.request.urlopen(f"http://{HOST}:{admin}/ui/", timeout=5) as r:
            assert r.status == 200  # templates shipped in the wheel
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert (tmp_path / "data" / "relay.db").is_file()
