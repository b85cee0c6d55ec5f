"""Tests of the linearizability checker, `rsm.sim.linearizability`.

A checker that is wrong either way hurts: a false violation sends someone
hunting a bug that is not there, a missed one hides a real bug. So:

- hand-written histories pin down the definition, one anomaly each;
- a brute-force checker (every order of every subset) is the oracle for
  small random histories, with default limits, and with limits so tight
  that violations are mostly found by the window search (module docstring,
  point 6), which must never report one the oracle disagrees with;
- histories made by running operations one at a time against a dict, with
  random intervals around each operation's real moment, must all pass, and
  mutating one read in them (to a value never written, a value from the
  future, a stale value) must always be caught.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Sequence
from typing import Any

import attrs
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rsm.errors import ConfigError, InvariantViolation
from rsm.sim.linearizability import (
    CheckResult,
    CheckSettings,
    History,
    Kind,
    Operation,
    Outcome,
    Value,
    _search,
    _Window,
    check,
)

# -- building histories by hand ------------------------------------------------


def put(key: Any, value: Value, call: int, ret: int | None, client: Any = "c") -> dict[str, Any]:
    """A put on `key`; `ret` None means its outcome is unknown."""
    return {"kind": "put", "key": key, "value": value, "call": call, "ret": ret, "client": client}


def get(key: Any, output: Value, call: int, ret: int, client: Any = "c") -> dict[str, Any]:
    """A completed get on `key` that read `output`."""
    return {"kind": "get", "key": key, "output": output, "call": call, "ret": ret, "client": client}


def history(*ops: dict[str, Any]) -> History:
    """A history of these operations, ids in the order given."""
    return History(operations=[Operation(op_id=i, **op) for i, op in enumerate(ops)])


def assert_violation(result: CheckResult, key: Any, *op_ids: int) -> None:
    """The result is a violation on `key` whose explanation names these operations."""
    assert Outcome.VIOLATION == result.outcome
    assert not result.ok
    assert result.violation
    assert key == result.key
    for op_id in op_ids:
        assert re.search(rf"#{op_id}\b", result.explanation), result.explanation


# -- the definition, by hand ---------------------------------------------------

LINEARIZABLE = {
    "empty": [],
    "initial value is None": [get("x", None, 0, 1)],
    "read after write": [put("x", 1, 0, 1), get("x", 1, 2, 3)],
    "last of two sequential writes": [put("x", 1, 0, 1), put("x", 2, 2, 3), get("x", 2, 4, 5)],
    "read concurrent with write sees old": [put("x", 1, 0, 10), get("x", None, 2, 3)],
    "read concurrent with write sees new": [put("x", 1, 0, 10), get("x", 1, 2, 3)],
    "old then new during a write": [
        put("x", 1, 0, 10),
        get("x", None, 1, 2),
        get("x", 1, 3, 4),
    ],
    "overlapping reads may disagree": [
        put("x", 1, 0, 10),
        get("x", 1, 1, 5),
        get("x", None, 2, 6),
    ],
    "concurrent writes take effect in either order": [
        put("x", 1, 0, 5, client="a"),
        put("x", 2, 0, 5, client="b"),
        get("x", 1, 6, 7),
        get("x", 1, 8, 9),
    ],
    "a write overwritten while read": [
        put("x", 1, 0, 1),
        put("x", 2, 2, 10),
        get("x", 1, 3, 4),
        get("x", 2, 5, 6),
    ],
    "return and call on the same tick are concurrent": [put("x", 1, 0, 5), get("x", None, 5, 6)],
    "same value written twice": [
        put("x", 1, 0, 1),
        put("x", 2, 2, 3),
        put("x", 1, 4, 8),
        get("x", 1, 5, 6),
        get("x", 2, 5, 6),
    ],
    "a rewrite of the value held may take effect later": [
        put("x", 1, 0, 1),
        put("x", 1, 2, 10),
        put("x", 2, 2, 3),
        get("x", 1, 5, 6),
    ],
    "bytes values": [put("x", b"v", 0, 1), get("x", b"v", 2, 3)],
    "a write of None": [put("x", 1, 0, 1), put("x", None, 2, 3), get("x", None, 4, 5)],
}

NOT_LINEARIZABLE = {
    # (operations, ids of operations the explanation must name)
    "stale read after a completed write": (
        [put("x", 1, 0, 1), put("x", 2, 2, 3), get("x", 1, 4, 5)],
        [1, 2],
    ),
    "read of a value never written": ([put("x", 1, 0, 1), get("x", 7, 2, 3)], [1]),
    "initial value read after a completed write": (
        [put("x", 1, 0, 1), get("x", None, 2, 3)],
        [0, 1],
    ),
    "two readers see two writes in different orders": (
        [
            put("x", 1, 0, 10, client="w1"),
            put("x", 2, 0, 10, client="w2"),
            get("x", 1, 1, 2, client="a"),
            get("x", 2, 3, 4, client="a"),
            get("x", 2, 1, 2, client="b"),
            get("x", 1, 3, 4, client="b"),
        ],
        [],
    ),
    "read sees a write called after the read returned": (
        [get("x", 1, 0, 1), put("x", 1, 2, 3)],
        [0],
    ),
    "new then old during a write": (
        [put("x", 1, 0, 10), get("x", 1, 1, 2), get("x", None, 3, 4)],
        [2],
    ),
    "one tick apart is not concurrent": ([put("x", 1, 0, 5), get("x", None, 6, 7)], [1]),
    "a read of bytes is not a read of an int": ([put("x", 1, 0, 1), get("x", b"1", 2, 3)], [1]),
}


@pytest.mark.parametrize("ops", LINEARIZABLE.values(), ids=LINEARIZABLE.keys())
def test_linearizable_histories_pass(ops: list[dict[str, Any]]) -> None:
    result = check(history(*ops))
    assert CheckResult(outcome=Outcome.OK, steps=result.steps) == result
    assert result.ok


@pytest.mark.parametrize("case", NOT_LINEARIZABLE.values(), ids=NOT_LINEARIZABLE.keys())
def test_non_linearizable_histories_fail(case: tuple[list[dict[str, Any]], list[int]]) -> None:
    ops, named = case
    assert_violation(check(history(*ops)), "x", *named)


def test_explanation_names_the_failing_operations() -> None:
    h = history(put("x", 1, 0, 1, client=3), put("x", 2, 2, 3, client=4), get("x", 1, 4, 5))
    result = check(h)
    assert_violation(result, "x", 0, 1, 2)
    assert "key 'x' is not linearizable" in result.explanation
    assert "#1 client 4 put('x', 2) [2, 3]" in result.explanation
    assert "#2 client 'c' get('x') -> 1 [4, 5]" in result.explanation


def test_check_is_deterministic() -> None:
    h = history(put("x", 1, 0, 1), put("x", 2, 2, 3), get("x", 1, 4, 5))
    assert check(h) == check(h)


# -- unknown outcomes ----------------------------------------------------------


def with_unknown_put(*reads: tuple[Value, int, int]) -> History:
    """put(x, 1) called at tick 10 whose client timed out, and these reads."""
    return history(put("x", 1, 10, None, client="w"), *(get("x", *read) for read in reads))


@pytest.mark.parametrize(
    "reads",
    [
        [(None, 20, 21)],  # never applied
        [(1, 20, 21)],  # applied
        [(None, 20, 21), (1, 30, 31)],  # applied late, long after the client gave up
        [(1, 20, 21), (1, 30, 31)],
        [(None, 0, 1), (1, 20, 21)],
        [(None, 10, 11)],  # a read on its call tick may precede it
    ],
)
def test_unknown_put_may_or_may_not_apply(reads: list[tuple[Value, int, int]]) -> None:
    assert check(with_unknown_put(*reads)).ok


@pytest.mark.parametrize(
    "reads",
    [
        [(1, 20, 21), (None, 30, 31)],  # once applied, it cannot be undone
        [(1, 0, 1)],  # read before it was called
        [(1, 5, 9)],  # read returned the tick before it was called
    ],
)
def test_unknown_put_is_not_a_free_pass(reads: list[tuple[Value, int, int]]) -> None:
    assert Outcome.VIOLATION == check(with_unknown_put(*reads)).outcome


def test_unknown_put_may_be_read_after_another_write_of_its_value() -> None:
    # The first read of 1 is explained by the completed put, the last one only
    # by the unknown put: its deadline is the LAST read of its value.
    h = history(
        put("x", 1, 0, 1),
        get("x", 1, 2, 3),
        put("x", 2, 4, 5),
        put("x", 1, 0, None),
        get("x", 1, 6, 7),
    )
    assert check(h).ok


def test_unknown_put_of_a_value_read_may_still_never_apply() -> None:
    # The read of 1 is explained by the completed put; applying the unknown
    # put (called at 5) would hide the 2 read at 7.
    h = history(
        put("x", 1, 0, 1),
        get("x", 1, 0, 6),
        put("x", 2, 2, 4),
        put("x", 1, 5, None),
        get("x", 2, 7, 8),
    )
    assert check(h).ok


def test_unknown_put_may_apply_after_a_later_write() -> None:
    h = history(put("x", 1, 0, None), put("x", 2, 1, 2), get("x", 1, 3, 4))
    assert check(h).ok
    h = history(put("x", 1, 0, None), put("x", 2, 1, 2), get("x", 1, 3, 4), get("x", 2, 5, 6))
    assert_violation(check(h), "x", 3)


def test_operation_without_response_counts_as_unknown() -> None:
    h = History()
    h.invoke_put("w", "x", 1, now=0)  # still in flight when the run ended
    g = h.invoke_get("r", "x", now=5)
    h.complete(g, now=6, output=1)
    assert check(h).ok


def test_unknown_get_imposes_nothing() -> None:
    h = History()
    w = h.invoke_put("w", "x", 1, now=0)
    h.complete(w, now=1)
    lost = h.invoke_get("r", "x", now=2)
    h.fail_unknown(lost)
    h.invoke_get("s", "x", now=3)  # never answered
    assert check(h).ok


# -- keys are independent ------------------------------------------------------


def test_keys_are_independent() -> None:
    assert check(history(put("x", 1, 0, 1), get("y", None, 2, 3))).ok
    result = check(history(put("x", 1, 0, 1), get("y", 1, 2, 3), get("x", 1, 2, 3)))
    assert_violation(result, "y", 1)
    assert "key 'x'" not in result.explanation


def test_writes_to_other_keys_do_not_overwrite() -> None:
    # Stale if the store were one register; fine as a map of registers.
    h = history(put("x", 1, 0, 1), put("y", 2, 2, 3), get("x", 1, 4, 5), get("y", 2, 4, 5))
    assert check(h).ok


def test_smallest_failing_key_is_reported() -> None:
    big = [put(1, 1, 0, 1), put(1, 2, 2, 3), get(1, 2, 4, 5), get(1, 1, 6, 7)]
    small = [put(b"k", 1, 0, 1), get(b"k", 2, 2, 3)]
    fine = [get("s", None, 0, 1)]
    assert_violation(check(history(*fine, *big, *small)), b"k", 5)
    assert_violation(check(history(*big, *fine)), 1, 3)


# -- the history API -----------------------------------------------------------


def test_history_records_operations() -> None:
    h = History()
    p = h.invoke_put("a", "x", 5, now=1)
    g = h.invoke_get("b", "x", now=2)
    u = h.invoke_put("c", "x", 6, now=2)
    h.complete(p, now=3)
    h.complete(g, now=4, output=5)
    h.fail_unknown(u)
    expected = [
        Operation(op_id=0, client="a", kind="put", key="x", value=5, call=1, ret=3),
        Operation(op_id=1, client="b", kind="get", key="x", output=5, call=2, ret=4),
        Operation(op_id=2, client="c", kind="put", key="x", value=6, call=2),
    ]
    assert expected == h.operations
    assert [True, True, False] == [op.outcome_known for op in h.operations]


def test_history_rejects_misuse() -> None:
    h = History()
    p = h.invoke_put("a", "x", 5, now=1)
    with pytest.raises(InvariantViolation):
        h.invoke_get("a", "x", now=0)  # time went back
    h.complete(p, now=2)
    with pytest.raises(InvariantViolation):
        h.complete(p, now=3)  # twice
    with pytest.raises(InvariantViolation):
        h.fail_unknown(p)  # already answered
    u = h.invoke_put("a", "x", 6, now=3)
    h.fail_unknown(u)
    with pytest.raises(InvariantViolation):
        h.complete(u, now=4)  # already given up
    q = h.invoke_put("a", "x", 7, now=4)
    with pytest.raises(InvariantViolation):
        h.complete(q, now=5, output=7)  # a put returns None


def test_operations_are_validated() -> None:
    with pytest.raises(InvariantViolation):
        Operation(op_id=0, client="a", kind="get", key="x", call=5, ret=4)
    with pytest.raises(InvariantViolation):
        Operation(op_id=0, client="a", kind="get", key="x", value=1, call=5)
    with pytest.raises(ValueError):
        Operation(op_id=0, client="a", kind="cas", key="x", call=5)  # type: ignore[arg-type]
    with pytest.raises(InvariantViolation):
        History(operations=[Operation(op_id=1, client="a", kind="get", key="x", call=0)])


# -- limits --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "search_steps_max",
        "windows_after_steps",
        "window_steps_max",
        "window_operations_max",
        "explanation_operations_max",
    ],
)
def test_settings_must_be_positive(name: str) -> None:
    CheckSettings(**{name: 1}).validate()
    with pytest.raises(ConfigError):
        CheckSettings(**{name: 0}).validate()
    with pytest.raises(ConfigError):
        check(History(), CheckSettings(**{name: 0}))


def test_search_steps_max_at_the_limit_and_one_below() -> None:
    h = sequential_history(random.Random(3), 200, keys=["x"], clients=8, duration_max=6)
    steps = check(h).steps
    assert steps > 1
    enough = CheckSettings(search_steps_max=steps, windows_after_steps=steps)
    assert Outcome.OK == check(h, enough).outcome
    short = CheckSettings(search_steps_max=steps - 1, windows_after_steps=steps)
    result = check(h, short)
    assert Outcome.INCONCLUSIVE == result.outcome
    assert not result.ok
    assert not result.violation
    assert "x" == result.key
    assert f"search_steps_max={steps - 1}" in result.explanation


def test_inconclusive_key_does_not_hide_a_violation_elsewhere() -> None:
    # "hard" has fewer operations, so it is checked (and given up on) first.
    hard = sequential_history(random.Random(4), 30, keys=["hard"], clients=8, duration_max=6)
    bad = [put("bad", 1, 0, 1), get("bad", 2, 2, 3)]
    bad += [get("bad", 1, 10 + i, 11 + i) for i in range(40)]
    ops = [*hard.operations, *history(*bad).operations]
    ops = [attrs.evolve(op, op_id=i) for i, op in enumerate(ops)]
    tight = CheckSettings(search_steps_max=10, window_steps_max=10)
    assert Outcome.INCONCLUSIVE == check(hard, tight).outcome
    assert_violation(check(ops, tight), "bad")


def test_explanations_are_bounded() -> None:
    h = sequential_history(random.Random(5), 300, keys=["x"], clients=8, duration_max=6)
    ops = mutate_read(h.operations, -1, b"never written")
    result = check(ops, CheckSettings(explanation_operations_max=5))
    assert Outcome.VIOLATION == result.outcome
    assert len(result.explanation.splitlines()) < 40, result.explanation


# -- the oracle: brute force on small histories --------------------------------


def brute_force_linearizable(ops: Sequence[Operation]) -> bool:
    """Try every subset of the unknown-outcome puts in every order with the rest."""
    known = [op for op in ops if op.ret is not None]
    maybe = [op for op in ops if op.ret is None and op.kind == "put"]
    for size in range(len(maybe) + 1):
        for chosen in itertools.combinations(maybe, size):
            for order in itertools.permutations([*known, *chosen]):
                if legal(order):
                    return True
    return False


def legal(order: Sequence[Operation]) -> bool:
    """Whether `order` respects real time and is a legal run of a map."""
    store: dict[Any, Value] = {}
    for i, op in enumerate(order):
        if any(later.ret is not None and later.ret < op.call for later in order[i + 1 :]):
            return False
        if op.kind == "put":
            store[op.key] = op.value
        elif store.get(op.key) != op.output:
            return False
    return True


KINDS: tuple[Kind, ...] = ("put", "get")


@st.composite
def random_small_histories(draw: st.DrawFn, ops_max: int = 6) -> list[Operation]:
    """Random operations on two keys with few values: often not linearizable."""
    ops = []
    for op_id in range(draw(st.integers(0, ops_max))):
        kind = draw(st.sampled_from(KINDS))
        call = draw(st.integers(0, 8))
        ret = draw(st.one_of(st.none(), st.integers(call, call + 4), st.integers(call, call + 4)))
        value = draw(st.sampled_from([1, 2, 3])) if kind == "put" else None
        output = (
            draw(st.sampled_from([None, 1, 2, 3])) if kind == "get" and ret is not None else None
        )
        key = draw(st.sampled_from(["x", "x", "x", "y"]))
        ops.append(
            Operation(
                op_id=op_id,
                client=op_id,
                kind=kind,
                key=key,
                value=value,
                output=output,
                call=call,
                ret=ret,
            )
        )
    return ops


def executed_small_history(seed: int, ops_count: int, mutate: bool) -> list[Operation]:
    """A small execution with repeated values, one read perhaps changed: often linearizable."""
    rng = random.Random(seed)
    ops = sequential_history(
        rng,
        ops_count,
        keys=["x", "x", "y"],
        clients=rng.randint(1, 4),
        duration_max=rng.randint(0, 4),
        unknown_rate=0.2,
        values=[1, 2, 3],
    ).operations
    reads = [op for op in ops if op.kind == "get" and op.outcome_known]
    if mutate and reads:
        return mutate_read(ops, rng.randrange(len(reads)), rng.choice([None, 1, 2, 3]))
    return ops


small_histories = st.one_of(
    random_small_histories(),
    st.builds(executed_small_history, st.integers(0, 2**32 - 1), st.integers(1, 6), st.booleans()),
)


@settings(max_examples=400, deadline=None)
@given(small_histories)
def test_agrees_with_brute_force(ops: list[Operation]) -> None:
    result = check(ops)
    assert result.outcome is not Outcome.INCONCLUSIVE
    assert brute_force_linearizable(ops) == result.ok, result.explanation


@settings(max_examples=300, deadline=None)
@given(small_histories, st.integers(0, 5))
def test_windows_never_report_a_false_violation(ops: list[Operation], budget: int) -> None:
    # A whole-history search this short rarely finishes, so violations found
    # here mostly come from windows (point 6), which must be sound.
    tight = CheckSettings(search_steps_max=budget + 1, windows_after_steps=budget + 1)
    if check(ops, tight).violation:
        assert not brute_force_linearizable(ops)


def assert_every_window_linearizable(ops: Sequence[Operation]) -> None:
    """Point 6 of the module docstring, checked directly on its private parts.

    Every window of key x whose bounds fall on or just after an operation's
    tick must have a linearization.
    """
    ops_x = [op for op in ops if op.key == "x"]
    ticks = {op.call for op in ops_x} | {op.ret for op in ops_x if op.ret is not None}
    bounds = sorted(ticks | {tick + 1 for tick in ticks})
    for start, end in itertools.combinations_with_replacement(bounds, 2):
        _, found = _search(ops_x, _Window(start=start, end=end), steps_max=100_000)
        assert Outcome.OK == found.outcome, (start, end)


WINDOW_EDGES = {
    # put(1) returns on tick 5, the first tick of window [5, 8], yet may
    # take effect after put(3), called on that tick: the window must keep
    # put(1) or the read of 1 has no write to explain it.
    "a return on the first tick": [
        put("x", 2, 3, 8),
        put("x", 1, 2, 5),
        put("x", 3, 5, 6),
        get("x", 1, 7, 8),
    ],
}


@pytest.mark.parametrize(
    "ops", [*LINEARIZABLE.values(), *WINDOW_EDGES.values()], ids=[*LINEARIZABLE, *WINDOW_EDGES]
)
def test_every_window_of_a_hand_written_history_is_linearizable(
    ops: list[dict[str, Any]],
) -> None:
    h = history(*ops)
    assert check(h).ok
    assert_every_window_linearizable(h.operations)


@settings(max_examples=100, deadline=None)
@given(small_histories)
def test_every_window_of_a_linearizable_history_is_linearizable(ops: list[Operation]) -> None:
    assume(brute_force_linearizable(ops))
    assert_every_window_linearizable(ops)


# -- sequential executions: large histories that must pass ---------------------


def sequential_history(
    rng: random.Random,
    ops_count: int,
    keys: Sequence[Any],
    clients: int,
    duration_max: int,
    unknown_rate: float = 0.05,
    values: Sequence[Value] = (),
) -> History:
    """Run operations one at a time against a dict, around random intervals.

    Each client runs one operation at a time. An operation is called at some
    tick, returns `duration` ticks later, and really happens at a random
    moment in between; the dict sees operations in the order of those
    moments. So the history is linearizable by construction. Puts write
    distinct values, or values drawn from `values` if given. Some operations time out: their get reads nothing, their
    put is lost or happens at any moment after its call, even long after.
    """
    free = [rng.randint(0, 3) for _ in range(clients)]
    plans = []
    for index in range(ops_count):
        client = min(range(clients), key=lambda c: (free[c], c))
        call = free[client]
        ret = call + rng.randint(0, duration_max)
        plan = {
            "client": client,
            "key": rng.choice(keys),
            "call": call,
            "ret": ret,
            "kind": rng.choice(["put", "get"]),
            "value": rng.choice(values) if values else index + 1,
        }
        plan["moment"] = (rng.randint(call, ret), rng.random())
        if rng.random() < unknown_rate:
            plan["ret"] = None
            late = rng.randint(call, call + 4 * duration_max + 1)
            plan["moment"] = None if rng.random() < 0.5 else (late, rng.random())
        plans.append(plan)
        free[client] = ret + 1 + rng.randint(0, 3)
    _execute(plans)
    return _record(plans)


def _execute(plans: list[dict[str, Any]]) -> None:
    """Apply the plans that happened to a dict in order of their moments."""
    store: dict[Any, Value] = {}
    for plan in sorted((p for p in plans if p["moment"]), key=lambda p: p["moment"]):
        if plan["kind"] == "put":
            store[plan["key"]] = plan["value"]
        else:
            plan["output"] = store.get(plan["key"])


def _record(plans: list[dict[str, Any]]) -> History:
    """Replay the calls and responses into a History, in time order."""
    events = []
    for index, plan in enumerate(plans):
        events.append((plan["call"], 0, index))
        events.append((plan["ret"] if plan["ret"] is not None else plan["call"], 1, index))
    h, ids = History(), {}
    for now, is_response, index in sorted(events):
        plan = plans[index]
        if not is_response and plan["kind"] == "put":
            ids[index] = h.invoke_put(plan["client"], plan["key"], plan["value"], now)
        elif not is_response:
            ids[index] = h.invoke_get(plan["client"], plan["key"], now)
        elif plan["ret"] is None:
            h.fail_unknown(ids[index])
        else:
            h.complete(ids[index], now, plan.get("output") if plan["kind"] == "get" else None)
    return h


def mutate_read(ops: Sequence[Operation], which: int, output: Value) -> list[Operation]:
    """Copy `ops` with the `which`-th completed get reading `output` instead."""
    reads = [i for i, op in enumerate(ops) if op.kind == "get" and op.outcome_known]
    mutated = list(ops)
    index = reads[which]
    mutated[index] = attrs.evolve(ops[index], output=output)
    return mutated


# Histories are drawn as a seed for `sequential_history` plus its parameters:
# cheap to generate, and a failure prints the seed that reproduces it.
seeds = st.integers(0, 2**32 - 1)
sizes = st.fixed_dictionaries(
    {
        "ops_count": st.integers(1, 80),
        "keys": st.sampled_from([["x"], ["x", "y"], [1, b"2", "3"]]),
        "clients": st.integers(1, 10),
        "duration_max": st.integers(0, 8),
        "unknown_rate": st.sampled_from([0.0, 0.05, 0.3]),
    }
)


@settings(max_examples=200, deadline=None)
@given(seeds, sizes)
def test_sequential_executions_are_accepted(seed: int, size: dict[str, Any]) -> None:
    result = check(sequential_history(random.Random(seed), **size))
    assert Outcome.OK == result.outcome, result.explanation


@settings(max_examples=200, deadline=None)
@given(seeds, sizes, st.data())
def test_read_of_a_value_never_written_is_rejected(
    seed: int, size: dict[str, Any], data: st.DataObject
) -> None:
    ops = sequential_history(random.Random(seed), **size).operations
    reads = [op for op in ops if op.kind == "get" and op.outcome_known]
    assume(reads)
    which = data.draw(st.integers(0, len(reads) - 1))
    result = check(mutate_read(ops, which, b"never written"))
    assert_violation(result, reads[which].key, reads[which].op_id)


def future_and_stale_values(ops: Sequence[Operation], read: Operation) -> tuple[list[Value], ...]:
    """Values `read` cannot have seen: written only after it, or overwritten before it.

    Future: the put was called after the read returned. Stale: the put
    returned before another put q was called, and q returned before the read
    was called. Relies on puts writing distinct values.
    """
    assert read.ret is not None
    puts = [op for op in ops if op.kind == "put" and op.key == read.key and op.ret is not None]
    future = [p.value for p in puts if p.call > read.ret]
    overwritten_by = max(
        (q.call for q in puts if q.ret is not None and q.ret < read.call), default=None
    )
    stale = [
        p.value
        for p in puts
        if p.ret is not None and overwritten_by is not None and p.ret < overwritten_by
    ]
    return future, stale


@settings(max_examples=200, deadline=None)
@given(seeds, sizes, st.data(), st.booleans())
def test_read_of_a_future_or_stale_value_is_rejected(
    seed: int, size: dict[str, Any], data: st.DataObject, future: bool
) -> None:
    ops = sequential_history(random.Random(seed), **size).operations
    reads = [op for op in ops if op.kind == "get" and op.outcome_known]
    choices = [
        (which, value)
        for which, read in enumerate(reads)
        for value in future_and_stale_values(ops, read)[0 if future else 1]
    ]
    assume(choices)
    which, value = data.draw(st.sampled_from(choices))
    result = check(mutate_read(ops, which, value))
    assert_violation(result, reads[which].key)


def test_long_history_with_ten_clients_is_cheap() -> None:
    h = sequential_history(random.Random(1), 3000, keys=["x"], clients=10, duration_max=20)
    result = check(h)
    assert Outcome.OK == result.outcome
    assert result.steps < 10 * len(h.operations)  # a few steps per operation, not a blow-up


def test_stale_read_deep_in_a_long_history_is_found() -> None:
    h = sequential_history(random.Random(2), 2000, keys=["x"], clients=10, duration_max=20)
    ops = h.operations
    reads = [op for op in ops if op.kind == "get" and op.outcome_known]
    read = reads[len(reads) * 3 // 4]
    _, stale = future_and_stale_values(ops, read)
    result = check(mutate_read(ops, reads.index(read), stale[-1]))
    assert_violation(result, "x", read.op_id)
