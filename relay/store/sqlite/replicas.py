"""The replicas view on SQLite: one process per file, so the table holds this one;
the same contract as on PostgreSQL, where replicas share the database."""

from __future__ import annotations

import os
import socket
import sqlite3
from typing import Any

from relay.store import common_sql
from relay.store.base import ReplicaInfo
from relay.store.sqlite.thread import SQLiteAccess

_HEARTBEAT = "UPDATE replicas SET heartbeat_at = ? WHERE id = ?"
_REGISTER = "INSERT INTO replicas (id, host, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?)"
_DEAD = "SELECT id, host, pid, started_at, heartbeat_at FROM replicas WHERE heartbeat_at < ? AND id <> ?"
_RETURN = (
    "UPDATE deliveries SET state = 'pending', attempts = attempts + 1, lease_token = NULL,"
    " lease_expires = NULL, next_attempt_at = ?, updated_at = ?"
    " WHERE state = 'in_flight' AND substr(lease_token, 1, ?) = ?"
)
_FREE_CLAIMS = "DELETE FROM events WHERE sync_state = 'in_flight' AND substr(lease_token, 1, ?) = ?"
_LEAVE = "DELETE FROM replicas WHERE id = ?"


def replica(row: Any, leases: int = 0) -> ReplicaInfo:
    return ReplicaInfo(str(row[0]), str(row[1]), int(row[2]), float(row[3]), float(row[4]), leases)


class SQLiteReplicas(SQLiteAccess):
    _registered: bool = False

    async def heartbeat(self) -> bool:
        self.token()  # the id exists from here on
        now, me = self.clock(), self.replica_id

        def run(c: sqlite3.Connection) -> bool:
            if c.execute(_HEARTBEAT, (now, me)).rowcount:
                return True
            c.execute(_REGISTER, (me, socket.gethostname(), os.getpid(), now, now))
            return False

        alive: bool = await self._tx(run, sync="NORMAL")
        first, self._registered = not self._registered, True
        return alive or first

    async def deregister(self) -> None:
        if self._registered:
            await self._tx(lambda c: c.execute(_LEAVE, (self.replica_id,)), sync="NORMAL")
            self._registered = False

    async def replicas(self) -> list[ReplicaInfo]:
        rows = await self._rows(common_sql.REPLICAS_WITH_LEASES)
        return [replica(r, int(r[5])) for r in rows]

    async def reap_dead_replicas(self, dead_before: float) -> list[tuple[ReplicaInfo, int]]:
        now = self.clock()

        def run(c: sqlite3.Connection) -> list[tuple[ReplicaInfo, int]]:
            reaped = []
            for row in c.execute(_DEAD, (dead_before, self.replica_id)).fetchall():
                dead = replica(row)
                prefix = dead.id + "/"
                n = c.execute(_RETURN, (now, now, len(prefix), prefix)).rowcount
                c.execute(_FREE_CLAIMS, (len(prefix), prefix))
                c.execute(_LEAVE, (dead.id,))
                reaped.append((dead, int(n)))
            return reaped

        reaped: list[tuple[ReplicaInfo, int]] = await self._tx(run)
        return reaped
