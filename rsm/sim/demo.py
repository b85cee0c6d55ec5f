"""`make sim-demo`: a 3-replica cluster in the deterministic simulator, narrated.

This runs the real consensus core, codec and
in-memory storage inside the simulator (no processes): it elects a leader,
writes keys, kills the leader, shows the new leader taking writes, restarts the
killed replica and shows it caught up with an identical state digest. Every
step checks what it claims; the exit status is 0 only if all did.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from rsm.consensus.types import Role
from rsm.sim import SimOptions, Simulation

console = Console(highlight=False)


class DemoFailed(Exception):
    pass


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise DemoFailed(what)
    console.print(f"  [green]ok[/green]  {what}")


def wait_for(sim: Simulation, predicate, ms_max: int = 5_000) -> bool:  # type: ignore[no-untyped-def]
    deadline = sim.now + ms_max
    while sim.now < deadline:
        if predicate():
            return True
        sim.run_for(5)
    return bool(predicate())


def show(sim: Simulation) -> None:
    table = Table(show_header=True, header_style="bold")
    for column in ("replica", "alive", "role", "term", "commit", "applied", "digest"):
        table.add_column(column)
    for replica in sim.replicas.values():
        node = replica.node
        table.add_row(
            replica.id, "yes" if replica.alive else "[red]no[/red]", node.role.value if replica.alive else "-",
            str(node.term), str(node.log.committed), str(replica.machine.applied), replica.machine.digest(),
        )
    console.print(table)


def write(sim: Simulation, count: int, prefix: str) -> int:
    """Submit `count` writes through clients and wait until they are acknowledged."""
    before = len(sim.checker.acked)
    for n in range(count):
        sim.start_put(1000 + n, f"{prefix}{n % 4}")
        sim.run_for(3)
    wait_for(sim, lambda: len(sim.checker.acked) >= before + count)
    return len(sim.checker.acked) - before


def main() -> int:
    console.print("[bold]rsm demo[/bold]: 3 replicas of a key-value store, simulated from seed 1\n")
    options = SimOptions(nodes=3, clients=0, fault_interval_ms=0, crash_during_write=0.0, new_leader_fault=0.0,
                         profile="chaos")
    sim = Simulation(1, options)
    sim.workload = False  # only the writes the demo submits itself
    try:
        console.print("[bold]1. Elect a leader[/bold]")
        expect(wait_for(sim, lambda: sim.leader() is not None), f"a leader was elected: {sim.leader()}")
        first_leader = sim.leader()
        assert first_leader is not None

        console.print("[bold]2. Write 20 keys[/bold]")
        expect(write(sim, 20, "a") == 20, "20 writes acknowledged (each one persisted on a majority first)")
        show(sim)

        console.print(f"[bold]3. Kill the leader {first_leader} (its memory and unsynced writes are lost)[/bold]")
        sim.crash(first_leader)
        expect(wait_for(sim, lambda: sim.leader() not in (None, first_leader)), f"a new leader took over: {sim.leader()}")

        console.print("[bold]4. Writes go on[/bold]")
        expect(write(sim, 20, "b") == 20, "20 more writes acknowledged by the remaining majority")

        console.print(f"[bold]5. Restart {first_leader}[/bold]")
        sim.restart(first_leader)

        def caught_up() -> bool:
            applied = {r.machine.applied for r in sim.replicas.values()}
            return len(applied) == 1 and sim.leader() is not None

        sim.run_for(50)  # let heartbeats carry the final commit index everywhere
        expect(wait_for(sim, caught_up), f"{first_leader} caught up from the log (or a snapshot)")
        digests = {r.machine.digest() for r in sim.replicas.values()}
        expect(len(digests) == 1, f"all replicas have the same state digest {digests.pop()}")
        roles = sorted(r.node.role.value for r in sim.replicas.values())
        expect(roles.count(Role.LEADER.value) == 1, "exactly one leader")
        show(sim)

        sim.finish()
        expect(sim.checker.ok, "safety checks and the linearizability check of the history passed")
    except DemoFailed as failure:
        console.print(f"  [red]FAILED[/red] {failure}")
        for violation in sim.checker.violations:
            console.print(f"  violation: {violation}")
        return 1
    console.print(f"\n[bold green]demo complete[/bold green]: {sim.steps} simulated events, "
                  f"{len(sim.checker.acked)} acknowledged writes, {sim.now} virtual ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
