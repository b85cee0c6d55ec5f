"""A whole cluster in one thread, from one seed: the deterministic simulator.

Theory of operation. Everything that happens is an event on one priority queue
keyed by virtual time (milliseconds): a node's tick (each node's clock runs at
its own, skewed, rate), a message delivery, a disk write completing, a client
request arriving, a fault. `step()` pops one event, runs it, and then runs the
safety checks of `rsm.sim.checks`. All randomness comes from one
`random.Random(seed)`, so a seed replays exactly; the last events are kept as a
trace to print when a check fails.

A run has two phases. In the chaos phase, faults are injected from the seed:
crashes and restarts, symmetric and asymmetric partitions, single clogged links
(FoundationDB's "swizzle"), message loss, duplication and slow (reordered)
messages. Then everything heals, the workload stops, and the liveness checks
run: a leader must appear and every acknowledged write must be applied on every
node, with identical state digests, within a bounded time. Finally the client
history is checked for linearizability.
"""

from __future__ import annotations

import collections
import heapq
import random
from collections.abc import Callable
from typing import Any

import attrs

from rsm.codec import EntriesCache, decode_message, encode_message
from rsm.consensus.config import Config
from rsm.consensus.types import ConfChange, ConfChangeKind, ConfState, Message, NodeId, Role
from rsm.errors import InvariantViolation, NotLeader, ProposalDropped, RsmError
from rsm.sim.checks import Checker, Violation
from rsm.sim.linearizability import History, check
from rsm.sim.machine import KVMachine, SimMachine, encode_put
from rsm.sim.network import NetworkFaults, SimNetwork
from rsm.sim.replica import SimReplica

#: Virtual milliseconds per tick of a node's clock (before skew).
TICK_MS = 10


def sim_config(rng: random.Random | None = None) -> Config:
    """Core settings for simulation: small limits, so batching, flow control and
    chunked snapshots are exercised with small logs. With `rng`, the limits are
    drawn per seed, so different seeds explore different message shapes."""
    if rng is None:
        return Config(
            heartbeat_interval_ticks=1,
            election_timeout_ticks=10,
            append_entries_max=8,
            append_bytes_max=512,
            inflight_messages_max=4,
            snapshot_chunk_bytes=64,
            snapshot_inflight_chunks_max=2,
            uncommitted_entries_max=200,
            pending_reads_max=64,
        )
    return Config(
        heartbeat_interval_ticks=rng.choice([1, 1, 2, 3]),
        election_timeout_ticks=rng.choice([10, 10, 15]),
        pre_vote=rng.random() < 0.85,
        check_quorum=rng.random() < 0.85,
        append_entries_max=rng.choice([1, 2, 8, 64]),
        append_bytes_max=rng.choice([64, 512, 1 << 20]),
        inflight_messages_max=rng.choice([1, 2, 4, 16]),
        snapshot_chunk_bytes=rng.choice([16, 64, 4096]),
        snapshot_inflight_chunks_max=rng.choice([1, 2, 4]),
        uncommitted_entries_max=rng.choice([20, 200]),
        pending_reads_max=rng.choice([4, 64]),
        log_cache_entries_max=rng.choice([0, 3, 8192]),
    )


@attrs.define
class SimOptions:
    nodes: int = 3
    steps: int = 3000
    clients: int = 4
    keys: int = 3
    #: Mean virtual ms between fault decisions in the chaos phase (0: no faults).
    fault_interval_ms: int = 60
    #: Mean virtual ms a client waits between operations.
    think_ms: int = 8
    #: A client gives up on an operation after this long (outcome unknown).
    client_timeout_ms: int = 400
    #: Apply this many entries between local snapshots (then compact).
    snapshot_every: int = 40
    #: After healing, a leader must exist and all acked writes be applied everywhere within this.
    liveness_ms_max: int = 20_000
    clock_skew: float = 0.1
    #: Probability that a node crashes in the middle of one given disk write.
    crash_during_write: float = 0.003
    #: Probability that a newly elected leader is isolated or crashed moments later.
    new_leader_fault: float = 0.2
    #: Membership workload: grow, shrink, replace nodes and transfer leadership.
    membership: bool = False
    #: Nodes outside the initial configuration, available to be added.
    spare_nodes: int = 0
    #: Mean virtual ms between membership operations.
    membership_interval_ms: int = 100
    #: Makes the state machine each replica runs (a fresh one per boot).
    machine_factory: Callable[[], SimMachine] = KVMachine
    check_linearizability: bool = True
    bugs: frozenset[str] = frozenset()
    #: "chaos": faults of every kind at random moments. "leader-churn": rare
    #: background faults, but every new leader is cut off or crashed moments
    #: after its election (the Raft figure-8 family of histories). "mixed"
    #: draws one of the two per seed (one seed in three is leader-churn).
    profile: str = "mixed"

    def for_seed(self, rng: random.Random) -> SimOptions:
        """The options one seed runs with, once the profile is drawn."""
        profile = self.profile
        if profile == "mixed":
            profile = "leader-churn" if rng.random() < 1 / 3 else "chaos"
        if profile == "leader-churn":
            return attrs.evolve(self, profile=profile, new_leader_fault=1.0, fault_interval_ms=1000)
        if profile != "chaos":
            raise ValueError(f"unknown simulation profile {profile!r}")
        return attrs.evolve(self, profile=profile)


