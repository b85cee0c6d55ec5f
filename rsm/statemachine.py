"""The application-facing API: `StateMachine`, `@command`, `@query`, and the
`MachineHost` a replica drives.

Theory of operation
-------------------
An application subclasses `StateMachine` and marks methods `@command` (run on
every replica, in log order, may change state) or `@query` (run on one
replica, must not change state). At class creation `__init_subclass__` builds
the class's method tables, so the apply path is a dict lookup and a call: no
`inspect` and no attribute scans per command.

A client turns a call into bytes with `encode_call`, which checks everything it
can before anything is sent: the method exists and has that kind, the
arguments bind to its signature, and every value encodes (msgpack, plus attrs
classes registered with `register`) and decodes back under the replica's
limits. The payload travels in a log entry; the replica hands it to
`MachineHost.apply` with the entry's index, term and leader timestamp. The
host decodes it once, consults the session table (exactly-once, see
`rsm.sessions`), calls the method with `self.context` set to an
`ApplyContext`, and returns the encoded result, which the replica sends back
and the client reads with `decode_result`.

Everything a replica stores or compares goes through the host: the applied
index, snapshots (a framed container holding the session table and the
machine's own bytes) and the state digest. In-memory machines keep their state
in Python objects; `rsm.lmdb_machine.LMDBStateMachine` keeps it in LMDB and
plugs into the same host through a small backend seam (`_MemoryBackend` here,
`_LMDBBackend` there).

Determinism is the application's contract: a command may depend only on its
arguments, the machine's state and `self.context` (index, term, leader
timestamp, seeded random generator). See docs/statemachine.md.

No pickle and no eval anywhere: decoders accept msgpack values and registered
attrs classes only, bounded by `MachineSettings`.
"""

from __future__ import annotations

import enum
import hashlib
import inspect
import io
import os
import random
import struct
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, BinaryIO, ClassVar, Final, TypeVar, cast

import attrs
import msgpack

from rsm.codec import DecodeError
from rsm.errors import ConfigError, InvariantViolation, RsmError, invariant
from rsm.sessions import SessionError, SessionExpired, SessionSettings, SessionTable, StaleSequence

__all__ = [
    "ApplyContext",
    "BadArguments",
    "BatchItem",
    "Call",
    "CallRejected",
    "CallTooLarge",
    "CommandError",
    "ContextUnavailable",
    "DecodeError",
    "MachineHost",
    "MachineSettings",
    "MembershipView",
    "MethodSpec",
    "PayloadKind",
    "PreparedCall",
    "QueryMutatedState",
    "SessionError",
    "SessionExpired",
    "SnapshotFormatError",
    "StaleSequence",
    "StateMachine",
    "UnencodableValue",
    "UnknownMethod",
    "canonical_bytes",
    "command",
    "decode_call",
    "decode_result",
    "decode_value",
    "encode_call",
    "encode_close_session",
    "encode_keepalive",
    "encode_register_session",
    "encode_value",
    "payload_kind",
    "prepare_call",
    "query",
    "register",
    "registered_tag",
]

KiB: Final = 1 << 10
MiB: Final = 1 << 20
GiB: Final = 1 << 30
TiB: Final = 1 << 40

# ==========================================================================
# Settings
# ==========================================================================

QUERY_CHECKS: Final = ("off", "shallow", "full")
#: Largest chunk a snapshot reader accepts, whatever the writer's setting was:
#: a chunk is buffered whole to verify its checksum.
SNAPSHOT_CHUNK_BYTES_LIMIT: Final = 64 * MiB


def _require_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if type(value) is not int or value < low or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ConfigError(f"MachineSettings.{name} must be an int {bound}, got {value!r}")


@attrs.frozen(kw_only=True)
class MachineSettings:
    """Limits and modes of a `MachineHost` (and of `encode_call`).

    The byte limits bound what a hostile or buggy client can make a replica
    allocate; the session settings define replicated behaviour and must match
    on every replica.
    """

    #: Most bytes in one encoded call (command or query). Keep it below the
    #: consensus `Config.entry_bytes_max` minus the replica's own envelope.
    call_bytes_max: int = 4 * MiB
    #: Most bytes in one encoded result. A larger result is replaced by a
    #: `rsm.ResultTooLarge` error (and an LMDB command's writes are undone).
    result_bytes_max: int = 4 * MiB
    #: Deepest nesting of registered attrs values inside each other.
    type_nesting_max: int = 32
    #: Exception messages in error results are cut to this many characters.
    error_message_chars_max: int = 1024
    #: How queries are checked for writes to an in-memory machine:
    #: "off"; "shallow" (default: rebinding or adding an attribute of the
    #: instance is caught and undone, O(attributes) per query; in-place
    #: mutation of a container is not); "full" (the machine's snapshot bytes
    #: are compared before and after, and restored on a difference: O(state)
    #: per query, for tests and debugging). LMDB state is always protected by
    #: a read-only transaction.
    query_mutation_check: str = "shallow"
    #: Bytes per checksummed chunk when a snapshot is written.
    snapshot_chunk_bytes: int = 1 * MiB
    #: The replicated session table's bounds.
    sessions: SessionSettings = attrs.field(factory=SessionSettings)
    #: LMDBStateMachine: map size on first open. LMDB reserves address space,
    #: not disk, so this can be generous. The map doubles when it fills.
    lmdb_map_size_initial_bytes: int = 1 * GiB
    #: LMDBStateMachine: the map never grows past this; a batch that needs more
    #: raises `MachineStorageFull` (the replica must stop).
    lmdb_map_size_max_bytes: int = 1 * TiB
    #: LMDBStateMachine: a restore commits every this many bytes, so a huge
    #: snapshot does not need one huge write transaction.
    lmdb_restore_txn_bytes: int = 64 * MiB

    def validate(self) -> MachineSettings:
        """Raise `ConfigError` on a bad value or relation; return self."""
        _require_int("call_bytes_max", self.call_bytes_max, 64)
        _require_int("result_bytes_max", self.result_bytes_max, 64)
        _require_int("type_nesting_max", self.type_nesting_max, 1, 1000)
        _require_int("error_message_chars_max", self.error_message_chars_max, 16)
        _require_int("snapshot_chunk_bytes", self.snapshot_chunk_bytes, 1, SNAPSHOT_CHUNK_BYTES_LIMIT)
        _require_int("lmdb_map_size_initial_bytes", self.lmdb_map_size_initial_bytes, 1 * MiB)
        _require_int("lmdb_map_size_max_bytes", self.lmdb_map_size_max_bytes, self.lmdb_map_size_initial_bytes)
        _require_int("lmdb_restore_txn_bytes", self.lmdb_restore_txn_bytes, 1)
        if self.query_mutation_check not in QUERY_CHECKS:
            raise ConfigError(f"MachineSettings.query_mutation_check must be one of {QUERY_CHECKS}, "
                              f"got {self.query_mutation_check!r}")
        if not isinstance(self.sessions, SessionSettings):
            raise ConfigError("MachineSettings.sessions must be a SessionSettings")
        self.sessions.validate()
        return self


DEFAULT_SETTINGS: Final = MachineSettings()

# ==========================================================================
# Errors
# ==========================================================================


class CallRejected(RsmError, TypeError):
    """`encode_call` refused a call before anything was sent (client misuse)."""


class UnknownMethod(CallRejected):
    """No command or query of that name on the machine class."""


class BadArguments(CallRejected):
    """The arguments do not bind to the method's signature."""


class UnencodableValue(CallRejected):
    """An argument is not msgpack data or a registered attrs class."""


class CallTooLarge(CallRejected):
    """The encoded call exceeds `MachineSettings.call_bytes_max`."""


