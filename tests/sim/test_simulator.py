"""The simulator runs many seeds cleanly, replays exactly, and reports well."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rsm.consensus import EntryKind
from rsm.sim import SimOptions, Simulation, run_seed

#: Seeds the fast suite covers on each cluster size (make test-slow runs 500).
FAST_SEEDS = {3: 60, 5: 40}


@pytest.mark.parametrize("nodes", sorted(FAST_SEEDS))
def test_seeds_run_without_violations(nodes: int) -> None:
    acked = 0
    for seed in range(FAST_SEEDS[nodes]):
        result = run_seed(seed, SimOptions(nodes=nodes))
        assert [] == result.violations, f"replay: python -m rsm.sim --seed {seed} --seeds 1 --nodes {nodes}"
        acked += result.stats["acked"]
    assert acked > 5 * FAST_SEEDS[nodes]  # the workload really made progress


#: Seeds of the membership workload (grow, shrink, replace, transfer) per size.
MEMBERSHIP_SEEDS = {3: 30, 5: 30}


@pytest.mark.parametrize("nodes", sorted(MEMBERSHIP_SEEDS))
def test_membership_changes_under_faults(nodes: int) -> None:
    changes = 0
    for seed in range(MEMBERSHIP_SEEDS[nodes]):
        sim = Simulation(seed, SimOptions(nodes=nodes, membership=True, spare_nodes=2))
        result = sim.run()
        assert [] == result.violations, f"replay: python -m rsm.sim --seed {seed} --seeds 1 --nodes {nodes} --membership"
        changes += sum(1 for _, kind, _ in sim.checker.committed.values() if kind == EntryKind.CONFIG)
    assert changes > MEMBERSHIP_SEEDS[nodes]  # configurations really changed, more than once a seed


@pytest.mark.slow
@pytest.mark.parametrize("nodes", [3, 5])
@pytest.mark.parametrize("membership", [False, True])
def test_many_seeds(nodes: int, membership: bool) -> None:
    options = SimOptions(nodes=nodes, membership=membership, spare_nodes=2 if membership else 0)
    for seed in range(500):
        assert [] == run_seed(seed, options).violations, seed


def test_leaders_encode_entries_once_for_all_followers() -> None:
    # Every message crosses the codec and is compared with what was sent
    # (the "codec" check), so the cached path is checked under every fault.
    sim = Simulation(3, SimOptions(nodes=5))
    assert [] == sim.run().violations
    assert sum(cache.hits for cache in sim._entries_caches.values()) > 10


def test_a_seed_replays_exactly() -> None:
    a = Simulation(7, SimOptions(nodes=5)).run()
    b = Simulation(7, SimOptions(nodes=5)).run()
    assert (a.steps, a.stats, a.trace) == (b.steps, b.stats, b.trace)


def test_replay_does_not_depend_on_the_hash_seed() -> None:
    code = "from rsm.sim import run_seed; r = run_seed(11); print(r.steps, sorted(r.stats.items()))"
    outputs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        outputs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
    assert 1 == len(outputs)


def test_cli_reports_a_clean_run() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rsm.sim", "--seeds", "3", "--nodes", "3", "--steps", "500"],
        capture_output=True, text=True,
    )
    assert 0 == proc.returncode, proc.stderr
    assert "seeds: 3, steps: " in proc.stdout.strip().splitlines()[-1]
    assert proc.stdout.strip().splitlines()[-1].endswith("violations: 0")


def test_cli_reports_a_violation_with_seed_trace_and_replay() -> None:
    args = [sys.executable, "-m", "rsm.sim", "--seeds", "5", "--nodes", "3", "--bug", "vote_shorter_log"]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert 1 == proc.returncode
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].endswith("violations: 1")
    assert "last events:" in proc.stdout
    replay = next(line.strip() for line in lines if line.strip().startswith("replay:"))
    seed = int(replay.split("--seed ")[1].split()[0])
    again = subprocess.run(
        [sys.executable, "-m", "rsm.sim", "--seed", str(seed), "--seeds", "1", "--nodes", "3", "--bug", "vote_shorter_log"],
        capture_output=True, text=True,
    )
    assert 1 == again.returncode
    first_violation = next(line for line in lines if line.startswith("  ") and ":" in line)
    assert first_violation in again.stdout
