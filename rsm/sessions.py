"""Exactly-once client sessions: the replicated session table (Raft §6.3).

Theory of operation
-------------------
A client registers a session through the log; its id is the log index of the
register entry, so every replica assigns the same id without coordination.
Each command the client sends afterwards carries ``(session_id, seq)``, where
``seq`` counts the client's commands from 1, and ``ack``: the lowest ``seq``
whose result the client has not received yet (all results below it arrived,
so the table may forget them).

For each session the table remembers the results of recent commands, keyed by
``seq``, and a watermark ``low``: every command with ``seq >= low`` that was
applied has its result in the table. So a command is

- a **duplicate** if its ``seq`` has a remembered result: the result is
  returned and the command is *not* applied again;
- **stale** if ``seq < low``: its result was forgotten (acknowledged, or
  evicted to bound memory) so the table cannot tell whether it ran;
  `StaleSequence` is returned and nothing is applied;
- **new** otherwise: it is applied and its result recorded.

Memory is bounded twice: at most ``results_per_session_max`` results per
session (the lowest ``seq`` is evicted first and ``low`` moves past it), and at
most ``sessions_max`` sessions (registering one more evicts the least recently
active). Sessions also expire after ``session_timeout_ms`` without activity.

Time is the leader's: every applied entry carries the leader's timestamp, and
the table's clock is the largest timestamp seen so far (so it never runs
backwards when a new leader's clock is behind). Expiry compares that clock with
each session's last activity, so every replica expires the same sessions at the
same log index. Sessions are kept in least-recently-active order (an
`OrderedDict`), which makes both expiry and eviction O(1) per session removed.

The table is replicated state: it is part of snapshots and of the state digest,
and its settings must be the same on every replica (they are mixed into the
digest so that a mismatch shows up in a digest comparison).

The module is pure: no I/O, no clock, no randomness. The hosts in
`rsm.statemachine` and `rsm.lmdb_machine` drive it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

import attrs
import msgpack

from rsm.errors import ConfigError, RsmError, invariant

__all__ = [
    "Session",
    "SessionError",
    "SessionExpired",
    "SessionSettings",
    "SessionTable",
    "StaleSequence",
]

#: Version of the encoded table (snapshot) and of one encoded session (LMDB).
SESSION_FORMAT_VERSION = 1


class SessionError(RsmError):
    """The command was refused because of its session; it was not applied.

    Unlike a `CommandError`, the outcome of *earlier* commands is unknown to
    the client after this: a client library should surface it to the caller
    rather than retry blindly.
    """

    #: The name under which this error travels in an encoded result.
    type_name = "rsm.SessionError"


class SessionExpired(SessionError):
    """The session is unknown: never registered, expired, closed or evicted.

    The client must register a new session before sending more commands.
    """

    type_name = "rsm.SessionExpired"


class StaleSequence(SessionError):
    """The command's ``seq`` is below what the table remembers.

    Its result (if it ran) was acknowledged or evicted, so the table cannot
    tell whether it ran. Clients avoid this by keeping fewer than
    ``results_per_session_max`` commands outstanding.
    """

    type_name = "rsm.StaleSequence"


def _positive_int(name: str, value: object) -> None:
    if type(value) is not int or value < 1:
        raise ConfigError(f"SessionSettings.{name} must be a positive int, got {value!r}")


@attrs.frozen(kw_only=True)
class SessionSettings:
    """Bounds of the session table. They define replicated behaviour, so every
    replica of a cluster must use the same values."""

    #: A session with no activity (command, keep-alive) for longer than this,
    #: measured in leader timestamps, expires. Clients send keep-alives more
    #: often than this (a third of it is a good period).
    session_timeout_ms: int = 600_000
    #: Most live sessions. Registering one more evicts the least recently
    #: active session. Memory is about sessions_max * results_per_session_max
    #: * the size of a typical result in the worst case.
    sessions_max: int = 10_000
    #: Most remembered results per session: the most commands a client may
    #: have outstanding (sent, no result seen) without risking StaleSequence.
    results_per_session_max: int = 32

    def validate(self) -> SessionSettings:
        """Raise `ConfigError` on a bad value; return self for chaining."""
        for name in ("session_timeout_ms", "sessions_max", "results_per_session_max"):
            _positive_int(name, getattr(self, name))
        return self

    def as_list(self) -> list[int]:
        """The settings as plain data, for the digest."""
        return [self.session_timeout_ms, self.sessions_max, self.results_per_session_max]


class Session:
    """One client session: its activity and its remembered results."""

    __slots__ = ("last_index", "last_ms", "low", "results")

    def __init__(self, last_index: int, last_ms: int, low: int = 1,
                 results: dict[int, bytes] | None = None) -> None:
        #: Log index of the last entry that touched the session (orders the LRU).
        self.last_index = last_index
        #: Table clock at that entry: the session expires timeout_ms after it.
        self.last_ms = last_ms
        #: Every applied seq >= low has its result in `results`.
        self.low = low
        #: Encoded results of applied commands, by seq.
        self.results: dict[int, bytes] = results if results is not None else {}

    def forget_below(self, seq: int) -> None:
        """Drop results below `seq` and raise the watermark to it."""
        if seq <= self.low:
            return
        low, self.low = self.low, seq
        results = self.results
        if seq - low <= len(results):
            # Each seq is passed over once as the watermark rises: O(1) per command.
            for old in range(low, seq):
                results.pop(old, None)
        else:  # a big jump: cheaper to look at what is there
            for old in [s for s in results if s < seq]:
                del results[old]

    def as_list(self) -> list[Any]:
        """Canonical plain-data form: results sorted by seq."""
        return [self.last_index, self.last_ms, self.low, [[s, self.results[s]] for s in sorted(self.results)]]

    @classmethod
    def from_list(cls, record: object) -> Session:
        """Inverse of `as_list`; raises ValueError on a malformed record."""
        if not (isinstance(record, list) and len(record) == 4):
            raise ValueError(f"session record must be a list of 4, got {record!r:.80}")
        last_index, last_ms, low, results = record
        _check_ints(last_index=last_index, last_ms=last_ms, low=low)
        if not isinstance(results, list):
            raise ValueError("session results must be a list")
        table: dict[int, bytes] = {}
        for item in results:
            if not (isinstance(item, list) and len(item) == 2 and type(item[0]) is int
                    and item[0] >= low and type(item[1]) is bytes):
                raise ValueError(f"bad session result entry {item!r:.80}")
            table[item[0]] = item[1]
        return cls(last_index, last_ms, low, table)


def _check_ints(**values: object) -> None:
    for name, value in values.items():
        if type(value) is not int or value < 0:
            raise ValueError(f"session field {name} must be an int >= 0, got {value!r}")


class SessionTable:
    """The replicated table of client sessions. See the module docstring.

    Every mutating method takes the log `index` of the entry being applied; the
    host calls `advance_clock` with the entry's timestamp first.
    """

    def __init__(self, settings: SessionSettings | None = None, *, track_changes: bool = False) -> None:
        self.settings = (settings or SessionSettings()).validate()
        #: Largest leader timestamp applied so far (ms); never decreases.
        self.clock_ms = 0
        self._sessions: OrderedDict[int, Session] = OrderedDict()
        # On-disk hosts write only what changed since the last flush.
        self._track = track_changes
        self._touched: set[int] = set()
        self._removed: set[int] = set()

    # -- queries ----------------------------------------------------------

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def get(self, session_id: int) -> Session | None:
        """The live session with this id, or None. Do not mutate it."""
        return self._sessions.get(session_id)

    def ids(self) -> list[int]:
        """Live session ids, least recently active first."""
        return list(self._sessions)

    # -- clock and expiry --------------------------------------------------

    def advance_clock(self, timestamp_ms: int) -> int:
        """Move the clock to `timestamp_ms` if it is later, expire idle sessions
        and return the clock (the timestamp commands should see)."""
        if timestamp_ms > self.clock_ms:
            self.clock_ms = timestamp_ms
            self._expire()
        return self.clock_ms

    def _expire(self) -> None:
        # Expired: idle for strictly longer than the timeout. The LRU order is
        # also last_ms order, so the expired sessions form a prefix.
        deadline_ms = self.clock_ms - self.settings.session_timeout_ms
        while self._sessions:
            session_id, session = next(iter(self._sessions.items()))
            if session.last_ms >= deadline_ms:
                break
            self._remove(session_id)

    # -- session lifecycle -------------------------------------------------

    def register(self, index: int) -> int:
        """Open a session whose id is `index` (the register entry's index)."""
        invariant(index not in self._sessions, f"session {index} registered twice")
        invariant(not self._sessions or index > self._newest_index(),
                  f"register at index {index} is not after the newest activity")
        while len(self._sessions) >= self.settings.sessions_max:
            self._remove(next(iter(self._sessions)))
        self._sessions[index] = Session(index, self.clock_ms)
        self._changed(index)
        return index

    def keepalive(self, session_id: int, index: int) -> None:
        """Record activity; raise `SessionExpired` if the session is unknown."""
        self._touch(session_id, index)

    def close(self, session_id: int) -> bool:
        """Forget the session; return whether it existed."""
        if session_id not in self._sessions:
            return False
        self._remove(session_id)
        return True

    # -- commands ----------------------------------------------------------

    def lookup(self, session_id: int, seq: int, ack: int, index: int) -> bytes | None:
        """Classify a command before it is applied.

        Returns the remembered result of a duplicate, or None for a new command
        (which the caller applies, then passes to `record`). Raises
        `SessionExpired` or `StaleSequence` for a command that must not run.
        Either way the session counts as active at `index`.
        """
        session = self._touch(session_id, index)
        if seq < session.low:
            raise StaleSequence(
                f"session {session_id}: seq {seq} is below the oldest remembered ({session.low}); "
                "its result was acknowledged or evicted"
            )
        cached = session.results.get(seq)
        # The client has every result below `ack`; never drop the current seq.
        session.forget_below(min(ack, seq))
        return cached

    def record(self, session_id: int, seq: int, result: bytes) -> None:
        """Remember the result of a new command `lookup` just let through."""
        session = self._sessions.get(session_id)
        # Conditions first, so the hot path formats no message.
        if session is None or seq < session.low or seq in session.results:
            invariant(False, f"session {session_id}: record of seq {seq} for an unknown session, "
                             "twice, or below the watermark")
        assert session is not None  # for the type checker
        session.results[seq] = result
        if len(session.results) > self.settings.results_per_session_max:
            session.forget_below(min(session.results) + 1)
        self._changed(session_id)

    # -- internals ---------------------------------------------------------

    def _touch(self, session_id: int, index: int) -> Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise SessionExpired(f"session {session_id} is unknown (expired, closed or never registered)")
        if index <= session.last_index:
            invariant(False, f"session {session_id} touched at an old index {index}")
        session.last_index = index
        session.last_ms = self.clock_ms
        self._sessions.move_to_end(session_id)
        self._changed(session_id)
        return session

    def _newest_index(self) -> int:
        return next(reversed(self._sessions.values())).last_index

    def _remove(self, session_id: int) -> None:
        del self._sessions[session_id]
        if self._track:
            self._touched.discard(session_id)
            self._removed.add(session_id)

    def _changed(self, session_id: int) -> None:
        if self._track:
            self._touched.add(session_id)
            self._removed.discard(session_id)

    # -- persistence -------------------------------------------------------

    def pop_changes(self) -> tuple[dict[int, bytes], set[int]]:
        """Sessions changed (encoded) and removed since the last call."""
        invariant(self._track, "pop_changes on a table that does not track changes")
        changed = {sid: encode_session(self._sessions[sid]) for sid in self._touched}
        removed = self._removed
        self._touched, self._removed = set(), set()
        return changed, removed

    def as_list(self) -> list[Any]:
        """Canonical plain data: clock and sessions, least recently active first."""
        return [SESSION_FORMAT_VERSION, self.clock_ms,
                [[sid, *s.as_list()] for sid, s in self._sessions.items()]]

    def encode(self) -> bytes:
        """The table as bytes, for snapshots."""
        data: bytes = msgpack.packb(self.as_list(), use_bin_type=True)
        return data

    def digest(self) -> bytes:
        """A hash of the table and its settings (equal tables, equal digests)."""
        blob = msgpack.packb([self.settings.as_list(), self.as_list()], use_bin_type=True)
        return hashlib.blake2b(blob, digest_size=16).digest()

    @classmethod
    def decode(cls, data: bytes, settings: SessionSettings | None = None, *,
               track_changes: bool = False) -> SessionTable:
        """Inverse of `encode`; raises ValueError on malformed data."""
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except Exception as exc:
            raise ValueError(f"session table is not valid msgpack: {exc}") from exc
        if not (isinstance(obj, list) and len(obj) == 3 and obj[0] == SESSION_FORMAT_VERSION):
            raise ValueError("session table has a bad header or an unknown version")
        _, clock_ms, records = obj
        _check_ints(clock_ms=clock_ms)
        if not isinstance(records, list):
            raise ValueError("session table records must be a list")
        pairs = []
        for record in records:
            if not (isinstance(record, list) and len(record) == 5 and type(record[0]) is int):
                raise ValueError(f"bad session record {record!r:.80}")
            pairs.append((record[0], Session.from_list(record[1:])))
        return cls.from_sessions(settings, clock_ms, pairs, track_changes=track_changes)

    @classmethod
    def from_sessions(cls, settings: SessionSettings | None, clock_ms: int,
                      sessions: Iterable[tuple[int, Session]], *,
                      track_changes: bool = False) -> SessionTable:
        """Build a table from sessions in any order (LRU order is rebuilt from
        `last_index`, which is unique: one entry touches one session)."""
        table = cls(settings, track_changes=track_changes)
        table.clock_ms = clock_ms
        ordered = sorted(sessions, key=lambda pair: pair[1].last_index)
        for sid, session in ordered:
            if sid in table._sessions:
                raise ValueError(f"session {sid} appears twice")
            table._sessions[sid] = session
        last = [s.last_index for _, s in ordered]
        if len(set(last)) != len(last):
            raise ValueError("two sessions share a last activity index")
        return table

    def __iter__(self) -> Iterator[tuple[int, Session]]:
        return iter(self._sessions.items())


def encode_session(session: Session) -> bytes:
    """One session as bytes (the on-disk host stores one record per session)."""
    data: bytes = msgpack.packb([SESSION_FORMAT_VERSION, *session.as_list()], use_bin_type=True)
    return data


def decode_session(data: bytes) -> Session:
    """Inverse of `encode_session`; raises ValueError on malformed data."""
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:
        raise ValueError(f"session record is not valid msgpack: {exc}") from exc
    if not (isinstance(obj, list) and len(obj) == 5 and obj[0] == SESSION_FORMAT_VERSION):
        raise ValueError("session record has a bad header or an unknown version")
    return Session.from_list(obj[1:])
