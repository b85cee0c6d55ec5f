"""Decorators, method tables, encode_call/decode_call, registered types, context."""

from __future__ import annotations

import inspect
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.counter.machine import Counter
from rsm.codec import DecodeError
from rsm.errors import ConfigError
from rsm.statemachine import (
    ApplyContext,
    BadArguments,
    CallTooLarge,
    ContextUnavailable,
    MachineHost,
    MachineSettings,
    PayloadKind,
    StateMachine,
    UnencodableValue,
    UnknownMethod,
    canonical_bytes,
    command,
    decode_call,
    decode_result,
    decode_value,
    encode_call,
    encode_close_session,
    encode_keepalive,
    encode_register_session,
    encode_value,
    payload_kind,
    prepare_call,
    query,
    register,
)

from .machines import Account, Point, Shape, Unregistered

# -- decorators and method tables ---------------------------------------------


def test_method_tables_built_at_class_creation() -> None:
    assert ["increment"] == list(Counter.commands())
    assert ["get"] == list(Counter.queries())
    spec = Counter.commands()["increment"]
    assert "command" == spec.kind
    assert ["by"] == list(spec.signature.parameters)


def test_tables_are_inherited_and_overridable() -> None:
    class Base(StateMachine):
        @command
        def a(self) -> int:
            return 1

        @query
        def b(self) -> int:
            return 2

    class Child(Base):
        @command
        def b(self) -> int:  # type: ignore[override]
            return 3

        def a(self) -> int:  # overriding without a decorator: no longer a command
            return 4

    assert ["b"] == list(Child.commands())
    assert [] == list(Child.queries())
    assert ["a"] == list(Base.commands())


@pytest.mark.parametrize("name", ["snapshot", "context", "_private", "digest"])
def test_reserved_and_private_names_are_refused(name: str) -> None:
    def method(self: Any) -> None:
        return None

    method.__name__ = name
    with pytest.raises(TypeError, match="reserved"):
        type("Bad", (StateMachine,), {name: command(method)})


def test_decorator_misuse() -> None:
    with pytest.raises(TypeError):
        command(staticmethod(lambda: 1))  # type: ignore[arg-type]

    async def coroutine(self: Any) -> None:
        return None

    with pytest.raises(TypeError, match="plain function"):
        command(coroutine)

    def both(self: Any) -> None:
        return None

    with pytest.raises(TypeError, match="both"):
        query(command(both))

    with pytest.raises(TypeError, match="instance methods"):
        class Static(StateMachine):
            @staticmethod
            @command
            def s() -> None:  # type: ignore[misc]
                return None


# -- encode_call rejections: before anything is sent ----------------------------


def test_unknown_method_is_rejected() -> None:
    with pytest.raises(UnknownMethod, match="nope"):
        encode_call(Counter, "nope")
    with pytest.raises(UnknownMethod):
        encode_call(Counter, "snapshot")  # a method, but neither command nor query


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(BadArguments, match="increment"):
        encode_call(Counter, "increment", [1, 2])
    with pytest.raises(BadArguments):
        encode_call(Counter, "increment", [], {"amount": 1})
    with pytest.raises(BadArguments, match="list or tuple"):
        encode_call(Counter, "increment", "1")  # type: ignore[arg-type]
    with pytest.raises(BadArguments, match="no session"):
        encode_call(Counter, "get", session_id=1, seq=1)


@pytest.mark.parametrize("value", [{1, 2}, object(), Unregistered(1), 2**64, {(1, 2): 3}, complex(1, 2)])
def test_unencodable_values_are_rejected(value: object) -> None:
    with pytest.raises(UnencodableValue):
        encode_call(Counter, "increment", [value])


def test_unregistered_class_error_names_it() -> None:
    with pytest.raises(UnencodableValue, match="Unregistered"):
        encode_call(Account, "add_shape", [Unregistered(1)])