class CommandError(RsmError):
    """A command or query raised (or was refused) on the replica.

    `type_name` is the exception's qualified type name (``"ValueError"``,
    ``"myapp.Overdrawn"``) or an ``"rsm.*"`` name for refusals made by the
    framework (``rsm.UnknownMethod``, ``rsm.DecodeError``, ``rsm.ResultTooLarge``
    ...). A command that failed still occupied its log slot on every replica.
    Commands may raise it themselves to choose the type name.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message


class QueryMutatedState(CommandError):
    """A query tried to change state; the change was refused or undone."""

    TYPE_NAME: ClassVar[str] = "rsm.QueryMutatedState"

    def __init__(self, message: str) -> None:
        super().__init__(self.TYPE_NAME, message)


class ContextUnavailable(RsmError, RuntimeError):
    """`self.context` (or an LMDB transaction) was used outside a command or query."""


class SnapshotFormatError(RsmError):
    """A machine snapshot is malformed, corrupt, or of another machine kind."""


# Error results with these type names decode to these classes (client side).
_RESULT_ERRORS: dict[str, Callable[[str], Exception]] = {
    SessionExpired.type_name: SessionExpired,
    StaleSequence.type_name: StaleSequence,
    QueryMutatedState.TYPE_NAME: QueryMutatedState,
}

# Errors that must stop the replica rather than become a result: they depend
# on the host (memory) or mean the framework itself is broken.
_FATAL = (MemoryError, InvariantViolation)

# ==========================================================================
# Values: msgpack plus registered attrs classes
# ==========================================================================

#: msgpack ext type code of a registered attrs value: [tag, *field values].
EXT_REGISTERED: Final = 82

T = TypeVar("T")


@attrs.frozen
class _Registered:
    cls: type
    tag: str
    names: tuple[str, ...]  # attribute names, in field order
    aliases: tuple[str, ...]  # __init__ parameter names, same order


_BY_CLASS: dict[type, _Registered] = {}
_BY_TAG: dict[str, _Registered] = {}
_TAG_CHARS_MAX: Final = 255


def register(cls: type[T] | None = None, *, tag: str | None = None) -> Any:
    """Register an attrs class so its instances can be arguments, results and
    plain-data state. Use as ``@register`` or ``@register(tag="Point")``.

    The tag names the class on the wire and in snapshots, so it must stay the
    same across versions and replicas (the default is ``module.QualName``; give
    an explicit one if the class may move). Values encode as a msgpack ext
    holding the tag and the field values in field order, and decode by calling
    the class with them, so every field must be an ``__init__`` parameter.
    Registering the same class again with the same tag is a no-op.
    """
    if cls is None:
        return lambda c: register(c, tag=tag)
    return _register(cls, tag)


def _register(cls: type[T], tag: str | None) -> type[T]:
    if not (isinstance(cls, type) and attrs.has(cls)):
        raise TypeError(f"register() takes an attrs class, got {cls!r}")
    fields = attrs.fields(cls)
    not_init = [f.name for f in fields if not f.init]
    if not_init:
        raise TypeError(f"{cls.__qualname__}: fields {not_init} are not __init__ parameters")
    tag = tag if tag is not None else f"{cls.__module__}.{cls.__qualname__}"
    if not (isinstance(tag, str) and 0 < len(tag) <= _TAG_CHARS_MAX):
        raise TypeError(f"register(): tag must be a non-empty str of at most {_TAG_CHARS_MAX} chars")
    entry = _Registered(cls, tag, tuple(f.name for f in fields), tuple(f.alias for f in fields))
    known = _BY_TAG.get(tag)
    if known is not None and known.cls is not cls:
        raise TypeError(f"register(): tag {tag!r} already names {known.cls.__qualname__}")
    if cls in _BY_CLASS and _BY_CLASS[cls].tag != tag:
        raise TypeError(f"register(): {cls.__qualname__} is already registered as {_BY_CLASS[cls].tag!r}")
    _BY_CLASS[cls] = entry
    _BY_TAG[tag] = entry
    return cast("type[T]", cls)


def registered_tag(cls: type) -> str | None:
    """The tag `cls` is registered under, or None."""
    entry = _BY_CLASS.get(cls)
    return entry.tag if entry else None


def _type_name(cls: type) -> str:
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _default(obj: object) -> object:
    """msgpack `default` hook: tuples as arrays, registered attrs as ext, else refuse."""
    cls = type(obj)
    if cls is tuple:
        return list(obj)  # type: ignore[call-overload]
    entry = _BY_CLASS.get(cls)
    if entry is not None:
        values = [getattr(obj, name) for name in entry.names]
        return msgpack.ExtType(EXT_REGISTERED, _packb([entry.tag, *values]))
    if cls is int:
        raise TypeError(f"integer {obj} does not fit in 64 bits")
    raise TypeError(
        f"cannot encode a {_type_name(cls)}: values must be None, bool, int, float, str, bytes, "
        "list, tuple, dict, or an attrs class registered with rsm.statemachine.register"
    )


def _packb(obj: object) -> bytes:
    # strict_types: subclasses (IntEnum, defaultdict, ...) reach `_default` and
    # are refused, instead of being silently flattened into their base type.
    data: bytes = msgpack.packb(obj, default=_default, use_bin_type=True, strict_types=True)
    return data


def _ext_hooks(depth_max: int) -> list[Callable[[int, bytes], object]]:
    """One ext hook per nesting depth; the last one refuses. Stateless, so
    safe to share between threads, and the depth needs no counter."""
    hooks: list[Callable[[int, bytes], object]] = []

    def make(depth: int) -> Callable[[int, bytes], object]:
        def hook(code: int, data: bytes) -> object:
            if code != EXT_REGISTERED:
                raise DecodeError(f"unknown msgpack ext type {code}")
            if depth >= depth_max:
                raise DecodeError(f"registered values nested deeper than {depth_max}")
            return _decode_registered(data, hooks[depth + 1])
        return hook

    hooks.extend(make(depth) for depth in range(depth_max + 1))
    return hooks


def _decode_registered(data: bytes, hook: Callable[[int, bytes], object]) -> object:
    obj = msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=hook)
    if not (type(obj) is list and obj and type(obj[0]) is str):
        raise DecodeError("a registered value must be an array starting with its tag")
    entry = _BY_TAG.get(obj[0])
    if entry is None:
        raise DecodeError(f"unregistered type tag {obj[0]!r:.80}")
    if len(obj) - 1 != len(entry.aliases):
        raise DecodeError(f"{obj[0]}: expected {len(entry.aliases)} fields, got {len(obj) - 1}")
    try:
        return entry.cls(**dict(zip(entry.aliases, obj[1:], strict=True)))
    except Exception as exc:
        raise DecodeError(f"{obj[0]}: cannot rebuild: {type(exc).__name__}: {exc}") from exc


_HOOKS_DEFAULT = _ext_hooks(DEFAULT_SETTINGS.type_nesting_max)


def _unpackb(data: bytes | bytearray | memoryview, hook: Callable[[int, bytes], object]) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=hook)
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises several types for bad input
        raise DecodeError(f"not valid msgpack: {type(exc).__name__}: {exc}") from exc


def encode_value(value: object) -> bytes:
    """Encode a value as msgpack (registered attrs classes as ext).

    Raises `UnencodableValue` for anything else. Useful in machines that
    store values as bytes (LMDB) and in tests.
    """
    try:
        return _packb(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise UnencodableValue(str(exc)) from None


def decode_value(data: bytes | bytearray | memoryview, *, settings: MachineSettings = DEFAULT_SETTINGS) -> Any:
    """Inverse of `encode_value`; raises `DecodeError` on bad input."""
    hook = _HOOKS_DEFAULT[0] if settings is DEFAULT_SETTINGS else _ext_hooks(settings.type_nesting_max)[0]
    return _unpackb(data, hook)


_pack_map_header = msgpack.Packer().pack_map_header
_pack_array_header = msgpack.Packer().pack_array_header


def canonical_bytes(value: object) -> bytes:
    """The canonical msgpack encoding of `value`: map entries sorted by their
    encoded key, so equal values have equal bytes whatever their insertion
    order. Used for digests; slower than `encode_value`."""
    if type(value) is dict:
        items = sorted((canonical_bytes(k), canonical_bytes(v)) for k, v in value.items())
        header: bytes = _pack_map_header(len(items))
        return header + b"".join(k + v for k, v in items)
    if type(value) is list or type(value) is tuple:
        header = _pack_array_header(len(value))
        return header + b"".join(canonical_bytes(x) for x in value)
    cls = type(value)
    entry = _BY_CLASS.get(cls)
    if entry is not None:
        inner = canonical_bytes([entry.tag, *(getattr(value, n) for n in entry.names)])
        return _packb(msgpack.ExtType(EXT_REGISTERED, inner))
    return _packb(value)


# ==========================================================================
# @command, @query and method tables
# ==========================================================================

_KIND_ATTR: Final = "__rsm_kind__"
COMMAND: Final = "command"
QUERY: Final = "query"

#: Names a command or query may not take: they are the framework's.
RESERVED_NAMES: Final = frozenset({
    "context", "snapshot", "restore", "digest", "on_membership_change", "register_type",
    "commands", "queries", "txn", "db", "table",
})

F = TypeVar("F", bound=Callable[..., Any])


def command(func: F) -> F:
    """Mark a method as a command: applied on every replica, in log order.

    A command may read and change the machine's state, and must be
    deterministic (see `ApplyContext`). Its return value is the result the
    client receives; an exception it raises becomes a `CommandError` result.
    """
    return _mark(func, COMMAND)


def query(func: F) -> F:
    """Mark a method as a query: run on one replica, must not change state."""
    return _mark(func, QUERY)


def _mark(func: F, kind: str) -> F:
    if not inspect.isfunction(func):
        raise TypeError(f"@{kind} applies to plain methods, got {func!r}")
    if inspect.iscoroutinefunction(func) or inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
        raise TypeError(f"@{kind} {func.__qualname__}: must be a plain function (apply is synchronous)")
    other = getattr(func, _KIND_ATTR, kind)
    if other != kind:
        raise TypeError(f"{func.__qualname__} cannot be both a {other} and a {kind}")
    setattr(func, _KIND_ATTR, kind)
    return func


@attrs.frozen(slots=True)
class MethodSpec:
    """One command or query of a machine class, resolved at class creation."""

    name: str
    kind: str
    function: Callable[..., Any]
    #: The signature without `self`, for `encode_call` to bind arguments.
    signature: inspect.Signature
    #: When every parameter is a plain positional-or-keyword one without a
    #: default, how many there are: a call with exactly that many positional
    #: arguments and no keywords binds without asking `inspect` (the hot path).
    #: None otherwise.
    plain_arity: int | None = None

    def check_arguments(self, machine_cls: type, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Raise `BadArguments` unless `args` and `kwargs` bind to the signature."""
        if not kwargs and len(args) == self.plain_arity:
            return
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise BadArguments(f"{machine_cls.__qualname__}.{self.name}{self.signature}: {exc}") from None


