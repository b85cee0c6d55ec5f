"""MachineHost with in-memory machines: apply, errors, sessions, snapshots,
digests, membership views, query checks; and two hosts fed one random log."""

from __future__ import annotations

import io

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.counter.machine import Counter
from rsm.errors import InvariantViolation
from rsm.sessions import SessionExpired, SessionSettings, StaleSequence
from rsm.statemachine import (
    CommandError,
    MachineHost,
    MachineSettings,
    QueryMutatedState,
    SnapshotFormatError,
    decode_result,
    encode_call,
    encode_close_session,
    encode_keepalive,
    encode_register_session,
)

from .machines import Account, Custom, Log, Point, Shape, ask

# -- apply and errors ---------------------------------------------------------


def test_counter_end_to_end() -> None:
    host = MachineHost(Counter())
    log = Log(host)
    assert 1 == log.call("increment")
    assert 6 == log.call("increment", by=5)
    assert 6 == ask(host, "get")
    assert 2 == host.applied_index


def test_exception_becomes_command_error_and_occupies_the_slot() -> None:
    a, b = MachineHost(Account()), MachineHost(Account())
    log = Log(a, b)
    log.call("deposit", 10)
    with pytest.raises(CommandError) as info:
        log.call("withdraw", 50)
    assert ("ValueError", "insufficient funds: 10 < 50") == (info.value.type_name, info.value.message)
    assert 2 == a.applied_index == b.applied_index
    assert 10 == ask(a, "get_balance")
    assert a.digest() == b.digest()


def test_mutation_before_raise_is_kept_deterministically() -> None:
    a, b = MachineHost(Account()), MachineHost(Account())
    log = Log(a, b)
    with pytest.raises(CommandError, match="RuntimeError"):
        log.call("half_then_fail", 7)
    assert 7 == ask(a, "get_balance") == ask(b, "get_balance")


def test_unencodable_result_is_an_error_result() -> None:
    host = MachineHost(Account())
    with pytest.raises(CommandError) as info:
        Log(host).call("give_set")
    assert "rsm.UnencodableResult" == info.value.type_name


def test_result_size_limit() -> None:
    host = MachineHost(Account(), settings=MachineSettings(result_bytes_max=64))
    log = Log(host)
    log.call("add_shape", Shape("s" * 10))
    with pytest.raises(CommandError, match=r"rsm\.ResultTooLarge"):
        log.call("add_shape", Shape("s" * 60))


def test_error_message_is_cut() -> None:
    host = MachineHost(Account(), settings=MachineSettings(error_message_chars_max=16))
    with pytest.raises(CommandError) as info:
        Log(host).call("withdraw", 10**6)
    assert 16 == len(info.value.message)


@pytest.mark.parametrize(("payload", "type_name"), [
    (b"\xc1", "rsm.DecodeError"),
    (msgpack.packb([1, 0, "nope", [], {}, None, None, 0]), "rsm.UnknownMethod"),
    (msgpack.packb([1, 0, "get_balance", [], {}, None, None, 0]), "rsm.UnknownMethod"),
    (encode_call(Account, "get_balance"), "rsm.NotACommand"),
    (msgpack.packb([1, 0, "deposit", [1, 2, 3], {}, None, None, 0]), "TypeError"),
])
def test_bad_entries_get_error_results_and_use_their_slot(payload: bytes, type_name: str) -> None:
    a, b = MachineHost(Account()), MachineHost(Account())
    results = Log(a, b).append(payload)
    assert results[0] == results[1]
    with pytest.raises(CommandError) as info:
        decode_result(results[0])
    assert type_name == info.value.type_name
    assert 1 == a.applied_index


def test_entries_must_be_consecutive() -> None:
    host = MachineHost(Counter())
    host.apply(1, 1, 1, encode_call(Counter, "increment"))
    with pytest.raises(InvariantViolation, match="consecutive"):
        host.apply(3, 1, 1, encode_call(Counter, "increment"))
    with pytest.raises(InvariantViolation, match="terms must not decrease"):
        host.apply(2, 0, 1, encode_call(Counter, "increment"))


def test_batch_with_noops_and_membership() -> None:
    host = MachineHost(Account())
    dep = encode_call(Account, "deposit", [5])
    results = host.apply_batch([(1, 1, 10, None), (2, 1, 11, dep), (3, 1, None, None)])
    assert [None, 5] == [results[0], decode_result(results[1])] and results[2] is None
    assert host.apply_membership(4, 1, 12, ["b", "a"], ["c"]) is None
    host.skip(5, 2)
    assert (5, 2) == (host.applied_index, host.applied_term)
    assert [["a", "b", "c"]] == host.machine.views  # type: ignore[attr-defined]