def test_call_size_limit_at_and_past_the_limit() -> None:
    base = len(encode_call(Counter, "increment", [b""]))
    settings = MachineSettings(call_bytes_max=base + 300)
    # bin8 holds up to 255 bytes (2 header bytes), bin16 adds one more header byte.
    at_limit = encode_call(Counter, "increment", [b"x" * 255], settings=settings)
    fill = settings.call_bytes_max - len(at_limit) + 255 - 1
    exactly = encode_call(Counter, "increment", [b"x" * fill], settings=settings)
    assert settings.call_bytes_max == len(exactly)
    with pytest.raises(CallTooLarge):
        encode_call(Counter, "increment", [b"x" * (fill + 1)], settings=settings)
    with pytest.raises(DecodeError, match="call_bytes_max"):
        decode_call(exactly + b"", settings=MachineSettings(call_bytes_max=len(exactly) - 1))


def test_session_fields_are_checked() -> None:
    for fields in ({"session_id": 0, "seq": 1}, {"session_id": 1}, {"session_id": 1, "seq": 1, "ack": -1}):
        with pytest.raises(UnencodableValue):
            encode_call(Counter, "increment", **fields)  # type: ignore[arg-type]


# -- decode_call and payload kinds ----------------------------------------------


def test_decode_call_round_trip() -> None:
    payload = encode_call(Counter, "increment", [], {"by": 3}, session_id=5, seq=2, ack=1)
    call = decode_call(payload)
    assert (PayloadKind.COMMAND, "increment", [], {"by": 3}, 5, 2, 1) == (
        call.kind, call.name, call.args, call.kwargs, call.session_id, call.seq, call.ack)
    assert PayloadKind.COMMAND == payload_kind(payload)
    assert PayloadKind.QUERY == payload_kind(encode_call(Counter, "get"))
    assert PayloadKind.REGISTER_SESSION == payload_kind(encode_register_session())
    assert 9 == decode_call(encode_keepalive(9)).session_id
    assert PayloadKind.CLOSE_SESSION == decode_call(encode_close_session(9)).kind


@pytest.mark.parametrize("obj", [
    [], [1], [2, 2], [1, 9], [1, 0, "a", [], {}, None, None], [1, True, "a", [], {}],
    [1, 1, 1, [], {}], [1, 1, "a", {}, {}], [1, 1, "a", [], []], [1, 1, "a", [], {1: 2}],
    [1, 0, "a", [], {}, 1, None, 0], [1, 0, "a", [], {}, 1, 1, -1], [1, 3, 0], [1, 3, "x"],
    [1, 0, "a", [], {}, None, None, 1], [True, 2],
])
def test_decode_call_rejects_malformed(obj: object) -> None:
    with pytest.raises(DecodeError):
        decode_call(msgpack.packb(obj))


def test_decode_rejects_non_msgpack_and_unknown_ext() -> None:
    for bad in (b"", b"\xc1", b"\x92\x01", msgpack.packb([1, 1, "a", [msgpack.ExtType(5, b"")], {}])):
        with pytest.raises(DecodeError):
            decode_call(bad)
    with pytest.raises(DecodeError):
        payload_kind(b"\x81\x01\x00")


def test_decode_rejects_unknown_tag_and_wrong_arity() -> None:
    bad_tag = msgpack.ExtType(82, msgpack.packb(["no.such.Tag", 1]))
    wrong_arity = msgpack.ExtType(82, msgpack.packb(["tests.Point", 1]))
    for ext in (bad_tag, wrong_arity):
        with pytest.raises(DecodeError):
            decode_call(msgpack.packb([1, 1, "a", [ext], {}]))


def test_nesting_limit() -> None:
    nested: object = msgpack.ExtType(82, msgpack.packb(["tests.Point", 1, 2]))
    for _ in range(3):
        nested = msgpack.ExtType(82, msgpack.packb(["tests.Shape", "s", [nested]]))
    payload = msgpack.packb([1, 1, "a", [nested], {}])
    decode_call(payload, settings=MachineSettings(type_nesting_max=4))
    with pytest.raises(DecodeError, match="deeper"):
        decode_call(payload, settings=MachineSettings(type_nesting_max=3))


# -- registered types --------------------------------------------------------------


def test_registered_attrs_round_trip() -> None:
    shape = Shape("tri", [Point(0, 0), Point(1, 0), Point(0, 1)])
    assert shape == decode_value(encode_value(shape))
    call = decode_call(encode_call(Account, "add_shape", [shape]))
    assert [shape] == call.args
    host = MachineHost(Account())
    result = decode_result(host.apply(1, 1, 5, encode_call(Account, "add_shape", [shape])))
    assert shape == result