def _build_tables(cls: type) -> tuple[dict[str, MethodSpec], dict[str, MethodSpec]]:
    commands: dict[str, MethodSpec] = {}
    queries: dict[str, MethodSpec] = {}
    for name in dir(cls):
        attr = inspect.getattr_static(cls, name)
        if isinstance(attr, staticmethod | classmethod) and hasattr(attr.__func__, _KIND_ATTR):
            raise TypeError(f"{cls.__qualname__}.{name}: commands and queries must be instance methods")
        kind = getattr(attr, _KIND_ATTR, None) if inspect.isfunction(attr) else None
        if kind is None:
            continue
        if name in RESERVED_NAMES or name.startswith("_"):
            raise TypeError(f"{cls.__qualname__}.{name}: that name is reserved for the framework")
        signature = _signature_without_self(cls, name, attr)
        spec = MethodSpec(name, kind, attr, signature, _plain_arity(signature))
        (commands if kind == COMMAND else queries)[name] = spec
    return commands, queries


def _signature_without_self(cls: type, name: str, func: Callable[..., Any]) -> inspect.Signature:
    signature = inspect.signature(func)
    params = list(signature.parameters.values())
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        raise TypeError(f"{cls.__qualname__}.{name} must take self as its first parameter")
    return signature.replace(parameters=params[1:])


def _plain_arity(signature: inspect.Signature) -> int | None:
    params = signature.parameters.values()
    plain = all(p.kind == p.POSITIONAL_OR_KEYWORD and p.default is p.empty for p in params)
    return len(signature.parameters) if plain else None


# ==========================================================================
# ApplyContext and membership views
# ==========================================================================

_SEED = struct.Struct(">QQQ")


class ApplyContext:
    """What a command may know besides its arguments and the state.

    - `index`, `term`: the log entry being applied.
    - `timestamp_ms`: the leader's clock (int milliseconds since the Unix
      epoch) stored in the entry when it was proposed, clamped so it never
      decreases along the log. Use it instead of `time.time()` for TTLs and
      timestamps: every replica sees the same value.
    - `random`: a `random.Random` seeded from (index, term, timestamp_ms), the
      same on every replica. Use it instead of the `random` module.

    Inside a query, `self.context` is a read-only context: `index` and `term`
    are the last applied entry's, `timestamp_ms` is the read time the replica
    passed (or the state's clock), and `random` is not available.
    """

    __slots__ = ("_random", "index", "is_query", "term", "timestamp_ms")

    def __init__(self, index: int, term: int, timestamp_ms: int, *, is_query: bool = False) -> None:
        self.index = index
        self.term = term
        self.timestamp_ms = timestamp_ms
        self.is_query = is_query
        self._random: random.Random | None = None

    @property
    def random(self) -> random.Random:
        """A generator seeded from the entry, created on first use."""
        if self.is_query:
            raise ContextUnavailable("queries have no random generator: a query's result must follow from the state")
        if self._random is None:
            seed = hashlib.blake2b(_SEED.pack(self.index, self.term, self.timestamp_ms),
                                   digest_size=16, person=b"rsm.apply.rng").digest()
            self._random = random.Random(int.from_bytes(seed, "big"))
        return self._random

    def __repr__(self) -> str:
        kind = "query" if self.is_query else "command"
        return f"ApplyContext({kind}, index={self.index}, term={self.term}, timestamp_ms={self.timestamp_ms})"


def _sorted_ids(ids: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(ids))


@attrs.frozen(slots=True)
class MembershipView:
    """The replica set after a configuration change, as the machine sees it.

    Node ids are sorted, so the view is the same value on every replica.
    """

    voters: tuple[str, ...] = attrs.field(converter=_sorted_ids)
    learners: tuple[str, ...] = attrs.field(default=(), converter=_sorted_ids)

    @property
    def members(self) -> tuple[str, ...]:
        """Voters and learners together, sorted."""
        return tuple(sorted(self.voters + self.learners))


# ==========================================================================
# StateMachine
# ==========================================================================


