"""The embedded SQLite store: one process per file, transactions on a thread.

``store`` is the ``Store``; ``sync`` its sync-mode claims, ``ops`` its
inspection and maintenance, ``thread`` the connection's own thread; ``sql``
and ``ops_sql`` its SQL, ``migrations/`` its schema.
"""

from __future__ import annotations

from relay.store.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
