"""A simulated replica: one consensus core, its simulated disk and state machine.

It is the simulator's driver of the core and carries out the `Ready` contract
exactly as the real replica does, with the disk made slow and crashable: a
batch becomes durable only when its simulated write completes, and a crash
before that loses the batch and every message waiting on it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from rsm.consensus.membership import decode_conf
from rsm.consensus.node import Node
from rsm.consensus.ready import Ready
from rsm.consensus.storage import ensure_commit_durable
from rsm.consensus.types import (
    ConfState,
    EntryKind,
    NodeId,
    ReadState,
    Role,
    SnapshotMeta,
)
from rsm.errors import LogCompacted
from rsm.sim.machine import SimMachine
from rsm.storage.memory import MemoryStorage

if TYPE_CHECKING:
    from rsm.sim.cluster import Simulation

ApplyWaiter = Callable[[int, bool, bytes | None], None]  # (term, applied as proposed?, result)
ReadWaiter = Callable[[SimMachine | None], None]


class SimReplica:
    def __init__(self, node_id: NodeId, sim: Simulation, conf: ConfState) -> None:
        self.id = node_id
        self.sim = sim
        self.storage = MemoryStorage(conf)
        self.alive = False
        self.incarnation = 0
        self.boot()

    # -- lifecycle ------------------------------------------------------------
    def boot(self) -> None:
        """Start from what is durable, as a restarted process would."""
        self.alive = True
        self.incarnation += 1
        self.machine: SimMachine = self.sim.new_machine()
        self.machine.restore(self.storage.snapshot_data())
        # The configuration as of the applied index: what a local snapshot records.
        self.applied_conf = self.storage.snapshot_meta().conf
        rng = random.Random(self.sim.rng.getrandbits(64))
        self.node = Node(self.id, self.sim.config, self.storage, rng, applied=self.machine.applied, bugs=self.sim.bugs)
        self.busy = False
        self.was_leader = False
        self.last_commit = self.node.log.committed
        self.proposals: dict[int, tuple[int, ApplyWaiter]] = {}
        self.reads: dict[bytes, ReadWaiter] = {}
        self.ready_reads: list[tuple[ReadState, ReadWaiter]] = []
        self.sim.checker.on_restore(self.id, self.machine.applied)

    def crash(self) -> None:
        """Lose everything not durable: memory, the batch being written, waiters."""
        self.alive = False
        self.incarnation += 1
        for _, waiter in self.proposals.values():
            waiter(0, False, None)
        for read_waiter in list(self.reads.values()) + [w for _, w in self.ready_reads]:
            read_waiter(None)
        self.proposals = {}
        self.reads = {}
        self.ready_reads = []

    # -- the driver loop ------------------------------------------------------
    def pump(self) -> None:
        """Take the next batch from the core if the disk is free."""
        if not self.alive or self.busy or not self.node.has_ready():
            return
        rd = self.node.ready()
        for msg in rd.messages_now:
            self.sim.send(msg)
        if rd.must_persist():
            self.busy = True
            latency = self.sim.disk_latency()
            self.sim.schedule(latency, self._finish, rd, self.incarnation)
            self.sim.maybe_crash_during_write(self.id, latency)
        else:
            self._finish(rd, self.incarnation)

    def _finish(self, rd: Ready, incarnation: int) -> None:
        if incarnation != self.incarnation:
            return  # crashed while writing: the batch never reached the disk
        self.busy = False
        self._persist(rd)
        for msg in rd.messages:
            self.sim.send(msg)
        if rd.snapshot is not None:
            self.machine.restore(self.storage.snapshot_data())
            self.applied_conf = rd.snapshot.conf
            self.sim.checker.on_restore(self.id, rd.snapshot.index)
        self._apply(rd)
        for rs in rd.read_states:
            waiter = self.reads.pop(rs.request_id, None)
            if waiter is not None:
                self.ready_reads.append((rs, waiter))
        for ctx in rd.dropped_reads:
            waiter = self.reads.pop(ctx, None)
            if waiter is not None:
                waiter(None)
        self.node.advance(rd)
        self._serve_reads()
        self._maybe_snapshot()
        self.after_event()

    def _persist(self, rd: Ready) -> None:
        for chunk in rd.snapshot_chunks:
            self.storage.write_snapshot_chunk(chunk.meta, chunk.offset, chunk.data)
        if rd.snapshot is not None:
            self.storage.install_snapshot(rd.snapshot)
        prev_term = 0
        if rd.entries:
            try:
                prev_term = self.storage.term(rd.entries[0].index - 1)
            except LogCompacted:
                prev_term = -1
        if rd.entries and rd.entries[0].index <= self.storage.last_index():
            self._check_overwrite(rd)
        self.storage.save(rd.hard_state, rd.entries)
        self.sim.checker.on_save(self.id, rd.hard_state, rd.entries if prev_term >= 0 else [], prev_term)

    def _check_overwrite(self, rd: Ready) -> None:
        """A committed entry, once on a node's disk, is never removed (it can only
        be compacted into a snapshot): leaders never send conflicting entries there."""
        first = rd.entries[0].index
        new_terms = {e.index: e.term for e in rd.entries}
        for index in range(max(first, self.storage.first_index()), self.storage.last_index() + 1):
            committed = self.sim.checker.committed.get(index)
            if committed is None:
                continue
            held = self.storage.term(index)
            if held == committed[0] and new_terms.get(index) != held:
                self.sim.checker.fail(
                    "committed entry removed",
                    f"{self.id} overwrites committed entry {index} (term {held}) with "
                    f"{new_terms.get(index, 'nothing')}",
                )
                return

    def _apply(self, rd: Ready) -> None:
        for entry in rd.committed_entries:
            if entry.kind == EntryKind.CONFIG:
                self.applied_conf = decode_conf(entry.data)
            result = self.machine.apply_entry(entry)
            self.sim.checker.on_apply(self.id, entry, result)
            waiting = self.proposals.pop(entry.index, None)
            if waiting is not None:
                term, waiter = waiting
                waiter(entry.term, entry.term == term, result)

    def _serve_reads(self) -> None:
        still = []
        for rs, waiter in self.ready_reads:
            if rs.index <= self.machine.applied:
                waiter(self.machine)
            else:
                still.append((rs, waiter))
        self.ready_reads = still

    def _maybe_snapshot(self) -> None:
        applied = self.machine.applied
        if applied - self.storage.snapshot_meta().index < self.sim.snapshot_every:
            return
        ensure_commit_durable(self.storage, applied)
        meta = SnapshotMeta(index=applied, term=self.storage.term(applied), conf=self.applied_conf)
        self.storage.create_snapshot(meta, self.machine.snapshot())
        self.storage.compact(applied)

    def after_event(self) -> None:
        """Run the checks that look at this node, then continue the driver loop."""
        if not self.alive:
            return
        checker = self.sim.checker
        committed = self.node.log.committed
        if committed > self.last_commit:
            checker.on_commit(self.id, self.node.log, self.last_commit, committed, self.node.term)
            self.last_commit = committed
        is_leader = self.node.role == Role.LEADER
        if is_leader:
            checker.on_leader(self.id, self.node.term, self.node.log)
            if not self.was_leader:
                self.sim.on_new_leader(self.id)
        self.was_leader = is_leader
        self.pump()

    # -- client entry points --------------------------------------------------
    def propose(self, command: bytes, waiter: ApplyWaiter) -> int:
        """Propose; `waiter(term, ok)` fires when that index is applied here."""
        index = self.node.propose(command)
        self.proposals[index] = (self.node.term, waiter)
        return index

    def read(self, request_id: bytes, waiter: ReadWaiter) -> None:
        """Start a ReadIndex read; `waiter(machine)` fires once it is safe to read."""
        self.node.read_index(request_id)
        self.reads[request_id] = waiter
