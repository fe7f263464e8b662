"""Lint and strict typing run as part of the test command, so CI can't skip them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize(
    "args",
    [
        ("ruff", "check", "relay", "tests", "bench", "docs"),
        ("ruff", "format", "--check", "relay", "tests", "bench", "docs"),
        ("mypy", "--strict", "relay"),
        # The tests too: every body checked (pyproject's override for tests.*).
        ("mypy", "tests"),
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict", "mypy-tests"],
)
def test_static(args: tuple[str, ...]) -> None:
    result = _run(*args)
    assert result.returncode == 0, result.stdout + result.stderr
