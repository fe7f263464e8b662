"""What every scenario is handed: options, tools, a work folder, results so far."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from bench.options import Options
from bench.results import Row


@dataclass(slots=True)
class Context:
    opts: Options
    wrk: str  # path of the wrk binary
    script: Path  # bench.lua
    workdir: Path
    results: dict[str, Row] = field(default_factory=dict)
    # In every key, so keys stay unique across runs that reuse a cached store.
    run_id: str = field(default_factory=lambda: secrets.token_hex(4))
    profiles: dict[str, str] = field(default_factory=dict)  # scenario -> top functions

    def folder(self, name: str) -> Path:
        path = self.workdir / name.replace("@", "-at-")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def prefix(self, name: str) -> str:
        return f"{self.run_id}-{name}"
