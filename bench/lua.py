"""The wrk script: unique or repeated 1 KiB bodies, optional pacing, a JSON summary line.

``wrk ... -s SCRIPT URL -- MODE PREFIX DELAY_MS KEYS``

* ``unique``: request n of thread t carries id ``PREFIX-t-n`` in its body and
  as its Idempotency-Key, so every event is new to the relay;
* ``dup``: cycles through KEYS fixed requests with ids ``PREFIX-0`` ..
  ``PREFIX-(KEYS-1)`` (``bench.payload.body_for`` builds the same bytes, to pre-seed them);
* ``DELAY_MS`` > 0: each connection waits 0..2xDELAY_MS (uniform) between
  requests, to offer a set rate instead of as many requests as it can.

``done()`` prints one line ``BENCH {json}`` that ``bench.wrk`` parses.
"""

from __future__ import annotations

from pathlib import Path

from bench.payload import BODY_SIZE

SCRIPT = """\
-- Written by bench/lua.py; see its docstring.
local SIZE = %(size)d
local PAD = string.rep("x", SIZE)
local HEADERS = {["Content-Type"] = "application/json"}
local threads = 0
local prefix, counter, fixed = "run", 0, nil

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local function body_for(id)
  local head = '{"id":"' .. id .. '","type":"bench.event","data":"'
  local tail = '"}'
  return head .. PAD:sub(1, SIZE - #head - #tail) .. tail
end

local function request_for(id)
  HEADERS["Idempotency-Key"] = id
  return wrk.format("POST", wrk.path, HEADERS, body_for(id))
end

function init(args)
  local mode = args[1] or "unique"
  local base = args[2] or "run"
  local delay_ms = tonumber(args[3] or "0")
  local keys = tonumber(args[4] or "100")
  prefix = base .. "-" .. tostring(tid or 1)
  if mode == "dup" then
    fixed = {}
    for i = 0, keys - 1 do
      fixed[i + 1] = request_for(base .. "-" .. i)
    end
  end
  if delay_ms > 0 then
    math.randomseed((tid or 1) * 7919)
    function delay()
      return math.floor(math.random() * 2 * delay_ms + 0.5)
    end
  end
end

function request()
  counter = counter + 1
  if fixed then
    return fixed[(counter %% #fixed) + 1]
  end
  return request_for(prefix .. "-" .. counter)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,' ..
    '"status":%%d,"timeout":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,' ..
    '"mean_us":%%.1f,"max_us":%%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""


def write_script(folder: Path) -> Path:
    path = folder / "bench.lua"
    path.write_text(SCRIPT % {"size": BODY_SIZE}, encoding="utf-8")
    return path
