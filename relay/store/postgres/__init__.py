"""The PostgreSQL store, shared by several replicas (asyncpg, an optional extra).

``store`` is the ``Store``; ``ops`` its inspection and maintenance, ``pool``
the connection pool and its error translation; ``sql`` and ``ops_sql`` its
SQL, ``migrations/`` its schema.
"""

from __future__ import annotations

from relay.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