class StateMachine:
    """Base class of in-memory replicated state machines.

    Subclass it, keep the state in instance attributes, and mark methods with
    `@command` and `@query`. The constructor takes no framework arguments (and
    need not call ``super().__init__()``). Machines whose state is plain data
    (instance attributes holding msgpack values and registered attrs values)
    get `snapshot`, `restore` and `digest` for free; others override
    `snapshot` and `restore` (and `digest` if their snapshot bytes are not
    deterministic).
    """

    __slots__ = ("__weakref__", "_rsm_context")
    _rsm_context: ApplyContext | None

    _rsm_commands: ClassVar[Mapping[str, MethodSpec]] = MappingProxyType({})
    _rsm_queries: ClassVar[Mapping[str, MethodSpec]] = MappingProxyType({})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        commands, queries = _build_tables(cls)
        cls._rsm_commands = MappingProxyType(commands)
        cls._rsm_queries = MappingProxyType(queries)

    register_type = staticmethod(register)

    @classmethod
    def commands(cls) -> Mapping[str, MethodSpec]:
        """The class's commands by name."""
        return cls._rsm_commands

    @classmethod
    def queries(cls) -> Mapping[str, MethodSpec]:
        """The class's queries by name."""
        return cls._rsm_queries

    @property
    def context(self) -> ApplyContext:
        """The `ApplyContext` of the command (or query) running now."""
        try:
            context = self._rsm_context
        except AttributeError:
            context = None
        if context is None:
            raise ContextUnavailable(
                "self.context is only available while a command, query or on_membership_change runs"
            )
        return context

    # -- hooks a machine may override -------------------------------------

    def on_membership_change(self, view: MembershipView) -> None:
        """Called when a configuration entry is applied: in log order, once per
        entry, on every replica, with `self.context` set, like a command (it
        may change state deterministically). Not called for configurations
        inside a restored snapshot: the restored state already reflects them.
        The default does nothing."""

    def snapshot(self, out: BinaryIO) -> None:
        """Write the whole state to `out`. The default encodes the instance
        attributes (plain data) and checks that they decode back, so a bad
        value fails now rather than at restore time."""
        data = _packb(_plain_state(self))
        try:
            _unpackb(data, _HOOKS_DEFAULT[0])
        except DecodeError as exc:
            raise TypeError(f"{type(self).__qualname__}: state does not decode back ({exc}); "
                            "use str/bytes/int dict keys or override snapshot/restore") from exc
        out.write(data)

    def restore(self, inp: BinaryIO) -> None:
        """Replace the whole state with what `snapshot` wrote to `inp`."""
        state = _unpackb(inp.read(), _HOOKS_DEFAULT[0])
        if not (type(state) is dict and all(type(k) is str for k in state)):
            raise SnapshotFormatError("plain-data state must be a map of attribute names")
        attributes = _plain_state(self)
        attributes.clear()
        attributes.update(state)

    def digest(self) -> str:
        """A hash of the state: equal states, equal digests. The default hashes
        the canonical encoding of the attributes, or the snapshot bytes if
        `snapshot` is overridden (which must then be deterministic)."""
        if type(self).snapshot is StateMachine.snapshot:
            data = canonical_bytes(_plain_state(self))
        else:
            buffer = io.BytesIO()
            self.snapshot(buffer)
            data = buffer.getvalue()
        return hashlib.blake2b(data, digest_size=16).hexdigest()

    # -- the host seam ----------------------------------------------------

    def _rsm_open_backend(self, path: str | os.PathLike[str] | None, settings: MachineSettings,
                          codec: _Codec) -> _Backend:
        """The storage backend a host drives; in-memory here, LMDB in
        `rsm.lmdb_machine`. `path` is ignored by in-memory machines."""
        return _MemoryBackend(self, settings, codec)


def _plain_state(machine: StateMachine) -> dict[str, Any]:
    try:
        return vars(machine)
    except TypeError:
        raise TypeError(f"{type(machine).__qualname__} has no instance __dict__: "
                        "override snapshot and restore") from None


# ==========================================================================
# Payloads: the command envelope
# ==========================================================================

ENVELOPE_VERSION: Final = 1


class PayloadKind(enum.IntEnum):
    """What a payload asks for. Commands and session entries go through the
    log (`MachineHost.apply`); queries go to `MachineHost.query`."""

    COMMAND = 0  # [1, 0, name, args, kwargs, session_id|nil, seq|nil, ack]
    QUERY = 1  # [1, 1, name, args, kwargs]
    REGISTER_SESSION = 2  # [1, 2]                 result: the session id
    KEEPALIVE = 3  # [1, 3, session_id]            result: nil
    CLOSE_SESSION = 4  # [1, 4, session_id]        result: whether it existed


_ARITY: Final = {0: 8, 1: 5, 2: 2, 3: 3, 4: 3}
_INT_END: Final = 1 << 63


@attrs.frozen
class Call:
    """A decoded payload (see `PayloadKind` for the fields each kind uses)."""

    kind: PayloadKind
    name: str = ""
    args: list[Any] = attrs.Factory(list)
    kwargs: dict[str, Any] = attrs.Factory(dict)
    session_id: int | None = None
    seq: int | None = None
    ack: int = 0


def _bad(message: str) -> DecodeError:
    return DecodeError(f"bad payload: {message}")


def _is_id(value: object) -> bool:
    return type(value) is int and 0 < value < _INT_END


def _validate_envelope(obj: Any) -> list[Any]:
    """Check the shape of a decoded payload; return it (a list)."""
    # The hot path first, in one expression: a command in a session with
    # positional arguments (what the client sends for every command). Any
    # other payload, well-formed or not, goes through the checks below.
    if (type(obj) is list and len(obj) == 8 and obj[0] == ENVELOPE_VERSION and type(obj[0]) is int
            and obj[1] == 0 and type(obj[1]) is int and type(obj[2]) is str and type(obj[3]) is list
            and type(obj[4]) is dict and not obj[4]
            and type(sid := obj[5]) is int and 0 < sid < _INT_END
            and type(seq := obj[6]) is int and 0 < seq < _INT_END
            and type(ack := obj[7]) is int and 0 <= ack < _INT_END):
        return obj
    return _check_envelope(obj)


def _check_envelope(obj: Any) -> list[Any]:
    """Every rule for every payload kind (`_validate_envelope` without its fast path)."""
    if type(obj) is not list or len(obj) < 2:
        raise _bad("not an array of at least 2")
    if obj[0] != ENVELOPE_VERSION or type(obj[0]) is not int:
        raise _bad(f"unknown envelope version {obj[0]!r:.20}")
    kind = obj[1]
    if type(kind) is not int or _ARITY.get(kind) != len(obj):
        raise _bad(f"unknown kind {kind!r:.20} or wrong length {len(obj)}")
    if kind <= PayloadKind.QUERY:
        _validate_call(obj)
    elif kind != PayloadKind.REGISTER_SESSION and not _is_id(obj[2]):
        raise _bad("session id must be an int in [1, 2**63)")
    return obj


def _validate_call(obj: list[Any]) -> None:
    if type(obj[2]) is not str or type(obj[3]) is not list or type(obj[4]) is not dict:
        raise _bad("a call is [version, kind, name: str, args: array, kwargs: map, ...]")
    if obj[4] and not all(type(k) is str for k in obj[4]):
        raise _bad("keyword argument names must be str")
    if obj[1] == PayloadKind.COMMAND:
        session_id, seq, ack = obj[5], obj[6], obj[7]
        if session_id is None and seq is None and ack == 0 and type(ack) is int:
            return
        if not (_is_id(session_id) and _is_id(seq) and type(ack) is int and 0 <= ack < _INT_END):
            raise _bad("session fields must be session_id >= 1, seq >= 1, ack >= 0 (or nil, nil, 0)")


