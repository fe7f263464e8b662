"""System tools some tests drive (promtool, nginx, haproxy, node): found on PATH or in
/usr/sbin; missing, the test is skipped on a developer's machine and fails in CI,
where ``RELAY_REQUIRE_<NAME>=1`` says it must be there."""

from __future__ import annotations

import os
import shutil

import pytest


def required_tool(name: str, install: str, require: str) -> str:
    """The path of ``name``; ``install`` says how to get it, ``require`` names the
    environment variable that turns a skip into a failure."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    if found is None:
        message = f"{name} not found: `{install}`"
        if os.environ.get(require) == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found
