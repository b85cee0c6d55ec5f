"""State machines the simulated replicas run, behind one small seam.

`SimMachine` is what `SimReplica` needs: apply a committed entry (returning
the result a client would get), snapshot and restore as bytes, a digest, and
the applied index. Two implementations:

- `KVMachine`: the simulator's own register store (commands are msgpack
  ``[key, value]`` puts; reads look at `data`). Values written by the workload
  are unique, which keeps the linearizability check cheap.
- `HostMachine`: any application `StateMachine`, through the real
  `MachineHost` apply path and the replica's entry envelope (leader timestamp
  + payload). `rsm.testing` uses it.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from typing import Any, Protocol

import msgpack

from rsm.consensus.membership import decode_conf
from rsm.consensus.types import Entry, EntryKind
from rsm.statemachine import MachineHost, MembershipView, StateMachine


class SimMachine(Protocol):
    @property
    def applied(self) -> int: ...

    def apply_entry(self, entry: Entry) -> bytes | None: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...

    def digest(self) -> str: ...


class KVMachine:
    def __init__(self) -> None:
        self.data: dict[str, int] = {}
        self.applied = 0

    def apply_entry(self, entry: Entry) -> bytes | None:
        if entry.kind == EntryKind.NORMAL:
            key, value = msgpack.unpackb(entry.data)
            self.data[key] = value
        self.applied = entry.index
        return None

    def snapshot(self) -> bytes:
        return bytes(msgpack.packb([self.applied, sorted(self.data.items())]))

    def restore(self, data: bytes) -> None:
        applied, items = msgpack.unpackb(data) if data else (0, [])
        self.data = {k: v for k, v in items}
        self.applied = applied

    def digest(self) -> str:
        return hashlib.blake2b(msgpack.packb(sorted(self.data.items())), digest_size=8).hexdigest()


def encode_put(key: str, value: int) -> bytes:
    return bytes(msgpack.packb([key, value]))


#: The replica's command envelope: 8 bytes of leader timestamp (ms), then the payload.
TIMESTAMP_BYTES = 8


def envelope(timestamp_ms: int, payload: bytes) -> bytes:
    return timestamp_ms.to_bytes(TIMESTAMP_BYTES, "big") + payload


class HostMachine:
    """An application machine driven exactly as the replica drives it.

    An `LMDBStateMachine` gets a fresh LMDB environment in a temporary
    directory for each boot (a simulated crash loses it; the replica is rebuilt
    from its snapshot and log, as with in-memory machines).
    """

    def __init__(self, machine_cls: type[StateMachine]) -> None:
        self.machine_cls = machine_cls
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.host = self._new_host()

    def _new_host(self) -> MachineHost:
        from rsm.lmdb_machine import LMDBStateMachine

        if not issubclass(self.machine_cls, LMDBStateMachine):
            return MachineHost(self.machine_cls())
        if self._tmp is not None:
            self.host.close()
            self._tmp.cleanup()
        self._tmp = tempfile.TemporaryDirectory(prefix="rsm-sim-")
        return MachineHost(self.machine_cls(), path=self._tmp.name)

    @property
    def applied(self) -> int:
        return self.host.applied_index

    def apply_entry(self, entry: Entry) -> bytes | None:
        if entry.kind == EntryKind.NORMAL:
            stamp = int.from_bytes(entry.data[:TIMESTAMP_BYTES], "big")
            item: Any = (entry.index, entry.term, stamp, entry.data[TIMESTAMP_BYTES:])
        elif entry.kind == EntryKind.CONFIG:
            conf = decode_conf(entry.data)
            item = (entry.index, entry.term, None, MembershipView(conf.voters, conf.learners))
        else:
            item = (entry.index, entry.term, None, None)
        return self.host.apply_batch([item])[0]

    def snapshot(self) -> bytes:
        out = io.BytesIO()
        self.host.snapshot(out)
        return out.getvalue()

    def restore(self, data: bytes) -> None:
        self.host = self._new_host()
        if data:
            self.host.restore(io.BytesIO(data))

    def digest(self) -> str:
        return self.host.digest()

    def query(self, payload: bytes, timestamp_ms: int) -> bytes:
        return self.host.query(payload, timestamp_ms=timestamp_ms)
