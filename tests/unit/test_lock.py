"""requirements.lock, the image's pinned dependencies, keeps up with pyproject.toml:
every runtime dependency and those of the postgres and otel extras is pinned, at a
version the project's own specifier allows, with hashes, and no machine's paths."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
_PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^ \\]+)", re.MULTILINE)


def test_the_lock_pins_every_dependency_the_image_installs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    for extra in ("postgres", "otel"):
        wanted += [Requirement(r) for r in project["optional-dependencies"][extra]]
    text = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    pins = {canonicalize_name(n): v for n, v in _PIN.findall(text)}
    for req in wanted:
        if req.marker is not None and not req.marker.evaluate({"sys_platform": "linux"}):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{req.name}=={pins[name]} in requirements.lock, pyproject.toml wants {req.specifier}:"
            " run `make lock`"
        )
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", text.split("\n", 3)[3])
    assert all("--hash=sha256:" in b for b in blocks if _PIN.match(b))
    assert "/opt/" not in text and "file://" not in text and "--index-url" not in text
