// The live tail: polls /ui/tail.json every second and adds rows. Every value is set
// with textContent, never as HTML: webhook keys and routes come from strangers.
"use strict";
(function () {
  const events = document.getElementById("tail-events");
  const attempts = document.getElementById("tail-attempts");
  const status = document.getElementById("tail-status");
  if (!events || !attempts) return;
  const feed = events.dataset.feed;
  const base = events.dataset.base;
  let lastEvent = 0;
  let lastAttempt = 0;
  const KEEP = 200;

  function cell(row, text, href) {
    const td = document.createElement("td");
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
    const row = document.createElement("tr");
    row.className = "new";
    row.dataset.id = String(id);
    values.forEach(([text, href]) => cell(row, text, href));
    body.insertBefore(row, body.firstChild);
    while (body.rows.length > KEEP) body.deleteRow(body.rows.length - 1);
  }

  async function poll() {
    try {
      const url = `${feed}?event=${lastEvent}&attempt=${lastAttempt}`;
      const resp = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      const doc = await resp.json();
      for (const e of doc.events.slice().reverse()) {
        add(events, [[String(e.id), base + e.id], [e.received_at], [e.route], [e.key], [e.state]], e.id);
        lastEvent = Math.max(lastEvent, e.id);
      }
      for (const a of doc.attempts.slice().reverse()) {
        const answer = a.error ? a.error : `HTTP ${a.status}`;
        add(attempts, [[String(a.event_id), base + a.event_id], [a.started_at], [a.upstream], [answer], [String(a.duration_ms)]], a.id);
        lastAttempt = Math.max(lastAttempt, a.id);
      }
      status.textContent = `Polling every second; last at ${new Date().toLocaleTimeString()}.`;
    } catch (err) {
      status.textContent = `Polling failed (${err.message}); retrying.`;
    }
    setTimeout(poll, 1000);
  }
  poll();
})();