# -- queries -------------------------------------------------------------------


def test_query_that_rebinds_is_refused_and_undone() -> None:
    host = MachineHost(Account())
    Log(host).call("deposit", 3)
    before = host.digest()
    with pytest.raises(QueryMutatedState):
        ask(host, "bad_rebind")
    assert 3 == ask(host, "get_balance")
    assert before == host.digest()


def test_full_check_catches_in_place_mutation_and_restores() -> None:
    shallow = MachineHost(Account())
    Log(shallow).call("deposit", 3)
    assert 0 == ask(shallow, "bad_in_place")  # shallow mode cannot see it (documented)
    full = MachineHost(Account(), settings=MachineSettings(query_mutation_check="full"))
    Log(full).call("deposit", 3)
    before = full.digest()
    with pytest.raises(QueryMutatedState):
        ask(full, "bad_in_place")
    assert before == full.digest()


def test_query_errors() -> None:
    host = MachineHost(Account())
    with pytest.raises(CommandError, match=r"rsm\.NotAQuery"):
        decode_result(host.query(encode_call(Account, "deposit", [1])))
    with pytest.raises(CommandError, match=r"rsm\.UnknownMethod"):
        decode_result(host.query(msgpack.packb([1, 1, "deposit", [], {}])))
    with pytest.raises(CommandError, match=r"rsm\.DecodeError"):
        decode_result(host.query(b""))


# -- sessions through the host -----------------------------------------------------


def register(log: Log) -> int:
    return decode_result(log.append(encode_register_session())[0])  # type: ignore[no-any-return]


def test_retry_returns_original_result_without_reapplying() -> None:
    host = MachineHost(Account())
    log = Log(host)
    sid = register(log)
    assert 10 == log.call("deposit", 10, session_id=sid, seq=1)
    assert 10 == log.call("deposit", 10, session_id=sid, seq=1)  # retried
    assert 10 == ask(host, "get_balance")
    assert [10] == host.machine.history  # type: ignore[attr-defined]


def test_failed_command_retry_returns_the_same_error() -> None:
    host = MachineHost(Account())
    log = Log(host)
    sid = register(log)
    with pytest.raises(CommandError, match="insufficient") as first:
        log.call("withdraw", 1, session_id=sid, seq=1)
    with pytest.raises(CommandError) as retry:
        log.call("withdraw", 1, session_id=sid, seq=1)
    assert str(first.value) == str(retry.value)


def test_stale_and_expired_sessions() -> None:
    settings = MachineSettings(sessions=SessionSettings(session_timeout_ms=100, results_per_session_max=2))
    host = MachineHost(Account(), settings=settings)
    log = Log(host)
    sid = register(log)
    for seq in (1, 2, 3):
        log.call("deposit", 1, session_id=sid, seq=seq)
    with pytest.raises(StaleSequence):
        log.call("deposit", 1, session_id=sid, seq=1)
    assert None is decode_result(log.append(encode_keepalive(sid), advance_ms=100)[0])
    log.append(encode_call(Account, "deposit", [0]), advance_ms=101)  # any entry moves the clock
    with pytest.raises(SessionExpired):
        log.call("deposit", 1, session_id=sid, seq=4)
    with pytest.raises(SessionExpired):
        decode_result(log.append(encode_keepalive(sid))[0])
    assert 3 == ask(host, "get_balance")


def test_close_session() -> None:
    host = MachineHost(Account())
    log = Log(host)
    sid = register(log)
    assert decode_result(log.append(encode_close_session(sid))[0]) is True
    assert decode_result(log.append(encode_close_session(sid))[0]) is False
    with pytest.raises(SessionExpired):
        log.call("deposit", 1, session_id=sid, seq=1)


# -- snapshots ------------------------------------------------------------------------


def snapshot_bytes(host: MachineHost) -> bytes:
    out = io.BytesIO()
    host.snapshot(out)
    return out.getvalue()


