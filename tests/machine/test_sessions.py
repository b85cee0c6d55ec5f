"""The replicated session table (rsm.sessions): exactly-once, bounds, expiry."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rsm.errors import ConfigError, InvariantViolation
from rsm.sessions import (
    Session,
    SessionExpired,
    SessionSettings,
    SessionTable,
    StaleSequence,
    decode_session,
    encode_session,
)

TIMEOUT = 1000


def table(**overrides: int) -> SessionTable:
    values = {"session_timeout_ms": TIMEOUT, "sessions_max": 4, "results_per_session_max": 3}
    values.update(overrides)
    return SessionTable(SessionSettings(**values), track_changes=True)


def test_settings_validate_at_the_limit_and_past_it() -> None:
    SessionSettings(session_timeout_ms=1, sessions_max=1, results_per_session_max=1).validate()
    for name in ("session_timeout_ms", "sessions_max", "results_per_session_max"):
        with pytest.raises(ConfigError, match=name):
            SessionSettings(**{name: 0}).validate()
        with pytest.raises(ConfigError, match=name):
            SessionSettings(**{name: True}).validate()


def test_session_id_is_the_register_index() -> None:
    t = table()
    assert 7 == t.register(7)
    assert [7] == t.ids()


def test_new_then_duplicate_returns_the_original_result() -> None:
    t = table()
    sid = t.register(1)
    assert t.lookup(sid, 1, 0, 2) is None
    t.record(sid, 1, b"first")
    assert b"first" == t.lookup(sid, 1, 0, 3)


def test_out_of_order_new_seq_is_applied() -> None:
    t = table()
    sid = t.register(1)
    assert t.lookup(sid, 2, 0, 2) is None
    t.record(sid, 2, b"two")
    assert t.lookup(sid, 1, 0, 3) is None  # 1 never ran: it is new, not stale


def test_ack_forgets_results_and_makes_older_seqs_stale() -> None:
    t = table()
    sid = t.register(1)
    for i, seq in enumerate((1, 2), start=2):
        t.lookup(sid, seq, 0, i)
        t.record(sid, seq, b"r%d" % seq)
    assert t.lookup(sid, 3, 2, 4) is None  # acks everything below 2
    with pytest.raises(StaleSequence):
        t.lookup(sid, 1, 0, 5)
    assert b"r2" == t.lookup(sid, 2, 0, 6)


def test_ack_never_drops_the_current_seq() -> None:
    t = table()
    sid = t.register(1)
    t.lookup(sid, 1, 0, 2)
    t.record(sid, 1, b"r1")
    assert b"r1" == t.lookup(sid, 1, 99, 3)


def test_results_per_session_is_bounded_oldest_evicted() -> None:
    t = table(results_per_session_max=3)
    sid = t.register(1)
    for seq in range(1, 5):
        t.lookup(sid, seq, 0, seq + 1)
        t.record(sid, seq, b"r%d" % seq)
    session = t.get(sid)
    assert session is not None
    assert [2, 3, 4] == sorted(session.results)
    with pytest.raises(StaleSequence):
        t.lookup(sid, 1, 0, 10)


def test_sessions_max_evicts_least_recently_active() -> None:
    t = table(sessions_max=2)
    a, b = t.register(1), t.register(2)
    t.keepalive(a, 3)  # b is now the least recently active
    c = t.register(4)
    assert [a, c] == t.ids()
    with pytest.raises(SessionExpired):
        t.lookup(b, 1, 0, 5)


def test_expiry_by_leader_timestamps() -> None:
    t = table()
    t.advance_clock(1000)
    a = t.register(1)
    t.advance_clock(1500)
    b = t.register(2)
    t.advance_clock(1000 + TIMEOUT)  # exactly the timeout: still alive
    assert [a, b] == t.ids()
    t.advance_clock(1000 + TIMEOUT + 1)
    assert [b] == t.ids()
    with pytest.raises(SessionExpired):
        t.keepalive(a, 3)


def test_activity_postpones_expiry() -> None:
    t = table()
    t.advance_clock(1000)
    a = t.register(1)
    t.advance_clock(1900)
    t.keepalive(a, 2)
    t.advance_clock(2800)
    assert [a] == t.ids()


def test_clock_never_runs_backwards() -> None:
    t = table()
    assert 500 == t.advance_clock(500)
    assert 500 == t.advance_clock(400)  # a new leader whose clock is behind


def test_close() -> None:
    t = table()
    sid = t.register(1)
    assert t.close(sid)
    assert not t.close(sid)
    with pytest.raises(SessionExpired):
        t.keepalive(sid, 2)


def test_invariants_on_misuse() -> None:
    t = table()
    sid = t.register(5)
    with pytest.raises(InvariantViolation):
        t.register(5)
    with pytest.raises(InvariantViolation):
        t.keepalive(sid, 5)  # not after its last activity
    with pytest.raises(InvariantViolation):
        t.record(sid + 1, 1, b"")


def test_change_tracking_for_on_disk_hosts() -> None:
    t = table(sessions_max=1)
    a = t.register(1)
    changed, removed = t.pop_changes()
    assert [a] == list(changed) and set() == removed
    assert t.get(a).last_index == decode_session(changed[a]).last_index  # type: ignore[union-attr]
    b = t.register(2)  # evicts a
    changed, removed = t.pop_changes()
    assert [b] == list(changed) and {a} == removed


def test_session_record_round_trip_and_rejections() -> None:
    t = table()
    sid = t.register(1)
    t.lookup(sid, 1, 0, 2)
    t.record(sid, 1, b"x")
    session = t.get(sid)
    assert session is not None
    assert session.as_list() == decode_session(encode_session(session)).as_list()
    with pytest.raises(ValueError):
        decode_session(b"\xc1")
    with pytest.raises(ValueError):
        decode_session(b"\x95\x01\x01\x01\x01\x01")


# -- hypothesis: a model of exactly-once -------------------------------------

# An operation: (kind, client, seq offset, time step). Clients reuse session ids.
operations = st.lists(
    st.tuples(st.sampled_from(["register", "command", "retry", "keepalive", "close"]),
              st.integers(0, 3), st.integers(0, 5), st.integers(0, 600)),
    max_size=60,
)


def run(ops: list[tuple[str, int, int, int]], t: SessionTable) -> tuple[list[object], dict[tuple[int, int], int]]:
    """Drive the table like a host would; count how often each (sid, seq) ran."""
    applied: dict[tuple[int, int], int] = {}
    outcomes: list[object] = []
    sids: dict[int, int] = {}
    next_seq: dict[int, int] = {}
    clock = 0
    for index, (kind, client, offset, step) in enumerate(ops, start=1):
        clock += step
        t.advance_clock(clock)
        sid = sids.get(client, 0)
        try:
            if kind == "register":
                sids[client] = t.register(index)
                next_seq[client] = 1
                outcomes.append(("registered", index))
                continue
            if kind == "keepalive":
                t.keepalive(sid, index)
            elif kind == "close":
                outcomes.append(t.close(sid))
            else:
                seq = next_seq.get(client, 1)
                if kind == "retry":
                    seq = max(1, seq - 1 - offset)
                else:
                    next_seq[client] = seq + 1
                cached = t.lookup(sid, seq, 0, index)
                if cached is None:
                    applied[(sid, seq)] = applied.get((sid, seq), 0) + 1
                    cached = b"%d:%d" % (sid, seq)
                    t.record(sid, seq, cached)
                outcomes.append(cached)
        except (SessionExpired, StaleSequence) as exc:
            outcomes.append(type(exc).__name__)
    return outcomes, applied


@settings(max_examples=150, deadline=None)
@given(operations)
def test_each_command_applies_at_most_once_and_bounds_hold(ops: list[tuple[str, int, int, int]]) -> None:
    t = table(sessions_max=3, results_per_session_max=2)
    outcomes, applied = run(ops, t)
    assert all(count == 1 for count in applied.values())
    assert len(t) <= 3
    for _, session in t:
        assert len(session.results) <= 2
        assert all(seq >= session.low for seq in session.results)
    # A retried command's result is always the one its first run produced.
    assert all(o == b"%d:%d" % tuple(map(int, o.split(b":"))) for o in outcomes if isinstance(o, bytes))


@settings(max_examples=100, deadline=None)
@given(operations, st.integers(0, 60))
def test_encode_decode_mid_run_continues_identically(ops: list[tuple[str, int, int, int]], cut: int) -> None:
    """A table restored from its encoding (a snapshot) behaves like the original."""
    cut = min(cut, len(ops))
    original = table()
    run(ops[:cut], original)
    copy = SessionTable.decode(original.encode(), original.settings)
    assert original.as_list() == copy.as_list()
    assert original.digest() == copy.digest()
    tail = [(k, c, o, 0) for k, c, o, _ in ops[cut:]]  # same clock from here on
    assert original.as_list() == copy.as_list()
    assert run_tail(original, tail, cut) == run_tail(copy, tail, cut)
    assert original.digest() == copy.digest()


def run_tail(t: SessionTable, ops: list[tuple[str, int, int, int]], start: int) -> list[object]:
    outcomes = []
    for index, (kind, _client, offset, _) in enumerate(ops, start=start + 1):
        sid = (t.ids() or [0])[offset % max(1, len(t))] if len(t) else 0
        try:
            if kind == "register":
                outcomes.append(t.register(index))
            elif kind in ("keepalive", "close"):
                outcomes.append(t.keepalive(sid, index) if kind == "keepalive" else t.close(sid))
            else:
                cached = t.lookup(sid, offset + 1, 0, index)
                if cached is None:
                    t.record(sid, offset + 1, b"r")
                outcomes.append(cached)
        except (SessionExpired, StaleSequence) as exc:
            outcomes.append(type(exc).__name__)
    return outcomes


def test_digest_covers_settings() -> None:
    assert table().digest() != table(sessions_max=5).digest()


def test_decode_rejects_garbage() -> None:
    for bad in (b"", b"\x93\x02\x00\x90", b"\x93\x01\x00\x91\x01", b"\x93\x01\xff\x90"):
        with pytest.raises(ValueError):
            SessionTable.decode(bad)


@given(st.lists(st.integers(min_value=1, max_value=400), max_size=60),
       st.lists(st.integers(min_value=0, max_value=500), max_size=30))
@settings(max_examples=200, deadline=None)
def test_forget_below_keeps_exactly_the_results_at_or_above_the_watermark(seqs: list[int], lows: list[int]) -> None:
    session = Session(last_index=0, last_ms=0, low=1)
    for seq in seqs:
        session.results.setdefault(seq, b"r")
    expected = dict(session.results)
    low = 1
    for new_low in lows:
        session.forget_below(new_low)
        low = max(low, new_low)
        expected = {s: r for s, r in expected.items() if s >= low}
        assert session.low == low
        assert session.results == expected