@attrs.define
class SimResult:
    seed: int
    steps: int
    violations: list[Violation]
    trace: list[str]
    stats: dict[str, int]

    @property
    def ok(self) -> bool:
        return not self.violations


class Simulation:
    def __init__(self, seed: int, options: SimOptions | None = None, config: Config | None = None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.options = (options or SimOptions()).for_seed(self.rng)
        self.config = config or sim_config(self.rng)
        self.bugs = self.options.bugs
        self.snapshot_every = self.rng.choice([10, self.options.snapshot_every, 10_000])
        self.now = 0
        self.steps = 0
        self._queue: list[tuple[int, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self.checker = Checker()
        self.network = SimNetwork(self.rng)
        self.history = History()
        self.trace: collections.deque[tuple[int, str, tuple[Any, ...]]] = collections.deque(maxlen=60)
        self.chaos = True
        self.workload = True
        voters = [f"n{i + 1}" for i in range(self.options.nodes)]
        # With membership changes on, spare nodes run from the start, knowing
        # nothing, until the group adds them.
        spares = [f"n{i + 1}" for i in range(self.options.nodes, self.options.nodes + self.options.spare_nodes)]
        conf = ConfState(voters=frozenset(voters))
        self.replicas: dict[NodeId, SimReplica] = {}
        self._entries_caches: dict[NodeId, EntriesCache] = {}
        self._tick_ms: dict[NodeId, int] = {}
        self.admin = MembershipAdmin(self) if self.options.membership else None
        for node_id in voters + spares:
            self.replicas[node_id] = SimReplica(node_id, self, conf if node_id in voters else ConfState())
            skew = 1 + self.rng.uniform(-self.options.clock_skew, self.options.clock_skew)
            self._tick_ms[node_id] = max(1, round(TICK_MS * skew))
            self.schedule(self.rng.randint(1, TICK_MS), self._tick, node_id)
        self._client_ops = 0
        for client in range(self.options.clients):
            self.schedule(self.rng.randint(1, 20), self._client_next, client)
        if self.options.fault_interval_ms:
            self.schedule(self.options.fault_interval_ms, self._fault)
        if self.admin is not None:
            self.schedule(self.options.membership_interval_ms, self.admin.next_change)

    def new_machine(self) -> SimMachine:
        return self.options.machine_factory()

    # -- the event loop -------------------------------------------------------
    def schedule(self, delay: int, fn: Callable[..., None], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (self.now + delay, self._seq, fn, args))

    def step(self) -> bool:
        """Run one event and the checks after it; False when nothing is left."""
        if not self._queue:
            return False
        self.now, _, fn, args = heapq.heappop(self._queue)
        self.steps += 1
        self.trace.append((self.now, fn.__name__, args))
        try:
            fn(*args)
        except InvariantViolation as exc:
            self.checker.fail("invariant", f"{exc} (event {fn.__name__})")
        except Exception as exc:  # any other escape from the core is a bug too: report the seed
            self.checker.fail("exception", f"{type(exc).__name__}: {exc} (event {fn.__name__})")
        return True

    def disk_latency(self) -> int:
        # Mostly fast, sometimes a slow fsync: widens the window between a
        # decision and its durability, where crash bugs hide.
        return self.rng.randint(1, 3) if self.rng.random() < 0.9 else self.rng.randint(5, 30)

    def send(self, msg: Message) -> None:
        """Put a message on the wire, through the real codec."""
        self.checker.on_send(msg, self.replicas[msg.src].storage)
        delays = self.network.delays(msg.src, msg.dst)
        if delays:
            # Each node encodes through its own entries cache, as a replica
            # does; the round-trip check in _deliver covers the cached path.
            cache = self._entries_caches.setdefault(msg.src, EntriesCache())
            frame = encode_message(msg, cache)
            for delay in delays:
                self.schedule(delay, self._deliver, frame, msg)

    def _deliver(self, frame: bytes, sent: Message) -> None:
        msg = decode_message(frame)
        if msg != sent:
            self.checker.fail("codec", f"{sent} arrived as {msg}")
        replica = self.replicas.get(msg.dst)
        if replica is None or not replica.alive:
            return
        replica.node.step(msg)
        replica.after_event()

    def _tick(self, node_id: NodeId) -> None:
        replica = self.replicas[node_id]
        if replica.alive:
            replica.node.tick()
            replica.after_event()
        self.schedule(self._tick_ms[node_id], self._tick, node_id)

    # -- faults ---------------------------------------------------------------
    def _fault(self) -> None:
        if not self.chaos:
            return
        self.schedule(self.rng.randint(1, 2 * self.options.fault_interval_ms), self._fault)
        ids = sorted(self.replicas)
        down = [i for i in ids if not self.replicas[i].alive]
        up = [i for i in ids if self.replicas[i].alive]
        roll = self.rng.random()
        leaders = [i for i in up if self.replicas[i].node.role == Role.LEADER]
        if roll < 0.14 and up and len(down) < len(ids) // 2 + 1:
            self.replicas[self.rng.choice(up)].crash()
        elif roll < 0.22 and leaders:
            # Crash the leader itself: the hardest moment for acked writes.
            self.replicas[self.rng.choice(leaders)].crash()
        elif roll < 0.30:
            # Crash a node in the middle of a disk write and bring it back soon:
            # what it promised before the write completed must not be forgotten.
            busy = [i for i in up if self.replicas[i].busy]
            if busy:
                node_id = self.rng.choice(busy)
                self.replicas[node_id].crash()
                self.schedule(self.rng.randint(1, 40), self._restart, node_id)
        elif roll < 0.45 and down:
            self._restart(self.rng.choice(down))
        elif roll < 0.52 and leaders:
            # Cut the leader off with at most a minority: it keeps taking
            # proposals that can never commit, so logs diverge.
            leader = self.rng.choice(leaders)
            others = [i for i in ids if i != leader]
            self.rng.shuffle(others)
            with_leader = {leader, *others[: self.rng.randint(0, (len(ids) - 1) // 2)]}
            self.network.partition([with_leader, set(ids) - with_leader])
        elif roll < 0.60:
            self.random_partition()
        elif roll < 0.68:
            # Swizzle-clog: stop one direction of one link.
            a, b = self.rng.sample(ids, 2)
            self.network.block(a, b)
        elif roll < 0.82:
            self.network.heal()
        else:
            self.network.faults = NetworkFaults(
                loss=self.rng.choice([0.0, 0.02, 0.1, 0.3]),
                duplicate=self.rng.choice([0.0, 0.02, 0.1]),
                slow=self.rng.choice([0.0, 0.05, 0.2]),
                # Sometimes a message is stuck long enough to outlive an election.
                slow_latency_max=self.rng.choice([60, 400]),
            )

    def on_new_leader(self, node_id: NodeId) -> None:
        """Sometimes cut off or crash a leader moments after it is elected, while
        its first entries are in flight: the window where the commit rule and
        leader completeness are tested hardest (Raft figure 8)."""
        if not self.chaos or self.rng.random() >= self.options.new_leader_fault:
            return
        roll = self.rng.random()
        if roll < 0.4:
            self._isolate(node_id)  # before its first messages leave
        elif roll < 0.8:
            self.schedule(self.rng.randint(1, 30), self._isolate, node_id)
        else:
            self.schedule(self.rng.randint(0, 30), self._crash, node_id)
            self.schedule(self.rng.randint(20, 200), self._restart, node_id)

    def _isolate(self, node_id: NodeId) -> None:
        if self.chaos:
            others = set(self.replicas) - {node_id}
            self.network.partition([{node_id}, others])

    def maybe_crash_during_write(self, node_id: NodeId, latency: int) -> None:
        """Sometimes crash a node while its batch is being written, then restart it
        soon (FoundationDB's "buggify"): the moment where promises made before
        durability would be forgotten."""
        if self.chaos and latency > 1 and self.rng.random() < self.options.crash_during_write:
            self.schedule(self.rng.randint(1, latency - 1), self._crash, node_id)
            self.schedule(latency + self.rng.randint(1, 20), self._restart, node_id)

    def _crash(self, node_id: NodeId) -> None:
        replica = self.replicas[node_id]
        if replica.alive and self.chaos:
            replica.crash()

    def random_partition(self) -> None:
        """Split all nodes in two random, non-empty groups."""
        if not self.chaos:
            return
        ids = sorted(self.replicas)
        self.rng.shuffle(ids)
        cut = self.rng.randint(1, len(ids) - 1)
        self.network.partition([set(ids[:cut]), set(ids[cut:])])

    def _restart(self, node_id: NodeId) -> None:
        replica = self.replicas[node_id]
        if not replica.alive and self.chaos:
            replica.boot()
            replica.after_event()

    def heal_all(self) -> None:
        """End the chaos phase: restart every node, reconnect everything."""
        self.chaos = False
        self.workload = False
        self.network.heal()
        for replica in self.replicas.values():
            if not replica.alive:
                replica.boot()
                replica.after_event()

    # -- the client workload --------------------------------------------------
    def _client_next(self, client: int) -> None:
        if not self.workload:
            return
        key = f"k{self.rng.randrange(self.options.keys)}"
        if self.rng.random() < 0.5:
            self.start_put(client, key)
        else:
            self.start_get(client, key)

    def start_put(self, client: int, key: str) -> None:
        """A client writes a fresh, unique value to `key` (via any replica)."""
        self._client_ops += 1
        value = client * 1_000_000 + self._client_ops
        op = self.history.invoke_put(client, key, value, self.now)

        def done(ok: bool, index: int, result: bytes | None) -> None:
            if ok:
                self.history.complete(op, self.now)
            else:
                self.history.fail_unknown(op)
            self._client_done(client)

        self.submit(encode_put(key, value), done)

    def start_get(self, client: int, key: str) -> None:
        """A client reads `key` linearizably (ReadIndex, via any replica)."""
        op = self.history.invoke_get(client, key, self.now)

        def done(ok: bool, value: Any) -> None:
            if ok:
                self.history.complete(op, self.now, value)
            else:
                self.history.fail_unknown(op)
            self._client_done(client)

        self.read(lambda machine: machine.data.get(key), done)

    def run_for(self, ms: int) -> None:
        """Advance virtual time by `ms`, stopping early at a violation."""
        until = self.now + ms
        while self._queue and self._queue[0][0] <= until and self.checker.ok:
            self.step()
        self.now = max(self.now, until)

    def crash(self, node_id: NodeId) -> None:
        if self.replicas[node_id].alive:
            self.replicas[node_id].crash()

    def restart(self, node_id: NodeId) -> None:
        replica = self.replicas[node_id]
        if not replica.alive:
            replica.boot()
            replica.after_event()

    def _client_done(self, client: int) -> None:
        self.schedule(self.rng.randint(1, 2 * self.options.think_ms), self._client_next, client)

    def submit(self, command: bytes, on_done: Callable[[bool, int, bytes | None], None]) -> None:
        """A client proposes `command` through any replica, following leader
        hints until `client_timeout_ms` passes. `on_done(ok, index, result)`
        runs once, when the answer reaches the client; ok False means the
        outcome is unknown (the command may or may not have been applied)."""
        deadline = self.now + self.options.client_timeout_ms
        self._submit_to(self.rng.choice(sorted(self.replicas)), command, deadline, on_done)

    def _retry_target(self, hint: NodeId | None) -> NodeId:
        return hint if hint in self.replicas else self.rng.choice(sorted(self.replicas))

    def _submit_to(
        self, target: NodeId, command: bytes, deadline: int, on_done: Callable[[bool, int, bytes | None], None]
    ) -> None:
        replica = self.replicas[target]
        if self.now >= deadline:
            on_done(False, 0, None)
            return

        def retry(hint: NodeId | None) -> None:
            self.schedule(self.rng.randint(2, 12), self._submit_to, self._retry_target(hint), command, deadline, on_done)

        if not replica.alive:
            retry(None)
            return
        state = {"settled": False}
        try:
            index = replica.propose(command, lambda term, ok, result: on_applied(term, ok, result))
        except NotLeader as exc:
            retry(exc.leader_hint)
            return
        except ProposalDropped:
            retry(target)
            return
        replica.after_event()

        def on_applied(term: int, ok: bool, result: bytes | None) -> None:
            if state["settled"]:
                return
            state["settled"] = True
            if ok:
                self.checker.on_ack(index, term)
            self.schedule(self.rng.randint(1, 4), answer, ok, result)

        def answer(ok: bool, result: bytes | None) -> None:
            on_done(ok and self.now <= deadline, index, result)

        def timeout() -> None:
            if not state["settled"]:
                state["settled"] = True
                on_done(False, index, None)

        self.schedule(max(1, deadline - self.now), timeout)

    def read(self, query: Callable[[Any], Any], on_done: Callable[[bool, Any], None]) -> None:
        """A client runs `query(machine)` linearizably (ReadIndex) through any
        replica; `on_done(ok, value)` runs once when the answer arrives (ok
        False: no answer before `client_timeout_ms`)."""
        deadline = self.now + self.options.client_timeout_ms
        self._read_at(self.rng.choice(sorted(self.replicas)), query, deadline, on_done)

    def _read_at(self, target: NodeId, query: Callable[[Any], Any], deadline: int, on_done: Callable[[bool, Any], None]) -> None:
        replica = self.replicas[target]
        if self.now >= deadline:
            on_done(False, None)
            return

        def retry(hint: NodeId | None) -> None:
            self.schedule(self.rng.randint(2, 12), self._read_at, self._retry_target(hint), query, deadline, on_done)

        if not replica.alive:
            retry(None)
            return
        state = {"settled": False}

        def on_read(machine: Any) -> None:
            if state["settled"]:
                return
            state["settled"] = True
            if machine is None:
                retry(None)  # leadership lost before confirming: safe to try again
                return
            self.schedule(self.rng.randint(1, 4), answer, query(machine))

        def answer(value: Any) -> None:
            on_done(self.now <= deadline, value)

        def timeout() -> None:
            if not state["settled"]:
                state["settled"] = True
                on_done(False, None)

        self._client_ops += 1
        try:
            replica.read(f"r{self._client_ops}".encode(), on_read)
        except NotLeader as exc:
            retry(exc.leader_hint)
            return
        replica.after_event()
        self.schedule(max(1, deadline - self.now), timeout)

    # -- running --------------------------------------------------------------
    def run(self) -> SimResult:
        """Chaos phase for `steps` events, then heal and check liveness and history."""
        while self.steps < self.options.steps and self.checker.ok and self.step():
            pass
        self.finish()
        return self.result()

    def finish(self) -> None:
        """Heal, then check liveness and (optionally) the client history."""
        if self.checker.ok:
            self._liveness()
        if self.checker.ok and self.options.check_linearizability:
            result = check(self.history)
            if result.violation:
                self.checker.fail("linearizability", result.explanation)

    def result(self) -> SimResult:
        return SimResult(
            seed=self.seed,
            steps=self.steps,
            violations=list(self.checker.violations),
            trace=self.format_trace(),
            stats={
                "messages": self.network.sent,
                "dropped": self.network.dropped,
                "acked": len(self.checker.acked),
                "committed": len(self.checker.committed),
                "max_term": max(r.node.term for r in self.replicas.values()),
            },
        )

    def _liveness(self) -> None:
        self.heal_all()
        deadline = self.now + self.options.liveness_ms_max
        while self.now < deadline and self.checker.ok:
            if self._converged():
                return
            if not self.step():
                break
        if self.checker.ok and not self._converged():
            self.checker.fail("liveness", self._liveness_report())

    def leader(self) -> NodeId | None:
        """The leader, if exactly one is live and a quorum of its voters follows it."""
        leaders = [r for r in self.replicas.values() if r.alive and r.node.role == Role.LEADER]
        if len(leaders) != 1:
            return None
        node = leaders[0].node
        followers = sum(
            1 for v in node.conf.voters
            if self.replicas[v].alive and self.replicas[v].node.term == node.term and self.replicas[v].node.leader_id == node.id
        )
        return node.id if followers >= node.conf.quorum() else None

    def members(self) -> list[SimReplica]:
        """The replicas of the leader's configuration (all of them before one is known)."""
        leader = self.leader()
        if leader is None:
            return list(self.replicas.values())
        return [self.replicas[m] for m in sorted(self.replicas[leader].node.conf.members)]

    def _converged(self) -> bool:
        leader = self.leader()
        if leader is None or self.replicas[leader].node.conf != self.replicas[leader].node.committed_conf:
            return False
        members = self.members()
        acked_max = max((index for index, _ in self.checker.acked), default=0)
        applied = {r.machine.applied for r in members}
        if len(applied) != 1 or min(applied) < acked_max:
            return False
        digests = {r.machine.digest() for r in members}
        if len(digests) != 1:
            self.checker.fail("state digest", f"replicas at the same applied index differ: {sorted(digests)}")
        return True

    def _liveness_report(self) -> str:
        parts = [f"{r.id}:{r.node.role.value}/t{r.node.term}/c{r.node.log.committed}/a{r.machine.applied}"
                 for r in self.replicas.values()]
        return f"not converged {self.options.liveness_ms_max} ms after healing: " + " ".join(parts)

    def format_trace(self) -> list[str]:
        return [f"t={t:>7} {name}({_fmt_args(args)})" for t, name, args in self.trace]


class MembershipAdmin:
    """An operator that keeps changing the group: grow (add a learner, promote it
    once caught up), shrink (remove a voter, possibly the leader), replace (both),
    and transfer leadership. Refusals and retries are part of the workload."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.voters_min = 3 if sim.options.nodes >= 3 else 1
        self.voters_max = sim.options.nodes + sim.options.spare_nodes
        self.applied = 0
        self.refused = 0

    def next_change(self) -> None:
        sim = self.sim
        if not sim.chaos:
            return
        sim.schedule(sim.rng.randint(1, 2 * sim.options.membership_interval_ms), self.next_change)
        # Mostly the real leader; sometimes any node that believes it leads.
        current = sim.leader()
        leaders = [r for r in sim.replicas.values() if r.alive and r.node.role == Role.LEADER]
        if current is not None and sim.rng.random() < 0.9:
            leader = sim.replicas[current]
        elif leaders:
            leader = sim.rng.choice(leaders)
        else:
            return
        # Sometimes an impatient operator asks for a second change at once:
        # it must be refused while the first is uncommitted.
        for _ in range(2 if sim.rng.random() < 0.3 else 1):
            change = self._choose(leader.node.conf)
            try:
                if change is None:
                    leader.node.transfer_leadership(sim.rng.choice(sorted(leader.node.conf.voters)))
                else:
                    leader.node.propose_conf_change(change)
                self.applied += 1
            except (RsmError, KeyError):
                self.refused += 1
                break
        leader.after_event()
        if sim.rng.random() < 0.3:
            # A partition while a configuration is in flight: the moment where
            # two configurations could each find a majority.
            sim.schedule(sim.rng.randint(0, 10), sim.random_partition)

    def _choose(self, conf: ConfState) -> ConfChange | None:
        rng = self.sim.rng
        spares = sorted(set(self.sim.replicas) - conf.members)
        roll = rng.random()
        if roll < 0.15:
            return None  # transfer leadership
        if conf.learners and roll < 0.55:
            return ConfChange(ConfChangeKind.ADD_VOTER, rng.choice(sorted(conf.learners)))
        if spares and len(conf.voters) + len(conf.learners) < self.voters_max and roll < 0.75:
            return ConfChange(ConfChangeKind.ADD_LEARNER, rng.choice(spares))
        if len(conf.voters) > self.voters_min:
            return ConfChange(ConfChangeKind.REMOVE, rng.choice(sorted(conf.voters)))
        if conf.learners:
            return ConfChange(ConfChangeKind.REMOVE, rng.choice(sorted(conf.learners)))
        return None


def _fmt_args(args: tuple[Any, ...]) -> str:
    out = []
    for arg in args:
        if isinstance(arg, bytes):
            continue
        if isinstance(arg, Message):
            extra = f" n={len(arg.entries)}" if arg.entries else ""
            flag = " reject" if arg.reject else ""
            out.append(f"{arg.type.name} {arg.src}->{arg.dst} t{arg.term} i{arg.index} c{arg.commit}{extra}{flag}")
        elif callable(arg) or hasattr(arg, "entries"):
            out.append(type(arg).__name__)
        else:
            out.append(repr(arg))
    return ", ".join(out)


def run_seed(seed: int, options: SimOptions | None = None) -> SimResult:
    return Simulation(seed, options).run()
