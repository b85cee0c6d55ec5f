"""msgpack encoding of the consensus core's values: messages, entries, hard state.

Every `Message` that leaves a node goes through `encode_message`, and every
frame that arrives goes through `decode_message`: the TCP transport does this
for real, and the simulator does it for every simulated delivery so that the
codec is exercised under the same faults as the protocol.

Theory of operation
-------------------
The encoder trusts its input: it is handed values built by our own consensus
core, and it is on the hot path, so it does no validation beyond what msgpack
itself refuses. The decoder trusts nothing: a frame comes from the network, so
it accepts only the exact shapes described below, type-checks every field,
bounds every size by a named `CodecLimits` setting, and reports every problem
as `DecodeError` (never another exception type), so a transport can close the
offending connection, count it and carry on. There is no pickle, no eval, no
msgpack map and no msgpack ext type anywhere in the format.

Encoding is canonical: a value has exactly one encoding, and the decoder
rejects any other spelling of it (a field present with its default value,
unsorted member lists, unknown flag bits). So `encode(decode(frame)) == frame`
for every frame this module's encoder could have produced. A caller that wants
to check an outgoing value (the simulator does) decodes what it encoded.

Wire format (version 1)
-----------------------
Integers are msgpack ints in [0, 2**63) and never bools; node ids are non-empty
msgpack str (UTF-8); byte strings are msgpack bin. Arrays are positional.

Message::

    [1, type, src, dst, term, fields, *present]

- ``1`` is the format version; a different version is refused outright.
- ``type`` is a `MessageType` value.
- ``fields`` is a bit set naming the optional fields that differ from their
  defaults. ``present`` holds the values of the set bits, in bit order. The
  two bool fields, ``reject`` and ``done``, are carried by their bit alone.
  Low bits go to the most frequent fields so that the bit set of an APPEND, a
  heartbeat or a vote fits in one byte.

  ===  ============  =====================================================
  bit  field         present value
  ===  ============  =====================================================
  0    index         int > 0
  1    log_term      int > 0
  2    commit        int > 0
  3    entries       non-empty array of entries (see Entry)
  4    reject        (none: the bit means True)
  5    context       non-empty bin
  6    hint_index    int > 0
  7    hint_term     int > 0
  8    snapshot      snapshot meta (see SnapshotMeta)
  9    offset        int > 0
  10   data          non-empty bin (a snapshot chunk)
  11   done          (none: the bit means True)
  ===  ============  =====================================================

  So a heartbeat costs about a dozen bytes, while every field of `Message`
  still round-trips exactly, whatever the message type: which fields a type
  uses is the consensus core's business, not the codec's.

Entry::

    [index, term, kind, data]          kind is an EntryKind value, data is bin

SnapshotMeta::

    [index, term, voters, learners]    voters, learners: arrays of node ids,
                                       strictly ascending, disjoint

HardState::

    [term, vote, commit]               vote is a node id or nil

Entries, snapshot metadata and hard state have standalone encoders for reuse
(storage, snapshots). Those carry no version tag of their own: the version is
the container's (the message tag here, the data directory's format stamp on
disk).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import attrs
import msgpack

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

__all__ = [
    "DEFAULT_LIMITS",
    "FORMAT_VERSION",
    "CodecLimits",
    "DecodeError",
    "Frame",
    "decode_entry",
    "decode_hard_state",
    "decode_message",
    "decode_snapshot_meta",
    "encode_entry",
    "encode_hard_state",
    "encode_message",
    "encode_snapshot_meta",
]

#: The first element of every encoded message. Bump it on any incompatible
#: change; decoders refuse every version they do not know.
FORMAT_VERSION = 1

#: Integers on the wire are unsigned and fit an int64, so any implementation
#: (and LMDB keys) can hold them.
_INT_END = 1 << 63


class DecodeError(RsmError):
    """A frame or record is not a valid encoding; the message names the field.

    Raised for every kind of bad input (truncated, oversized, wrong types, wrong
    shape, unknown version). Peers that send one should be disconnected and
    counted, never allowed to take the process down.
    """


# Optional message fields, one bit each. Order matters: it is the wire order.
_F_INDEX = 1 << 0
_F_LOG_TERM = 1 << 1
_F_COMMIT = 1 << 2
_F_ENTRIES = 1 << 3
_F_REJECT = 1 << 4
_F_CONTEXT = 1 << 5
_F_HINT_INDEX = 1 << 6
_F_HINT_TERM = 1 << 7
_F_SNAPSHOT = 1 << 8
_F_OFFSET = 1 << 9
_F_DATA = 1 << 10
_F_DONE = 1 << 11
_F_ALL = (1 << 12) - 1
# Bits that carry a value in the array (the two flags do not).
_F_WITH_VALUE = _F_ALL & ~(_F_REJECT | _F_DONE)

_HEADER_LEN = 6  # version, type, src, dst, term, fields
_MESSAGE_ARITY_MAX = _HEADER_LEN + _F_WITH_VALUE.bit_count()


def _check_limit(name: str, value: object) -> None:
    # msgpack lengths are 32-bit; a larger limit could never be reached.
    if type(value) is not int or not 1 <= value <= 0xFFFF_FFFF:
        raise ConfigError(f"CodecLimits.{name} must be an integer in [1, 2**32), got {value!r}")


@attrs.frozen(kw_only=True)
class CodecLimits:
    """Size limits the decoder enforces. A value exactly at a limit is accepted.

    The defaults leave room above the consensus `Config` defaults (256 entries
    and 1 MiB per append, 8 MiB commands, 1 MiB snapshot chunks), so a correct
    peer never trips them; they exist to bound what a broken or hostile one can
    make us allocate. Whoever raises a `Config` limit must raise the matching
    one here.
    """

    #: Most bytes in one encoded message (the frame the transport hands over).
    #: Checked before parsing, so it bounds all the memory one frame can cost.
    frame_bytes_max: int = 32 << 20
    #: Most entries in one message (Config.append_entries_max is 256).
    entries_per_message_max: int = 4096
    #: Most data bytes in one entry: a command (Config.entry_bytes_max is
    #: 8 MiB) plus whatever envelope the replica wraps around it.
    entry_bytes_max: int = 16 << 20
    #: Most UTF-8 bytes in a node id. Node ids are the only strings on the wire.
    node_id_bytes_max: int = 255
    #: Most bytes in a message's `context` (a read request id).
    context_bytes_max: int = 1024
    #: Most bytes in a message's `data` (a snapshot chunk; Config default 1 MiB).
    snapshot_chunk_bytes_max: int = 4 << 20
    #: Most members (voters + learners) in one configuration.
    conf_members_max: int = 128

    # Keyword arguments for msgpack.unpackb, derived once. They are a backstop
    # per msgpack kind (the largest size any field of that kind may have); the
    # per-field checks in the decoder are the precise ones.
    _unpack_options: dict[str, Any] = attrs.field(init=False, repr=False, eq=False, hash=False)

    def __attrs_post_init__(self) -> None:
        self.validate()
        options = {
            "raw": False,
            "strict_map_key": True,
            "use_list": True,
            "max_str_len": self.node_id_bytes_max,
            "max_bin_len": self._bin_bytes_max(),
            "max_array_len": max(
                self.entries_per_message_max, self.conf_members_max, _MESSAGE_ARITY_MAX
            ),
            "max_map_len": 0,
            "max_ext_len": 0,
        }
        object.__setattr__(self, "_unpack_options", options)

    def _bin_bytes_max(self) -> int:
        return max(self.entry_bytes_max, self.context_bytes_max, self.snapshot_chunk_bytes_max)

    def validate(self) -> CodecLimits:
        """Raise `ConfigError` on a bad value or relation; run on construction."""
        for field in attrs.fields(CodecLimits):
            if field.init:
                _check_limit(field.name, getattr(self, field.name))
        if self.frame_bytes_max <= self._bin_bytes_max():
            raise ConfigError(
                "CodecLimits.frame_bytes_max must exceed entry_bytes_max, context_bytes_max "
                f"and snapshot_chunk_bytes_max, or the largest of them can never arrive "
                f"({self.frame_bytes_max} <= {self._bin_bytes_max()})"
            )
        return self


# Lookups from wire values to enum members. Callers check `type(x) is int`
# first, because True == 1 and a dict lookup alone would accept a bool.
_MESSAGE_TYPES: dict[int, MessageType] = {t.value: t for t in MessageType}
_ENTRY_KINDS: dict[int, EntryKind] = {k.value: k for k in EntryKind}

# One packer for the process: Packer.pack with autoreset returns fresh bytes and
# keeps its internal buffer, so reusing it saves an allocation per call. The
# core is single-threaded; a multi-threaded user would need one per thread.
_packer = msgpack.Packer(use_bin_type=True)
_pack: Callable[[object], bytes] = _packer.pack


DEFAULT_LIMITS = CodecLimits()

#: What the decoders accept: the transport may hand over a bytearray or a
#: memoryview slice of its receive buffer without copying it.
Frame = bytes | bytearray | memoryview


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------


def _snapshot_wire(meta: SnapshotMeta) -> list[Any]:
    conf = meta.conf
    return [meta.index, meta.term, sorted(conf.voters), sorted(conf.learners)]


class EntriesCache:
    """The encoding of the last entries sent, for `encode_message`.

    A leader sends the same new entries to every follower; with a cache the
    entries are encoded once per batch instead of once per follower. The key
    is the identity of the first and last `Entry` objects and the count, and
    the cache holds those two objects, so an id cannot be reused while it is
    cached: the same objects at both ends of a slice of one log mean the same
    entries (a truncation replaces the last one). One cache per node: the
    objects come from that node's log.
    """

    __slots__ = ("_count", "_encoded", "_first", "_last", "hits")

    def __init__(self) -> None:
        self._first: Entry | None = None
        self._last: Entry | None = None
        self._count = 0
        self._encoded = b""
        self.hits = 0

    def encoded(self, entries: tuple[Entry, ...] | list[Entry]) -> bytes:
        """msgpack bytes of the entries array, as `encode_message` puts it on the wire."""
        first, last = entries[0], entries[-1]
        if first is self._first and last is self._last and len(entries) == self._count:
            self.hits += 1
            return self._encoded
        encoded = _pack([(e.index, e.term, e.kind, e.data) for e in entries])
        self._first, self._last, self._count, self._encoded = first, last, len(entries), encoded
        return encoded


def encode_message(msg: Message, cache: EntriesCache | None = None) -> bytes:
    """Bytes for `msg` in wire format version 1 (see the module docstring).

    Does not validate `msg`: it comes from our own core, and this is the hot
    path. Values outside the wire's ranges (negative, >= 2**63) encode but are
    refused by `decode_message`. With `cache`, entries already encoded for
    another message are not encoded again; the bytes are the same.
    """
    fields = 0
    out: list[Any] = [FORMAT_VERSION, msg.type, msg.src, msg.dst, msg.term, 0]
    append = out.append
    if msg.index:
        fields |= _F_INDEX
        append(msg.index)
    if msg.log_term:
        fields |= _F_LOG_TERM
        append(msg.log_term)
    if msg.commit:
        fields |= _F_COMMIT
        append(msg.commit)
    at = 0
    if msg.entries:
        fields |= _F_ENTRIES
        if cache is None:
            append([(e.index, e.term, e.kind, e.data) for e in msg.entries])
        else:
            at = len(out)
            append(None)  # spliced in below
    if msg.reject:
        fields |= _F_REJECT
    if msg.context:
        fields |= _F_CONTEXT
        append(msg.context)
    if msg.hint_index:
        fields |= _F_HINT_INDEX
        append(msg.hint_index)
    if msg.hint_term:
        fields |= _F_HINT_TERM
        append(msg.hint_term)
    if msg.snapshot is not None:
        fields |= _F_SNAPSHOT
        append(_snapshot_wire(msg.snapshot))
    if msg.offset:
        fields |= _F_OFFSET
        append(msg.offset)
    if msg.data:
        fields |= _F_DATA
        append(msg.data)
    if msg.done:
        fields |= _F_DONE
    out[5] = fields
    if not at:
        return _pack(out)
    # A msgpack array is its header followed by its elements, each encoded on
    # its own: encode the others and put the cached entries in their place.
    assert cache is not None
    parts = [_packer.pack_array_header(len(out))]
    parts.extend(_pack(field) for field in out[:at])
    parts.append(cache.encoded(msg.entries))
    parts.extend(_pack(field) for field in out[at + 1 :])
    return b"".join(parts)


def encode_entry(entry: Entry) -> bytes:
    """Bytes for one entry: ``[index, term, kind, data]``, as inside a message."""
    return _pack((entry.index, entry.term, entry.kind, entry.data))


def encode_snapshot_meta(meta: SnapshotMeta) -> bytes:
    """Bytes for snapshot metadata: ``[index, term, voters, learners]``."""
    return _pack(_snapshot_wire(meta))


def encode_hard_state(state: HardState) -> bytes:
    """Bytes for hard state: ``[term, vote or nil, commit]``."""
    return _pack((state.term, state.vote, state.commit))


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------

# msgpack's own size checks (the backstops in CodecLimits._unpack_options)
# fire before ours for the largest field of each kind; say what they stand for.
_MSGPACK_LIMIT_NAMES = {
    "max_str_len": "node_id_bytes_max: node ids are the only strings",
    "max_bin_len": "the largest of entry_bytes_max, context_bytes_max, snapshot_chunk_bytes_max",
    "max_array_len": "the largest of entries_per_message_max, conf_members_max",
    "max_map_len": "the wire format has no maps",
    "max_ext_len": "the wire format has no ext types",
}


def _describe(value: object) -> str:
    """A short description of a bad value for an error message.

    Cheap whatever the value: a hostile frame may put a 16 MiB bin or a
    4096-element array where an int belongs, and repr() of that would cost far
    more than decoding it.
    """
    if isinstance(value, bytes | str):
        shown = repr(value[:32]) + ("..." if len(value) > 32 else "")
        return f"{type(value).__name__} of length {len(value)}: {shown}"
    if isinstance(value, list):
        return f"array of {len(value)} elements"
    if isinstance(value, dict):
        return f"map of {len(value)} entries"
    # What is left from msgpack is small: nil, bool, int (< 2**64), float.
    return f"{type(value).__name__} {value!r}"


def _fail(what: str, expected: str, value: object) -> NoReturn:
    raise DecodeError(f"{what}: expected {expected}, got {_describe(value)}")


def _unpack(data: Frame, limits: CodecLimits, what: str) -> Any:
    """msgpack.unpackb under `limits`, with every failure turned into DecodeError."""
    try:
        # nbytes, not len: a memoryview's len counts items, not bytes.
        size = data.nbytes if type(data) is memoryview else len(data)
    except TypeError as exc:
        raise DecodeError(f"{what}: expected bytes, got {type(data).__name__}") from exc
    if size > limits.frame_bytes_max:
        raise DecodeError(
            f"{what}: {size} bytes exceeds frame_bytes_max ({limits.frame_bytes_max})"
        )
    try:
        return msgpack.unpackb(data, **limits._unpack_options)
    # msgpack signals bad input with ValueError subclasses (FormatError,
    # StackError, ExtraData, size limits, invalid UTF-8) and with
    # UnpackException (OutOfData); TypeError covers a non-buffer argument.
    except msgpack.UnpackException as exc:
        raise DecodeError(f"{what}: malformed msgpack ({type(exc).__name__})") from exc
    except (ValueError, TypeError, OverflowError) as exc:
        detail = str(exc) or type(exc).__name__
        for option, limit_names in _MSGPACK_LIMIT_NAMES.items():
            if option in detail:
                raise DecodeError(f"{what}: {detail} ({limit_names})") from exc
        raise DecodeError(f"{what}: malformed msgpack ({detail})") from exc


def _uint(value: object, what: str) -> int:
    """`value` as a wire integer: an int (not a bool) in [0, 2**63)."""
    if type(value) is not int or not 0 <= value < _INT_END:
        _fail(what, "an integer in [0, 2**63)", value)
    return value


def _present_uint(value: object, what: str) -> int:
    """A wire integer that is present, hence not its default 0 (canonical form)."""
    if type(value) is not int or not 0 < value < _INT_END:
        _fail(what, "an integer in [1, 2**63) since its bit is set", value)
    return value


def _present_bin(value: object, what: str, limit: int, limit_name: str) -> bytes:
    """A non-empty bin of at most `limit` bytes."""
    if type(value) is not bytes or not value:
        _fail(what, "non-empty bin since its bit is set", value)
    if len(value) > limit:
        raise DecodeError(f"{what}: {len(value)} bytes exceeds {limit_name} ({limit})")
    return value


def _node_id(value: object, what: str, limits: CodecLimits) -> str:
    """A non-empty str of at most node_id_bytes_max UTF-8 bytes."""
    if type(value) is not str or not value:
        _fail(what, "a non-empty str node id", value)
    # msgpack already bounds str length in bytes (max_str_len); this check keeps
    # the rule local and holds even if that backstop changes.
    size = len(value) if value.isascii() else len(value.encode())
    if size > limits.node_id_bytes_max:
        raise DecodeError(
            f"{what}: {size} bytes exceeds node_id_bytes_max ({limits.node_id_bytes_max})"
        )
    return value


def _entries(value: object, limits: CodecLimits) -> tuple[Entry, ...]:
    """The entries of a message; the per-entry checks are inlined (hot path)."""
    if type(value) is not list or not value:
        _fail("entries", "a non-empty array since its bit is set", value)
    if len(value) > limits.entries_per_message_max:
        raise DecodeError(
            f"entries: {len(value)} entries exceeds entries_per_message_max "
            f"({limits.entries_per_message_max})"
        )
    # Locals, not globals, inside the loop: measurably faster in CPython.
    entry_bytes_max = limits.entry_bytes_max
    kinds = _ENTRY_KINDS
    int_end = _INT_END
    out: list[Entry] = []
    append = out.append
    for raw in value:
        # One combined test on the fast path; _entry() explains a failure.
        if (
            type(raw) is list
            and len(raw) == 4
            and type(index := raw[0]) is int
            and 0 <= index < int_end
            and type(term := raw[1]) is int
            and 0 <= term < int_end
            and type(kind := raw[2]) is int
            and kind in kinds
            and type(data := raw[3]) is bytes
            and len(data) <= entry_bytes_max
        ):
            append(Entry(index, term, kinds[kind], data))
        else:
            append(_entry(raw, limits, f"entries[{len(out)}]"))
    return tuple(out)


def _entry(value: object, limits: CodecLimits, what: str) -> Entry:
    """One entry, checked field by field with a precise error."""
    if type(value) is not list or len(value) != 4:
        _fail(what, "an array [index, term, kind, data]", value)
    index = _uint(value[0], f"{what}.index")
    term = _uint(value[1], f"{what}.term")
    kind = value[2]
    if type(kind) is not int or kind not in _ENTRY_KINDS:
        _fail(f"{what}.kind", f"one of {sorted(_ENTRY_KINDS)}", kind)
    data = value[3]
    if type(data) is not bytes:
        _fail(f"{what}.data", "bin", data)
    if len(data) > limits.entry_bytes_max:
        raise DecodeError(
            f"{what}.data: {len(data)} bytes exceeds entry_bytes_max ({limits.entry_bytes_max})"
        )
    return Entry(index, term, _ENTRY_KINDS[kind], data)


def _members(value: object, limits: CodecLimits, what: str) -> list[str]:
    if type(value) is not list:
        _fail(what, "an array of node ids", value)
    previous = ""
    for position, member in enumerate(value):
        node = _node_id(member, f"{what}[{position}]", limits)
        # Strictly ascending: canonical, and it rules out duplicates that a
        # frozenset would silently merge.
        if position and node <= previous:
            _fail(f"{what}[{position}]", f"a node id sorted after {previous!r}", node)
        previous = node
    return value


def _snapshot_meta(value: object, limits: CodecLimits, what: str) -> SnapshotMeta:
    if type(value) is not list or len(value) != 4:
        _fail(what, "an array [index, term, voters, learners]", value)
    index = _uint(value[0], f"{what}.index")
    term = _uint(value[1], f"{what}.term")
    voters = _members(value[2], limits, f"{what}.voters")
    learners = _members(value[3], limits, f"{what}.learners")
    if len(voters) + len(learners) > limits.conf_members_max:
        raise DecodeError(
            f"{what}: {len(voters) + len(learners)} members exceeds conf_members_max "
            f"({limits.conf_members_max})"
        )
    both = set(voters).intersection(learners)
    if both:
        raise DecodeError(f"{what}: {sorted(both)!r} are both voters and learners")
    return SnapshotMeta(index, term, ConfState(frozenset(voters), frozenset(learners)))


def decode_message(data: Frame, limits: CodecLimits = DEFAULT_LIMITS) -> Message:
    """The `Message` that `data` encodes; raises `DecodeError` on anything else.

    Checks, in order: the frame size, msgpack well-formedness (with msgpack's
    own size limits as a backstop), the version, the type, the node ids, the
    arity the field bits imply, then every present field's type and bound.
    """
    obj = _unpack(data, limits, "message")
    if type(obj) is not list or len(obj) < _HEADER_LEN:
        _fail("message", "an array [version, type, src, dst, term, fields, ...]", obj)
    version = obj[0]
    if type(version) is not int or version != FORMAT_VERSION:
        _fail("message.version", f"{FORMAT_VERSION}", version)
    raw_type = obj[1]
    if type(raw_type) is not int or raw_type not in _MESSAGE_TYPES:
        _fail("message.type", "a known MessageType value", raw_type)
    msg_type = _MESSAGE_TYPES[raw_type]
    src = _node_id(obj[2], "message.src", limits)
    dst = _node_id(obj[3], "message.dst", limits)
    term = _uint(obj[4], "message.term")
    fields = obj[5]
    if type(fields) is not int or not 0 <= fields <= _F_ALL:
        _fail("message.fields", f"a bit set in [0, {_F_ALL}]", fields)
    arity = _HEADER_LEN + (fields & _F_WITH_VALUE).bit_count()
    if len(obj) != arity:
        raise DecodeError(
            f"message: fields {fields:#x} need an array of {arity} elements, got {len(obj)}"
        )

    log_term = index = commit = hint_index = hint_term = offset = 0
    entries: tuple[Entry, ...] = ()
    context = chunk = b""
    snapshot: SnapshotMeta | None = None
    at = _HEADER_LEN
    if fields & _F_INDEX:
        index = _present_uint(obj[at], "message.index")
        at += 1
    if fields & _F_LOG_TERM:
        log_term = _present_uint(obj[at], "message.log_term")
        at += 1
    if fields & _F_COMMIT:
        commit = _present_uint(obj[at], "message.commit")
        at += 1
    if fields & _F_ENTRIES:
        entries = _entries(obj[at], limits)
        at += 1
    if fields & _F_CONTEXT:
        context = _present_bin(
            obj[at], "message.context", limits.context_bytes_max, "context_bytes_max"
        )
        at += 1
    if fields & _F_HINT_INDEX:
        hint_index = _present_uint(obj[at], "message.hint_index")
        at += 1
    if fields & _F_HINT_TERM:
        hint_term = _present_uint(obj[at], "message.hint_term")
        at += 1
    if fields & _F_SNAPSHOT:
        snapshot = _snapshot_meta(obj[at], limits, "message.snapshot")
        at += 1
    if fields & _F_OFFSET:
        offset = _present_uint(obj[at], "message.offset")
        at += 1
    if fields & _F_DATA:
        chunk = _present_bin(
            obj[at], "message.data", limits.snapshot_chunk_bytes_max, "snapshot_chunk_bytes_max"
        )
        at += 1
    return Message(
        msg_type,
        src,
        dst,
        term,
        log_term,
        index,
        entries,
        commit,
        bool(fields & _F_REJECT),
        hint_index,
        hint_term,
        context,
        snapshot,
        offset,
        chunk,
        bool(fields & _F_DONE),
    )


def decode_entry(data: Frame, limits: CodecLimits = DEFAULT_LIMITS) -> Entry:
    """The `Entry` that `encode_entry` produced; raises `DecodeError` otherwise."""
    return _entry(_unpack(data, limits, "entry"), limits, "entry")


def decode_snapshot_meta(data: Frame, limits: CodecLimits = DEFAULT_LIMITS) -> SnapshotMeta:
    """The `SnapshotMeta` that `encode_snapshot_meta` produced; else `DecodeError`."""
    return _snapshot_meta(_unpack(data, limits, "snapshot_meta"), limits, "snapshot_meta")


def decode_hard_state(data: Frame, limits: CodecLimits = DEFAULT_LIMITS) -> HardState:
    """The `HardState` that `encode_hard_state` produced; else `DecodeError`."""
    obj = _unpack(data, limits, "hard_state")
    if type(obj) is not list or len(obj) != 3:
        _fail("hard_state", "an array [term, vote, commit]", obj)
    term = _uint(obj[0], "hard_state.term")
    vote = None if obj[1] is None else _node_id(obj[1], "hard_state.vote", limits)
    commit = _uint(obj[2], "hard_state.commit")
    return HardState(term, vote, commit)
