"""Test your own `StateMachine` under faults, without starting processes.

`simulate` runs your machine class on a simulated cluster (the simulator of
`rsm.sim`: the real consensus core, the real codec on the wire, the real
`MachineHost` apply path and snapshots), drives it with your commands and
queries through a seeded schedule of crashes, partitions, message loss,
duplication and reordering, and checks:

- every replica applied the same commands in the same order, and got the
  same result for each (a different result means `apply` is not deterministic);
- after the faults heal, every replica reaches the same state digest;
- every linearizable query a client saw returned what your machine returns at
  some point of the committed history between the query's start (everything
  acknowledged before it) and its end (everything committed by then).

The ten lines::

    from rsm.testing import simulate
    from examples.counter.machine import Counter

    def test_counter_under_faults():
        report = simulate(
            Counter,
            commands=[("increment", (1,)), ("increment", (5,))],
            queries=[("get", ())],
            seeds=range(20),
        )
        assert report.ok, report

A failing seed is reported with its violations and the last events; rerun it
with ``simulate(..., seeds=[seed])``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from rsm.consensus.types import Entry
from rsm.sim.checks import Violation
from rsm.sim.cluster import SimOptions, Simulation
from rsm.sim.machine import HostMachine, envelope
from rsm.statemachine import StateMachine, decode_result, encode_call

#: A call is ("method", (args...)) or a function of a seeded `random.Random`
#: returning ("method", (args...), {kwargs...}) for varied arguments.
CallSpec = tuple[str, tuple[Any, ...]] | Callable[[random.Random], tuple[str, tuple[Any, ...], dict[str, Any]]]


@attrs.frozen
class SeedFailure:
    seed: int
    violations: list[Violation]
    trace: list[str]

    def __str__(self) -> str:
        lines = [f"seed {self.seed}:"] + [f"  {v}" for v in self.violations] + ["  last events:"]
        return "\n".join(lines + [f"    {line}" for line in self.trace[-20:]])


@attrs.frozen
class SimReport:
    seeds: int
    steps: int
    commands_acknowledged: int
    queries_checked: int
    failures: list[SeedFailure]

    @property
    def ok(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        head = (f"{self.seeds} seeds, {self.steps} steps, {self.commands_acknowledged} commands acknowledged, "
                f"{self.queries_checked} queries checked, {len(self.failures)} failing seed(s)")
        return "\n".join([head, *map(str, self.failures)])


def _pick(specs: Sequence[CallSpec], rng: random.Random) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    spec = rng.choice(specs)
    if callable(spec):
        return spec(rng)
    name, args = spec
    return name, tuple(args), {}


class MachineSimulation(Simulation):
    """The simulator with an application machine and a workload of its calls."""

    def __init__(
        self,
        seed: int,
        machine_cls: type[StateMachine],
        commands: Sequence[CallSpec],
        queries: Sequence[CallSpec] = (),
        options: SimOptions | None = None,
    ) -> None:
        options = attrs.evolve(
            options or SimOptions(),
            machine_factory=lambda: HostMachine(machine_cls),
            check_linearizability=False,  # the KV history checker does not apply; see check_queries
        )
        self.machine_cls = machine_cls
        self.commands = list(commands)
        self.queries = list(queries)
        if not self.commands:
            raise ValueError("simulate needs at least one command")
        self.acked_max = 0
        self.acked_count = 0
        #: Completed linearizable queries: (payload, timestamp, lo, hi, encoded result).
        self.answers: list[tuple[bytes, int, int, int, bytes]] = []
        super().__init__(seed, options)

    def _client_next(self, client: int) -> None:
        if not self.workload:
            return
        if self.queries and self.rng.random() < 0.3:
            self._query(client)
        else:
            self._command(client)

    def _command(self, client: int) -> None:
        name, args, kwargs = _pick(self.commands, self.rng)
        payload = encode_call(self.machine_cls, name, args, kwargs)

        def done(ok: bool, index: int, result: bytes | None) -> None:
            if ok:
                self.acked_max = max(self.acked_max, index)
                self.acked_count += 1
            self._client_done(client)

        self.submit(envelope(self.now, payload), done)

    def _query(self, client: int) -> None:
        name, args, kwargs = _pick(self.queries, self.rng)
        payload = encode_call(self.machine_cls, name, args, kwargs)
        lo, stamp = self.acked_max, self.now

        def done(ok: bool, value: Any) -> None:
            if ok:
                hi = max(self.checker.committed, default=0)
                self.answers.append((payload, stamp, lo, hi, value))
            self._client_done(client)

        self.read(lambda machine: machine.query(payload, stamp), done)

    def finish(self) -> None:
        super().finish()
        if self.checker.ok:
            self.check_queries()

    def check_queries(self) -> None:
        """Replay the committed log on a fresh machine; every answer must match
        the machine's answer at some index in its window [lo, hi]."""
        pending = sorted(self.answers, key=lambda a: a[2])
        reference = HostMachine(self.machine_cls)
        committed = self.checker.committed
        top = max((a[3] for a in pending), default=0)
        open_: list[tuple[bytes, int, int, int, bytes]] = []
        cursor = 0
        for index in range(0, top + 1):
            if index:
                if index not in committed:
                    return  # a gap in what the checks saw: nothing more to conclude
                term, kind, data = committed[index]
                reference.apply_entry(Entry(index=index, term=term, kind=kind, data=data))
            while cursor < len(pending) and pending[cursor][2] <= index:
                open_.append(pending[cursor])
                cursor += 1
            still = []
            for answer in open_:
                payload, stamp, lo, hi, value = answer
                if reference.query(payload, stamp) == value:
                    continue
                if index >= hi:
                    self.checker.fail(
                        "query result",
                        f"a linearizable query returned {decode_safely(value)!r}, which the machine never "
                        f"returns between index {lo} and {hi} of the committed history",
                    )
                    return
                still.append(answer)
            open_ = still


def decode_safely(value: bytes) -> object:
    try:
        return decode_result(value)
    except Exception as exc:  # a command error is a legitimate result too
        return exc


def simulate(
    machine_cls: type[StateMachine],
    commands: Sequence[CallSpec],
    queries: Sequence[CallSpec] = (),
    *,
    seeds: Iterable[int] = range(10),
    nodes: int = 3,
    steps: int = 2000,
    clients: int = 4,
    profile: str = "mixed",
) -> SimReport:
    """Run `machine_cls` on a simulated `nodes`-replica cluster for each seed."""
    failures = []
    total_steps = acked = checked = count = 0
    options = SimOptions(nodes=nodes, steps=steps, clients=clients, profile=profile)
    for seed in seeds:
        count += 1
        sim = MachineSimulation(seed, machine_cls, commands, queries, options)
        result = sim.run()
        total_steps += result.steps
        acked += sim.acked_count
        checked += len(sim.answers)
        if not result.ok:
            failures.append(SeedFailure(seed, result.violations, result.trace))
    return SimReport(seeds=count, steps=total_steps, commands_acknowledged=acked, queries_checked=checked,
                     failures=failures)