def test_plain_data_snapshot_round_trip_with_sessions() -> None:
    host = MachineHost(Account(), settings=MachineSettings(snapshot_chunk_bytes=7))
    log = Log(host)
    sid = register(log)
    log.call("deposit", 4, session_id=sid, seq=1)
    log.call("add_shape", Shape("sq", [Point(0, 0), Point(1, 1)]))
    data = snapshot_bytes(host)
    copy = MachineHost(Account())
    copy.restore(io.BytesIO(data))
    assert (host.applied_index, host.applied_term, host.clock_ms) == (
        copy.applied_index, copy.applied_term, copy.clock_ms)
    assert host.digest() == copy.digest()
    assert Shape("sq", [Point(0, 0), Point(1, 1)]) == ask(copy, "get_shape", "sq")
    # Exactly-once survives the snapshot: the retry is answered from the table.
    Log(copy, clock_ms=log.clock_ms).call("deposit", 4, session_id=sid, seq=1)
    assert 4 == ask(copy, "get_balance")


def test_custom_snapshot_round_trip() -> None:
    host = MachineHost(Custom())
    log = Log(host)
    for item in ("b", "a", "b"):
        log.call("add", item)
    copy = MachineHost(Custom())
    copy.restore(io.BytesIO(snapshot_bytes(host)))
    assert 2 == ask(copy, "count")
    assert host.digest() == copy.digest()


def test_default_snapshot_refuses_state_that_would_not_restore() -> None:
    host = MachineHost(Account())
    host.machine.shapes = {(1, 2): "tuple keys do not decode"}  # type: ignore[attr-defined, dict-item]
    with pytest.raises(TypeError, match="does not decode back"):
        snapshot_bytes(host)


def test_corrupt_snapshots_are_refused() -> None:
    host = MachineHost(Account())
    Log(host).call("deposit", 1)
    data = snapshot_bytes(host)
    for bad in (b"", data[:20], b"X" + data[1:], data[:30] + bytes([data[30] ^ 1]) + data[31:],
                data[:-12] + bytes([data[-12] ^ 1]) + data[-11:], data[:-8]):
        with pytest.raises(SnapshotFormatError):
            MachineHost(Account()).restore(io.BytesIO(bad))


# -- digests ------------------------------------------------------------------------------


def test_digest_equal_for_equal_state_different_otherwise() -> None:
    a, b = MachineHost(Account()), MachineHost(Account())
    Log(a).call("deposit", 2)
    Log(b).call("deposit", 2)
    assert a.digest() == b.digest()
    Log(b, clock_ms=5000).call("deposit", 0)
    assert a.digest() != b.digest()  # history (and the clock) differ


def test_digest_covers_sessions() -> None:
    a, b = MachineHost(Counter()), MachineHost(Counter())
    Log(a).append(encode_call(Counter, "get"))  # an error entry: same user state
    Log(b).append(encode_register_session())
    assert a.machine.digest() == b.machine.digest()
    assert a.digest() != b.digest()


# -- two replicas, one random log ------------------------------------------------------------

commands = st.lists(
    st.one_of(
        st.tuples(st.just("deposit"), st.integers(-5, 50)),
        st.tuples(st.just("withdraw"), st.integers(0, 60)),
        st.tuples(st.just("half_then_fail"), st.integers(0, 3)),
        st.tuples(st.just("stamp"), st.none()),
        st.tuples(st.just("register"), st.none()),
        st.tuples(st.just("session"), st.integers(1, 4)),
        st.tuples(st.just("snapshot"), st.none()),
    ),
    max_size=40,
)


@settings(max_examples=120, deadline=None)
@given(commands, st.integers(0, 3))
def test_two_hosts_fed_the_same_log_agree(ops: list[tuple[str, int | None]], gap: int) -> None:
    a = MachineHost(Account(), settings=MachineSettings(sessions=SessionSettings(session_timeout_ms=20)))
    b = MachineHost(Account(), settings=MachineSettings(sessions=SessionSettings(session_timeout_ms=20)))
    log = Log(a, b)
    sid, seq = 0, 0
    for name, arg in ops:
        if name == "register":
            sid, seq = register(log), 0
        elif name == "session":
            seq = max(1, seq + 1 - (arg or 0) % 2)  # sometimes a retry
            log.append(encode_call(Account, "deposit", [arg], session_id=sid or 1, seq=seq), advance_ms=gap)
        elif name == "snapshot":
            restored = MachineHost(Account(), settings=b.settings)
            restored.restore(io.BytesIO(snapshot_bytes(b)))
            log.hosts[1] = b = restored
        else:
            log.append(encode_call(Account, name, [] if arg is None else [arg]), advance_ms=gap)
    assert a.digest() == b.digest()
    assert a.applied_index == b.applied_index
