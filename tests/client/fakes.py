"""A fake cluster for the client tests: replicas that speak rsm/protocol.py over
real `rsm.net.ClientServer` sockets, in front of ONE real `MachineHost`.

The host stands for the replicated state: a command "committed" through any
replica is applied to it with the next index, so the real session table
decides duplicates exactly as a real cluster would, and a test can move the
leadership, kill a replica, or make one drop, delay, refuse or reorder its
answers, deterministically.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

from rsm.client import ClientSettings
from rsm.config import format_address, render_config
from rsm.net import ClientServer, Connection, TransportSettings
from rsm.protocol import Code, Request, Response, decode_request, encode_response
from rsm.statemachine import MachineHost, PayloadKind, StateMachine, command, payload_kind, query

T = TypeVar("T")

CLUSTER = "cluster-1"
SECRET = b"correct horse battery staple 123"
OTHER_SECRET = b"incorrect horse battery staple 1"
LOCALHOST = "127.0.0.1"

FAST_TRANSPORT = TransportSettings(handshake_timeout_s=0.5, connect_timeout_s=0.5, close_timeout_s=0.5)
#: Short timings so failure paths finish fast; still far above loopback latency.
FAST = ClientSettings(
    timeout_s=3.0,
    attempt_timeout_s=0.5,
    backoff_min_s=0.001,
    backoff_max_s=0.02,
    close_timeout_s=0.5,
    client_id="test-client",
    transport=FAST_TRANSPORT,
)


class FakeCluster:
    """Fake replicas sharing one machine host; `leader` names who accepts submits."""

    def __init__(self, machine: StateMachine, node_ids: Iterable[str] = ("n1", "n2", "n3"),
                 *, secret: bytes = SECRET, path: str | os.PathLike[str] | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.host = MachineHost(machine, path=path)  # path: for an LMDB machine
        self.term = 1
        self.clock_ms = 1_700_000_000_000
        self.replicas = {node_id: FakeReplica(self, node_id, secret, ssl_context) for node_id in node_ids}
        self.leader: str | None = next(iter(self.replicas))
        #: Kinds of the payloads applied, in log order.
        self.applied: list[PayloadKind] = []

    async def start(self) -> FakeCluster:
        for replica in self.replicas.values():
            await replica.start()
        return self

    async def close(self) -> None:
        for replica in self.replicas.values():
            await replica.stop()
        self.host.close()

    def addresses(self) -> dict[str, tuple[str, int]]:
        return {node_id: replica.address for node_id, replica in self.replicas.items()}

    def apply(self, payload: bytes) -> bytes:
        """Commit and apply one log entry; return its encoded result."""
        self.clock_ms += 1
        self.applied.append(payload_kind(payload))
        return self.host.apply(self.host.applied_index + 1, self.term, self.clock_ms, payload)

    def count(self, kind: PayloadKind) -> int:
        return self.applied.count(kind)

    def elect(self, node_id: str | None) -> None:
        """Make `node_id` the leader (None: no leader) in a new term."""
        self.leader = node_id
        self.term += 1


class FakeReplica:
    """One fake replica. The counters below script its next answers."""

    def __init__(self, cluster: FakeCluster, node_id: str, secret: bytes,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.secret = secret
        self.ssl_context = ssl_context
        self.requests: list[Request] = []
        self.server: ClientServer | None = None
        self.running = False
        self._port = 0
        #: Answer the next N submits or queries BUSY / UNAVAILABLE.
        self.busy = 0
        self.unavailable = 0
        #: Apply the next N submits but never answer them (a lost response).
        self.drop = 0
        #: Apply the next N submits, then hang up without answering.
        self.hang_up = 0
        #: Hold the answers to commands until this many are held, then send
        #: them all, newest first, once (0: answer at once).
        self.hold = 0
        self._held: list[tuple[Connection, int, bytes]] = []
        #: What the status map reports as this replica's applied lag.
        self.lag = 0

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (or listened, and will again after `start`)."""
        assert self._port, f"{self.node_id} was never started"
        return LOCALHOST, self._port

    @property
    def frames_received(self) -> int:
        return 0 if self.server is None else self.server.stats.frames_received

    def submits(self) -> list[Request]:
        return [r for r in self.requests if r.kind == "submit"]

    async def start(self) -> None:
        """Listen (again on the same port after a `stop`)."""
        self.server = ClientServer((LOCALHOST, self._port), cluster_id=CLUSTER, node_id=self.node_id,
                                   secret=self.secret, handler=self._serve, settings=FAST_TRANSPORT,
                                   ssl_context=self.ssl_context)
        await self.server.start()
        self._port = self.server.address[1]
        self.running = True

    async def stop(self) -> None:
        """Die: stop listening and close every connection."""
        if self.server is not None:
            self.running = False
            await self.server.close()

    async def _serve(self, conn: Connection) -> None:
        async for frame in conn:
            request = decode_request(frame)
            self.requests.append(request)
            self._answer(conn, request)

    def _answer(self, conn: Connection, request: Request) -> None:
        rid = request.request_id
        if request.kind == "status":
            return _reply(conn, rid, Code.OK, self.status())
        if self.busy:
            self.busy -= 1
            return _reply(conn, rid, Code.BUSY, "too many requests in progress; retry")
        if self.unavailable:
            self.unavailable -= 1
            return _reply(conn, rid, Code.UNAVAILABLE, "no leader known; retry")
        if request.kind == "query":
            if request.consistency == "linearizable" and self.cluster.leader is None:
                return _reply(conn, rid, Code.UNAVAILABLE, "no leader known; retry")
            return _reply(conn, rid, Code.OK, self.cluster.host.query(request.payload))
        if self.cluster.leader != self.node_id:
            return _reply(conn, rid, Code.NOT_LEADER, self._leader_hint())
        self._commit(conn, rid, request.payload)

    def _commit(self, conn: Connection, rid: int, payload: bytes) -> None:
        result = self.cluster.apply(payload)
        if self.drop:
            self.drop -= 1
        elif self.hang_up:
            self.hang_up -= 1
            conn.abort("test hang-up")
        elif self.hold and payload_kind(payload) == PayloadKind.COMMAND:
            self._held.append((conn, rid, result))
            if len(self._held) >= self.hold:
                self.release_held()
        else:
            _reply(conn, rid, Code.OK, result)

    def release_held(self) -> None:
        """Send the held answers, newest first, and answer at once from now on."""
        for conn, rid, result in reversed(self._held):
            _reply(conn, rid, Code.OK, result)
        self._held.clear()
        self.hold = 0

    def _leader_hint(self) -> list[str | None]:
        leader = self.cluster.leader
        if leader is None:
            return [None, None]
        replica = self.cluster.replicas[leader]
        return [leader, format_address(replica.address) if replica.running else None]

    def status(self) -> dict[str, Any]:
        cluster, host = self.cluster, self.cluster.host
        leader = cluster.leader
        return {
            "id": self.node_id,
            "role": "leader" if leader == self.node_id else "follower",
            "term": cluster.term,
            "leader": leader,
            "leader_client": self._leader_hint()[1],
            "commit": host.applied_index,
            "applied": host.applied_index - self.lag,
            "last_index": host.applied_index,
            "voters": sorted(cluster.replicas),
            "learners": [],
            "digest": [host.applied_index, host.digest()] if host.applied_index else None,
            "divergence": None,
        }


