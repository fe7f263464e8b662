"""``webhook-relay check-config``, run as the operator runs it: a separate process."""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from relay.cli.client import resolve

STRIPE_SECRET = "whsec_cli_secret_never_printed_1111"
INTERNAL_SECRET = "internal_cli_secret_never_printed_2222"
FILE_SECRET = "file_cli_secret_never_printed_3333"
ADMIN_TOKEN = "admin_cli_token_never_printed_4444"
SECRETS = (STRIPE_SECRET, INTERNAL_SECRET, FILE_SECRET, ADMIN_TOKEN)

GOOD = """\
listen: "0.0.0.0:8080"
admin: {listen: "0.0.0.0:9090", token_env: RELAY_ADMIN_TOKEN}
storage: {url: "sqlite:///var/lib/webhook-relay/relay.db", dedupe_window: 7d}
routes:
  - name: stripe
    path: /webhooks/stripe
    upstream: http://127.0.0.1:3000/stripe
    preset: stripe
    verify: {secret_env: STRIPE_WEBHOOK_SECRET}
  - name: github
    path: /webhooks/github
    upstreams: [http://127.0.0.1:3000/gh, http://127.0.0.1:3001/gh]
    preset: github
    verify: {secret_file: github.secret}
    retry: {max_attempts: 5, max_age: 36h}
    concurrency: 4
    max_pending: 500
  - name: internal
    path: /hooks/internal
    upstream: http://127.0.0.1:4000/in
    mode: sync
    methods: [post, put]
    verify: {scheme: hmac-sha256, secret_env: INTERNAL_SECRET}
    idempotency: {key: ["header:X-Request-Id", sha256], require_key: true}
"""

BAD = """\
admin: {listen: "0.0.0.0:9090"}
storage: {dedupe_window: 7}
routes:
  - name: stripe
    path: /webhooks/stripe
    upstream: http://127.0.0.1:3000/stripe
    preset: stripe
    verify: {secret: INLINE, secret_env: STRIPE_WEBHOOK_SECRET}
  - name: stripe
    path: webhooks/other
    upstream: ftp://example.com/
    retyr: {max_attempts: 3}
""".replace("INLINE", STRIPE_SECRET)


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k != "WEBHOOK_RELAY_CONFIG"}
    return {
        **base,
        "RELAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
        "INTERNAL_SECRET": INTERNAL_SECRET,
        **extra,
    }


