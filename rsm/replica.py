"""The replica process: the consensus core driven by a real clock, disk and network.

Theory of operation
-------------------
One asyncio loop owns everything; nothing here is shared with other threads.

- A ticker calls `Node.tick()` every `tick_ms`.
- Peer frames (`rsm.net.PeerTransport`) are decoded with the strict codec and
  stepped into the core; a malformed frame closes that connection only.
- Client requests (`rsm.protocol` over `rsm.net.ClientServer`) become
  proposals (commands and session entries, stamped with the leader's clock)
  or reads (ReadIndex, or stale reads served at once).
- The driver carries out each `Ready` batch exactly as `rsm.consensus.ready`
  prescribes: leader messages out at once; snapshot chunks, snapshot install,
  then hard state and entries in ONE synced LMDB transaction; then the
  messages that promise durability; then apply (`MachineHost.apply_batch`,
  one LMDB transaction for the whole batch for on-disk machines), answer the
  clients waiting on those indexes, serve reads, `advance()`.

Group commit falls out of the loop: while the driver is writing, requests
keep arriving and are appended to the core's unstable log; the next batch
persists all of them with one fsync and replicates them in one message per
follower. Nothing is acknowledged to a client before its entry is applied,
and entries are applied only once they are durable on a majority.

Every replica computes its state digest every `digest_every_entries` applied
entries and tells its peers; a different digest at the same index means a
non-deterministic `apply` and is reported loudly (log, status, counter).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import random
import signal
import struct
import sys
import time
from typing import Any

import msgpack

from rsm import aio
from rsm.codec import DecodeError, EntriesCache, decode_message, encode_message
from rsm.config import (
    PARENT_ENV,
    ClusterConfig,
    apply_cpu_scheduling,
    format_address,
    load_app,
    load_config,
)
from rsm.consensus.membership import decode_conf
from rsm.consensus.node import Node
from rsm.consensus.ready import Ready
from rsm.consensus.storage import ensure_commit_durable
from rsm.consensus.types import (
    ConfState,
    EntryKind,
    Message,
    ReadState,
    Role,
    SnapshotMeta,
)
from rsm.errors import InvariantViolation, NotLeader, ProposalDropped, RsmError
from rsm.lmdb_machine import LMDBStateMachine
from rsm.net import ClientServer, PeerTransport
from rsm.net.connection import Connection
from rsm.net.errors import TransportError
from rsm.protocol import (
    Code,
    ProtocolError,
    Request,
    Response,
    decode_request,
    decode_submit,
    encode_ok,
    encode_response,
)
from rsm.statemachine import MachineHost, MembershipView, StateMachine
from rsm.storage import DiskStorage, open_store

log = logging.getLogger("rsm.replica")

#: Every command entry starts with the leader's clock (ms since the epoch) when it
#: accepted the command: the deterministic "now" the state machine sees.
ENTRY_HEADER = struct.Struct(">Q")
#: Peer frames starting with this byte carry a state digest, not a Raft message
#: (a codec message is a msgpack array, whose first byte is never 0x44).
DIGEST_FRAME = b"D"
#: How many of our own recent digests are kept for comparison with peers'.
DIGESTS_KEPT = 16

Waiter = tuple[Connection, int]


class Replica:
    """One member of a cluster, running in the current event loop."""

    def __init__(self, cluster: ClusterConfig, node_id: str) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.me = cluster.replica_for(node_id)
        self.settings = cluster.replica
        self.stopped = asyncio.Event()
        self.exit_code = 0
        self.divergence: str | None = None
        self.counters: collections.Counter[str] = collections.Counter()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._proposals: dict[int, tuple[Connection, int, int]] = {}  # index -> (conn, request id, term)
        self._reads: dict[bytes, tuple[Connection, int, bytes, int]] = {}  # ctx -> (conn, id, payload, ts)
        self._ready_reads: list[tuple[ReadState, Connection, int, bytes, int]] = []
        self._read_seq = 0
        self._digests: collections.OrderedDict[int, str] = collections.OrderedDict()
        self._peer_digests: dict[tuple[str, int], str] = {}
        self._last_role: tuple[Role, int, str | None] | None = None
        self._submits: list[tuple[Connection, int, bytes]] = []
        self._entries_cache = EntriesCache()  # new entries encoded once for all followers
        #: The CPU scheduling policy in force (`ReplicaSettings.cpu_scheduling`).
        self.cpu_scheduling = "normal"

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Open the data directory and the machine, then listen and dial."""
        self.me.data.mkdir(parents=True, exist_ok=True)
        initial = ConfState(voters=frozenset(self.cluster.replicas))
        self.storage: DiskStorage = open_store(
            self.me.data / "raft", cluster_id=self.cluster.cluster_id, node_id=self.node_id, initial_conf=initial
        )
        self.host = self._open_host()
        self.applied_conf = self._recover_machine()
        self.node = Node(
            self.node_id, self.cluster.consensus, self.storage, random.Random(os.urandom(16)),
            applied=self.host.applied_index,
        )
        self._last_digest_index = self.host.applied_index
        peers = {i: r.peer for i, r in self.cluster.replicas.items() if i != self.node_id}
        tls = self.cluster.tls
        self.peers = PeerTransport(
            self.me.peer, cluster_id=self.cluster.cluster_id, node_id=self.node_id, secret=self.cluster.secret,
            on_frame=self._on_peer_frame, rng=random.Random(os.urandom(16)), peers=peers,
            server_ssl=tls.server_context(self.me) if tls else None,
            client_ssl=tls.client_context(self.me) if tls else None,
        )
        self.clients = ClientServer(
            self.me.client, cluster_id=self.cluster.cluster_id, node_id=self.node_id, secret=self.cluster.secret,
            handler=self._serve_client, ssl_context=tls.server_context(self.me) if tls else None,
        )
        await self.peers.start()
        await self.clients.start()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._ticker(), name="rsm ticker"), loop.create_task(self._driver(), name="rsm driver")]
        for task in self._tasks:
            task.add_done_callback(self._task_done)
        log.info("replica %s of %s: peer %s, client %s, applied %d, term %d", self.node_id, self.cluster.cluster_id,
                 format_address(self.me.peer), format_address(self.me.client), self.host.applied_index, self.node.term)

    def _open_host(self) -> MachineHost:
        app = load_app(self.cluster.app)
        if not (isinstance(app, type) and issubclass(app, StateMachine)):
            raise RsmError(f"app {self.cluster.app!r} is not a StateMachine subclass")
        path = self.me.data / "machine" if issubclass(app, LMDBStateMachine) else None
        return MachineHost(app(), path=path)

    def _recover_machine(self) -> ConfState:
        """Bring the machine to the newest snapshot if it is behind it; return the
        configuration as of the machine's applied index."""
        meta = self.storage.snapshot_meta()
        if meta.index > self.host.applied_index:
            self._restore_snapshot(meta)
        conf = meta.conf if meta.index else ConfState(voters=frozenset(self.cluster.replicas))
        lo, hi = max(meta.index, self.storage.first_index() - 1) + 1, self.host.applied_index
        if lo <= hi:
            for entry in self.storage.entries(lo, hi + 1):
                if entry.kind == EntryKind.CONFIG:
                    conf = decode_conf(entry.data)
        return conf

    def _restore_snapshot(self, meta: SnapshotMeta) -> None:
        with contextlib.closing(self.storage.open_snapshot(meta.index)) as reader:
            try:
                self.host.restore(reader)  # type: ignore[arg-type]
            except Exception:
                # A failed restore leaves the machine unusable: start from a fresh one.
                self.host.close()
                self.host = self._open_host()
                raise

    async def stop(self) -> None:
        """Stop serving, then close the network, the machine and the data directory."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.clients.close()
        await self.peers.close()
        self.host.close()
        self.storage.close()
        self.stopped.set()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._fatal(task.exception())  # type: ignore[arg-type]

    def _fatal(self, exc: BaseException) -> None:
        """A failed fsync, a corrupt log, a broken invariant: stop, never retry."""
        log.critical("replica %s stops: %s: %s", self.node_id, type(exc).__name__, exc, exc_info=exc)
        self.exit_code = 1
        self.stopped.set()

    # -------------------------------------------------------------------- inputs
    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.cluster.tick_ms / 1000
        deadline = loop.time()
        while True:
            deadline += interval
            now = loop.time()
            if deadline < now:
                # The loop was busy (or the process starved): do not fire the
                # missed ticks in a burst, which would time out elections
                # before the heartbeats waiting in the socket are even read.
                deadline = now
            await asyncio.sleep(max(0.0, deadline - now))
            self.node.tick()
            self._wake.set()

    def _on_peer_frame(self, peer_id: str, frame: bytes) -> None:
        if frame[:1] == DIGEST_FRAME:
            self._on_peer_digest(peer_id, frame)
            return
        msg = decode_message(frame)  # DecodeError closes that connection (rsm.net)
        if msg.src != peer_id or msg.dst != self.node_id:
            self.counters["frames_misaddressed"] += 1
            raise DecodeError(f"message from {msg.src} to {msg.dst} on {peer_id}'s connection")
        try:
            self.node.step(msg)
        except InvariantViolation as exc:
            self._fatal(exc)
            return
        self._wake.set()

    async def _serve_client(self, conn: Connection) -> None:
        while frames := await conn.recv_batch():
            stamp = ENTRY_HEADER.pack(_now_ms())  # one clock reading per batch of requests
            for frame in frames:
                submit = decode_submit(frame)  # the hot path: no Request object
                if submit is not None:
                    self._submit(conn, submit[0], submit[1], stamp)
                    continue
                try:
                    request = decode_request(frame)
                except ProtocolError as exc:
                    self.counters["client_frames_malformed"] += 1
                    self._reply(conn, 0, Code.BAD_REQUEST, str(exc))
                    continue
                self._handle(conn, request)
            self._wake.set()

    def _handle(self, conn: Connection, request: Request) -> None:
        rid = request.request_id
        if request.kind == "status":
            self._reply(conn, rid, Code.OK, self.status())
        elif request.kind == "submit":
            self._submit(conn, rid, request.payload, ENTRY_HEADER.pack(_now_ms()))
        elif request.consistency == "stale":
            self._reply(conn, rid, Code.OK, self.host.query(request.payload, timestamp_ms=_now_ms()))
        else:
            self._read(conn, rid, request.payload)

    def _pending(self) -> int:
        return len(self._proposals) + len(self._submits) + len(self._reads) + len(self._ready_reads)

    def _submit(self, conn: Connection, rid: int, payload: bytes, stamp: bytes) -> None:
        """Queue a command for the next proposal, `stamp` (the leader's clock,
        `ENTRY_HEADER`) in front, unless a limit or the role refuses it."""
        if self.node.role != Role.LEADER:
            self._not_leader(conn, rid)
            return
        if len(payload) > self.settings.command_bytes_max:
            self._reply(conn, rid, Code.BAD_REQUEST,
                        f"command of {len(payload)} bytes exceeds command_bytes_max={self.settings.command_bytes_max}")
            return
        if self._pending() >= self.settings.pending_requests_max:
            self._reply(conn, rid, Code.BUSY, "too many requests in progress; retry")
            return
        # Proposed together with everything else that arrives in this loop turn
        # (one propose_batch call), just before the driver takes the next batch.
        self._submits.append((conn, rid, stamp + payload))

    def _propose_submits(self) -> None:
        submits, self._submits = self._submits, []
        try:
            last = self.node.propose_batch([data for _, _, data in submits])
        except NotLeader:
            for conn, rid, _ in submits:
                self._not_leader(conn, rid)
            return
        except ProposalDropped as exc:
            for conn, rid, _ in submits:
                self._reply(conn, rid, Code.BUSY, str(exc))
            return
        term = self.node.term
        for index, (conn, rid, _) in enumerate(submits, start=last - len(submits) + 1):
            self._proposals[index] = (conn, rid, term)

    def _read(self, conn: Connection, rid: int, payload: bytes) -> None:
        if self._pending() >= self.settings.pending_requests_max:
            self._reply(conn, rid, Code.BUSY, "too many requests in progress; retry")
            return
        self._read_seq += 1
        ctx = self._read_seq.to_bytes(8, "big")
        try:
            self.node.read_index(ctx)
        except NotLeader:
            self._reply(conn, rid, Code.UNAVAILABLE, "no leader known; retry")
            return
        self._reads[ctx] = (conn, rid, payload, _now_ms())

    def _not_leader(self, conn: Connection, rid: int) -> None:
        leader = self.node.leader_id
        address = None
        if leader is not None and leader in self.cluster.replicas:
            address = format_address(self.cluster.replicas[leader].client)
        self._reply(conn, rid, Code.NOT_LEADER, [leader, address])

    def _reply(self, conn: Connection, rid: int, code: Code, value: Any) -> None:
        # An OK answer (the hot path) is encoded without a Response object.
        frame = encode_ok(rid, value) if code == Code.OK else encode_response(Response(rid, code, value))
        try:
            conn.send(frame)
        except TransportError:
            self.counters["replies_lost"] += 1  # the client went away; it will retry

    # -------------------------------------------------------------------- driver
    async def _driver(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._process()

    async def _process(self) -> None:
        node = self.node
        if self._submits:
            self._propose_submits()
        while node.has_ready():
            rd = node.ready()
            persist = rd.must_persist()
            leader = rd.role == Role.LEADER
            # Who waits on what decides the order (sending later than the
            # contract allows is always safe). New entries go to the followers
            # before our own fsync, so they write in parallel with us. A
            # follower's acknowledgements go before it applies: the leader's
            # commit waits on them. A leader's messages without new entries
            # (commit notices, heartbeats) go after the answers to the clients
            # whose commands just committed: nobody waits on them.
            early, late = (rd.messages_now, []) if persist or not leader else ([], rd.messages_now)
            for msg in early:
                self._send(msg)
            if early and persist:
                await asyncio.sleep(0)  # the transport writes only when this loop yields
            self._persist(rd)
            if not leader:
                for msg in rd.messages:
                    self._send(msg)
                if rd.messages and rd.committed_entries:
                    await asyncio.sleep(0)  # the acknowledgements leave before a long apply
            self._apply(rd)
            if leader:
                for msg in late + rd.messages:
                    self._send(msg)
            self._queue_reads(rd)
            self._note_role(rd)
            node.advance(rd)
            self._serve_reads()
            self._maybe_snapshot()

    def _note_role(self, rd: Ready) -> None:
        seen = (rd.role, rd.term, rd.leader_id)
        if seen != self._last_role:
            self._last_role = seen
            self.counters["role_changes"] += 1
            log.info("%s is %s in term %d (leader: %s)", self.node_id, rd.role.value, rd.term, rd.leader_id or "unknown")

    def _send(self, msg: Message) -> None:
        if msg.entries:
            self.counters["appends_sent"] += 1
            self.counters["entries_sent"] += len(msg.entries)
        self.peers.send(msg.dst, encode_message(msg, self._entries_cache))

    def _persist(self, rd: Ready) -> None:
        for chunk in rd.snapshot_chunks:
            self.storage.write_snapshot_chunk(chunk.meta, chunk.offset, chunk.data)
        if rd.snapshot is not None:
            self.storage.install_snapshot(rd.snapshot)
        if rd.hard_state is not None or rd.entries:
            self.storage.save(rd.hard_state, rd.entries)
            self.counters["fsyncs"] += 1
            self.counters["entries_persisted"] += len(rd.entries)

    def _apply(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self._restore_snapshot(rd.snapshot)
            self.applied_conf = rd.snapshot.conf
            self._fail_proposals_through(rd.snapshot.index)
        items: list[tuple[int, int, int | None, Any]] = []
        for entry in rd.committed_entries:
            if entry.kind == EntryKind.NORMAL:
                (stamp,) = ENTRY_HEADER.unpack_from(entry.data)
                items.append((entry.index, entry.term, stamp, entry.data[ENTRY_HEADER.size :]))
            elif entry.kind == EntryKind.CONFIG:
                conf = decode_conf(entry.data)
                self.applied_conf = conf
                items.append((entry.index, entry.term, None, MembershipView(conf.voters, conf.learners)))
            else:
                items.append((entry.index, entry.term, None, None))
            if entry.index % self.settings.digest_every_entries == 0:
                self._apply_items(items)
                items = []
                self._checkpoint_digest(entry.index)
        self._apply_items(items)

    def _apply_items(self, items: list[tuple[int, int, int | None, Any]]) -> None:
        if not items:
            return
        results = self.host.apply_batch(items)
        self.counters["applied"] += len(items)
        for (index, term, _, _), result in zip(items, results, strict=True):
            waiter = self._proposals.pop(index, None)
            if waiter is None:
                continue
            conn, rid, proposed_term = waiter
            if term == proposed_term:
                self._reply(conn, rid, Code.OK, result)
            else:
                self._reply(conn, rid, Code.UNAVAILABLE, "leadership changed before the command committed; retry")

    def _fail_proposals_through(self, index: int) -> None:
        for i in [i for i in self._proposals if i <= index]:
            conn, rid, _ = self._proposals.pop(i)
            self._reply(conn, rid, Code.UNAVAILABLE, "replaced by a snapshot; retry")

    def _queue_reads(self, rd: Ready) -> None:
        for rs in rd.read_states:
            pending = self._reads.pop(rs.request_id, None)
            if pending is not None:
                self._ready_reads.append((rs, *pending))
        for ctx in rd.dropped_reads:
            pending = self._reads.pop(ctx, None)
            if pending is not None:
                self._reply(pending[0], pending[1], Code.UNAVAILABLE, "leadership lost before the read was confirmed; retry")

    def _serve_reads(self) -> None:
        if not self._ready_reads:
            return
        applied = self.host.applied_index
        waiting = []
        for rs, conn, rid, payload, stamp in self._ready_reads:
            if rs.index <= applied:
                self._reply(conn, rid, Code.OK, self.host.query(payload, timestamp_ms=stamp))
            else:
                waiting.append((rs, conn, rid, payload, stamp))
        self._ready_reads = waiting

    def _maybe_snapshot(self) -> None:
        applied = self.host.applied_index
        if applied - self.storage.snapshot_meta().index < self.settings.snapshot_every_entries:
            return
        ensure_commit_durable(self.storage, applied)
        meta = SnapshotMeta(index=applied, term=self.host.applied_term, conf=self.applied_conf)
        with self.storage.snapshot_writer(meta) as writer:
            self.host.snapshot(writer)  # type: ignore[arg-type]
        self.storage.compact(applied)
        self.counters["snapshots"] += 1

    # ------------------------------------------------------------------ digests
    def _checkpoint_digest(self, index: int) -> None:
        digest = self.host.digest()
        self._digests[index] = digest
        while len(self._digests) > DIGESTS_KEPT:
            self._digests.popitem(last=False)
        frame = DIGEST_FRAME + msgpack.packb([index, digest])
        for peer in self.peers.peers:
            self.peers.send(peer, frame)
        for (peer, peer_index), peer_digest in list(self._peer_digests.items()):
            if peer_index == index:
                self._compare_digest(peer, index, peer_digest)
                del self._peer_digests[(peer, peer_index)]

    def _on_peer_digest(self, peer_id: str, frame: bytes) -> None:
        try:
            index, digest = msgpack.unpackb(frame[1:], max_str_len=256, max_array_len=2)
        except Exception as exc:
            raise DecodeError(f"malformed digest frame: {exc}") from exc
        if type(index) is not int or type(digest) is not str:
            raise DecodeError("malformed digest frame")
        if index in self._digests:
            self._compare_digest(peer_id, index, digest)
        elif index > self.host.applied_index and len(self._peer_digests) < DIGESTS_KEPT * len(self.cluster.replicas):
            self._peer_digests[(peer_id, index)] = digest

    def _compare_digest(self, peer_id: str, index: int, digest: str) -> None:
        ours = self._digests[index]
        if ours == digest:
            self.counters["digests_matched"] += 1
            return
        self.counters["digests_diverged"] += 1
        self.divergence = (
            f"state diverged at applied index {index}: {self.node_id} has {ours}, {peer_id} has {digest}; "
            "a command's apply is not deterministic (wall clock, random, dict of sets, I/O?)"
        )
        log.error("DIVERGENCE: %s", self.divergence)

    # ------------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        node = self.node
        leader = node.leader_id
        last_digest = next(reversed(self._digests.items()), None)
        return {
            "id": self.node_id,
            "role": node.role.value,
            "term": node.term,
            "leader": leader,
            "leader_client": format_address(self.cluster.replicas[leader].client) if leader in self.cluster.replicas else None,
            "commit": node.log.committed,
            "applied": self.host.applied_index,
            "last_index": node.log.last_index(),
            "voters": sorted(node.conf.voters),
            "learners": sorted(node.conf.learners),
            "digest": list(last_digest) if last_digest else None,
            "state_digest": self.host.digest(),  # now, at "applied" (O(state): status is not a hot path)
            "divergence": self.divergence,
            "snapshot_index": self.storage.snapshot_meta().index,
            "counters": dict(self.counters),
            "cpu_s": time.process_time(),  # this process's CPU time (user + system)
            "cpu_scheduling": self.cpu_scheduling,
            "rss_bytes": _rss_bytes(),
        }


def _rss_bytes() -> int:
    """Resident memory of this process (Linux), 0 where unknown."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def _run(config_path: str, node_id: str) -> int:
    cluster = load_config(config_path)
    replica = Replica(cluster, node_id)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, replica.stopped.set)
    await replica.start()
    replica.cpu_scheduling = apply_cpu_scheduling(cluster.replica.cpu_scheduling)
    watcher = _watch_parent(replica)
    print(f"rsm replica {node_id} ready: peer {format_address(replica.me.peer)}, "
          f"client {format_address(replica.me.client)}", flush=True)
    await replica.stopped.wait()
    if watcher is not None:
        watcher.cancel()
    code = replica.exit_code
    await replica.stop()
    log.info("replica %s stopped", node_id)
    return code


#: How often a supervised replica checks that its supervisor is alive.
PARENT_CHECK_S = 0.5


def _watch_parent(replica: Replica) -> asyncio.Task[None] | None:
    expected = os.environ.get(PARENT_ENV)
    if not expected or not expected.isdigit():
        return None
    parent = int(expected)

    async def watch() -> None:
        while os.getppid() == parent:
            await asyncio.sleep(PARENT_CHECK_S)
        log.warning("replica %s: supervisor (pid %d) is gone; stopping", replica.node_id, parent)
        replica.stopped.set()

    return asyncio.get_running_loop().create_task(watch(), name="rsm parent watcher")


def main(config_path: str, node_id: str) -> int:
    """Run one replica in the foreground until SIGTERM or Ctrl-C; return the exit status."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {node_id} %(levelname)s %(name)s: %(message)s")
    try:
        return int(aio.run(_run(config_path, node_id)))
    except RsmError as exc:
        print(f"rsm replica {node_id}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