def decode_call(payload: bytes | bytearray | memoryview, *,
                settings: MachineSettings = DEFAULT_SETTINGS) -> Call:
    """Decode and check a payload (strict: no pickle, no eval, bounded sizes).

    Raises `DecodeError`. It does not check that the method exists on any
    machine; the host does that (and `encode_call` on the client).
    """
    if len(payload) > settings.call_bytes_max:
        raise _bad(f"{len(payload)} bytes exceeds call_bytes_max={settings.call_bytes_max}")
    hooks = _HOOKS_DEFAULT if settings is DEFAULT_SETTINGS else _ext_hooks(settings.type_nesting_max)
    obj = _validate_envelope(_unpackb(payload, hooks[0]))
    kind = PayloadKind(obj[1])
    if kind == PayloadKind.COMMAND:
        return Call(kind, obj[2], obj[3], obj[4], obj[5], obj[6], obj[7])
    if kind == PayloadKind.QUERY:
        return Call(kind, obj[2], obj[3], obj[4])
    return Call(kind, session_id=obj[2] if len(obj) > 2 else None)


def payload_kind(payload: bytes | bytearray | memoryview) -> PayloadKind:
    """The kind of a payload from its first three bytes, without decoding it,
    so a replica can route it (log or read path). Raises `DecodeError`."""
    if len(payload) < 3 or not 0x92 <= payload[0] <= 0x98 or payload[1] != ENVELOPE_VERSION:
        raise _bad("not an rsm envelope")
    if payload[2] not in _ARITY:
        raise _bad(f"unknown kind {payload[2]}")
    return PayloadKind(payload[2])


def _method_spec(machine_cls: type[StateMachine], name: str) -> MethodSpec:
    if not (isinstance(machine_cls, type) and issubclass(machine_cls, StateMachine)):
        raise TypeError(f"encode_call: {machine_cls!r} is not a StateMachine subclass")
    spec = machine_cls._rsm_commands.get(name) or machine_cls._rsm_queries.get(name)
    if spec is None:
        known = sorted([*machine_cls._rsm_commands, *machine_cls._rsm_queries])
        raise UnknownMethod(f"{machine_cls.__qualname__} has no command or query {name!r}; it has {known}")
    return spec


def encode_call(machine_cls: type[StateMachine], name: str, args: Sequence[Any] = (),
                kwargs: Mapping[str, Any] | None = None, *, session_id: int | None = None,
                seq: int | None = None, ack: int = 0,
                settings: MachineSettings = DEFAULT_SETTINGS) -> bytes:
    """Encode a call of `machine_cls.name(*args, **kwargs)` for the replica.

    Every check the replica would make happens here first, so a bad call never
    leaves the client: `UnknownMethod`, `BadArguments` (does not bind to the
    signature, or session fields on a query), `UnencodableValue` (not
    msgpack data or a registered attrs value; the payload is also decoded back
    under the replica's limits), `CallTooLarge`. Commands may carry a session
    (`session_id`, `seq`, and `ack`: the lowest seq without a result yet).
    """
    spec = _method_spec(machine_cls, name)
    if isinstance(args, str | bytes | bytearray) or not isinstance(args, Sequence):
        raise BadArguments(f"args must be a list or tuple of positional arguments, got {type(args).__name__}")
    kwargs = dict(kwargs or {})
    spec.check_arguments(machine_cls, args, kwargs)
    if spec.kind == QUERY:
        if session_id is not None or seq is not None or ack:
            raise BadArguments(f"{name} is a query: queries take no session")
        obj: list[Any] = [ENVELOPE_VERSION, PayloadKind.QUERY.value, name, list(args), kwargs]
    else:
        obj = [ENVELOPE_VERSION, PayloadKind.COMMAND.value, name, list(args), kwargs, session_id, seq, ack]
    return _encode_checked(obj, settings, f"{machine_cls.__qualname__}.{name}", plain_call=True)


#: Encodes a plain int exactly as `_packb` does, without its per-call options.
_pack_int: Callable[[int], bytes] = msgpack.Packer(use_bin_type=True).pack
#: The session fields of the placeholder command `prepare_call` encodes
#: (session 1, seq 1, ack 0): three positive fixints, one byte each, at the end.
_PLACEHOLDER_SESSION = (1, 1, 0)
_FIXARRAY_8 = b"\x98"


@attrs.frozen(slots=True)
class PreparedCall:
    """A call checked and encoded once, for sending in any session.

    A client retries a command in a new session after an expiry, and sends
    every command with its session's current `ack`: only those three fields
    change between attempts, so the rest is encoded once (`head`, the
    envelope's first five fields) and they are appended per attempt.
    """

    kind: str  # COMMAND or QUERY
    head: bytes
    what: str
    call_bytes_max: int

    def payload(self, session_id: int | None = None, seq: int | None = None, ack: int = 0) -> bytes:
        """The payload to send: a query's, or a command's in this session."""
        if self.kind == QUERY:
            return b"\x95" + self.head
        if session_id is None and seq is None and ack == 0:
            tail = b"\xc0\xc0\x00"
        else:
            if not (type(session_id) is int and 0 < session_id < _INT_END and type(seq) is int
                    and 0 < seq < _INT_END and type(ack) is int and 0 <= ack < _INT_END):
                raise BadArguments("session fields must be session_id >= 1, seq >= 1, ack >= 0 (or nil, nil, 0)")
            tail = _pack_int(session_id) + _pack_int(seq) + _pack_int(ack)
        data = _FIXARRAY_8 + self.head + tail
        if len(data) > self.call_bytes_max:
            raise CallTooLarge(f"{self.what}: {len(data)} bytes exceeds call_bytes_max={self.call_bytes_max}")
        return data


def prepare_call(machine_cls: type[StateMachine], name: str, args: Sequence[Any] = (),
                 kwargs: Mapping[str, Any] | None = None, *,
                 settings: MachineSettings = DEFAULT_SETTINGS) -> PreparedCall:
    """Check and encode a call of `machine_cls.name(*args, **kwargs)` once.

    Raises what `encode_call` raises, before anything is sent; a command's
    session fields are added by `PreparedCall.payload`, which raises
    `CallTooLarge` if they tip it over `call_bytes_max`.
    """
    what = f"{machine_cls.__qualname__}.{name}"
    kind = _method_spec(machine_cls, name).kind
    if kind == QUERY:
        payload = encode_call(machine_cls, name, args, kwargs, settings=settings)
        return PreparedCall(kind, payload[1:], what, settings.call_bytes_max)
    payload = encode_call(machine_cls, name, args, kwargs, session_id=_PLACEHOLDER_SESSION[0],
                          seq=_PLACEHOLDER_SESSION[1], ack=_PLACEHOLDER_SESSION[2], settings=settings)
    return PreparedCall(kind, payload[1:-3], what, settings.call_bytes_max)


_SCALARS = (str, bytes, float, bool, type(None))
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


