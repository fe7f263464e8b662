"""deploy/: the compose recipe checked against the files it names and the configs it
runs (nothing is started: base images cannot be pulled here), and the production
config loads as the README says."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import yaml

from relay.config import from_mapping
from relay.config.validate import parse_duration

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]
RELAYS = sorted(name for name in SERVICES if name.startswith("relay-"))


def _secret_files(tmp: Path) -> None:
    for name in COMPOSE["secrets"]:
        text = "postgresql://relay:pw@postgres:5432/relay" if name == "db-url" else name * 4
        (tmp / name).write_text(text + "\n", encoding="utf-8")


def _relay_config(tmp: Path) -> Any:
    """config.compose.yaml as the replicas load it, with /run/secrets in ``tmp``."""
    _secret_files(tmp)
    text = (DEPLOY / "config.compose.yaml").read_text(encoding="utf-8")
    doc = yaml.safe_load(text.replace("/run/secrets/", f"{tmp}/"))
    return from_mapping(doc, env={}, base=tmp)


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path (relative to deploy/) of each bind mount."""
    found = {}
    for volume in service.get("volumes", []):
        host, _, rest = volume.partition(":")
        if host.startswith("."):
            found[rest.split(":")[0]] = host
    return found


def test_every_file_the_recipe_mounts_or_builds_exists() -> None:
    for name, service in SERVICES.items():
        for host in _mounts(service).values():
            assert (DEPLOY / host).is_file(), f"{name}: {host}"
        if "build" in service:
            context = DEPLOY / service["build"]["context"]
            assert (context / service["build"]["dockerfile"]).is_file()
    # The secrets are the operator's: each is made by a command in the header.
    header = (DEPLOY / "compose.yaml").read_text(encoding="utf-8").split("\nname:", 1)[0]
    for secret in COMPOSE["secrets"].values():
        assert secret["file"].removeprefix("./") in header, secret
    assert (DEPLOY / ".gitignore").read_text(encoding="utf-8").split() == ["secrets/"]


def test_nginx_reaches_each_replica_where_it_listens(tmp_path: Path) -> None:
    nginx = SERVICES["nginx"]
    assert _mounts(nginx)["/etc/nginx/conf.d/default.conf"] == "./nginx.conf"
    recipe = (DEPLOY / "nginx.conf").read_text(encoding="utf-8")
    servers = re.findall(r"^\s*server (\S+):(\d+) ", recipe, re.MULTILINE)
    aliases = {a for r in RELAYS for a in SERVICES[r]["networks"]["default"]["aliases"]}
    cfg = _relay_config(tmp_path)
    assert {host for host, _ in servers} == aliases
    assert {int(port) for _, port in servers} == {cfg.listen.port}
    assert re.search(r"^\s*listen 80;", recipe, re.MULTILINE)
    assert nginx["ports"] == ["8080:80"]
    # The relays believe nginx's forwarding headers, and only nginx's.
    address = ipaddress.ip_address(nginx["networks"]["default"]["ipv4_address"])
    subnet = ipaddress.ip_network(COMPOSE["networks"]["default"]["ipam"]["config"][0]["subnet"])
    assert address in subnet
    assert [str(n) for n in cfg.trusted_proxies] == [f"{address}/32"]


def test_prometheus_scrapes_each_replica_with_a_token_it_holds(tmp_path: Path) -> None:
    prom = SERVICES["prometheus"]
    mounts = _mounts(prom)
    scrape = yaml.safe_load((DEPLOY / mounts["/etc/prometheus/prometheus.yml"]).read_text())
    (job,) = scrape["scrape_configs"]
    cfg = _relay_config(tmp_path)
    targets = job["static_configs"][0]["targets"]
    assert targets == [f"{r}:{cfg.admin.listen.port}" for r in RELAYS]
    # The admin listener answers those Host names, and the token is a read token it knows.
    assert set(cfg.admin.allowed_hosts) >= set(RELAYS)
    credentials = job["authorization"]["credentials_file"]
    assert credentials.startswith("/run/secrets/")
    assert credentials.removeprefix("/run/secrets/") in prom["secrets"]
    roles = {t.label: t.role for t in cfg.admin.tokens}
    assert roles["prometheus"] == "read"
    assert "/etc/prometheus/alerts.yml" in scrape["rule_files"]
    assert mounts["/etc/prometheus/alerts.yml"] == "../monitoring/alerts.yml"


def test_replicas_share_one_database_and_stop_after_the_drain(tmp_path: Path) -> None:
    cfg = _relay_config(tmp_path)
    assert cfg.storage.url.startswith("postgresql://relay:pw@postgres:5432/relay")
    for name in RELAYS:
        service = SERVICES[name]
        assert set(service["secrets"]) <= set(COMPOSE["secrets"])
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        grace = parse_duration(service["stop_grace_period"])
        assert grace > cfg.drain_delay + cfg.shutdown_grace
    postgres = SERVICES["postgres"]["environment"]
    assert postgres["POSTGRES_USER"] == "relay" and postgres["POSTGRES_DB"] == "relay"


def test_the_production_config_loads_with_its_credentials(tmp_path: Path) -> None:
    (tmp_path / "admin-token").write_text("t" * 40)
    (tmp_path / "stripe-signing-secret").write_text("whsec_abc")
    doc = yaml.safe_load((DEPLOY / "config.production.yaml").read_text(encoding="utf-8"))
    cfg = from_mapping(doc, env={"CREDENTIALS_DIRECTORY": str(tmp_path)}, base=tmp_path)
    assert cfg.listen.host == "0.0.0.0"
    assert cfg.storage.url.startswith("sqlite:////var/lib/webhook-relay/")
    (route,) = cfg.routes
    assert route.verify is not None and route.preset == "stripe"
    assert cfg.warnings() == ()
