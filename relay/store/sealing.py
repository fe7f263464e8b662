"""Encryption at rest (``storage.encryption``): what the store writes of a webhook's
body and headers and of the answers it keeps is sealed with AES-256-GCM
(``cryptography``), under the current key; values sealed under an older key stay
readable while that key is configured, and ``rekey`` moves them to the current one.

A sealed value names its key: the key id is the first 8 hex digits of the key's
SHA-256, so any key configured can be matched to what it sealed, and a store whose
values need a key that is not configured refuses to start and says which. Keys,
routes, fingerprints and times stay in clear: deduplication and every query work
on them unchanged.

Layout: bytes ``MAGIC + key id (8 ASCII hex) + nonce (12) + ciphertext and tag``;
the headers (a JSON text column) as ``TEXT_MAGIC + key id + ":" + base64 of the
same``. The column a value belongs to is the associated data, so a sealed body
cannot be passed off as an answer. Without a key, values are written as they
came, except a body that happens to begin with ``MAGIC``: that one is wrapped
under the key id ``CLEAR`` so that it is never taken for a sealed value.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from relay.errors import StoreError

MAGIC: Final = b"\x00wr-sealed\x00"
TEXT_MAGIC: Final = "wr-sealed:"
CLEAR: Final = "--------"  # the key id of a value wrapped, not sealed (no key configured)
KEY_BYTES: Final = 32
_ID: Final = 8
_NONCE: Final = 12


class KeyMissing(StoreError):
    """A value is sealed under a key the config does not have."""

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"stored data is sealed with key id {key_id}, which storage.encryption does not"
            " have: configure that key (as key_* or in old_key_files)"
        )
        self.key_id = key_id


class Tampered(StoreError):
    """A sealed value that does not open under its key: changed or damaged on disk."""


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:_ID]


def new_key() -> str:
    """32 random bytes, base64: the content of a key file (``webhook-relay keygen``)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


@dataclass(frozen=True, slots=True)
class Sealer:
    """Seals under ``current`` (None: writes in clear) and opens under any key known."""

    current: bytes | None = field(default=None, repr=False)
    old: tuple[bytes, ...] = field(default=(), repr=False)
    # Moves stores whole (migrate-store): it opens nothing, so it needs no key.
    carries: bool = False
    _by_id: dict[str, AESGCM] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for key in (*self.old, *([self.current] if self.current else [])):
            self._by_id[key_id(key)] = AESGCM(key)

    @property
    def current_id(self) -> str | None:
        return None if self.current is None else key_id(self.current)

    def missing(self, ids: Iterable[str]) -> list[str]:
        """The key ids among ``ids`` (those the store has used) that this sealer lacks."""
        return [] if self.carries else sorted(set(ids) - self._by_id.keys())

    # -- bytes: bodies and answers --

    def seal(self, value: bytes | None, column: bytes) -> bytes | None:
        if value is None:
            return None
        if (kid := self.current_id) is None:
            return MAGIC + CLEAR.encode() + value if value.startswith(MAGIC) else value
        nonce = os.urandom(_NONCE)
        return MAGIC + kid.encode() + nonce + self._by_id[kid].encrypt(nonce, value, column)

    def open(self, value: bytes | None, column: bytes) -> bytes | None:
        if value is None:
            return None
        value = bytes(value)
        if not value.startswith(MAGIC):
            return value
        head = len(MAGIC)
        kid = value[head : head + _ID].decode("ascii", "replace")
        if kid == CLEAR:
            return value[head + _ID :]
        return self._open(kid, value[head + _ID :], column)

    # -- text: the headers' JSON --

    def seal_text(self, text: str, column: bytes) -> str:
        if (kid := self.current_id) is None:
            return text  # JSON (a list) never begins with TEXT_MAGIC
        nonce = os.urandom(_NONCE)
        sealed = nonce + self._by_id[kid].encrypt(nonce, text.encode(), column)
        return f"{TEXT_MAGIC}{kid}:{base64.b64encode(sealed).decode()}"

    def open_text(self, text: str, column: bytes) -> str:
        if not text.startswith(TEXT_MAGIC):
            return text
        kid, _, rest = text[len(TEXT_MAGIC) :].partition(":")
        return self._open(kid, base64.b64decode(rest), column).decode()

    def sealed_with(self, value: bytes | str | None) -> str | None:
        """The key id a stored value is sealed with (None: in clear)."""
        if isinstance(value, str):
            return value[len(TEXT_MAGIC) :][:_ID] if value.startswith(TEXT_MAGIC) else None
        if value is None or not bytes(value).startswith(MAGIC):
            return None
        kid = bytes(value)[len(MAGIC) : len(MAGIC) + _ID].decode("ascii", "replace")
        return None if kid == CLEAR else kid

    # -- rekey --

    def reseal(self, value: Any, column: bytes) -> Any:
        """``value`` as the current key seals it (in clear without one); the very same
        object if it already is."""
        if value is None or self.sealed_with(value) == self.current_id:
            return value
        if isinstance(value, str):
            return self.seal_text(self.open_text(value, column), column)
        return self.seal(self.open(value, column), column)

    def resealed(
        self, rows: Iterable[Sequence[Any]], columns: Sequence[bytes]
    ) -> list[tuple[Any, ...]]:
        """Of ``rows`` (an id, then a value for each of ``columns``), those holding a
        value the current key did not seal: ``(*new values, id)``, for an UPDATE."""
        out = []
        for row in rows:
            old = tuple(row[1 : 1 + len(columns)])
            new = tuple(self.reseal(v, c) for v, c in zip(old, columns, strict=True))
            if any(n is not o for n, o in zip(new, old, strict=True)):
                out.append((*new, row[0]))
        return out

    def _open(self, kid: str, sealed: bytes, column: bytes) -> bytes:
        aead = self._by_id.get(kid)
        if aead is None:
            raise KeyMissing(kid)
        try:
            return aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], column)
        except InvalidTag:
            raise Tampered(f"a stored {column.decode()} does not open under key {kid}") from None


CLEAR_SEALER: Final = Sealer()
CARRIER: Final = Sealer(carries=True)
