"""Tests of rsm.codec: round trips, every limit at its edge, strictness, fuzzing.

The decoder faces the network, so besides round trips these tests feed it
random bytes, random msgpack values and mutated valid frames, and require that
it only ever answers with a valid `Message` or a `DecodeError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rsm.codec import (
    DEFAULT_LIMITS,
    FORMAT_VERSION,
    CodecLimits,
    DecodeError,
    EntriesCache,
    decode_entry,
    decode_hard_state,
    decode_message,
    decode_snapshot_meta,
    encode_entry,
    encode_hard_state,
    encode_message,
    encode_snapshot_meta,
)
from rsm.consensus.types import (
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    SnapshotMeta,
)
from rsm.errors import ConfigError, RsmError

INT_MAX = 2**63 - 1

# --------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------

# Mostly small numbers (the common case, and 0 is the omitted default), plus
# the whole range so that every msgpack int width and the top of the range occur.
uints = st.one_of(st.just(0), st.integers(0, 300), st.integers(0, INT_MAX), st.just(INT_MAX))
# A small alphabet makes equal ids (and so conf overlaps and ordering) likely;
# full text covers multi-byte UTF-8.
node_ids = st.one_of(
    st.text(alphabet="abc", min_size=1, max_size=3),
    st.text(min_size=1, max_size=12),
)
entries = st.builds(Entry, uints, uints, st.sampled_from(EntryKind), st.binary(max_size=40))


@st.composite
def conf_states(draw: st.DrawFn) -> ConfState:
    voters = draw(st.frozensets(node_ids, max_size=6))
    learners = draw(st.frozensets(node_ids, max_size=4)) - voters
    return ConfState(voters=voters, learners=learners)


snapshot_metas = st.builds(SnapshotMeta, uints, uints, conf_states())
hard_states = st.builds(HardState, uints, st.none() | node_ids, uints)

# Every field of every message type may be set: the codec must carry them all,
# whatever the type (which fields a type uses is the core's business).
messages = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    src=node_ids,
    dst=node_ids,
    term=uints,
    log_term=uints,
    index=uints,
    entries=st.lists(entries, max_size=6).map(tuple),
    commit=uints,
    reject=st.booleans(),
    hint_index=uints,
    hint_term=uints,
    context=st.binary(max_size=24),
    snapshot=st.none() | snapshot_metas,
    offset=uints,
    data=st.binary(max_size=40),
    done=st.booleans(),
)

# Arbitrary msgpack-able values, for structure-aware fuzzing.
msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=20,
)


def pack(value: Any) -> bytes:
    frame: bytes = msgpack.packb(value, use_bin_type=True)
    return frame


def decodes_or_rejects(frame: bytes) -> Message | None:
    """Decode `frame`; only a DecodeError or a re-encodable Message may come out."""
    try:
        msg = decode_message(frame)
    except DecodeError:
        return None
    assert isinstance(msg, Message)
    assert decode_message(encode_message(msg)) == msg
    return msg


# --------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(messages)
def test_message_round_trip(msg: Message) -> None:
    frame = encode_message(msg)
    assert msg == decode_message(frame)
    # Canonical: re-encoding the decoded value gives the same bytes.
    assert frame == encode_message(decode_message(frame))


@settings(deadline=None)
@given(entries)
def test_entry_round_trip(entry: Entry) -> None:
    assert entry == decode_entry(encode_entry(entry))


@settings(deadline=None)
@given(hard_states)
def test_hard_state_round_trip(state: HardState) -> None:
    assert state == decode_hard_state(encode_hard_state(state))


@settings(deadline=None)
@given(snapshot_metas)
def test_snapshot_meta_round_trip(meta: SnapshotMeta) -> None:
    assert meta == decode_snapshot_meta(encode_snapshot_meta(meta))


def test_decoded_enums_are_enum_members() -> None:
    msg = Message(MessageType.APPEND, "a", "b", 1, entries=(Entry(1, 1, EntryKind.CONFIG),))
    decoded = decode_message(encode_message(msg))
    assert type(decoded.type) is MessageType
    assert type(decoded.entries[0].kind) is EntryKind
    assert type(decoded.entries) is tuple


def test_golden_encodings() -> None:
    """Pin wire format version 1: a change here breaks mixed-version clusters."""
    heartbeat = Message(MessageType.HEARTBEAT, "n1", "n2", 5, commit=9, context=b"id")
    assert encode_message(heartbeat) == (b"\x98\x01\x07\xa2n1\xa2n2\x05\x24\x09\xc4\x02id")
    append = Message(
        MessageType.APPEND, "n1", "n2", 5, log_term=4, index=10, commit=9,
        entries=(Entry(11, 5, EntryKind.NORMAL, b"x"),),
    )  # fmt: skip
    assert encode_message(append) == (
        b"\x9a\x01\x05\xa2n1\xa2n2\x05\x0f\x0a\x04\x09\x91\x94\x0b\x05\x00\xc4\x01x"
    )
    assert encode_hard_state(HardState(3, None, 2)) == b"\x93\x03\xc0\x02"
    meta = SnapshotMeta(7, 2, ConfState(frozenset({"b", "a"}), frozenset({"c"})))
    assert encode_snapshot_meta(meta) == b"\x94\x07\x02\x92\xa1a\xa1b\x91\xa1c"


def test_heartbeat_is_compact() -> None:
    heartbeat = Message(MessageType.HEARTBEAT, "node-1", "node-2", 7, commit=990)
    assert len(encode_message(heartbeat)) <= 24


# --------------------------------------------------------------------------
# Limits: exactly at each one decodes, one past it fails
# --------------------------------------------------------------------------

# Small limits, all different from msgpack's per-kind backstops except
# entry_bytes_max (the largest bin limit), so both the codec's own checks and
# the translated msgpack errors are exercised.
SMALL_LIMITS = CodecLimits(
    frame_bytes_max=10_000,
    entries_per_message_max=5,
    entry_bytes_max=100,
    node_id_bytes_max=8,
    context_bytes_max=16,
    snapshot_chunk_bytes_max=50,
    conf_members_max=4,
)

MEMBERS = [f"n{i:04d}" for i in range(1000)]


def _conf_message(n: int) -> Message:
    half = n // 2
    conf = ConfState(frozenset(MEMBERS[:half]), frozenset(MEMBERS[half:n]))
    return Message(MessageType.SNAPSHOT, "a", "b", 1, snapshot=SnapshotMeta(5, 1, conf))


LIMIT_CASES: dict[str, Callable[[int], Message]] = {
    "entries_per_message_max": lambda n: Message(
        MessageType.APPEND, "a", "b", 1, entries=tuple(Entry(i + 1, 1) for i in range(n))
    ),
    "entry_bytes_max": lambda n: Message(
        MessageType.APPEND, "a", "b", 1, entries=(Entry(1, 1, EntryKind.NORMAL, bytes(n)),)
    ),
    "node_id_bytes_max": lambda n: Message(MessageType.VOTE, "s" * n, "d", 1),
    "context_bytes_max": lambda n: Message(MessageType.HEARTBEAT, "a", "b", 1, context=b"c" * n),
    "snapshot_chunk_bytes_max": lambda n: Message(
        MessageType.SNAPSHOT, "a", "b", 1, data=bytes(n), done=True
    ),
    "conf_members_max": _conf_message,
}


@pytest.mark.parametrize("limits", [DEFAULT_LIMITS, SMALL_LIMITS], ids=["default", "small"])
@pytest.mark.parametrize("name", sorted(LIMIT_CASES))
def test_limit_edges(limits: CodecLimits, name: str) -> None:
    build = LIMIT_CASES[name]
    limit = getattr(limits, name)
    at_limit = build(limit)
    assert at_limit == decode_message(encode_message(at_limit), limits)
    with pytest.raises(DecodeError, match=name):
        decode_message(encode_message(build(limit + 1)), limits)


@pytest.mark.parametrize("limits", [DEFAULT_LIMITS, SMALL_LIMITS], ids=["default", "small"])
def test_node_id_limit_counts_utf8_bytes(limits: CodecLimits) -> None:
    limit = limits.node_id_bytes_max
    at_limit = "é" * (limit // 2) + "x" * (limit % 2)  # "é" is two bytes in UTF-8
    msg = Message(MessageType.VOTE, "a", at_limit, 1)
    assert msg == decode_message(encode_message(msg), limits)
    with pytest.raises(DecodeError, match="node_id_bytes_max"):
        decode_message(encode_message(attrs.evolve(msg, dst=at_limit + "é")), limits)


def _frame_of_size(size: int, entry_bytes_max: int) -> bytes:
    """An APPEND frame of exactly `size` bytes (entries over 64 KiB keep bin32 headers)."""
    chunk = min(entry_bytes_max, size // 2)
    datas = [chunk] * (size // chunk)
    frame = b""
    for _ in range(3):  # the entry count settles, then the last data length absorbs the rest
        msg = Message(
            MessageType.APPEND, "a", "b", 1,
            entries=tuple(Entry(i + 1, 1, EntryKind.NORMAL, bytes(n)) for i, n in enumerate(datas)),
        )  # fmt: skip
        frame = encode_message(msg)
        excess = len(frame) - size
        datas[-1] -= excess
        if datas[-1] <= 65535:
            datas.pop()
    assert len(frame) == size
    return frame


def test_frame_limit_default() -> None:
    limit = DEFAULT_LIMITS.frame_bytes_max
    frame = _frame_of_size(limit, DEFAULT_LIMITS.entry_bytes_max)
    assert len(decode_message(frame).entries) >= 2
    one_past = _frame_of_size(limit + 1, DEFAULT_LIMITS.entry_bytes_max)
    with pytest.raises(DecodeError, match="frame_bytes_max"):
        decode_message(one_past)  # a well-formed frame, refused before parsing


def test_frame_limit_small() -> None:
    entries = tuple(Entry(i + 1, 1, EntryKind.NORMAL, bytes(100)) for i in range(5))
    frame = encode_message(Message(MessageType.APPEND, "a", "b", 1, entries=entries))
    exact = attrs.evolve(SMALL_LIMITS, frame_bytes_max=len(frame))
    assert len(decode_message(frame, exact).entries) == 5
    one_short = attrs.evolve(SMALL_LIMITS, frame_bytes_max=len(frame) - 1)
    with pytest.raises(DecodeError, match="frame_bytes_max"):
        decode_message(frame, one_short)


@pytest.mark.parametrize("limits", [DEFAULT_LIMITS, SMALL_LIMITS], ids=["default", "small"])
def test_standalone_decoders_honour_limits(limits: CodecLimits) -> None:
    n = limits.entry_bytes_max
    assert len(decode_entry(encode_entry(Entry(1, 1, data=bytes(n))), limits).data) == n
    with pytest.raises(DecodeError, match="entry_bytes_max"):
        decode_entry(encode_entry(Entry(1, 1, data=bytes(n + 1))), limits)
    meta = _conf_message(limits.conf_members_max).snapshot
    assert meta is not None
    assert meta == decode_snapshot_meta(encode_snapshot_meta(meta), limits)
    too_many = _conf_message(limits.conf_members_max + 1).snapshot
    assert too_many is not None
    with pytest.raises(DecodeError, match="conf_members_max"):
        decode_snapshot_meta(encode_snapshot_meta(too_many), limits)
    vote = "v" * limits.node_id_bytes_max
    assert decode_hard_state(encode_hard_state(HardState(1, vote, 0)), limits).vote == vote
    with pytest.raises(DecodeError, match="node_id_bytes_max"):
        decode_hard_state(encode_hard_state(HardState(1, vote + "v", 0)), limits)


@pytest.mark.parametrize(
    "changes",
    [
        {"frame_bytes_max": 0},
        {"entries_per_message_max": -1},
        {"node_id_bytes_max": True},
        {"context_bytes_max": 1.5},
        {"conf_members_max": 2**32},
        {"frame_bytes_max": 1 << 20, "entry_bytes_max": 1 << 20},
    ],
)
def test_limits_are_validated(changes: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        CodecLimits(**changes)


# --------------------------------------------------------------------------
# Strictness: specific malformed frames
# --------------------------------------------------------------------------

# A valid APPEND on the wire: fields 0b1111 = index, log_term, commit, entries.
VALID = [FORMAT_VERSION, 5, "a", "b", 3, 0b1111, 10, 2, 9, [[11, 3, 0, b"x"]]]
# A valid SNAPSHOT: fields = snapshot, offset, data, done.
VALID_SNAPSHOT = [FORMAT_VERSION, 9, "a", "b", 3, 0b1111 << 8, [5, 2, ["a", "b"], ["c"]], 4, b"d"]


def _with(base: list[Any], position: int, value: Any) -> list[Any]:
    changed = list(base)
    changed[position] = value
    return changed


def _entry_with(position: int, value: Any) -> list[Any]:
    entry = _with([11, 3, 0, b"x"], position, value)
    return _with(VALID, 9, [entry])


def _conf_with(voters: Any, learners: Any) -> list[Any]:
    return _with(VALID_SNAPSHOT, 6, [5, 2, voters, learners])


def test_valid_fixtures_decode() -> None:
    assert decode_message(pack(VALID)).entries == (Entry(11, 3, EntryKind.NORMAL, b"x"),)
    assert decode_message(pack(VALID_SNAPSHOT)).done


MALFORMED: dict[str, tuple[Any, str]] = {
    "version 0": (_with(VALID, 0, 0), "version"),
    "version 2": (_with(VALID, 0, 2), "version"),
    "version True": (_with(VALID, 0, True), "version"),
    "version str": (_with(VALID, 0, "1"), "version"),
    "type 0": (_with(VALID, 1, 0), "type"),
    "type 14": (_with(VALID, 1, 14), "type"),
    "type True": (_with(VALID, 1, True), "type"),
    "type negative": (_with(VALID, 1, -5), "type"),
    "src int": (_with(VALID, 2, 7), "src"),
    "src bin": (_with(VALID, 2, b"a"), "src"),
    "src empty": (_with(VALID, 2, ""), "src"),
    "src nil": (_with(VALID, 2, None), "src"),
    "dst list": (_with(VALID, 3, ["b"]), "dst"),
    "term bool": (_with(VALID, 4, True), "term"),
    "term negative": (_with(VALID, 4, -1), "term"),
    "term 2**63": (_with(VALID, 4, 2**63), "term"),
    "term float": (_with(VALID, 4, 3.0), "term"),
    "fields bool": (_with(VALID, 5, True), "fields"),
    "fields unknown bit": (_with(VALID, 5, 0b1111 | 1 << 12), "fields"),
    "fields negative": (_with(VALID, 5, -1), "fields"),
    "index negative": (_with(VALID, 6, -1), "index"),
    "index bool": (_with(VALID, 6, True), "index"),
    "index present as default": (_with(VALID, 6, 0), "index"),
    "log_term nil": (_with(VALID, 7, None), "log_term"),
    "commit bin": (_with(VALID, 8, b"\x09"), "commit"),
    "too few elements": (VALID[:-1], "need an array of 10"),
    "too many elements": ([*VALID, 1], "need an array of 10"),
    "header too short": (VALID[:5], "message"),
    "entries empty": (_with(VALID, 9, []), "entries"),
    "entries not an array": (_with(VALID, 9, b"x"), "entries"),
    "entry arity 3": (_with(VALID, 9, [[11, 3, 0]]), r"entries\[0\]"),
    "entry arity 5": (_with(VALID, 9, [[11, 3, 0, b"x", 1]]), r"entries\[0\]"),
    "entry index bool": (_entry_with(0, True), r"entries\[0\]\.index"),
    "entry index negative": (_entry_with(0, -1), r"entries\[0\]\.index"),
    "entry term 2**64-1": (_entry_with(1, 2**64 - 1), r"entries\[0\]\.term"),
    "entry kind unknown": (_entry_with(2, 3), r"entries\[0\]\.kind"),
    "entry kind bool": (_entry_with(2, False), r"entries\[0\]\.kind"),
    "entry data str": (_entry_with(3, "x"), r"entries\[0\]\.data"),
    "entry data nil": (_entry_with(3, None), r"entries\[0\]\.data"),
    "second entry bad": (
        _with(VALID, 9, [[11, 3, 0, b"x"], [12, 3, 0, 5]]),
        r"entries\[1\]\.data",
    ),
    "context str": ([*VALID[:5], 1 << 5, "ctx"], "context"),
    "context empty": ([*VALID[:5], 1 << 5, b""], "context"),
    "data empty": ([*VALID[:5], 1 << 10, b""], "data"),
    "snapshot not an array": (_with(VALID_SNAPSHOT, 6, None), "snapshot"),
    "snapshot arity": (_with(VALID_SNAPSHOT, 6, [5, 2, ["a"]]), "snapshot"),
    "snapshot index bool": (_with(VALID_SNAPSHOT, 6, [True, 2, [], []]), r"snapshot\.index"),
    "voters unsorted": (_conf_with(["b", "a"], []), r"snapshot\.voters\[1\]"),
    "voters duplicate": (_conf_with(["a", "a"], []), r"snapshot\.voters\[1\]"),
    "voter empty id": (_conf_with([""], []), r"snapshot\.voters\[0\]"),
    "learner int id": (_conf_with([], [1]), r"snapshot\.learners\[0\]"),
    "voter and learner": (_conf_with(["a"], ["a"]), "both voters and learners"),
    "voters not an array": (_conf_with("a", []), r"snapshot\.voters"),
    "offset bool": (_with(VALID_SNAPSHOT, 7, True), "offset"),
    "top level map": ({"v": 1}, "maps"),
    "top level int": (5, "message"),
    "top level bin": (b"\x01\x05", "message"),
    "top level nil": (None, "message"),
    "ext type": (msgpack.ExtType(1, b"payload"), "ext"),
    "ext inside": (_with(VALID, 4, msgpack.ExtType(0, b"\x01")), "ext"),
    "map inside": (_with(VALID, 9, [{"k": 1}]), "maps"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_message(name: str) -> None:
    value, match = MALFORMED[name]
    with pytest.raises(DecodeError, match=match):
        decode_message(pack(value))


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (b"", "malformed"),
        (pack(VALID) + b"\x00", "malformed"),  # trailing bytes
        (b"\xc1", "malformed"),  # the one byte msgpack never uses
        (b"\x91" * 5000, "malformed"),  # nesting deeper than msgpack's stack
        (b"\xd6\xff\x00\x00\x00\x00", "ext"),  # a msgpack timestamp
        (b"\xdd\xff\xff\xff\xff", "max_array_len"),  # a huge array header
        (pack(_with(VALID, 2, "a")).replace(b"\xa1a", b"\xa1\xff", 1), "utf-8"),
    ],
    ids=["empty", "trailing", "reserved", "deep", "timestamp", "huge-array", "bad-utf8"],
)
def test_malformed_bytes(frame: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode_message(frame)


def test_every_truncation_is_rejected() -> None:
    msg = Message(
        MessageType.SNAPSHOT, "leader", "follower", 4, index=3, entries=(Entry(1, 1, data=b"ab"),),
        context=b"ctx", snapshot=SnapshotMeta(9, 3, ConfState(frozenset({"x", "y"}))),
        offset=100, data=b"chunk", done=True,
    )  # fmt: skip
    frame = encode_message(msg)
    for end in range(len(frame)):
        with pytest.raises(DecodeError):
            decode_message(frame[:end])


@pytest.mark.parametrize("frame", ["not bytes", None, 5, [1]])
def test_non_bytes_input_is_a_decode_error(frame: Any) -> None:
    with pytest.raises(DecodeError):
        decode_message(frame)


def test_bytearray_and_memoryview_are_accepted() -> None:
    msg = Message(MessageType.HEARTBEAT, "a", "b", 2, commit=1)
    frame = encode_message(msg)
    assert msg == decode_message(bytearray(frame))
    assert msg == decode_message(memoryview(frame))
    assert msg == decode_message(memoryview(b"xx" + frame)[2:])
    # A memoryview of wider items is measured in bytes, not items.
    wide = memoryview(bytearray(DEFAULT_LIMITS.frame_bytes_max + 4)).cast("I")
    with pytest.raises(DecodeError, match="frame_bytes_max"):
        decode_message(wide)


@pytest.mark.parametrize(
    ("decode", "value", "match"),
    [
        (decode_hard_state, [1, "", 0], "vote"),
        (decode_hard_state, [1, 5, 0], "vote"),
        (decode_hard_state, [1, None], "hard_state"),
        (decode_hard_state, [True, None, 0], "term"),
        (decode_hard_state, [1, None, -1], "commit"),
        (decode_entry, [1, 1, 0], "entry"),
        (decode_entry, [1, 1, 9, b""], "kind"),
        (decode_snapshot_meta, [1, 1, [], [], []], "snapshot_meta"),
        (decode_snapshot_meta, [1, 1, ["b", "a"], []], "voters"),
    ],
)
def test_malformed_records(decode: Callable[[bytes], object], value: Any, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode(pack(value))


def test_decode_error_is_an_rsm_error() -> None:
    assert issubclass(DecodeError, RsmError)


# --------------------------------------------------------------------------
# Fuzzing: nothing but a Message or a DecodeError ever comes out
# --------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(frame: bytes) -> None:
    decodes_or_rejects(frame)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 255), max_size=12), messages, st.data())
def test_fuzz_mutated_frames(flips: list[int], msg: Message, data: st.DataObject) -> None:
    """Overwrite, insert or delete bytes of a valid frame."""
    frame = bytearray(encode_message(msg))
    for byte in flips:
        position = data.draw(st.integers(0, len(frame)))
        action = data.draw(st.sampled_from(["set", "insert", "delete"]))
        if action == "set" and position < len(frame):
            frame[position] = byte
        elif action == "insert":
            frame.insert(position, byte)
        elif position < len(frame):
            del frame[position]
    decodes_or_rejects(bytes(frame))


@settings(max_examples=200, deadline=None)
@given(msgpack_values)
def test_fuzz_random_msgpack_values(value: Any) -> None:
    frame = pack(value)
    msg = decodes_or_rejects(frame)
    if msg is not None:  # only canonical encodings are accepted
        assert frame == encode_message(msg)
    for decode in (decode_entry, decode_hard_state, decode_snapshot_meta):
        try:
            decode(frame)
        except DecodeError:
            pass


@settings(max_examples=300, deadline=None)
@given(messages, st.data())
def test_fuzz_structure(msg: Message, data: st.DataObject) -> None:
    """Replace, drop or add one element somewhere inside a valid message's array."""
    tree = msgpack.unpackb(encode_message(msg), raw=False)
    node = tree
    while isinstance(node, list) and node and data.draw(st.booleans()):
        child = node[data.draw(st.integers(0, len(node) - 1))]
        if not isinstance(child, list):
            break
        node = child
    position = data.draw(st.integers(0, len(node)))
    action = data.draw(st.sampled_from(["replace", "insert", "delete"]))
    if action == "replace" and position < len(node):
        node[position] = data.draw(msgpack_values)
    elif action == "insert":
        node.insert(position, data.draw(msgpack_values))
    elif position < len(node):
        del node[position]
    frame = pack(tree)
    result = decodes_or_rejects(frame)
    if result is not None:
        assert frame == encode_message(result)


