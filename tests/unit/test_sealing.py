"""Sealing values for the store (AES-256-GCM from ``cryptography``): what a sealed value
looks like, what it takes to open one, and the config that names the keys."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.config import from_mapping
from relay.errors import ConfigError
from relay.store.sealing import (
    CLEAR_SEALER,
    MAGIC,
    KeyMissing,
    Sealer,
    Tampered,
    key_id,
    new_key,
)

A, B = os.urandom(32), os.urandom(32)


@given(st.binary())
def test_bytes_round_trip_under_a_key_and_in_clear(value: bytes) -> None:
    sealed = Sealer(A).seal(value, b"body")
    assert sealed is not None and sealed.startswith(MAGIC + key_id(A).encode())
    assert value not in sealed[len(MAGIC) + 8 :] or len(value) < 8
    assert Sealer(A).open(sealed, b"body") == value
    assert Sealer(B, (A,)).open(sealed, b"body") == value  # an old key still opens
    # In clear a value is stored as given, and read back as given, even one that
    # looks like a sealed value (a sender may send anything).
    stored = CLEAR_SEALER.seal(value, b"body")
    assert CLEAR_SEALER.open(stored, b"body") == value
    assert CLEAR_SEALER.open(CLEAR_SEALER.seal(MAGIC + value, b"body"), b"body") == MAGIC + value


@given(st.text())
def test_text_round_trips(value: str) -> None:
    sealed = Sealer(A).seal_text(value, b"headers")
    assert sealed.startswith(f"wr-sealed:{key_id(A)}:")
    assert Sealer(A).open_text(sealed, b"headers") == value


def test_each_seal_is_fresh_and_bound_to_its_column() -> None:
    one, two = (Sealer(A).seal(b"same", b"body") for _ in range(2))
    assert one != two  # a random nonce each time
    assert one is not None
    with pytest.raises(Tampered):
        Sealer(A).open(one, b"answer")  # a body cannot be passed off as an answer
    flipped = one[:-1] + bytes([one[-1] ^ 1])
    with pytest.raises(Tampered):
        Sealer(A).open(flipped, b"body")


def test_a_missing_key_is_named() -> None:
    sealed = Sealer(A).seal(b"x", b"body")
    for sealer in (CLEAR_SEALER, Sealer(B)):
        with pytest.raises(KeyMissing) as info:
            sealer.open(sealed, b"body")
        assert info.value.key_id == key_id(A)
    assert Sealer(B).missing([key_id(A), key_id(B)]) == [key_id(A)]


def test_reseal_moves_values_to_the_current_key_and_leaves_the_rest_alone() -> None:
    old = Sealer(A).seal(b"v", b"body")
    mine = Sealer(B).seal(b"v", b"body")
    rotating = Sealer(B, (A,))
    assert rotating.sealed_with(rotating.reseal(old, b"body")) == key_id(B)
    assert rotating.reseal(mine, b"body") is mine
    assert rotating.reseal(None, b"body") is None
    assert rotating.sealed_with(rotating.reseal(b"clear", b"body")) == key_id(B)
    rows = [(1, old), (2, mine), (3, None)]
    assert [r[-1] for r in rotating.resealed(rows, (b"body",))] == [1]
    clearing = Sealer(None, (A,))
    assert clearing.reseal(old, b"body") == b"v"


def config(tmp_path: Path, encryption: Any, env: dict[str, str] | None = None) -> Any:
    doc = {
        "storage": {"encryption": encryption},
        "routes": [{"name": "r", "path": "/r", "upstream": "http://127.0.0.1:3000/"}],
    }
    return from_mapping(doc, env=env or {}, base=tmp_path)


def test_keys_come_from_files_the_environment_or_credentials(tmp_path: Path) -> None:
    (tmp_path / "current.key").write_text(base64.b64encode(A).decode() + "\n")
    (tmp_path / "old.key").write_text(base64.b64encode(B).decode())
    enc = config(tmp_path, {"key_file": "current.key", "old_key_files": ["old.key"]})
    assert enc.storage.encryption.current == A and enc.storage.encryption.old == (B,)
    assert A.hex() not in repr(enc) and "current=" not in repr(enc.storage.encryption)
    env = {"K": base64.b64encode(B).decode(), "CREDENTIALS_DIRECTORY": str(tmp_path)}
    by_env = config(tmp_path, {"key_env": "K", "old_key_credentials": ["current.key"]}, env)
    assert by_env.storage.encryption.current == B and by_env.storage.encryption.old == (A,)
    assert len(base64.b64decode(new_key())) == 32


def test_bad_keys_are_named_by_their_path(tmp_path: Path) -> None:
    (tmp_path / "short.key").write_text(base64.b64encode(b"x" * 16).decode())
    (tmp_path / "junk.key").write_text("not base64 !")
    (tmp_path / "a.key").write_text(base64.b64encode(A).decode())
    cases = {
        "storage.encryption.key_file: a key is 32 bytes once base64-decoded, this one 16": {
            "key_file": "short.key"
        },
        "storage.encryption.key_file: not a key: expected base64 of 32 random bytes"
        " (webhook-relay keygen)": {"key_file": "junk.key"},
        "storage.encryption: needs key_env, key_file or key_credential (the current key)": {},
        "storage.encryption.old_key_files: the current key is listed as an old one too": {
            "key_file": "a.key",
            "old_key_files": ["a.key"],
        },
        "storage.encryption.key_env: environment variable NOPE is not set": {"key_env": "NOPE"},
    }
    for message, section in cases.items():
        with pytest.raises(ConfigError) as info:
            config(tmp_path, section)
        assert info.value.errors == [message], section
