"""The import graph of ``relay/`` keeps the layout the README's Development section
draws: no cycles (function-local imports count), no import from a lower layer to a
higher one, store backends apart, and the process roles apart."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "relay"

# Lowest first: a module may import its own layer and the ones before it, never after.
# The first pattern that matches a module names its layer ("x.*": x and below it).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "pure",
        (
            "relay",
            "relay.errors",
            "relay.logging",
            "relay.keys",
            "relay.signatures.*",
            "relay.retry",
            "relay.versions",
            "relay.sdnotify",
            "relay.breaker",
            "relay.tls",
        ),
    ),
    ("store", ("relay.store.*",)),
    ("config", ("relay.config.*",)),
    (
        "state",
        (
            "relay.metrics",
            "relay.backlog",
            "relay.disk",
            "relay.forward",
            "relay.tracing.*",
            "relay.runtime",
        ),
    ),
    # The two wings of the hot path: they meet only through relay.runtime's port.
    ("wings", ("relay.intake.*", "relay.delivery.*")),
    ("upkeep", ("relay.housekeeping", "relay.reload", "relay.admin.*")),
    ("assembly", ("relay.lifecycle", "relay.app")),
    ("roles", ("relay.serve", "relay.workers.*")),
    ("entry", ("relay.cli.*", "relay.__main__")),
]
# Modules that may sit flat in relay/ (neither __init__ nor __main__ counted): pure
# domain and process-wide plumbing. A new module joins a wing or a family folder.
MAX_FLAT = 20
# The pure modules import nothing of ours (a family folder: nothing outside it).
PURE: tuple[str, ...] = (
    "relay.keys",
    "relay.signatures.*",
    "relay.retry",
    "relay.versions",
    "relay.errors",
)

# Pairs that share a layer and still must not meet: (importer, imported).
APART: list[tuple[str, str]] = [
    # While the sender waits, and after the ack: through the port only.
    ("relay.intake.*", "relay.delivery.*"),
    ("relay.delivery.*", "relay.intake.*"),
    ("relay.store.sqlite.*", "relay.store.postgres.*"),
    ("relay.store.sqlite.*", "relay.store.remote.*"),
    ("relay.store.postgres.*", "relay.store.sqlite.*"),
    ("relay.store.postgres.*", "relay.store.remote.*"),
    ("relay.store.remote.*", "relay.store.sqlite.*"),
    ("relay.store.remote.*", "relay.store.postgres.*"),
    # The shared store modules know no backend; the records and the contract nothing else.
    ("relay.store.records", "relay.store.*"),
    ("relay.store.base", "relay.store.*"),
    ("relay.store.batch", "relay.store.sqlite.*"),
    ("relay.store.batch", "relay.store.postgres.*"),
    ("relay.store.rows", "relay.store.sqlite.*"),
    ("relay.store.common_sql", "relay.store.*"),
    ("relay.store.migrate", "relay.store.sqlite.*"),
    # The single-process role, the owner and the worker are peers.
    ("relay.serve", "relay.workers.*"),
    ("relay.workers.*", "relay.serve"),
    ("relay.workers.owner", "relay.workers.worker"),
    ("relay.workers.worker", "relay.workers.owner"),
]
# What ``relay.store.base`` may import of its own package: its records.
APART_EXCEPT = {("relay.store.base", "relay.store.records")}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(importer: str, node: ast.ImportFrom | ast.Import) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == "relay":
                yield _nearest(alias.name)
        return
    base = node.module or ""
    if node.level:  # relative: from the importer's package
        package = (
            importer if MODULES[importer].name == "__init__.py" else importer.rpartition(".")[0]
        )
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    if base.split(".")[0] != "relay":
        return
    for alias in node.names:
        full = f"{base}.{alias.name}"
        yield full if full in MODULES else _nearest(base)


def _nearest(name: str) -> str:
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        edges: set[str] = set()
        for node in ast.walk(tree):  # every import, function-local ones included
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges.update(_resolve(name, node))
        edges.discard(name)
        graph[name] = edges
    return graph


GRAPH = _graph()


def _matches(module: str, pattern: str) -> bool:
    if pattern.endswith(".*"):
        stem = pattern[:-2]
        return module == stem or module.startswith(stem + ".")
    return module == pattern


def _layer(module: str) -> int:
    for rank, (_, patterns) in enumerate(LAYERS):
        if any(_matches(module, p) for p in patterns):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and to the README")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        _layer(module)


def test_no_import_cycles() -> None:
    assert _cycles(GRAPH) == []


def test_no_import_reaches_a_higher_layer() -> None:
    wrong = [
        f"{a} ({LAYERS[_layer(a)][0]}) imports {b} ({LAYERS[_layer(b)][0]})"
        for a, targets in sorted(GRAPH.items())
        for b in sorted(targets)
        if _layer(b) > _layer(a)
    ]
    assert wrong == []


def test_the_pure_modules_import_nothing_of_ours() -> None:
    outside = {
        m: sorted(b for b in GRAPH[m] if not any(_matches(b, p) for p in PURE))
        for m in MODULES
        if any(_matches(m, p) for p in PURE)
    }
    assert {m: found for m, found in outside.items() if found} == {}


def _breaches(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{a} imports {b}"
        for a, targets in sorted(graph.items())
        for b in sorted(targets)
        for importer, imported in APART
        if _matches(a, importer) and _matches(b, imported) and (a, b) not in APART_EXCEPT
    ]


def test_parts_that_must_stay_apart_do() -> None:
    assert _breaches(GRAPH) == []


def _flat(package: Path) -> list[str]:
    return sorted(p.stem for p in package.glob("*.py") if p.stem not in ("__init__", "__main__"))


def test_few_modules_sit_flat_in_the_package() -> None:
    flat = _flat(PACKAGE)
    assert len(flat) <= MAX_FLAT, f"{len(flat)} flat modules (at most {MAX_FLAT}): {flat}"


def test_a_planted_flat_module_and_a_wing_crossing_would_be_caught(tmp_path: Path) -> None:
    for n in range(MAX_FLAT + 1):
        (tmp_path / f"m{n}.py").write_text("")
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "__main__.py").write_text("")
    assert len(_flat(tmp_path)) == MAX_FLAT + 1
    planted = {
        "relay.intake.hybrid": {"relay.delivery.dispatcher"},
        "relay.delivery.attempts": {"relay.intake.replies"},
        "relay.delivery.outbound": {"relay.runtime"},
    }
    assert _breaches(planted) == [
        "relay.delivery.attempts imports relay.intake.replies",
        "relay.intake.hybrid imports relay.delivery.dispatcher",
    ]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import relay.store.sqlite.sql\n", {"relay.store.sqlite.sql"}),
        ("from relay.store import common_sql\n", {"relay.store.common_sql"}),
        ("from relay.store.base import Store\n", {"relay.store.base"}),
        ("def f():\n    from relay.serve import serve\n", {"relay.serve"}),
        ("from relay import logging as l\n", {"relay.logging"}),
        ("from relay import __version__\n", {"relay"}),
    ],
)
def test_the_graph_sees_every_form_of_import(source: str, expected: set[str]) -> None:
    # The checks above are only as good as this resolution (function-local imports too).
    found = {
        target
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for target in _resolve("relay.cli.main", node)
    }
    assert found == expected


def test_a_cycle_and_a_layer_breach_would_be_caught() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert (
        _layer("relay.store.sqlite.sql") < _layer("relay.intake.listener") < _layer("relay.serve")
    )