def _plain(value: Any, depth: int) -> bool:
    """Whether `value` is built only of msgpack scalars and lists/str-keyed maps,
    nested at most `depth` deep: such a value decodes back as it was encoded."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is int:
        return bool(_INT64_MIN <= value <= _UINT64_MAX)
    if depth <= 0:
        return False
    if kind is list or kind is tuple:
        return all(_plain(v, depth - 1) for v in value)
    if kind is dict:
        return all(type(k) is str and _plain(v, depth - 1) for k, v in value.items())
    return False


def _encode_checked(obj: list[Any], settings: MachineSettings, what: str, plain_call: bool = False) -> bytes:
    try:
        payload = _packb(obj)
    except (TypeError, ValueError, OverflowError) as exc:
        raise UnencodableValue(f"{what}: {exc}") from None
    if len(payload) > settings.call_bytes_max:
        raise CallTooLarge(f"{what}: {len(payload)} bytes exceeds call_bytes_max={settings.call_bytes_max}")
    if plain_call and _plain(obj[3], 3) and _plain(obj[4], 3):
        # Arguments made of scalars and shallow containers always decode back
        # as they were; only the envelope needs checking (the client's hot path).
        try:
            _validate_call(obj)
        except DecodeError as exc:
            raise UnencodableValue(f"{what}: {exc}") from None
        return payload
    try:
        decode_call(payload, settings=settings)
    except DecodeError as exc:
        raise UnencodableValue(f"{what}: the encoding does not decode back: {exc}") from None
    return payload


def encode_register_session() -> bytes:
    """A payload that registers a session; its result is the new session id."""
    return _packb([ENVELOPE_VERSION, PayloadKind.REGISTER_SESSION.value])


def encode_keepalive(session_id: int) -> bytes:
    """A payload that keeps an idle session from expiring."""
    _check_session_id(session_id)
    return _packb([ENVELOPE_VERSION, PayloadKind.KEEPALIVE.value, session_id])


def encode_close_session(session_id: int) -> bytes:
    """A payload that forgets a session (its remembered results too)."""
    _check_session_id(session_id)
    return _packb([ENVELOPE_VERSION, PayloadKind.CLOSE_SESSION.value, session_id])


def _check_session_id(session_id: object) -> None:
    if not _is_id(session_id):
        raise BadArguments(f"session id must be an int in [1, 2**63), got {session_id!r}")


# ==========================================================================
# Results
# ==========================================================================

RESULT_OK: Final = 0
RESULT_ERROR: Final = 1


def decode_result(payload: bytes | bytearray | memoryview, *,
                  settings: MachineSettings = DEFAULT_SETTINGS) -> Any:
    """The value a command or query returned, or raise what it raised:
    `SessionExpired`, `StaleSequence`, `QueryMutatedState`, otherwise
    `CommandError` (with the original type name and message)."""
    hooks = _HOOKS_DEFAULT if settings is DEFAULT_SETTINGS else _ext_hooks(settings.type_nesting_max)
    obj = _unpackb(payload, hooks[0])
    if type(obj) is list and len(obj) == 2 and obj[0] == RESULT_OK:
        return obj[1]
    if type(obj) is list and len(obj) == 3 and obj[0] == RESULT_ERROR and type(obj[1]) is str and type(obj[2]) is str:
        factory = _RESULT_ERRORS.get(obj[1])
        raise factory(obj[2]) if factory else CommandError(obj[1], obj[2])
    raise DecodeError("bad result: expected [0, value] or [1, type_name, message]")


class _Codec:
    """Per-host encoding state: one reusable packer and the ext hooks."""

    def __init__(self, settings: MachineSettings) -> None:
        self.settings = settings
        self._pack = msgpack.Packer(default=_default, use_bin_type=True, strict_types=True).pack
        self._hook = _ext_hooks(settings.type_nesting_max)[0]

    def decode_envelope(self, payload: bytes) -> list[Any]:
        if len(payload) > self.settings.call_bytes_max:
            raise _bad(f"{len(payload)} bytes exceeds call_bytes_max={self.settings.call_bytes_max}")
        return _validate_envelope(_unpackb(payload, self._hook))

    def ok(self, value: object) -> bytes:
        """Encode a result; raise CommandError if it cannot be sent back."""
        try:
            data: bytes = self._pack([RESULT_OK, value])
        except (TypeError, ValueError, OverflowError) as exc:
            raise CommandError("rsm.UnencodableResult", str(exc)) from None
        if len(data) > self.settings.result_bytes_max:
            raise CommandError("rsm.ResultTooLarge",
                               f"{len(data)} bytes exceeds result_bytes_max={self.settings.result_bytes_max}")
        return data

    def error(self, type_name: str, message: str) -> bytes:
        data: bytes = self._pack([RESULT_ERROR, type_name, message[: self.settings.error_message_chars_max]])
        return data

    def exception(self, exc: BaseException) -> bytes:
        """The error result for `exc`. Its message must be deterministic."""
        if isinstance(exc, CommandError):
            return self.error(exc.type_name, exc.message)
        if isinstance(exc, SessionError):
            return self.error(exc.type_name, str(exc))
        try:
            message = str(exc)
        except Exception:
            message = "<unprintable>"
        return self.error(_type_name(type(exc)), message)


# ==========================================================================
# Snapshot container
# ==========================================================================
#
#   header   magic "RSMMACH\n" | version u16 | kind u8 | 0 u8 | applied_index u64
#            | applied_term u64 | sessions_len u32 | sessions | crc32 u32 (of all before)
#   chunks   length u32 | crc32 u32 | data        (repeated; length 0 ends the stream)
#
# The machine's own bytes travel in the chunks, so it can stream any amount
# without knowing the length up front, and every byte it reads back has been
# checked. Integers are big-endian.

SNAPSHOT_MAGIC: Final = b"RSMMACH\n"
SNAPSHOT_VERSION: Final = 1
SNAPSHOT_KIND_MEMORY: Final = 0
SNAPSHOT_KIND_LMDB: Final = 1
_CONTAINER = struct.Struct(">8sHBBQQI")
_U32 = struct.Struct(">I")
_CHUNK = struct.Struct(">II")
#: Largest session table accepted in a snapshot header (a sanity bound).
SESSIONS_BYTES_LIMIT: Final = 1 << 31


@attrs.frozen
class _ContainerHeader:
    kind: int
    applied_index: int
    applied_term: int
    sessions: bytes


class _ChunkWriter(io.RawIOBase):
    """A write-only stream that frames what is written into checked chunks."""

    def __init__(self, out: BinaryIO, chunk_bytes: int) -> None:
        self._out = out
        self._chunk_bytes = chunk_bytes
        self._buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._buffer += view
        while len(self._buffer) >= self._chunk_bytes:
            self._emit(bytes(self._buffer[: self._chunk_bytes]))
            del self._buffer[: self._chunk_bytes]
        return len(view)

    def finish(self) -> None:
        if self._buffer:
            self._emit(bytes(self._buffer))
            self._buffer.clear()
        self._out.write(_CHUNK.pack(0, 0))

    def _emit(self, chunk: bytes) -> None:
        self._out.write(_CHUNK.pack(len(chunk), zlib.crc32(chunk)))
        self._out.write(chunk)


class _ChunkReader(io.RawIOBase):
    """A read-only stream over the chunks of a container; verifies each."""

    def __init__(self, inp: BinaryIO) -> None:
        self._inp = inp
        self._chunk = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._chunk and not self._done:
            self._next_chunk()
        n = min(len(buffer), len(self._chunk))
        buffer[:n] = self._chunk[:n]
        self._chunk = self._chunk[n:]
        return n

    def drain(self) -> None:
        """Read (and verify) to the end marker, whatever the machine left."""
        while not self._done:
            self._next_chunk()
        self._chunk = memoryview(b"")

    def _next_chunk(self) -> None:
        length, crc = _CHUNK.unpack(_read_exact(self._inp, _CHUNK.size))
        if length == 0:
            self._done = True
            return
        if length > SNAPSHOT_CHUNK_BYTES_LIMIT:
            raise SnapshotFormatError(f"snapshot chunk of {length} bytes exceeds the limit")
        data = _read_exact(self._inp, length)
        if zlib.crc32(data) != crc:
            raise SnapshotFormatError("snapshot chunk checksum mismatch")
        self._chunk = memoryview(data)


def _read_exact(inp: BinaryIO, n: int) -> bytes:
    data = inp.read(n)
    if data is None or len(data) != n:
        raise SnapshotFormatError(f"snapshot truncated (wanted {n} bytes, got {len(data or b'')})")
    return data


def _write_container(out: BinaryIO, header: _ContainerHeader, chunk_bytes: int,
                     write_user: Callable[[BinaryIO], None]) -> None:
    fixed = _CONTAINER.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, header.kind, 0, header.applied_index,
                            header.applied_term, len(header.sessions))
    body = fixed + header.sessions
    out.write(body + _U32.pack(zlib.crc32(body)))
    writer = _ChunkWriter(out, chunk_bytes)
    write_user(writer)  # type: ignore[arg-type]
    writer.finish()


def _read_container(inp: BinaryIO, kind: int) -> tuple[_ContainerHeader, _ChunkReader]:
    fixed = _read_exact(inp, _CONTAINER.size)
    magic, version, got_kind, _, applied_index, applied_term, sessions_len = _CONTAINER.unpack(fixed)
    if magic != SNAPSHOT_MAGIC:
        raise SnapshotFormatError("not an rsm machine snapshot (bad magic)")
    if version != SNAPSHOT_VERSION:
        raise SnapshotFormatError(f"machine snapshot version {version} is not {SNAPSHOT_VERSION}")
    if got_kind != kind:
        raise SnapshotFormatError(f"snapshot of machine kind {got_kind}, this machine is kind {kind}")
    if sessions_len > SESSIONS_BYTES_LIMIT:
        raise SnapshotFormatError("session table too large")
    sessions = _read_exact(inp, sessions_len)
    (crc,) = _U32.unpack(_read_exact(inp, _U32.size))
    if zlib.crc32(fixed + sessions) != crc:
        raise SnapshotFormatError("snapshot header checksum mismatch")
    return _ContainerHeader(kind, applied_index, applied_term, sessions), _ChunkReader(inp)


def _decode_sessions(data: bytes, settings: MachineSettings, *, track_changes: bool = False) -> SessionTable:
    try:
        return SessionTable.decode(data, settings.sessions, track_changes=track_changes)
    except ValueError as exc:
        raise SnapshotFormatError(f"bad session table in snapshot: {exc}") from exc


# ==========================================================================
# Backends: where the state lives
# ==========================================================================


class _Backend:
    """The seam between `MachineHost` and a kind of machine storage.

    The host owns the session table and the applied index; a backend runs
    user code with the right rollback rules and persists what must be
    persisted. `load` returns the durable (applied_index, applied_term,
    sessions); `begin_batch`/`commit_batch`/`abort_batch` bracket
    `apply_batch`; `run_command` and `run_query` return encoded results.
    """

    machine: StateMachine
    #: Whether an aborted batch leaves the durable state untouched, so the
    #: host can reload it (LMDB); in-memory state cannot be reverted.
    durable: ClassVar[bool] = False

    def load(self) -> tuple[int, int, SessionTable]:
        raise NotImplementedError

    def begin_batch(self) -> None:
        """Start a batch (the LMDB backend opens its write transaction)."""

    def commit_batch(self, applied_index: int, applied_term: int, sessions: SessionTable) -> None:
        """Make the batch's effects durable (LMDB: commit and fsync)."""

    def abort_batch(self) -> None:
        """Give up the batch after an exception (LMDB: abort its transaction)."""

    def grow(self) -> None:
        """Make room after `_MapFull`; raise if no more room can be made."""
        raise NotImplementedError

    def run_command(self, func: Callable[..., Any], args: list[Any], kwargs: dict[str, Any],
                    context: ApplyContext) -> bytes:
        raise NotImplementedError

    def run_query(self, func: Callable[..., Any], args: list[Any], kwargs: dict[str, Any],
                  context: ApplyContext) -> bytes:
        raise NotImplementedError

    def snapshot(self, out: BinaryIO, host: MachineHost) -> None:
        raise NotImplementedError

    def restore(self, inp: BinaryIO) -> tuple[int, int, SessionTable]:
        raise NotImplementedError

    def user_digest(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (LMDB: close the environment)."""


class _MapFull(Exception):
    """Internal: the LMDB map filled during a batch; grow it and redo the batch."""


_MISSING = object()


class _MemoryBackend(_Backend):
    """Backend of in-memory machines: state is the Python object itself.

    There is no rollback: a command that raises keeps whatever it mutated
    (deterministically, on every replica).
    """

    def __init__(self, machine: StateMachine, settings: MachineSettings, codec: _Codec) -> None:
        self.machine = machine
        self.settings = settings
        self.codec = codec
        self._check = settings.query_mutation_check

    def load(self) -> tuple[int, int, SessionTable]:
        return 0, 0, SessionTable(self.settings.sessions)

    def run_command(self, func: Callable[..., Any], args: list[Any], kwargs: dict[str, Any],
                    context: ApplyContext) -> bytes:
        machine = self.machine
        machine._rsm_context = context
        try:
            return self.codec.ok(func(machine, *args, **kwargs))
        except _FATAL:
            raise
        except Exception as exc:
            return self.codec.exception(exc)
        finally:
            machine._rsm_context = None

    def run_query(self, func: Callable[..., Any], args: list[Any], kwargs: dict[str, Any],
                  context: ApplyContext) -> bytes:
        state = getattr(self.machine, "__dict__", None)
        before = dict(state) if self._check == "shallow" and state is not None else None
        snapshot = self._user_bytes() if self._check == "full" else None
        result = self.run_command(func, args, kwargs, context)
        if before is not None and state is not None and _rebound(before, state):
            state.clear()
            state.update(before)
            return self.codec.exception(QueryMutatedState(f"query {func.__name__} rebound machine attributes"))
        if snapshot is not None and self._user_bytes() != snapshot:
            self.machine.restore(io.BytesIO(snapshot))
            return self.codec.exception(QueryMutatedState(f"query {func.__name__} changed the machine's snapshot"))
        return result

    def _user_bytes(self) -> bytes:
        buffer = io.BytesIO()
        self.machine.snapshot(buffer)
        return buffer.getvalue()

    def snapshot(self, out: BinaryIO, host: MachineHost) -> None:
        header = _ContainerHeader(SNAPSHOT_KIND_MEMORY, host.applied_index, host.applied_term,
                                  host.sessions.encode())
        _write_container(out, header, self.settings.snapshot_chunk_bytes, self.machine.snapshot)

    def restore(self, inp: BinaryIO) -> tuple[int, int, SessionTable]:
        header, reader = _read_container(inp, SNAPSHOT_KIND_MEMORY)
        sessions = _decode_sessions(header.sessions, self.settings)
        self.machine.restore(cast(BinaryIO, io.BufferedReader(reader)))
        reader.drain()
        return header.applied_index, header.applied_term, sessions

    def user_digest(self) -> str:
        return self.machine.digest()


def _rebound(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether any attribute was added, removed or bound to another object."""
    if len(before) != len(after):
        return True
    return any(after.get(name, _MISSING) is not value for name, value in before.items())


# ==========================================================================
# MachineHost
# ==========================================================================

#: One committed entry for `apply_batch`: (index, term, timestamp_ms or None,
#: payload). The payload is the command bytes, a `MembershipView` for a
#: configuration entry, or None for an entry with nothing to apply (a leader's
#: no-op), which only advances the applied index.
BatchItem = tuple[int, int, int | None, bytes | MembershipView | None]


class MachineHost:
    """What a replica drives: applies committed entries, serves queries, takes
    and restores snapshots, reports the applied index and the state digest.

    Contract with the replica:

    - Entries are applied in log order with no gaps: the first `apply*` call
      after construction (or `restore`) is for ``applied_index + 1``. An LMDB
      machine reopened after a restart resumes from its durable applied index.
    - `timestamp_ms` is the leader's clock in int milliseconds, stored in the
      entry at proposal time (None for entries without one, e.g. no-ops).
    - `apply_batch` applies several entries at once; an LMDB machine commits
      and fsyncs them in one transaction. Results are returned in order
      (None for no-op entries).
    - Queries are served between batches, after the replica has made sure
      (ReadIndex) that `applied_index` is recent enough.
    - Not thread-safe, except that an LMDB machine's `snapshot` may run in
      another thread while this one applies.
    """

    def __init__(self, machine: StateMachine, *, path: str | os.PathLike[str] | None = None,
                 settings: MachineSettings | None = None) -> None:
        if not isinstance(machine, StateMachine):
            raise TypeError(f"MachineHost needs a StateMachine instance, got {machine!r}")
        self.settings = (settings or DEFAULT_SETTINGS).validate()
        self.machine = machine
        self._commands = type(machine)._rsm_commands
        self._queries = type(machine)._rsm_queries
        self._codec = _Codec(self.settings)
        self._ok_none = self._codec.ok(None)
        self._backend = machine._rsm_open_backend(path, self.settings, self._codec)
        self._load()

    def _load(self) -> None:
        self._applied_index, self._applied_term, self.sessions = self._backend.load()

    @property
    def applied_index(self) -> int:
        """Index of the last applied entry (durable for LMDB machines)."""
        return self._applied_index

    @property
    def applied_term(self) -> int:
        """Term of the last applied entry."""
        return self._applied_term

    @property
    def clock_ms(self) -> int:
        """The replicated clock: the largest leader timestamp applied so far."""
        return self.sessions.clock_ms

    # -- applying ---------------------------------------------------------

    def apply(self, index: int, term: int, timestamp_ms: int | None, payload: bytes) -> bytes:
        """Apply one committed command entry; return its encoded result."""
        result = self.apply_batch([(index, term, timestamp_ms, payload)])[0]
        assert result is not None
        return result

    def skip(self, index: int, term: int) -> None:
        """Advance over an entry with nothing to apply (a leader's no-op)."""
        self.apply_batch([(index, term, None, None)])

    def apply_membership(self, index: int, term: int, timestamp_ms: int | None,
                         voters: Iterable[str], learners: Iterable[str] = ()) -> bytes | None:
        """Apply a configuration entry: calls `on_membership_change`. Returns
        None, or an error result if the callback raised."""
        return self.apply_batch([(index, term, timestamp_ms, MembershipView(voters, learners))])[0]

    def apply_batch(self, items: Sequence[BatchItem]) -> list[bytes | None]:
        """Apply consecutive committed entries; return their results in order."""
        items = items if isinstance(items, list) else list(items)
        if not items:
            return []
        while True:
            try:
                return self._apply_batch_once(items)
            except _MapFull:
                # LMDB only: the batch was aborted and the durable state
                # reloaded. Redo it with more room; apply is deterministic, so
                # the results are the same ones.
                self._backend.grow()

    def _apply_batch_once(self, items: list[BatchItem]) -> list[bytes | None]:
        backend = self._backend
        backend.begin_batch()
        try:
            apply_one = self._apply_one
            results = [apply_one(index, term, ts, payload) for index, term, ts, payload in items]
            backend.commit_batch(self._applied_index, self._applied_term, self.sessions)
        except BaseException:
            backend.abort_batch()
            if backend.durable:  # the applied index and sessions go back too
                self._load()
            raise
        return results

    def _apply_one(self, index: int, term: int, timestamp_ms: int | None,
                   payload: bytes | MembershipView | None) -> bytes | None:
        # Checked before calling invariant() so the hot path formats no message.
        if index != self._applied_index + 1 or term < self._applied_term:
            invariant(False, f"apply ({index}, term {term}) after ({self._applied_index}, term "
                             f"{self._applied_term}): entries must be consecutive, terms must not decrease")
        if timestamp_ms is None:
            clock_ms = self.sessions.clock_ms
        else:
            if type(timestamp_ms) is not int or timestamp_ms < 0:
                invariant(False, f"bad timestamp_ms {timestamp_ms!r}")
            clock_ms = self.sessions.advance_clock(timestamp_ms)
        if payload is None:
            result = None
        elif type(payload) is MembershipView:
            result = self._membership(index, term, clock_ms, payload)
        else:
            result = self._dispatch(index, term, clock_ms, payload)  # type: ignore[arg-type]
        self._applied_index = index
        self._applied_term = term
        return result

    def _dispatch(self, index: int, term: int, clock_ms: int, payload: bytes) -> bytes:
        codec = self._codec
        try:
            envelope = codec.decode_envelope(payload)
        except DecodeError as exc:
            return codec.error("rsm.DecodeError", str(exc))
        kind = envelope[1]
        if kind == PayloadKind.COMMAND:
            return self._command(index, term, clock_ms, envelope)
        try:
            if kind == PayloadKind.REGISTER_SESSION:
                return codec.ok(self.sessions.register(index))
            if kind == PayloadKind.KEEPALIVE:
                self.sessions.keepalive(envelope[2], index)
                return codec.ok(None)
            if kind == PayloadKind.CLOSE_SESSION:
                return codec.ok(self.sessions.close(envelope[2]))
        except SessionError as exc:
            return codec.exception(exc)
        return codec.error("rsm.NotACommand", f"{envelope[2]!r} is a query: send it to the read path")

    def _command(self, index: int, term: int, clock_ms: int, envelope: list[Any]) -> bytes:
        _, _, name, args, kwargs, session_id, seq, ack = envelope
        spec = self._commands.get(name)
        if spec is None:
            return self._codec.error("rsm.UnknownMethod", f"no command {name!r:.100}")
        if session_id is not None:
            try:
                cached = self.sessions.lookup(session_id, seq, ack, index)
            except SessionError as exc:
                return self._codec.exception(exc)
            if cached is not None:
                return cached
        result = self._backend.run_command(spec.function, args, kwargs, ApplyContext(index, term, clock_ms))
        if session_id is not None:
            self.sessions.record(session_id, seq, result)
        return result

    def _membership(self, index: int, term: int, clock_ms: int, view: MembershipView) -> bytes | None:
        callback = type(self.machine).on_membership_change
        if callback is StateMachine.on_membership_change:
            return None
        result = self._backend.run_command(callback, [view], {}, ApplyContext(index, term, clock_ms))
        return None if result == self._ok_none else result

    # -- reading ----------------------------------------------------------

    def query(self, payload: bytes, *, timestamp_ms: int | None = None) -> bytes:
        """Run a query payload against the current state; return its encoded
        result. `timestamp_ms` is the read time the query's context shows (the
        state's clock if later or None); pass the time the read was requested
        so that time-based state (TTLs) looks current on an idle cluster."""
        codec = self._codec
        try:
            envelope = codec.decode_envelope(payload)
        except DecodeError as exc:
            return codec.error("rsm.DecodeError", str(exc))
        if envelope[1] != PayloadKind.QUERY:
            return codec.error("rsm.NotAQuery", "only query payloads go to the read path")
        _, _, name, args, kwargs = envelope
        spec = self._queries.get(name)
        if spec is None:
            return codec.error("rsm.UnknownMethod", f"no query {name!r:.100}")
        clock_ms = max(self.sessions.clock_ms, timestamp_ms or 0)
        context = ApplyContext(self._applied_index, self._applied_term, clock_ms, is_query=True)
        return self._backend.run_query(spec.function, args, kwargs, context)

    # -- snapshots and digests ------------------------------------------------

    def snapshot(self, out: BinaryIO) -> None:
        """Write a snapshot of the state at `applied_index` to `out`."""
        self._backend.snapshot(out, self)

    def restore(self, inp: BinaryIO) -> None:
        """Replace the whole state (sessions and applied index included) with
        a snapshot. If it raises, the machine is in an undefined state: build
        a new machine and host and restore again."""
        self._applied_index, self._applied_term, self.sessions = self._backend.restore(inp)

    def digest(self) -> str:
        """A hex hash of the replicated state: the machine's state, the session
        table and its settings. Replicas at the same applied index must agree."""
        h = hashlib.blake2b(digest_size=16, person=b"rsm.digest.v1")
        h.update(self.sessions.digest())
        h.update(self._backend.user_digest().encode())
        return h.hexdigest()

    def close(self) -> None:
        """Release the machine's resources (the LMDB environment)."""
        self._backend.close()

    def __enter__(self) -> MachineHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
