"""The admin API's OpenAPI 3.1 document: served, describing every route the admin
app has and nothing else, and schemathesis against the live API (a bounded,
derandomized number of examples per operation) finds no 5xx and no answer the
document does not allow."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from relay.admin.api import OPENAPI
from tests.integration.conftest import AdminFactory, Backend, RelayFactory, route

EXAMPLES = 30
METHODS = ("get", "post", "put", "patch", "delete")


def spec() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(OPENAPI.read_text())
    return doc


def described() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in spec()["paths"].items()
        for method in item
        if method in METHODS
    }


async def test_the_document_is_served_and_matches_the_routes(
    make_relay: RelayFactory, make_admin: AdminFactory, upstream: Backend
) -> None:
    public = await make_relay(route(upstream))
    admin = await make_admin(public)
    resp = await admin.get("/api/v1/openapi.json")
    assert resp.status == 200 and await resp.json() == spec()
    assert spec()["openapi"] == "3.1.0"
    routes = {
        (r.method, r.resource.canonical)
        for r in admin.app.router.routes()
        if r.resource is not None
        and r.method != "HEAD"
        # The console is HTML under /ui, not part of the API.
        and not r.resource.canonical.startswith("/ui")
    }
    assert routes == described()


def fuzz(base_url: str, mode: GenerationMode) -> tuple[int, list[str]]:
    """Every operation, EXAMPLES cases each; how many calls and what failed."""
    schema = schemathesis.openapi.from_dict(spec())
    calls = 0
    failures: list[str] = []
    # One session for every call, closed at the end: a session per call leaves its
    # sockets to the garbage collector (a ResourceWarning: an error under our pytest).
    with requests.Session() as session:
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), result  # the spec's own operations all resolve
            operation = result.ok()
            if mode is GenerationMode.NEGATIVE and not operation.definition.raw.get(
                "parameters", operation.definition.raw.get("requestBody")
            ):
                continue  # nothing to get wrong (the probes, /metrics, status)

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode), _=st.just(None))
            def check(case: Any, _: None) -> None:
                nonlocal calls
                calls += 1
                case.call_and_validate(base_url=base_url, session=session)

            try:
                check()
            except (Exception, BaseExceptionGroup) as exc:  # every operation's, reported at once
                failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:1500]}")
    return calls, failures


async def test_schemathesis_finds_no_server_error_and_no_contradiction(
    make_relay: RelayFactory, make_admin: AdminFactory, upstream: Backend
) -> None:
    public = await make_relay(route(upstream), route(upstream, "pay", mode="sync"))
    admin = await make_admin(public)
    for key in ("k1", "k2"):
        resp = await public.post(
            "/hooks/orders", data=b'{"a": 1}', headers={"Idempotency-Key": key}
        )
        assert resp.status == 202
    base_url = str(admin.make_url("")).rstrip("/")
    # schemathesis calls are blocking: in a thread, while this loop serves them.
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        calls, failures = await asyncio.to_thread(fuzz, base_url, mode)
        print(f"schemathesis, {mode.value}: {calls} calls, {len(failures)} operations failed")
        assert calls >= len(described()) * 5, mode
        assert not failures, f"{mode}:\n" + "\n\n".join(failures[:10])


FORBIDDEN = [
    # The document's BulkReplay/BulkFilter: reason is text with a non-space (pattern \S),
    # whether previewing or not; single-event reasons are text, never null.
    ("/api/v1/replay", {"all": True, "reason": None}),
    ("/api/v1/purge", {"all": True, "reason": None}),
    ("/api/v1/replay", {"all": True, "preview": True, "reason": "   "}),
    ("/api/v1/purge", {"all": True, "preview": True, "reason": "\t"}),
    ("/api/v1/replay", {"all": True, "preview": True, "reason": None}),
    ("/api/v1/routes/orders/pause", {"reason": None}),
]


async def test_inputs_the_document_forbids_are_refused(
    make_relay: RelayFactory, make_admin: AdminFactory, upstream: Backend
) -> None:
    public = await make_relay(route(upstream))
    admin = await make_admin(public)
    assert (await public.post("/hooks/orders", data=b"{}")).status == 202
    for path, body in FORBIDDEN:
        resp = await admin.post(path, json=body)
        assert resp.status == 400, (path, body)
        assert (await resp.json())["error"] == "bad_reason", (path, body)
    audit = await (await admin.get("/api/v1/audit")).json()
    assert audit["entries"] == []
    status = await (await admin.get("/api/v1/status")).json()
    assert status["pauses"] == []
