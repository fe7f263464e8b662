"""How ``webhook-relay events`` and ``status`` print the admin API's answers
for people: aligned tables and one event in full (``--json`` skips all this)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def _short_time(iso: str | None) -> str:
    return "-" if not iso else iso.replace("T", " ")[:19] + "Z"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers], *[["-" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def _last(event: dict[str, Any]) -> str:
    for d in event.get("deliveries", []):
        if d.get("last_status") is not None:
            return str(d["last_status"])
        if d.get("last_error"):
            return _cut(str(d["last_error"]), 30)
    return "-"


def render_list(doc: dict[str, Any]) -> str:
    rows = [
        (
            e["id"],
            e["route"],
            e["state"],
            _cut(e["key"], 40) + (" (shadow copy)" if e.get("shadow_copy") else ""),
            _short_time(e["received_at"]),
            e["duplicates"],
            sum(d["attempts"] for d in e.get("deliveries", [])),
            _last(e),
        )
        for e in doc["events"]
    ]
    out = table(("ID", "ROUTE", "STATE", "KEY", "RECEIVED", "DUPS", "ATTEMPTS", "LAST"), rows)
    if not rows:
        out = "no events match"
    if doc.get("next_before_id"):
        out += f"\n(more: --before-id {doc['next_before_id']}, or --all-pages)"
    return out


def render_event(e: dict[str, Any]) -> str:
    lines = [
        f"event {e['id']}  route {e['route']}  state {e['state']}  ({e['mode']} mode)",
        f"key          {e['key']}  ({e['key_source']})",
        f"received     {_short_time(e['received_at'])}  last seen {_short_time(e['last_seen_at'])}",
        f"dedupe       {e['dedupe']['explanation']}",
        f"fingerprint  {e['fingerprint']}",
        f"request      {e['method']} {e['path']}{'?' + e['query'] if e['query'] else ''}",
    ]
    if e["deliveries"]:
        lines += ["", "deliveries:"]
        lines.append(
            table(
                ("ID", "UPSTREAM", "STATE", "ATTEMPTS", "LAST", "REASON / NEXT"),
                [
                    (
                        d["id"],
                        d["upstream"],
                        d["state"],
                        d["attempts"],
                        d["last_status"] if d["last_status"] is not None else d["last_error"],
                        d["reason"] or _short_time(d["next_attempt_at"]),
                    )
                    for d in e["deliveries"]
                ],
            )
        )
    if e.get("attempts"):
        lines += ["", "attempts:"]
        lines.append(
            table(
                ("DELIVERY", "STARTED", "MS", "STATUS", "ERROR"),
                [
                    (
                        a["delivery_id"],
                        _short_time(a["started_at"]),
                        a["duration_ms"],
                        a["status"],
                        a["error"],
                    )
                    for a in e["attempts"]
                ],
            )
        )
    lines += ["", "headers:"] + [f"  {k}: {v}" for k, v in e["headers"]]
    body = e["body"]
    lines.append("")
    if body["dropped"]:
        lines.append(
            "body: gone (dropped by payload retention or a storage cap; replay answers 410)"
        )
    elif body["preview"] is None:
        lines.append(f"body: {body['size']} bytes, not UTF-8 (use --json for base64)")
    else:
        more = " (truncated)" if body["preview_truncated"] else ""
        lines.append(f"body: {body['size']} bytes{more}")
        lines.append(body["preview"])
    return "\n".join(lines)


def _store_line(st: dict[str, Any]) -> str:
    parts = []
    if st["size_bytes"] is not None:
        parts.append(f"store {st['size_bytes'] / 2**20:,.1f} MiB")
        parts.append(f"{st['free_bytes'] / 2**30:,.1f} GiB free on its disk")
    if st["disk_low"]:
        parts.append("DISK LOW: new webhooks get 503 (storage.min_free)")
    if st["full"]:
        parts.append(f"FULL: {st['full']}")
    if st["auto_vacuum"] == "needs_room":
        parts.append("gives no space back until converted (needs free space twice its size)")
    return "; ".join(parts) or "store: PostgreSQL"


def render_status(doc: dict[str, Any]) -> str:
    head = f"webhook-relay {doc['version']}{'  DRAINING' if doc['draining'] else ''}"
    rows = [
        (
            r["name"],
            r["mode"],
            r["pending"],
            r["in_flight"],
            r["dead"],
            "-" if r["oldest_open_age_seconds"] is None else f"{r['oldest_open_age_seconds']:.0f}s",
            r["path"],
        )
        for r in doc["routes"]
    ]
    out = [head, table(("ROUTE", "MODE", "PENDING", "IN_FLIGHT", "DEAD", "OLDEST", "PATH"), rows)]
    if (store := doc.get("store")) is not None:
        out += ["", _store_line(store)]
    if doc["orphaned"]:
        out += ["", "orphaned (route or upstream no longer configured; kept pending):"]
        out.append(
            table(
                ("ROUTE", "UPSTREAM", "DELIVERIES"),
                [(o["route"], o["upstream"], o["deliveries"]) for o in doc["orphaned"]],
            )
        )
    if doc.get("pauses"):
        out += ["", "paused (senders are acked; nothing is delivered until resumed):"]
        pauses = [
            (p["route"], p["upstream"] or "(all)", _short_time(p["since"]), p["reason"] or "")
            for p in doc["pauses"]
        ]
        out.append(table(("ROUTE", "UPSTREAM", "SINCE", "REASON"), pauses))
    if doc.get("breakers"):
        out += ["", "circuit breakers not closed (only probes reach these upstreams):"]
        out.append(
            table(
                ("ROUTE", "UPSTREAM", "STATE"),
                [(b["route"], b["upstream"], b["state"]) for b in doc["breakers"]],
            )
        )
    reload = doc.get("last_reload")
    if reload:
        out.append("")
        out.append(
            f"last reload {_short_time(reload['at'])}: {'ok' if reload['ok'] else 'REFUSED'}"
        )
        out += [f"  {line}" for line in reload["errors"]]
    return "\n".join(out)


def render_audit(doc: dict[str, Any]) -> str:
    rows = [
        (
            e["id"],
            _short_time(e["at"]),
            e["action"],
            e["affected"],
            e["credential"],
            json.dumps(e["target"], sort_keys=True),
            e["reason"] or "",
        )
        for e in doc["entries"]
    ]
    if not rows:
        return "no changes recorded"
    head = ("ID", "AT", "ACTION", "AFFECTED", "CREDENTIAL", "TARGET", "REASON")
    more = doc.get("next_before_id")
    return table(head, rows) + (f"\nolder: --before-id {more}" if more else "")


def render_replicas(doc: dict[str, Any]) -> str:
    rows = [
        (
            r["id"] + (" (this)" if r["this"] else ""),
            r["host"],
            r["pid"],
            _short_time(r["started"]),
            f"{r['heartbeat_age_seconds']:.1f}s",
            r["state"],
            r["leases"],
        )
        for r in doc["replicas"]
    ]
    head = ("ID", "HOST", "PID", "STARTED", "HEARTBEAT", "STATE", "LEASES")
    return table(head, rows) if rows else "no replicas registered"
