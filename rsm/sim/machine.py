"""The simulator's state machine: a key-value register store.

Commands are msgpack `[key, value]` (a put); reads go through ReadIndex and
read the dict directly. Values written by the workload are unique, which keeps
the linearizability check cheap and its explanations readable.
"""

from __future__ import annotations

import hashlib

import msgpack


class KVMachine:
    def __init__(self) -> None:
        self.data: dict[str, int] = {}
        self.applied = 0

    def apply(self, index: int, command: bytes) -> None:
        key, value = msgpack.unpackb(command)
        self.data[key] = value
        self.applied = index

    def snapshot(self) -> bytes:
        return msgpack.packb([self.applied, sorted(self.data.items())])

    def restore(self, data: bytes) -> None:
        applied, items = msgpack.unpackb(data) if data else (0, [])
        self.data = {k: v for k, v in items}
        self.applied = applied

    def digest(self) -> str:
        return hashlib.blake2b(msgpack.packb(sorted(self.data.items())), digest_size=8).hexdigest()


def encode_put(key: str, value: int) -> bytes:
    return msgpack.packb([key, value])
