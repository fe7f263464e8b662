// The live tail: polls /ui/tail.json every second and adds rows. Every value is set
// with textContent, never as HTML: webhook keys and routes come from strangers.
"use strict";
(function () {
  const events = document.getElementById("tail-events");
  const attempts = document.getElementById("tail-attempts");
  const counts = document.getElementById("tail-counts");
  const status = document.getElementById("tail-status");
  if (!events || !attempts || !counts) return;
  const feed = events.dataset.feed;
  const base = events.dataset.base;
  // The page came with the newest rows; only what is newer is added.
  let lastEvent = Number(events.dataset.last || 0);
  let lastAttempt = Number(attempts.dataset.last || 0);
  let seen = null; // the totals at the last poll: duplicates and refusals are their growth
  const KEEP = 200;

  // The time of day of an ISO time (UTC), the whole of it in the cell's title.
  function clock(iso) {
    return [iso.slice(11, 19) + "Z", null, null, iso];
  }

  function cell(row, text, href, cls, title) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    if (title) td.title = title;
    if (href) {
      const a = document.createElement("a");
      a.href = href;
      a.textContent = text;
      td.appendChild(a);
    } else {
      td.textContent = text;
    }
    row.appendChild(td);
  }

  function add(table, values, id) {
    const body = table.tBodies[0];
    const empty = body.querySelector("tr.empty");
    if (empty) empty.remove();
    const row = document.createElement("tr");
    row.className = "new";
    row.dataset.id = String(id);
    values.forEach(([text, href, cls, title]) => cell(row, text, href, cls, title));
    body.insertBefore(row, body.firstChild);
    while (body.rows.length > KEEP) body.deleteRow(body.rows.length - 1);
  }

  function utcNow() {
    return new Date().toISOString().replace(/\.\d+Z$/, "Z");
  }

  // Totals as "route\u0000name" -> n, from the feed's [route, name, n] rows.
  function totals(rows, pick) {
    const out = new Map();
    for (const [route, name, n] of rows) if (pick(name)) out.set(route + "\u0000" + name, n);
    return out;
  }

  function said(name, n) {
    if (name === "duplicate") return n === 1 ? "1 duplicate absorbed" : `${n} duplicates absorbed`;
    if (name === "replayed") return `${n} answered with the stored answer`;
    return `${n} rejected: ${name}`;
  }

  function compare(doc) {
    const now = new Map([
      ...totals(doc.received, (o) => o === "duplicate" || o === "replayed"),
      ...totals(doc.rejected, () => true),
    ]);
    if (seen !== null) {
      const at = utcNow();
      for (const [k, n] of now) {
        const grown = n - (seen.get(k) || 0);
        if (grown > 0) {
          const [route, name] = k.split("\u0000");
          add(counts, [clock(at), [route], [said(name, grown)]], k);
        }
      }
    }
    seen = now;
  }

  async function poll() {
    try {
      const url = `${feed}?event=${lastEvent}&attempt=${lastAttempt}`;
      const resp = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      const doc = await resp.json();
      for (const e of doc.events.slice().reverse()) {
        add(events, [[String(e.id), base + e.id], clock(e.received_at), [e.route], [e.key, null, "key"], [e.state]], e.id);
        lastEvent = Math.max(lastEvent, e.id);
      }
      for (const a of doc.attempts.slice().reverse()) {
        if (a.id <= lastAttempt) continue;
        const answer = a.error ? a.error : `HTTP ${a.status}`;
        add(attempts, [[String(a.event_id), base + a.event_id], clock(a.started_at), [a.upstream, null, "key"], [answer], [String(a.duration_ms)]], a.id);
        lastAttempt = Math.max(lastAttempt, a.id);
      }
      compare(doc);
      status.textContent = `Polling every second (times in UTC); last at ${utcNow()}.`;
    } catch (err) {
      status.textContent = `Polling failed (${err.message}); retrying.`;
    }
    setTimeout(poll, 1000);
  }
  poll();
})();