# -- EntriesCache: entries encoded once for several messages --------------------


def _append(entries: tuple[Entry, ...], dst: str = "b", commit: int = 3) -> Message:
    return Message(type=MessageType.APPEND, src="a", dst=dst, term=4, log_term=4, index=entries[0].index - 1,
                   commit=commit, entries=entries)


def test_entries_cache_gives_the_same_bytes_and_encodes_once() -> None:
    entries = tuple(Entry(10 + i, 4, EntryKind.NORMAL, bytes([i]) * i) for i in range(50))
    cache = EntriesCache()
    first = encode_message(_append(entries, "b"), cache)
    second = encode_message(_append(entries, "c", commit=7), cache)
    assert first == encode_message(_append(entries, "b"))
    assert second == encode_message(_append(entries, "c", commit=7))
    assert 1 == cache.hits
    assert _append(entries, "c", commit=7) == decode_message(second)


def test_entries_cache_misses_for_other_entries_with_the_same_indexes() -> None:
    cache = EntriesCache()
    old = tuple(Entry(5 + i, 2, EntryKind.NORMAL, b"old") for i in range(3))
    encode_message(_append(old), cache)
    # The same indexes rewritten by a later leader, and a shorter slice of the old ones.
    new = tuple(Entry(5 + i, 3, EntryKind.NORMAL, b"new") for i in range(3))
    assert _append(new) == decode_message(encode_message(_append(new), cache))
    assert _append(old[:2]) == decode_message(encode_message(_append(old[:2]), cache))
    assert 0 == cache.hits


@given(st.lists(st.tuples(st.integers(0, 2**40), st.binary(max_size=30)), min_size=1, max_size=20),
       st.integers(0, 2**62), st.binary(max_size=16))
@settings(max_examples=200)
def test_cached_encoding_equals_the_plain_one(raw: list[tuple[int, bytes]], commit: int, context: bytes) -> None:
    entries = tuple(Entry(100 + i, term, EntryKind.NORMAL, data) for i, (term, data) in enumerate(raw))
    msg = Message(type=MessageType.APPEND, src="a", dst="b", term=2**41, log_term=1, index=99, commit=commit,
                  entries=entries, context=context, hint_index=3)
    cache = EntriesCache()
    assert encode_message(msg) == encode_message(msg, cache) == encode_message(msg, cache)
