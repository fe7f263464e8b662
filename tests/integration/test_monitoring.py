"""monitoring/: the alert rules pass promtool's checks and unit tests (each alert
fires and stays quiet), every alert has a runbook in the README, and every
expression of the rules and the Grafana dashboard parses and names only metrics
a real scrape of the relay exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.integration.conftest import AdminFactory, Backend, RelayFactory, route
from tests.tools import required_tool

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
# Grafana's variables, as Prometheus would see them once Grafana filled them in.
GRAFANA_VARS = {"$route": ".*", "$__rate_interval": "5m", "$__range": "1h"}
# Not the relay's: Prometheus's own series.
NOT_OURS = frozenset({"up"})
_NAME = re.compile(r"\b(relay_[a-z0-9_]+|up)\b")


def promtool() -> str:
    return required_tool(
        "promtool", "apt-get install prometheus (Debian's package)", "RELAY_REQUIRE_PROMTOOL"
    )


def run_promtool(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [r for group in doc["groups"] for r in group["rules"]]


def dashboard_exprs() -> list[str]:
    doc = json.loads((MONITORING / "dashboard.json").read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    for var in doc["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(re.sub(r"label_values\((\w+), \w+\)", r"\1", var["definition"]))
    return exprs


def for_prometheus(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return expr


def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    out = run_promtool("check", "rules", "alerts.yml", cwd=MONITORING)
    assert f"SUCCESS: {len(rules())} rules found" in out
    assert "SUCCESS" in run_promtool("test", "rules", "alerts_test.yml", cwd=MONITORING)


def test_every_alert_is_tested_both_ways_and_has_a_runbook() -> None:
    tests = yaml.safe_load((MONITORING / "alerts_test.yml").read_text())["tests"]
    cases = [c for t in tests for c in t["alert_rule_test"]]
    readme = (ROOT / "README.md").read_text()
    for rule in rules():
        name = rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), name
        assert any(c["alertname"] == name and c["exp_alerts"] for c in cases), f"{name} never fires"
        assert any(c["alertname"] == name and not c["exp_alerts"] for c in cases), f"{name} always"
        assert f"#### `{name}`" in readme, f"README has no runbook section for {name}"


def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) > 20
    recording = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:expr_{i}", "expr": for_prometheus(e)}
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    (tmp_path / "dashboard_rules.yml").write_text(yaml.safe_dump(recording))
    out = run_promtool("check", "rules", "dashboard_rules.yml", cwd=tmp_path)
    assert f"SUCCESS: {len(exprs)} rules found" in out


def exported_names(scrape: str) -> set[str]:
    names = set()
    for line in scrape.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            if kind == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


async def test_rules_and_dashboard_name_only_metrics_a_real_scrape_exports(
    make_relay: RelayFactory, make_admin: AdminFactory, upstream: Backend
) -> None:
    public = await make_relay(route(upstream))
    admin = await make_admin(public)
    resp = await public.post("/hooks/orders", data=b"{}", headers={"Idempotency-Key": "k1"})
    assert resp.status == 202
    scrape = await (await admin.get("/metrics")).text()
    exported = exported_names(scrape)
    used = {
        n for e in [*dashboard_exprs(), *(r["expr"] for r in rules())] for n in _NAME.findall(e)
    }
    assert {
        "relay_delivery_lag_seconds_bucket",
        "relay_store_commit_duration_seconds_bucket",
    } <= used
    missing = sorted(used - exported - NOT_OURS)
    assert not missing, f"named by monitoring/ but not exported: {missing}"
