"""The simulated network: latency, loss, duplication, reordering and partitions.

Every send draws its fate from the simulation's seeded generator, so a run is
reproducible from its seed. Reordering is a consequence of random latency; a
partition is a set of blocked directed links, so it can be asymmetric.
"""

from __future__ import annotations

import random

import attrs

from rsm.consensus.types import NodeId


@attrs.define
class NetworkFaults:
    """Probabilities and delays in effect right now (the fault schedule changes them)."""

    latency_min: int = 1
    latency_max: int = 6
    loss: float = 0.0
    duplicate: float = 0.0
    #: Probability that a message takes a long detour (up to `slow_latency_max`).
    slow: float = 0.0
    slow_latency_max: int = 60


@attrs.define
class SimNetwork:
    rng: random.Random
    faults: NetworkFaults = attrs.Factory(NetworkFaults)
    blocked: set[tuple[NodeId, NodeId]] = attrs.Factory(set)
    sent: int = 0
    dropped: int = 0
    duplicated: int = 0

    def delays(self, src: NodeId, dst: NodeId) -> list[int]:
        """Delivery delays for one message: [] if lost, two if duplicated."""
        self.sent += 1
        if (src, dst) in self.blocked or self.rng.random() < self.faults.loss:
            self.dropped += 1
            return []
        out = [self._latency()]
        if self.rng.random() < self.faults.duplicate:
            self.duplicated += 1
            out.append(self._latency())
        return out

    def _latency(self) -> int:
        if self.rng.random() < self.faults.slow:
            return self.rng.randint(self.faults.latency_max, self.faults.slow_latency_max)
        return self.rng.randint(self.faults.latency_min, self.faults.latency_max)

    def partition(self, groups: list[set[NodeId]]) -> None:
        """Block every link between different groups (symmetric)."""
        self.blocked.clear()
        for a in groups:
            for b in groups:
                if a is not b:
                    self.blocked.update((x, y) for x in a for y in b)

    def block(self, src: NodeId, dst: NodeId) -> None:
        self.blocked.add((src, dst))

    def heal(self) -> None:
        self.blocked.clear()
        self.faults = NetworkFaults(latency_min=self.faults.latency_min, latency_max=self.faults.latency_max)
