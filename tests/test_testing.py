"""rsm.testing: users test their own machines under faults; the checks must bite."""

from __future__ import annotations

import random

from examples.counter.machine import Counter
from examples.kvstore.machine import KVStore
from rsm import statemachine as sm
from rsm.testing import simulate


def test_counter_is_consistent_under_faults() -> None:
    report = simulate(Counter, commands=[("increment", (1,)), ("increment", (5,))], queries=[("get", ())], seeds=range(8))
    assert report.ok, report
    assert report.commands_acknowledged > 50  # the workload really ran
    assert report.queries_checked > 30


def test_kvstore_on_lmdb_is_consistent_under_faults() -> None:
    def put(rng: random.Random) -> tuple[str, tuple, dict]:
        return "put", (f"k{rng.randrange(4)}", f"v{rng.randrange(100)}"), {}

    def get(rng: random.Random) -> tuple[str, tuple, dict]:
        return "get", (f"k{rng.randrange(4)}",), {}

    report = simulate(KVStore, commands=[put], queries=[get], seeds=range(4), steps=1500)
    assert report.ok, report
    assert report.commands_acknowledged > 20


class Dice(sm.StateMachine):
    """Non-deterministic on purpose: uses the process's random, not self.context."""

    def __init__(self) -> None:
        self.total = 0

    @sm.command
    def roll(self) -> int:
        self.total += random.randrange(6)
        return self.total

    @sm.query
    def get(self) -> int:
        return self.total


def test_a_non_deterministic_machine_is_caught() -> None:
    report = simulate(Dice, commands=[("roll", ())], seeds=range(3), steps=800)
    assert not report.ok
    checks = {v.check for f in report.failures for v in f.violations}
    assert checks & {"determinism", "state digest"}, report


def test_stale_reads_are_caught_by_the_query_check(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """If replicas answered linearizable reads from local state without
    ReadIndex (stale reads), the query check must say so."""
    from rsm.sim.replica import SimReplica

    def read_locally(self: SimReplica, request_id: bytes, waiter) -> None:  # type: ignore[no-untyped-def]
        waiter(self.machine)  # no ReadIndex: whatever this replica has applied

    monkeypatch.setattr(SimReplica, "read", read_locally)
    report = simulate(Counter, commands=[("increment", (1,))], queries=[("get", ())], seeds=range(20), steps=1500)
    assert not report.ok
    assert {"query result"} == {v.check for f in report.failures for v in f.violations}
