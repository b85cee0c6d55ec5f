"""Hypothesis drives the simulator: every rule is a fault or a client action,
and the safety checks run after every simulated step of every rule."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from rsm.sim import SimOptions, Simulation

NODES = ["n1", "n2", "n3", "n4", "n5"]
node_ids = st.sampled_from(NODES)
keys = st.sampled_from(["a", "b"])


class ClusterUnderFaults(RuleBasedStateMachine):
    @initialize(seed=st.integers(0, 2**32 - 1))
    def start(self, seed: int) -> None:
        # Two background clients keep traffic flowing; the rules add bursts and faults.
        options = SimOptions(nodes=len(NODES), clients=2, fault_interval_ms=0, liveness_ms_max=30_000)
        self.sim = Simulation(seed, options)
        self.clients = 0

    def _client(self) -> int:
        self.clients += 1
        return self.clients

    @rule(key=keys, burst=st.integers(1, 8))
    def propose(self, key: str, burst: int) -> None:
        for _ in range(burst):
            self.sim.start_put(self._client(), key)

    @rule(key=keys, burst=st.integers(1, 4))
    def read(self, key: str, burst: int) -> None:
        for _ in range(burst):
            self.sim.start_get(self._client(), key)

    @rule(node=node_ids)
    def crash(self, node: str) -> None:
        self.sim.crash(node)

    @rule(node=node_ids)
    def restart(self, node: str) -> None:
        self.sim.restart(node)

    @rule(split=st.sets(node_ids, min_size=1, max_size=4))
    def partition(self, split: set[str]) -> None:
        self.sim.network.partition([split, set(NODES) - split])

    @rule(src=node_ids, dst=node_ids)
    def clog_link(self, src: str, dst: str) -> None:
        self.sim.network.block(src, dst)

    @rule()
    def heal(self) -> None:
        self.sim.network.heal()

    @rule(loss=st.sampled_from([0.0, 0.1, 0.5]), duplicate=st.sampled_from([0.0, 0.1]), slow=st.sampled_from([0.0, 0.2]))
    def lossy_network(self, loss: float, duplicate: float, slow: float) -> None:
        faults = self.sim.network.faults
        faults.loss, faults.duplicate, faults.slow = loss, duplicate, slow

    @rule(ms=st.integers(1, 1000))
    def time_passes(self, ms: int) -> None:
        self.sim.run_for(ms)

    @invariant()
    def safe(self) -> None:
        assert [] == self.sim.checker.violations

    def teardown(self) -> None:
        if hasattr(self, "sim") and self.sim.checker.ok:
            self.sim.finish()  # heal, then liveness and linearizability
            assert [] == self.sim.checker.violations


TestClusterUnderFaults = ClusterUnderFaults.TestCase
TestClusterUnderFaults.settings = settings(
    max_examples=40, stateful_step_count=40, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
