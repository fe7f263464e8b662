"""The store over a Unix socket, for ``workers: N``.

``server`` serves an owner's store; ``client`` is ``RemoteStore``, the
workers' hot-path store on it; ``wire`` is the framing both ends share.
"""

from __future__ import annotations

from relay.store.remote.client import RemoteStore
from relay.store.remote.server import StoreServer

__all__ = ["RemoteStore", "StoreServer"]
