"""The listeners' ``tls:`` sections: files (or systemd credentials) checked at load,
mutual TLS settings that agree with each other, and the names a route's
``client_subjects`` are matched against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trustme

from relay import tls
from relay.config import from_mapping
from relay.errors import ConfigError

ROUTE = {"name": "r", "path": "/r", "upstream": "http://127.0.0.1:3000/"}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    ca = trustme.CA()
    cert = ca.issue_cert("relay.example")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "tls.crt"))
    cert.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "both.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    return {"cert_file": "tls.crt", "key_file": "tls.key"}


def load(tmp_path: Path, env: dict[str, str] | None = None, **top: Any) -> Any:
    return from_mapping({"routes": [dict(ROUTE)], **top}, env=env or {}, base=tmp_path)


def errors(tmp_path: Path, env: dict[str, str] | None = None, **top: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, env, **top)
    return list(info.value.errors)


def test_files_and_credentials_are_read_at_load(tmp_path: Path, files: dict[str, str]) -> None:
    cfg = load(tmp_path, tls=files, admin={"tls": {"cert_file": "both.pem"}})
    assert cfg.tls.cert_file == str(tmp_path / "tls.crt")
    assert (cfg.tls.client_auth, cfg.tls.client_ca_file) == ("none", None)
    assert cfg.admin.tls.key_file is None  # the key is in the same file
    creds = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    by_cred = load(
        tmp_path,
        creds,
        tls={"cert_credential": "tls.crt", "key_credential": "tls.key", "client_ca_file": "ca.pem"},
    )
    assert by_cred.tls.key_file == str(tmp_path / "tls.key")
    # A CA given means mutual TLS: required unless the config says optional.
    assert by_cred.tls.client_auth == "require"
    assert by_cred.tls.digest != cfg.tls.digest  # a reload sees a changed file as a change


def test_mistakes_are_named_by_their_path(tmp_path: Path, files: dict[str, str]) -> None:
    assert errors(tmp_path, tls={"key_file": "tls.key"}) == [
        "tls.cert_file: required (a listener's tls: has cert_file, key_file,"
        " client_ca_file (or *_credential), client_auth)"
    ]
    (junk,) = errors(tmp_path, tls={"cert_file": "junk.pem"})
    assert junk.startswith("tls: cert_file/key_file:")
    (missing,) = errors(tmp_path, admin={"tls": {"cert_file": "nope.pem"}})
    assert missing.startswith("admin.tls: cert_file/key_file:") and "No such file" in missing
    (bad_ca,) = errors(tmp_path, tls={**files, "client_ca_file": "junk.pem"})
    assert bad_ca.startswith("tls: client_ca_file:")
    (no_ca,) = errors(tmp_path, tls={**files, "client_auth": "require"})
    assert (
        no_ca
        == "tls.client_auth: require needs client_ca_file: the CA client certificates chain to"
    )
    (both,) = errors(tmp_path, tls={**files, "cert_credential": "x"})
    assert both == "tls.cert_credential: give cert_file or cert_credential, not both"
    (unset,) = errors(tmp_path, tls={"cert_credential": "tls.crt"})
    assert "$CREDENTIALS_DIRECTORY is not set" in unset
    (typo,) = errors(tmp_path, tls={**files, "client_ath": "optional"})
    assert typo.startswith("tls.client_ath: unknown key")


def test_client_subjects_need_a_listener_that_asks_for_certificates(
    tmp_path: Path, files: dict[str, str]
) -> None:
    pinned = {**ROUTE, "client_subjects": ["sender.example"]}
    for top in ({}, {"tls": files}):
        with pytest.raises(ConfigError) as info:
            from_mapping({"routes": [pinned], **top}, env={}, base=tmp_path)
        assert info.value.errors[0].startswith(
            "routes[0].client_subjects: needs tls.client_ca_file"
        )
    asks = {**files, "client_ca_file": "ca.pem", "client_auth": "optional"}
    cfg = from_mapping({"routes": [pinned], "tls": asks}, env={}, base=tmp_path)
    assert cfg.routes[0].client_subjects == ("sender.example",)


def test_subject_names_are_the_common_names_and_every_alternative_name() -> None:
    peer = {
        "subject": ((("countryName", "DE"),), (("commonName", "Billing Sender"),)),
        "subjectAltName": (("DNS", "billing.example"), ("email", "ops@example.com")),
    }
    assert tls.subject_names(peer) == ("Billing Sender", "billing.example", "ops@example.com")
    assert tls.subject_names({}) == ()
    assert tls.subject_names(None) == ()