def _reply(conn: Connection, rid: int, code: Code, value: Any) -> None:
    conn.send(encode_response(Response(rid, code, value)))


def write_config(directory: Path, addresses: dict[str, tuple[str, int]], *,
                 app: str = "examples.counter.machine:Counter", extra: str = "") -> Path:
    """A cluster.toml (and secret) whose client addresses are the fakes';
    `extra` is appended (a [tls] table, say)."""
    secret = directory / "cluster.secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    replicas = {node_id: ("127.0.0.1:1", format_address(address), f"data/{node_id}")
                for node_id, address in addresses.items()}
    path = directory / "cluster.toml"
    path.write_text(render_config(cluster_id=CLUSTER, app=app, secret_file="cluster.secret", replicas=replicas)
                    + extra)
    return path


class LoopThread:
    """An event loop in a background thread: fake servers next to blocking code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test fake servers", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class Echo(StateMachine):
    """A test machine: commands that echo, fail, and count how often they ran."""

    def __init__(self) -> None:
        self.runs = 0

    @command
    def echo(self, value: Any) -> Any:
        """Return `value` (and count the run)."""
        self.runs += 1
        return value

    @command
    def fail(self, message: str) -> None:
        self.runs += 1
        raise ValueError(message)

    @query
    def count(self) -> int:
        return self.runs