def run_cli(
    cwd: Path, *args: str, environ: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        cwd=cwd,
        env=env() if environ is None else environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def check_config(
    cwd: Path, *args: str, environ: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli(cwd, "check-config", *args, environ=environ)


def write(tmp_path: Path, text: str, name: str = "relay.yaml") -> Path:
    (tmp_path / "github.secret").write_text(FILE_SECRET + "\n")
    file = tmp_path / name
    file.write_text(text)
    return file


def assert_no_secrets(result: subprocess.CompletedProcess[str]) -> None:
    for secret in SECRETS:
        assert secret not in result.stdout
        assert secret not in result.stderr


def test_a_good_file_exits_0_and_prints_each_route(tmp_path: Path) -> None:
    file = write(tmp_path, GOOD)
    result = check_config(tmp_path, "-c", str(file))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        f"{file}: ok, 3 route(s); listen 0.0.0.0:8080, admin 0.0.0.0:9090",
        "storage: sqlite, dedupe window 1w",  # 7d, in the largest whole unit
        "- stripe: POST /webhooks/stripe -> http://127.0.0.1:3000/stripe",
        "    mode queue; key json:$.id; verify stripe",
        "    retry 25 attempts within 3d; concurrency 16; max pending 100000",
        "- github: POST /webhooks/github -> http://127.0.0.1:3000/gh, http://127.0.0.1:3001/gh",
        "    mode queue; key header:X-GitHub-Delivery; verify github",
        "    retry 5 attempts within 36h; concurrency 4; max pending 500",
        "- internal: POST|PUT /hooks/internal -> http://127.0.0.1:4000/in",
        "    mode sync; key header:X-Request-Id, sha256 (required); verify hmac-sha256",
    ]
    assert_no_secrets(result)


def test_a_relative_path_and_the_long_option(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    result = check_config(tmp_path, "--config", "relay.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("relay.yaml: ok, 3 route(s)")


def test_the_config_path_from_the_environment(tmp_path: Path) -> None:
    file = write(tmp_path, GOOD, name="from-env.yaml")
    result = check_config(tmp_path, environ=env(WEBHOOK_RELAY_CONFIG=str(file)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{file}: ok")


def test_a_bad_file_exits_1_and_prints_every_error_on_stderr(tmp_path: Path) -> None:
    file = write(tmp_path, BAD)
    result = check_config(tmp_path, "-c", str(file))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{file}: 7 error(s)",
        "  admin: listens on 0.0.0.0:9090, beyond loopback: set token_env, token_file or tokens",
        '  storage.dedupe_window: expected a duration like "30s", got 7',
        "  routes[0].verify.secret: secrets are never inline: use secret_env, secret_file or secret_credential",
        "  routes[1].path: must start with '/', got \"webhooks/other\"",
        '  routes[1].upstream: expected an http:// or https:// URL, got "ftp://example.com/"',
        "  routes[1].retyr: unknown key",
        '  routes[1].name: "stripe" is already the name of routes[0]',
    ]
    assert_no_secrets(result)


def test_a_missing_secret_is_an_error(tmp_path: Path) -> None:
    file = write(tmp_path, GOOD)
    environ = env()
    del environ["INTERNAL_SECRET"]
    result = check_config(tmp_path, "-c", str(file), environ=environ)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{file}: 1 error(s)",
        "  routes[2].verify.secret_env: environment variable INTERNAL_SECRET is not set",
    ]
    assert_no_secrets(result)


def test_a_missing_file(tmp_path: Path) -> None:
    result = check_config(tmp_path, "-c", "nope.yaml")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "nope.yaml: no such file (serve and check-config need one: -c FILE or"
        " WEBHOOK_RELAY_CONFIG; config.example.yaml is a start)"
    ]


def test_one_rule_for_a_missing_config_in_every_command(tmp_path: Path) -> None:
    # Named (-c or the variable) and missing: an error, whatever the command.
    for args in (["status", "-c", "gone.yaml"], ["events", "list", "-c", "gone.yaml"]):
        result = run_cli(tmp_path, *args)
        assert result.returncode == 1, args
        assert "gone.yaml: no such file" in result.stderr
    named = env(WEBHOOK_RELAY_CONFIG="gone.yaml")
    assert "gone.yaml: no such file" in run_cli(tmp_path, "status", environ=named).stderr
    assert "gone.yaml: no such file" in run_cli(tmp_path, "serve", environ=named).stderr
    # Not named: the admin commands say what they fall back to, then try it.
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    result = run_cli(tmp_path, "status", "--admin-url", f"127.0.0.1:{port.getsockname()[1]}")
    port.close()
    assert "no config.yaml here; using the defaults: the admin listener 127.0.0.1:9090" in (
        result.stderr
    )
    assert result.returncode == 1  # nothing listens there


def test_state_choices_are_the_states_the_api_knows() -> None:
    from relay.cli.events import STATES
    from relay.store.records import DELIVERY_STATES

    assert STATES == DELIVERY_STATES


def test_invalid_yaml_is_reported_not_a_traceback(tmp_path: Path) -> None:
    file = write(tmp_path, "routes:\n  - name: a\n   path: /a\n")
    result = check_config(tmp_path, "-c", str(file))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[1].endswith("(line 3, column 4)")


def test_absurdly_nested_yaml_is_reported_not_a_traceback(tmp_path: Path) -> None:
    file = write(tmp_path, "routes: " + "[" * 1_000)
    result = check_config(tmp_path, "-c", str(file))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"{file}: 1 error(s)",
        f"  {file}: invalid YAML: nested too deeply",
    ]


def test_a_preset_without_verify_is_a_warning(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        "routes:\n"
        "  - {name: gh, path: /gh, upstream: 'http://127.0.0.1:3000/gh', preset: github}\n"
        "  - {name: plain, path: /plain, upstream: 'http://127.0.0.1:3000/p'}\n"
        "  - name: signed\n    path: /signed\n    upstream: 'http://127.0.0.1:3000/s'\n"
        "    preset: stripe\n    verify: {secret_env: STRIPE_WEBHOOK_SECRET}\n",
    )
    result = check_config(tmp_path, "-c", str(file))
    assert result.returncode == 0, result.stderr  # valid: a warning, not an error
    warnings = result.stderr.splitlines()
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: route 'gh': preset 'github' but no verify:")


def test_the_cli_finds_a_scoped_token_it_can_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "relay.yaml"
    file.write_text(
        "admin:\n  listen: 127.0.0.1:9999\n  tokens:\n"
        "    - {label: grafana, role: read, token_env: READ_TOKEN}\n"
        "    - {label: ops, role: operate, token_file: ops.token}\n"
        "    - {label: deploy, role: operate, token_credential: relay-deploy}\n"
    )
    args = argparse.Namespace(config=str(file), admin_url=None, token_env=None)
    for name in ("RELAY_ADMIN_TOKEN", "READ_TOKEN", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    assert resolve(args) == ("http://127.0.0.1:9999", None, None)
    monkeypatch.setenv("READ_TOKEN", "r" * 40)
    assert resolve(args)[1] == "r" * 40  # the only one readable
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "relay-deploy").write_text("d" * 40 + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    assert resolve(args)[1] == "d" * 40  # operate before read
    (tmp_path / "ops.token").write_text("o" * 40 + "\n")
    assert resolve(args)[1] == "o" * 40  # in the config's order among operate ones


def test_token_prints_a_new_token_long_enough_for_any_listener(tmp_path: Path) -> None:
    made = [
        subprocess.run(
            [sys.executable, "-m", "relay", "token"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
        for _ in range(2)
    ]
    assert made[0] != made[1]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", t) for t in made)  # 256 bits, base64url
    file = write(
        tmp_path,
        "admin: {listen: '0.0.0.0:9090', token_env: NEW_TOKEN}\n"
        "routes: [{name: a, path: /a, upstream: 'http://127.0.0.1:3000/a'}]\n",
    )
    result = check_config(tmp_path, "-c", str(file), environ=env(NEW_TOKEN=made[0]))
    assert result.returncode == 0, result.stderr
    short = check_config(tmp_path, "-c", str(file), environ=env(NEW_TOKEN=made[0][:31]))
    assert short.returncode == 1 and "wants at least 32" in short.stderr


def test_handshakes_and_public_urls_are_listed_and_the_meta_token_never_shown(
    tmp_path: Path,
) -> None:
    file = write(
        tmp_path,
        "routes:\n"
        "  - name: meta\n    path: /meta\n    upstream: 'http://127.0.0.1:3000/m'\n"
        "    preset: meta\n    verify: {secret_env: STRIPE_WEBHOOK_SECRET}\n"
        "    handshake: {verify_token_env: META_TOKEN}\n"
        "  - name: sms\n    path: /sms\n    upstream: 'http://127.0.0.1:3000/s'\n"
        "    preset: twilio\n    verify: {secret_env: STRIPE_WEBHOOK_SECRET}\n"
        "    public_url: 'https://hooks.example.com/sms'\n",
    )
    result = check_config(tmp_path, "-c", str(file), environ=env(META_TOKEN="meta-token-42"))
    assert result.returncode == 0, result.stderr
    assert "    handshake meta; public url rebuilt" in result.stdout.splitlines()
    assert "    handshake none; public url https://hooks.example.com/sms" in result.stdout
    assert "key header:I-Twilio-Idempotency-Token, form:MessageSid, form:CallSid" in result.stdout
    assert "meta-token-42" not in result.stdout + result.stderr
    assert_no_secrets(result)