def test_register_errors() -> None:
    with pytest.raises(TypeError, match="attrs"):
        register(int)
    with pytest.raises(TypeError, match="already names"):
        register(Unregistered, tag="tests.Point")

    import attrs

    @attrs.define
    class NoInit:
        x: int = attrs.field(init=False, default=0)

    with pytest.raises(TypeError, match="not __init__"):
        register(NoInit)
    assert Point is register(Point, tag="tests.Point")  # idempotent


def test_canonical_bytes_ignore_insertion_order() -> None:
    a = {"x": 1, "y": {2: [Point(1, 2)], 1: None}}
    b = {"y": {1: None, 2: [Point(1, 2)]}, "x": 1}
    assert canonical_bytes(a) == canonical_bytes(b)
    assert canonical_bytes(a) != canonical_bytes({"x": 2, "y": {}})


# -- settings -------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "ok", "bad"), [
    ("call_bytes_max", 64, 63), ("result_bytes_max", 64, 63), ("type_nesting_max", 1000, 1001),
    ("error_message_chars_max", 16, 15), ("snapshot_chunk_bytes", 64 << 20, (64 << 20) + 1),
    ("lmdb_map_size_initial_bytes", 1 << 20, (1 << 20) - 1), ("query_mutation_check", "full", "always"),
    ("lmdb_restore_txn_bytes", 1, 0),
])
def test_settings_limits(name: str, ok: object, bad: object) -> None:
    MachineSettings(**{name: ok}).validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=name):
        MachineSettings(**{name: bad}).validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="lmdb_map_size_max_bytes"):
        MachineSettings(lmdb_map_size_initial_bytes=2 << 20, lmdb_map_size_max_bytes=1 << 20).validate()


# -- the context ---------------------------------------------------------------------------


def test_context_values_and_seeded_rng() -> None:
    a, b = MachineHost(Account()), MachineHost(Account())
    payload = encode_call(Account, "stamp")
    ra = decode_result(a.apply(1, 3, 1234, payload))
    rb = decode_result(b.apply(1, 3, 1234, payload))
    assert ra[:3] == [1, 3, 1234]
    assert ra == rb  # same entry, same random draw
    assert ra[3] != decode_result(a.apply(2, 3, 1234, payload))[3]  # another entry, another seed
    expected = ApplyContext(1, 3, 1234).random.randrange(1 << 30)
    assert expected == ra[3]


def test_context_timestamp_never_decreases() -> None:
    host = MachineHost(Account())
    payload = encode_call(Account, "stamp")
    assert 2000 == decode_result(host.apply(1, 1, 2000, payload))[2]
    assert 2000 == decode_result(host.apply(2, 2, 1500, payload))[2]  # a leader whose clock is behind
    assert 2000 == decode_result(host.apply(3, 2, None, payload))[2]


def test_context_outside_a_command_raises() -> None:
    machine = Account()
    with pytest.raises(ContextUnavailable, match="only available"):
        _ = machine.context
    host = MachineHost(machine)
    host.apply(1, 1, 5, encode_call(Account, "stamp"))
    with pytest.raises(ContextUnavailable):
        _ = machine.context


def test_query_context_is_read_only() -> None:
    host = MachineHost(Account())
    host.apply(1, 1, 500, encode_call(Account, "deposit", [1]))
    assert [1, 500] == decode_result(host.query(encode_call(Account, "when")))
    assert [1, 900] == decode_result(host.query(encode_call(Account, "when"), timestamp_ms=900))
    with pytest.raises(ContextUnavailable):
        _ = ApplyContext(1, 1, 1, is_query=True).random


def test_no_inspect_on_the_hot_path(monkeypatch: pytest.MonkeyPatch) -> None:
    host = MachineHost(Counter())
    payload = encode_call(Counter, "increment", [1])

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("inspect used while applying")

    monkeypatch.setattr(inspect, "signature", forbidden)
    monkeypatch.setattr(inspect.Signature, "bind", forbidden)
    assert 1 == decode_result(host.apply(1, 1, 1, payload))


