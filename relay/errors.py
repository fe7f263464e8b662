"""The exceptions webhook-relay raises.

One root, ``RelayError``; each subclass's docstring is its default message, so
``raise StoreUnavailable()`` already says what went wrong.
"""

from __future__ import annotations


class RelayError(Exception):
    """webhook-relay failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(RelayError):
    """The configuration is invalid."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors) if errors else None)


class StoreError(RelayError):
    """The event store failed."""


class StoreUnavailable(StoreError):
    """The event store could not commit; the sender should retry later."""


class StoreFull(StoreUnavailable):
    """The store is at its storage cap, and only keys inside their dedupe window are left
    to drop (cap_policy: keep_keys)."""


class SchemaTooNew(StoreError):
    """The database was written by a newer webhook-relay; refusing to downgrade it."""
