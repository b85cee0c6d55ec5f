"""LMDBStateMachine: per-command rollback, durable applied index and sessions,
restart, snapshots, map growth, read-only queries."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import lmdb
import pytest

from rsm.errors import InvariantViolation
from rsm.lmdb_machine import LMDBStateMachine, MachineStorageError, MachineStorageFull
from rsm.statemachine import (
    CommandError,
    ContextUnavailable,
    MachineHost,
    MachineSettings,
    MembershipView,
    QueryMutatedState,
    SnapshotFormatError,
    command,
    decode_result,
    encode_call,
    encode_register_session,
    query,
)

from .machines import Log, ask


class Ledger(LMDBStateMachine):
    lmdb_tables = ("views",)

    @command
    def put(self, key: str, value: bytes) -> int:
        self.db.put(key.encode(), value)
        return len(self.db)

    @command
    def put_then_fail(self, key: str) -> None:
        self.db.put(key.encode(), b"never")
        raise KeyError(key)

    @command
    def fill(self, prefix: str, n: int, size: int) -> int:
        for i in range(n):
            self.db.put(f"{prefix}{i:06}".encode(), b"v" * size)
        return n

    @command
    def fill_swallowing(self, n: int, size: int) -> str:
        try:
            self.fill("s", n, size)
        except lmdb.MapFullError:
            return "swallowed"
        return "fit"

    @query
    def get(self, key: str) -> bytes | None:
        return self.db.get(key.encode())

    @query
    def scan(self, start: str, end: str | None, limit: int | None, reverse: bool) -> list[str]:
        bound = None if end is None else end.encode()
        return [k.decode() for k, _ in self.db.scan(start.encode(), bound, limit=limit, reverse=reverse)]

    @query
    def write_in_query(self) -> None:
        self.db.put(b"q", b"q")

    @query
    def raw_write_in_query(self) -> None:
        self.txn.put(b"q", b"q", db=self.db.handle)

    @query
    def rebind_in_query(self) -> None:
        self.note = "x"

    def on_membership_change(self, view: MembershipView) -> None:
        self.table("views").put(b"%020d" % self.context.index, ",".join(view.members).encode())


def open_host(path: Path, **settings: object) -> MachineHost:
    return MachineHost(Ledger(), path=path, settings=MachineSettings(**settings))  # type: ignore[arg-type]


def snapshot_bytes(host: MachineHost) -> bytes:
    out = io.BytesIO()
    host.snapshot(out)
    return out.getvalue()


def test_failed_command_leaves_no_trace_but_uses_its_slot(tmp_path: Path) -> None:
    a, b = open_host(tmp_path / "a"), open_host(tmp_path / "b")
    log = Log(a, b)
    assert 1 == log.call("put", "x", b"1")
    with pytest.raises(CommandError, match="KeyError"):
        log.call("put_then_fail", "y")
    assert ask(a, "get", "y") is None
    assert (2, a.digest()) == (b.applied_index, b.digest())


def test_restart_resumes_with_state_index_and_sessions(tmp_path: Path) -> None:
    host = open_host(tmp_path)
    log = Log(host)
    sid = decode_result(log.append(encode_register_session())[0])
    assert 1 == log.call("put", "k", b"v", session_id=sid, seq=1)
    digest = host.digest()
    host.close()

    again = open_host(tmp_path)
    assert (2, 1, log.clock_ms) == (again.applied_index, again.applied_term, again.clock_ms)
    assert digest == again.digest()
    log = Log(again, clock_ms=log.clock_ms)
    # The retry is answered from the durable session table: not applied again.
    assert 1 == log.call("put", "other", b"v", session_id=sid, seq=1)
    assert ask(again, "get", "other") is None
    again.close()


def test_a_batch_is_atomic_with_its_applied_index(tmp_path: Path) -> None:
    host = open_host(tmp_path)
    put = encode_call(Ledger, "put", ["a", b"1"])
    host.apply_batch([(1, 1, 1, put)])
    with pytest.raises(InvariantViolation):
        host.apply_batch([(2, 1, 2, encode_call(Ledger, "put", ["b", b"2"])), (4, 1, 3, put)])
    assert 1 == host.applied_index  # the host went back to what is durable
    assert [] == host.apply_batch([])
    host.close()
    again = open_host(tmp_path)
    assert 1 == again.applied_index
    assert ask(again, "get", "b") is None  # the aborted batch left nothing
    again.close()


def test_queries_are_read_only(tmp_path: Path) -> None:
    host = open_host(tmp_path)
    Log(host).call("put", "k", b"v")
    digest = host.digest()
    with pytest.raises(QueryMutatedState):
        ask(host, "write_in_query")
    with pytest.raises(CommandError) as info:
        ask(host, "raw_write_in_query")
    assert "lmdb.ReadonlyError" == info.value.type_name
    with pytest.raises(QueryMutatedState):
        ask(host, "rebind_in_query")
    assert digest == host.digest()
    host.close()


def test_scan_bounds_limit_and_reverse(tmp_path: Path) -> None:
    host = open_host(tmp_path)
    log = Log(host)
    for key in ("b", "d", "a", "c", "e"):
        log.call("put", key, b"")
    assert ["a", "b", "c", "d", "e"] == ask(host, "scan", "", None, None, False)
    assert ["b", "c"] == ask(host, "scan", "b", "d", None, False)
    assert ["b"] == ask(host, "scan", "b", "d", 1, False)
    assert ["e", "d", "c"] == ask(host, "scan", "", None, 3, True)
    assert ["c", "b"] == ask(host, "scan", "b", "d", None, True)
    assert ["e", "d"] == ask(host, "scan", "d", "z", None, True)
    assert [] == ask(host, "scan", "x", None, None, True)
    assert [] == ask(host, "scan", "x", None, None, False)
    host.close()


def test_snapshot_restore_round_trip_and_exactly_once(tmp_path: Path) -> None:
    host = open_host(tmp_path / "a", snapshot_chunk_bytes=64)
    log = Log(host)
    sid = decode_result(log.append(encode_register_session())[0])
    log.call("fill", "k", 50, 10, session_id=sid, seq=1)
    host.apply_membership(log.index + 1, 1, None, ["n2", "n1"])
    log.index += 1
    data = snapshot_bytes(host)

    copy = open_host(tmp_path / "b", lmdb_restore_txn_bytes=100)
    Log(copy).call("put", "stale", b"gone after restore")
    copy.restore(io.BytesIO(data))
    assert (host.applied_index, host.digest()) == (copy.applied_index, copy.digest())
    assert ask(copy, "get", "stale") is None
    assert 50 == Log(copy, clock_ms=log.clock_ms).call("put", "x", b"", session_id=sid, seq=1)
    assert ask(copy, "get", "x") is None
    copy.close()
    reopened = open_host(tmp_path / "b")
    assert host.applied_index + 1 == reopened.applied_index
    reopened.close()
    host.close()


def test_snapshot_kinds_do_not_mix(tmp_path: Path) -> None:
    from examples.counter.machine import Counter

    counter = MachineHost(Counter())
    host = open_host(tmp_path)
    with pytest.raises(SnapshotFormatError, match="kind"):
        host.restore(io.BytesIO(snapshot_bytes(counter)))
    with pytest.raises(SnapshotFormatError, match="kind"):
        counter.restore(io.BytesIO(snapshot_bytes(host)))
    host.close()


def test_interrupted_restore_reopens_empty(tmp_path: Path) -> None:
    source = open_host(tmp_path / "a", snapshot_chunk_bytes=64)
    Log(source).call("fill", "k", 100, 10)
    data = bytearray(snapshot_bytes(source))
    data[-40] ^= 0xFF  # corrupt a late chunk: the first records are already loaded
    target = open_host(tmp_path / "b", lmdb_restore_txn_bytes=1)
    Log(target).call("put", "old", b"")
    with pytest.raises(SnapshotFormatError):
        target.restore(io.BytesIO(bytes(data)))
    target.close()
    reopened = open_host(tmp_path / "b")
    empty = open_host(tmp_path / "c")
    assert (0, empty.digest()) == (reopened.applied_index, reopened.digest())
    for host in (source, reopened, empty):
        host.close()


def map_size(host: MachineHost) -> int:
    return int(host._backend.env.info()["map_size"])  # type: ignore[attr-defined]


def test_map_grows_and_the_batch_is_redone(tmp_path: Path) -> None:
    small = open_host(tmp_path / "small", lmdb_map_size_initial_bytes=1 << 20)
    big = open_host(tmp_path / "big")
    log = Log(small, big)
    sid = decode_result(log.append(encode_register_session())[0])
    results = log.append(encode_call(Ledger, "fill", ["k", 3000, 1000], session_id=sid, seq=1))
    assert 3000 == decode_result(results[0])
    assert map_size(small) > 1 << 20
    assert small.digest() == big.digest()
    small.close()
    big.close()


def test_a_swallowed_map_full_still_grows_the_map(tmp_path: Path) -> None:
    small = open_host(tmp_path / "small", lmdb_map_size_initial_bytes=1 << 20)
    big = open_host(tmp_path / "big")
    assert "fit" == Log(small, big).call("fill_swallowing", 2000, 1000)
    assert map_size(small) > 1 << 20
    assert small.digest() == big.digest()
    small.close()
    big.close()


def test_map_limit_is_fatal(tmp_path: Path) -> None:
    host = open_host(tmp_path, lmdb_map_size_initial_bytes=1 << 20, lmdb_map_size_max_bytes=2 << 20)
    with pytest.raises(MachineStorageFull):
        Log(host).call("fill", "k", 5000, 1000)
    assert 0 == host.applied_index
    host.close()


def test_snapshot_in_another_thread_while_applying(tmp_path: Path) -> None:
    host = open_host(tmp_path / "a")
    log = Log(host)
    log.call("fill", "k", 2000, 100)
    taken: list[bytes] = []
    thread = threading.Thread(target=lambda: taken.append(snapshot_bytes(host)))
    thread.start()
    for i in range(50):
        log.call("put", f"later{i:02}", b"")
    thread.join()
    copy = open_host(tmp_path / "b")
    copy.restore(io.BytesIO(taken[0]))
    # A consistent cut: the applied index matches the state it carries.
    later = ask(copy, "scan", "later", "latez", None, False)
    assert 1 + len(later) == copy.applied_index
    assert [f"later{i:02}" for i in range(len(later))] == later
    host.close()
    copy.close()


def test_membership_views_are_replicated_state(tmp_path: Path) -> None:
    a, b = open_host(tmp_path / "a"), open_host(tmp_path / "b")
    for host in (a, b):
        host.apply_membership(1, 1, 5, ["n3", "n1"], ["n9"])
    assert a.digest() == b.digest() != open_host(tmp_path / "c").digest()
    a.close()
    b.close()


def test_misuse(tmp_path: Path) -> None:
    with pytest.raises(MachineStorageError, match="path"):
        MachineHost(Ledger())
    machine = Ledger()
    host = MachineHost(machine, path=tmp_path)
    with pytest.raises(MachineStorageError, match="already open"):
        MachineHost(machine, path=tmp_path / "x")
    with pytest.raises(ContextUnavailable):
        _ = machine.txn
    with pytest.raises(ContextUnavailable):
        machine.db.get(b"k")
    with pytest.raises(TypeError):
        machine.snapshot(io.BytesIO())
    with pytest.raises(KeyError, match="lmdb_tables"):
        machine.table("nope")
    host.close()
    with pytest.raises(TypeError, match="lmdb_tables"):
        type("Bad", (LMDBStateMachine,), {"lmdb_tables": ("default",)})
