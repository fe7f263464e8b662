"""Event stores: SQLite (embedded default), PostgreSQL (shared by replicas), and
the remote store a worker process reaches its owner's store through.

``base`` is the contract every backend keeps; ``batch``, ``rows``, ``migrate``
and ``common_sql`` are shared by the SQL backends. Imports only the pure
modules; no backend imports another."""

from __future__ import annotations

from relay.errors import StoreUnavailable
from relay.store.base import Store


def open_store_for_url(url: str, **kwargs: object) -> Store:
    """The store named by a ``storage.url``: ``sqlite:///path`` or ``postgresql://…``."""
    if url.startswith("sqlite:"):
        from relay.store.sqlite import SQLiteStore

        return SQLiteStore.from_url(url, **kwargs)  # type: ignore[arg-type]
    if url.startswith(("postgresql:", "postgres:")):
        try:
            from relay.store.postgres import PostgresStore
        except ImportError as exc:  # asyncpg is an optional extra
            raise StoreUnavailable(
                "PostgreSQL storage needs the postgres extra in the relay's venv:"
                " pip install '.[postgres]' from a checkout, or 'dist/WHEEL[postgres]'"
            ) from exc

        return PostgresStore.from_url(url, **kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unsupported storage url scheme: {url.split(':', 1)[0]!r}")
