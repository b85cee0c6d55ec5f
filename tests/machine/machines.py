"""State machines and a log feeder shared by the machine tests."""

from __future__ import annotations

from typing import Any, BinaryIO

import attrs

from rsm.statemachine import (
    MachineHost,
    MembershipView,
    StateMachine,
    command,
    decode_result,
    encode_call,
    query,
    register,
)


@register(tag="tests.Point")
@attrs.frozen
class Point:
    x: int
    y: int


@register(tag="tests.Shape")
@attrs.define
class Shape:
    name: str
    corners: list[Point] = attrs.Factory(list)


@attrs.frozen
class Unregistered:
    x: int


class Account(StateMachine):
    """Plain-data state of several kinds, and commands that misbehave."""

    def __init__(self) -> None:
        self.balance = 0
        self.history: list[int] = []
        self.shapes: dict[str, Shape] = {}
        self.views: list[list[str]] = []

    @command
    def deposit(self, amount: int) -> int:
        self.balance += amount
        self.history.append(amount)
        return self.balance

    @command
    def withdraw(self, amount: int) -> int:
        if amount > self.balance:
            raise ValueError(f"insufficient funds: {self.balance} < {amount}")
        self.balance -= amount
        return self.balance

    @command
    def half_then_fail(self, amount: int) -> None:
        self.balance += amount  # mutated, then raises: the mutation is kept
        raise RuntimeError("failed after mutating")

    @command
    def add_shape(self, shape: Shape) -> Shape:
        self.shapes[shape.name] = shape
        return shape

    @command
    def stamp(self) -> list[int]:
        ctx = self.context
        return [ctx.index, ctx.term, ctx.timestamp_ms, ctx.random.randrange(1 << 30)]

    @command
    def give_set(self) -> object:
        return {1, 2}

    @query
    def get_balance(self) -> int:
        return self.balance

    @query
    def get_shape(self, name: str) -> Shape | None:
        return self.shapes.get(name)

    @query
    def bad_rebind(self) -> int:
        self.balance = -1
        return 0

    @query
    def bad_in_place(self) -> int:
        self.history.append(-1)
        return 0

    @query
    def when(self) -> list[int]:
        return [self.context.index, self.context.timestamp_ms]

    def on_membership_change(self, view: MembershipView) -> None:
        self.views.append(list(view.members))


class Custom(StateMachine):
    """Non plain-data state with its own snapshot format."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: set[str] = set()

    @command
    def add(self, item: str) -> int:
        self.items.add(item)
        return len(self.items)

    @query
    def count(self) -> int:
        return len(self.items)

    def snapshot(self, out: BinaryIO) -> None:
        out.write("\n".join(sorted(self.items)).encode())

    def restore(self, inp: BinaryIO) -> None:
        data = inp.read().decode()
        self.items = set(data.split("\n")) if data else set()


class Log:
    """Feeds the same entries to several hosts, like replicas of one log."""

    def __init__(self, *hosts: MachineHost, term: int = 1, clock_ms: int = 1_000) -> None:
        self.hosts = list(hosts)
        self.index = max((h.applied_index for h in hosts), default=0)
        self.term = term
        self.clock_ms = clock_ms

    def append(self, payload: bytes, *, advance_ms: int = 1) -> list[bytes]:
        self.index += 1
        self.clock_ms += advance_ms
        return [h.apply(self.index, self.term, self.clock_ms, payload) for h in self.hosts]

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Append a command and return the decoded result from the first host."""
        cls = type(self.hosts[0].machine)
        session = {k: kwargs.pop(k) for k in ("session_id", "seq", "ack") if k in kwargs}
        results = self.append(encode_call(cls, name, args, kwargs, **session))
        assert all(r == results[0] for r in results), "hosts disagree"
        return decode_result(results[0])


def ask(host: MachineHost, name: str, *args: Any, **kwargs: Any) -> Any:
    """Run a query on a host and decode its result."""
    return decode_result(host.query(encode_call(type(host.machine), name, args, kwargs)))
