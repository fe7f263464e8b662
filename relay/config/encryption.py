"""``storage.encryption``: the key that seals what the store writes, and the older
keys whose values stay readable until ``rekey`` has moved them."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from relay.config.secrets import SOURCES, read_secrets
from relay.config.types import Encryption
from relay.config.validate import Section

KEY_BYTES: Final = 32
HINT: Final = "base64 of 32 random bytes (webhook-relay keygen)"


def _key(sec: Section, key: str, text: str) -> bytes | None:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        sec.error(key, f"not a key: expected {HINT}")
        return None
    if len(raw) != KEY_BYTES:
        sec.error(key, f"a key is {KEY_BYTES} bytes once base64-decoded, this one {len(raw)}")
        return None
    return raw


def _old_keys(sec: Section, env: Mapping[str, str], base: Path) -> list[bytes]:
    out = []
    for key, where in (("old_key_files", "file"), ("old_key_credentials", "credential")):
        for i, name in enumerate(sec.strings(key, ())):
            # Read as the singular setting would be, so every mistake is named the same way.
            one = Section({f"old_key_{where}": name}, sec.where(f"{key}[{i}]"), sec.errors)
            for text in read_secrets(one, env, base, "old_key"):
                if (raw := _key(sec, f"{key}[{i}]", text)) is not None:
                    out.append(raw)
    return out


def parse_encryption(sec: Section, env: Mapping[str, str], base: Path) -> Encryption | None:
    given = [k for k in ("key" + s for s in SOURCES) if sec.has(k)]
    if len(given) > 1:
        sec.error(given[1], f"give one of key_env, key_file or key_credential, not {given[0]} too")
    texts = read_secrets(sec, env, base, "key")
    current = _key(sec, given[0], texts[0]) if given and len(texts) == 1 else None
    old = _old_keys(sec, env, base)
    sec.finish()
    if not given and not old:
        sec.error(None, "needs key_env, key_file or key_credential (the current key)")
        return None
    if current is not None and current in old:
        sec.error("old_key_files", "the current key is listed as an old one too")
    if len(set(old)) != len(old):
        sec.error("old_key_files", "a key is listed twice")
    return Encryption(current, tuple(old))
