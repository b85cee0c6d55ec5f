"""A tiny, perfectly reliable driver for scripted core tests.

Messages are delivered in FIFO order, batches persist instantly, and a test
can block links, crash nodes (dropping unpersisted work) and tick clocks.
"""

from __future__ import annotations

import random

from rsm.consensus import Config, ConfState, Entry, EntryKind, Message, Node, Ready
from rsm.storage.memory import MemoryStorage


def make_config(**overrides: object) -> Config:
    base = dict(heartbeat_interval_ticks=1, election_timeout_ticks=10)
    base.update(overrides)
    return Config(**base)  # type: ignore[arg-type]


class Cluster:
    def __init__(self, ids: list[str], config: Config | None = None, seed: int = 0, bugs: frozenset[str] = frozenset()) -> None:
        self.config = config or make_config()
        self.conf = ConfState(voters=frozenset(ids))
        self.storages = {i: MemoryStorage(self.conf) for i in ids}
        self.seed = seed
        self.bugs = bugs
        self.nodes = {i: self._new_node(i) for i in ids}
        self.blocked: set[tuple[str, str]] = set()
        self.down: set[str] = set()
        self.applied: dict[str, list[Entry]] = {i: [] for i in ids}
        self.read_states: dict[str, list] = {i: [] for i in ids}
        self.dropped_reads: dict[str, list[bytes]] = {i: [] for i in ids}
        self.sent: list[Message] = []
        self.inbox: list[Message] = []

    def _new_node(self, node_id: str) -> Node:
        rng = random.Random(f"{self.seed}-{node_id}")
        return Node(node_id, self.config, self.storages[node_id], rng, bugs=self.bugs)

    def handle_ready(self, node_id: str) -> Ready | None:
        node = self.nodes[node_id]
        if not node.has_ready():
            return None
        rd = node.ready()
        storage = self.storages[node_id]
        for chunk in rd.snapshot_chunks:
            storage.write_snapshot_chunk(chunk.meta, chunk.offset, chunk.data)
        if rd.snapshot is not None:
            storage.install_snapshot(rd.snapshot)
        storage.save(rd.hard_state, rd.entries)
        self._queue(rd.messages_now + rd.messages)
        self.applied[node_id].extend(rd.committed_entries)
        self.read_states[node_id].extend(rd.read_states)
        self.dropped_reads[node_id].extend(rd.dropped_reads)
        node.advance(rd)
        return rd

    def _queue(self, msgs: list[Message]) -> None:
        for m in msgs:
            self.sent.append(m)
            if (m.src, m.dst) not in self.blocked and m.dst not in self.down and m.src not in self.down:
                self.inbox.append(m)

    def stabilize(self, rounds_max: int = 10_000) -> None:
        """Process batches and deliver messages until nothing moves."""
        for _ in range(rounds_max):
            moved = False
            for node_id in self.nodes:
                if node_id not in self.down and self.handle_ready(node_id) is not None:
                    moved = True
            if self.inbox:
                batch, self.inbox = self.inbox, []
                for m in batch:
                    if m.dst not in self.down:
                        self.nodes[m.dst].step(m)
                moved = True
            if not moved:
                return
        raise AssertionError("cluster did not stabilize")

    def tick(self, node_id: str, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[node_id].tick()

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for node_id in self.nodes:
                if node_id not in self.down:
                    self.nodes[node_id].tick()
            self.stabilize()

    def elect(self, node_id: str) -> None:
        self.nodes[node_id].campaign()
        self.stabilize()
        assert self.nodes[node_id].role.value == "leader", self.nodes[node_id].status()

    def isolate(self, node_id: str) -> None:
        for other in self.nodes:
            if other != node_id:
                self.blocked.add((node_id, other))
                self.blocked.add((other, node_id))

    def heal(self) -> None:
        self.blocked.clear()

    def crash(self, node_id: str) -> None:
        self.down.add(node_id)

    def restart(self, node_id: str) -> None:
        self.down.discard(node_id)
        self.nodes[node_id] = self._new_node(node_id)
        self.applied[node_id] = []

    def snapshot(self, node_id: str, data: bytes) -> None:
        """Snapshot `node_id` at its applied index and compact its log, as a driver would."""
        from rsm.consensus import SnapshotMeta
        from rsm.consensus.storage import ensure_commit_durable

        storage, node = self.storages[node_id], self.nodes[node_id]
        index = node.log.applied
        ensure_commit_durable(storage, index)
        storage.create_snapshot(SnapshotMeta(index=index, term=storage.term(index), conf=node.committed_conf), data)
        storage.compact(index)

    def commands(self, node_id: str) -> list[bytes]:
        return [e.data for e in self.applied[node_id] if e.kind == EntryKind.NORMAL]
