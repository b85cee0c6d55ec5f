"""A replicated key-value store kept in LMDB.

Keys are str; values are any msgpack value (or registered attrs value) except
None, which `get` uses for "absent". A key may carry a time to live: it
expires at the leader timestamp of its write plus `ttl_ms`.

Layout
------
- table ``default``: key (UTF-8) -> msgpack ``[expires_at_ms, value]``, where
  ``expires_at_ms`` is 0 for a key that never expires.
- table ``expiry``: ``expires_at_ms`` (u64, big-endian) + key -> b"": the keys
  with a TTL, in deadline order, so purging is a scan from the front.

Time and determinism
--------------------
Nothing reads the wall clock. A key is visible while ``now < expires_at_ms``,
where ``now`` is `self.context.timestamp_ms`: the entry's leader timestamp in a
command, the read time in a query. Expired keys are invisible at once and
deleted lazily: every command first purges up to `PURGE_PER_COMMAND` expired
keys (the same ones on every replica, since it uses the entry's timestamp),
and `purge` deletes more on demand.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from rsm.lmdb_machine import KEY_BYTES_MAX, LMDBStateMachine
from rsm.statemachine import command, decode_value, encode_value, query

#: Most pairs one scan returns.
SCAN_LIMIT_MAX: Final = 1000
#: Expired keys deleted at the start of every command (bounds its extra work).
PURGE_PER_COMMAND: Final = 64
#: Longest TTL accepted: ten years.
TTL_MS_MAX: Final = 10 * 365 * 24 * 3600 * 1000
#: Longest key in UTF-8 bytes: the expiry index prefixes it with 8 bytes.
KEY_BYTES_LIMIT: Final = KEY_BYTES_MAX - 8

_DEADLINE = struct.Struct(">Q")


def _key(key: str) -> bytes:
    if type(key) is not str:
        raise TypeError(f"keys are str, got {type(key).__name__}")
    raw = key.encode()
    if not 0 < len(raw) <= KEY_BYTES_LIMIT:
        raise ValueError(f"keys are 1 to {KEY_BYTES_LIMIT} UTF-8 bytes, got {len(raw)}")
    return raw


def _bound(key: str | None) -> bytes | None:
    return None if key is None else key.encode()


class KVStore(LMDBStateMachine):
    """put / get / delete / cas / scan, with optional TTLs."""

    lmdb_tables = ("expiry",)

    # -- commands -------------------------------------------------------------

    @command
    def put(self, key: str, value: Any, ttl_ms: int | None = None) -> None:
        """Store `value` under `key`, expiring after `ttl_ms` if given."""
        raw = _key(key)
        self._purge(PURGE_PER_COMMAND)
        self._write(raw, value, ttl_ms)

    @command
    def delete(self, key: str) -> bool:
        """Remove `key`; return whether it was present (and not expired)."""
        raw = _key(key)
        self._purge(PURGE_PER_COMMAND)
        present = self._read(raw) is not None
        self._remove(raw)
        return present

    @command
    def cas(self, key: str, expected: Any, new: Any, ttl_ms: int | None = None) -> bool:
        """Compare and set: store `new` if the current value equals `expected`
        (None: the key must be absent or expired). Return whether it did."""
        raw = _key(key)
        self._purge(PURGE_PER_COMMAND)
        current = self._read(raw)
        if (None if current is None else current[1]) != expected:
            return False
        self._write(raw, new, ttl_ms)
        return True

    @command
    def purge(self, limit: int = SCAN_LIMIT_MAX) -> int:
        """Delete up to `limit` expired keys now; return how many."""
        if type(limit) is not int or not 1 <= limit <= SCAN_LIMIT_MAX:
            raise ValueError(f"limit must be in [1, {SCAN_LIMIT_MAX}]")
        return self._purge(limit)

    # -- queries ----------------------------------------------------------------

    @query
    def get(self, key: str) -> Any:
        """The value of `key`, or None if absent or expired."""
        found = self._read(_key(key))
        return None if found is None else found[1]

    @query
    def scan(self, start: str = "", end: str | None = None, limit: int = 100) -> list[list[Any]]:
        """Live ``[key, value]`` pairs with ``start <= key < end`` in key order
        (UTF-8 byte order, which is code point order), at most `limit`."""
        if type(limit) is not int or not 1 <= limit <= SCAN_LIMIT_MAX:
            raise ValueError(f"limit must be in [1, {SCAN_LIMIT_MAX}]")
        now = self.context.timestamp_ms
        pairs: list[list[Any]] = []
        for raw, record in self.db.scan(start.encode(), _bound(end)):
            expires_at, value = decode_value(record)
            if expires_at == 0 or now < expires_at:
                pairs.append([raw.decode(), value])
                if len(pairs) == limit:
                    break
        return pairs

    # -- internals --------------------------------------------------------------

    def _read(self, raw: bytes) -> tuple[int, Any] | None:
        """(expires_at_ms, value) of a live key, or None."""
        record = self.db.get(raw)
        if record is None:
            return None
        expires_at, value = decode_value(record)
        if expires_at and self.context.timestamp_ms >= expires_at:
            return None
        return expires_at, value

    def _write(self, raw: bytes, value: Any, ttl_ms: int | None) -> None:
        if value is None:
            raise ValueError("None is not a storable value (get returns None for absent keys); use delete")
        expires_at = 0
        if ttl_ms is not None:
            if type(ttl_ms) is not int or not 1 <= ttl_ms <= TTL_MS_MAX:
                raise ValueError(f"ttl_ms must be an int in [1, {TTL_MS_MAX}]")
            expires_at = self.context.timestamp_ms + ttl_ms
        self._remove(raw)
        self.db.put(raw, encode_value([expires_at, value]))
        if expires_at:
            self.table("expiry").put(_DEADLINE.pack(expires_at) + raw, b"")

    def _remove(self, raw: bytes) -> None:
        """Delete a key and its expiry index entry, expired or not."""
        record = self.db.get(raw)
        if record is None:
            return
        expires_at, _ = decode_value(record)
        if expires_at:
            self.table("expiry").delete(_DEADLINE.pack(expires_at) + raw)
        self.db.delete(raw)

    def _purge(self, limit: int) -> int:
        """Delete up to `limit` keys whose deadline has passed, oldest first."""
        end = _DEADLINE.pack(self.context.timestamp_ms + 1)  # deadlines <= now
        expired = [index_key for index_key, _ in self.table("expiry").scan(b"", end, limit=limit)]
        for index_key in expired:
            self.table("expiry").delete(index_key)
            self.db.delete(index_key[_DEADLINE.size:])
        return len(expired)
