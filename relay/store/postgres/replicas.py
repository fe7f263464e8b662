"""Replicas sharing one PostgreSQL database: each heartbeats; one whose heartbeat
is too old is dead, and the first live replica to notice returns its leases
(lease and claim tokens start with the holder's id) instead of waiting for them
to expire. Fencing is untouched: a replica that was only paused finds its
tokens gone, so its late answers cannot overwrite newer ones."""

from __future__ import annotations

import os
import socket
from typing import Any

from relay.store import common_sql
from relay.store.base import Clock, ReplicaInfo, new_token, replica_name
from relay.store.postgres.pool import Database, affected

_HEARTBEAT = "UPDATE replicas SET heartbeat_at = $1 WHERE id = $2"
_REGISTER = (
    "INSERT INTO replicas (id, host, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $4)"
    " ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at"
)
# SKIP LOCKED: two live replicas noticing the same dead one do not both return its leases.
_DEAD = (
    "SELECT id, host, pid, started_at, heartbeat_at FROM replicas"
    " WHERE heartbeat_at < $1 AND id <> $2 FOR UPDATE SKIP LOCKED"
)
_RETURN = (
    "UPDATE deliveries SET state = 'pending', attempts = attempts + 1, lease_token = NULL,"
    " lease_expires = NULL, next_attempt_at = $1, updated_at = $1"
    " WHERE state = 'in_flight' AND substr(lease_token, 1, $2) = $3"
)
_FREE_CLAIMS = (
    "DELETE FROM events WHERE sync_state = 'in_flight' AND substr(lease_token, 1, $1) = $2"
)
_LEAVE = "DELETE FROM replicas WHERE id = $1"


def replica(row: Any, leases: int = 0) -> ReplicaInfo:
    return ReplicaInfo(str(row[0]), str(row[1]), int(row[2]), float(row[3]), float(row[4]), leases)


class PostgresReplicas:
    # Set by PostgresStore.__init__.
    db: Database
    clock: Clock
    replica_id: str = ""
    _registered: bool = False

    def token(self) -> str:
        """A lease or claim token that names its holder."""
        if not self.replica_id:
            self.replica_id = replica_name()
        return f"{self.replica_id}/{new_token()}"

    async def heartbeat(self) -> bool:
        self.token()
        now, me = self.clock(), self.replica_id
        async with self.db.acquire() as conn:
            alive = affected(await conn.execute(_HEARTBEAT, now, me)) == 1
            if not alive:
                await conn.execute(_REGISTER, me, socket.gethostname(), os.getpid(), now)
        first, self._registered = not self._registered, True
        return alive or first

    async def deregister(self) -> None:
        if self._registered:
            await self.db.run(_LEAVE, self.replica_id)
            self._registered = False

    async def replicas(self) -> list[ReplicaInfo]:
        async with self.db.acquire() as conn:
            rows = await conn.fetch(common_sql.REPLICAS_WITH_LEASES)
        return [replica(r, int(r[5])) for r in rows]

    async def reap_dead_replicas(self, dead_before: float) -> list[tuple[ReplicaInfo, int]]:
        now = self.clock()

        async def work(conn: Any) -> list[tuple[ReplicaInfo, int]]:
            reaped = []
            for row in await conn.fetch(_DEAD, dead_before, self.replica_id):
                dead = replica(row)
                prefix = dead.id + "/"
                n = affected(await conn.execute(_RETURN, now, len(prefix), prefix))
                await conn.execute(_FREE_CLAIMS, len(prefix), prefix)
                await conn.execute(_LEAVE, dead.id)
                reaped.append((dead, n))
            return reaped

        return await self.db.tx(work)