# -- prepare_call: checked and encoded once, session fields added per attempt ----


@pytest.mark.parametrize("session", [(None, None, 0), (1, 1, 0), (7, 300, 299), (2**40, 2**33, 2**20), (2**62, 2**62 + 5, 2**62)])
def test_prepared_command_payload_is_what_encode_call_gives(session: tuple[Any, Any, int]) -> None:
    session_id, seq, ack = session
    prepared = prepare_call(Counter, "increment", [b"abc"])
    assert prepared.payload(session_id, seq, ack) == encode_call(Counter, "increment", [b"abc"], session_id=session_id,
                                                                 seq=seq, ack=ack)
    assert decode_call(prepared.payload(session_id, seq, ack)).seq == seq


def test_prepared_query_payload_is_what_encode_call_gives() -> None:
    prepared = prepare_call(Counter, "get")
    assert prepared.kind == "query"
    assert prepared.payload() == encode_call(Counter, "get")


def test_prepare_call_checks_like_encode_call() -> None:
    with pytest.raises(UnknownMethod):
        prepare_call(Counter, "nope")
    with pytest.raises(BadArguments):
        prepare_call(Counter, "increment", [1, 2, 3])
    with pytest.raises(UnencodableValue):
        prepare_call(Counter, "increment", [{1, 2}])
    with pytest.raises(BadArguments):
        prepare_call(Counter, "increment", [1]).payload(0, 1, 0)


def test_prepared_payload_over_the_limit_only_with_big_session_fields() -> None:
    small = prepare_call(Counter, "increment", [b""])
    base = len(small.payload(1, 1, 0))
    settings = MachineSettings(call_bytes_max=base)
    prepared = prepare_call(Counter, "increment", [b""], settings=settings)
    assert len(prepared.payload(1, 1, 0)) == settings.call_bytes_max  # exactly at the limit
    with pytest.raises(CallTooLarge):
        prepared.payload(2**40, 1, 0)  # 8 more bytes of session id


def test_plain_arity_skips_inspect_only_for_plain_signatures() -> None:
    spec = Counter._rsm_commands["increment"]
    assert spec.plain_arity is None  # `by` has a default: inspect decides
    with pytest.raises(BadArguments):
        spec.check_arguments(Counter, [1, 2, 3], {})

    class Plain(StateMachine):
        @command
        def put(self, key: str, value: bytes) -> None:
            pass

        @command
        def flexible(self, key: str, value: bytes = b"") -> None:
            pass

    assert Plain._rsm_commands["put"].plain_arity == 2
    assert Plain._rsm_commands["flexible"].plain_arity is None
    Plain._rsm_commands["put"].check_arguments(Plain, ["k", b"v"], {})
    with pytest.raises(BadArguments):
        Plain._rsm_commands["put"].check_arguments(Plain, ["k"], {})
    with pytest.raises(BadArguments):
        Plain._rsm_commands["put"].check_arguments(Plain, ["k", b"v"], {"value": b"w"})


_FIELD = st.one_of(st.none(), st.booleans(), st.integers(-2, 2**64), st.text(max_size=3), st.binary(max_size=3),
                   st.lists(st.integers(0, 3), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))


@given(st.lists(_FIELD, min_size=8, max_size=8), st.integers(0, 7), st.sampled_from([1, 0, "add", [], {}, 5, 5, 0]))
@settings(max_examples=500)
def test_the_envelope_fast_path_accepts_nothing_the_full_checks_refuse(fields: list[Any], at: int, good: Any) -> None:
    from rsm.statemachine import _check_envelope, _validate_envelope

    candidate = [1, 0, "add", [b"x"], {}, 5, 6, 0]
    candidate[at] = fields[at]  # one field arbitrary, the rest a valid command
    mixed = [good if i == at else f for i, f in enumerate(fields)]
    for obj in (candidate, mixed, fields):
        try:
            fast: list[Any] | None = _validate_envelope(list(obj))
        except DecodeError:
            fast = None
        try:
            full: list[Any] | None = _check_envelope(list(obj))
        except DecodeError:
            full = None
        assert fast == full
