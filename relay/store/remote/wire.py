"""The store RPC's framing (``relay.store.remote.server``), shared by both ends.

A frame is a 4-byte big-endian length and a pickle (highest protocol) of a
*list* of messages: everything one side has to say during one event-loop
iteration goes out as one frame in one write, so 64 concurrent ingests cost one
syscall and one pickle call each way, not 64.
"""

from __future__ import annotations

import asyncio
import contextlib
import copyreg
import dataclasses
import io
import operator
import pickle
import struct
from collections.abc import Callable
from typing import Any, Final, cast

from relay.errors import StoreError
from relay.logging import get_logger
from relay.store import records

log = get_logger()

MAX_FRAME: Final = 1 << 30

_HEADER = struct.Struct("!I")


def _record_reducer(cls: type) -> Callable[[Any], tuple[Any, ...]]:
    # Rebuilt by calling the class with its fields in order: a third of the cost
    # of the default pickling of slots dataclasses (a state dict and a
    # __setstate__ loop), which was most of an ingest's RPC overhead.
    names = [f.name for f in dataclasses.fields(cls)]
    if len(names) == 1:
        return lambda obj: (cls, (getattr(obj, names[0]),))
    values = operator.attrgetter(*names)
    return lambda obj: (cls, values(obj))


_DISPATCH = copyreg.dispatch_table.copy()
for _record in vars(records).values():
    if isinstance(_record, type) and dataclasses.is_dataclass(_record):
        _DISPATCH[_record] = _record_reducer(_record)


class _Pickler(pickle.Pickler):
    dispatch_table = _DISPATCH


def dumps(obj: object) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()


def rebuild_error(value: Any) -> Exception:
    """The exception a failed call raises on the client, from its ``(type, message)``."""
    with contextlib.suppress(Exception):
        kind, message = value
        if isinstance(kind, type) and issubclass(kind, Exception):
            return kind(message)
    return StoreError(f"the store owner failed: {value!r}")


class FrameProtocol(asyncio.Protocol):
    """Both ends' framing: coalesced writes, length-prefixed pickled batches."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._out: list[Any] = []
        self._scheduled = False
        self._buf = bytearray()
        self._need = 0  # bytes _buf must hold before the next frame can be whole

    # --- hooks ------------------------------------------------------------------

    def received(self, messages: list[Any]) -> None:
        raise NotImplementedError

    def unsendable(self, _message: Any, _exc: Exception) -> Any:
        """A stand-in for a message that could not be pickled, or None to drop it."""
        return None

    # --- sending ------------------------------------------------------------------

    def send(self, message: Any) -> None:
        self._out.append(message)
        if not self._scheduled:
            # Once per loop iteration: every message queued until then shares a frame.
            self._scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        out, self._out = self._out, []
        transport = self.transport
        if not out or transport is None or transport.is_closing():
            return  # connection_lost answers whoever waits on these
        try:
            payload = dumps(out)
        except Exception:
            payload = b""
        if payload and len(payload) <= MAX_FRAME:
            transport.write(_HEADER.pack(len(payload)) + payload)
            return
        # One bad or huge message must not sink the others: send them one by one.
        for message in out:
            frame = self._encode_one(message)
            if frame is not None:
                transport.write(frame)

    def _encode_one(self, message: Any) -> bytes | None:
        for _ in range(2):
            try:
                payload = dumps([message])
                if len(payload) > MAX_FRAME:
                    raise ValueError(f"message of {len(payload)} bytes is over the frame limit")
                return _HEADER.pack(len(payload)) + payload
            except Exception as exc:
                message = self.unsendable(message, exc)
                if message is None:
                    return None
        return None

    # --- receiving ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._buf:
            self._buf += data
            if len(self._buf) < self._need:
                return  # a big frame arriving in pieces: do not copy it each time
            data = bytes(self._buf)
            self._buf.clear()
        view = memoryview(data)
        total, pos, need = len(data), 0, _HEADER.size
        try:
            while total - pos >= _HEADER.size:
                (size,) = _HEADER.unpack_from(data, pos)
                if size > MAX_FRAME:
                    raise ValueError(f"frame of {size} bytes is over the limit")
                end = pos + _HEADER.size + size
                if end > total:
                    need = end - pos
                    break
                messages = pickle.loads(view[pos + _HEADER.size : end])
                pos = end
                self.received(messages)
        except Exception as exc:
            # Framing or unpickling failed: what follows cannot be trusted.
            log.error("store_rpc_frame_invalid", error=repr(exc))
            self._buf.clear()
            if self.transport is not None:
                self.transport.abort()
            return
        if pos < total:
            self._buf += view[pos:]
            self._need = need

    def close(self) -> None:
        """Send what is queued, then close."""
        if self.transport is not None and not self.transport.is_closing():
            self.flush()
            self.transport.close()
