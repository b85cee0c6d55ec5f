"""`python -m rsm.sim`: run many seeds of the simulator and report violations.

The last line is always `seeds: N, steps: S, violations: V`; the exit status is
1 if any seed broke a check. A failing seed prints its violations and a trace of
its last events; `--seed K` replays exactly that seed.
"""

from __future__ import annotations

import sys
import time

import click

from rsm.consensus.node import KNOWN_BUGS
from rsm.sim.cluster import SimOptions, run_seed


@click.command()
@click.option("--seeds", default=100, show_default=True, help="How many seeds to run.")
@click.option("--seed", "first_seed", default=0, show_default=True, help="First seed (use with --seeds 1 to replay).")
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True)
@click.option("--steps", default=3000, show_default=True, help="Events per seed in the chaos phase.")
@click.option("--clients", default=4, show_default=True)
@click.option("--bug", "bugs", multiple=True, type=click.Choice(sorted(KNOWN_BUGS)), help="Switch on a known bug (tests the checks).")
@click.option("--profile", type=click.Choice(["mixed", "chaos", "leader-churn"]), default="mixed", show_default=True,
              help="Fault profile (mixed draws one per seed).")
@click.option("--membership", is_flag=True, help="Change membership while faults happen (2 spare nodes).")
@click.option("--no-linearizability", is_flag=True, help="Skip the history check (faster).")
@click.option("--stop-on-failure/--keep-going", default=True, show_default=True)
def main(
    seeds: int, first_seed: int, nodes: int, steps: int, clients: int, bugs: tuple[str, ...],
    profile: str, membership: bool, no_linearizability: bool, stop_on_failure: bool,
) -> None:
    options = SimOptions(
        nodes=nodes, steps=steps, clients=clients, bugs=frozenset(bugs),
        check_linearizability=not no_linearizability, profile=profile,
        membership=membership, spare_nodes=2 if membership else 0,
    )
    total_steps = 0
    failures = 0
    started = time.perf_counter()
    ran = 0
    for seed in range(first_seed, first_seed + seeds):
        result = run_seed(seed, options)
        ran += 1
        total_steps += result.steps
        if not result.ok:
            failures += 1
            click.echo(f"seed {seed}: {len(result.violations)} violation(s)")
            for violation in result.violations:
                click.echo(f"  {violation}")
            click.echo("  last events:")
            for line in result.trace[-30:]:
                click.echo(f"    {line}")
            click.echo(f"  replay: python -m rsm.sim --seed {seed} --seeds 1 --nodes {nodes} --steps {steps}"
                       f" --clients {clients} --profile {profile}" + (" --membership" if membership else "")
                       + "".join(f" --bug {b}" for b in bugs))
            if stop_on_failure:
                break
    elapsed = time.perf_counter() - started
    click.echo(f"{total_steps / elapsed:,.0f} steps/s over {elapsed:.1f} s", err=True)
    click.echo(f"seeds: {ran}, steps: {total_steps}, violations: {failures}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
