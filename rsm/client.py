"""`AsyncClient` and `Client`: call a replicated state machine from application code.

Theory of operation
-------------------
**Connections.** The client keeps at most one authenticated connection
(`rsm.net.connect`) per replica, opened on first use. Each request gets a fresh
request id, is queued on the connection at once, and waits on a future keyed by
that id; one reader task per connection resolves the futures as responses
arrive, in whatever order. So many requests share one connection (pipelining),
up to `ClientSettings.in_flight_max` per client.

**Finding the leader.** Commands go to the leader. The client starts with the
leader it remembers (else the first replica), follows NOT_LEADER hints, moves
on to the next replica when one cannot be reached or has not answered within
`attempt_timeout_s`, and backs off (jittered, doubling) on BUSY and UNAVAILABLE
and after a whole round of replicas failed. A call that has no answer after
`timeout_s` fails with `Unavailable` (`Busy` if the replicas kept saying BUSY).
A wrong secret or cluster id fails at once: retrying cannot fix it.

**Exactly once** (Raft dissertation §6.3). Commands travel in sessions
registered through the log (the session id is the index of the register entry).
A command is given its (session, seq) once, before its first send, and every
retry sends the same pair, so the replicas' session table applies it once and
answers any retry with the remembered result, even a retry that arrives long
after the command was applied. For that to hold, the table must still remember
the result when a retry comes: it keeps `results_per_session_max` (cluster
setting, 32 by default) results per session and forgets those below the ``ack``
each command carries (the lowest seq the client has no result for). So a
session has room for `session_window` seqs between its lowest unanswered one
and its newest, and the client opens more sessions (up to `sessions_max`) to
have more commands in flight. A session unused for `keepalive_interval_s` gets
a keep-alive so it does not expire; `close()` closes the sessions.

If a retry is answered "session expired" the command's fate is unknown (it may
have run before the session expired): that is `OutcomeUnknown`. If only one
attempt ever reached a replica, the answer proves the command did not run, and
the client retries it in a new session without telling anyone.

**Queries** go to `read_from` (a replica id, e.g. the nearest one) if given,
else to the leader. ``"linearizable"`` (default) queries are answered after
ReadIndex confirms the replica has applied everything committed when the query
arrived; ``"stale"`` ones at once from that replica's state.

`Client` offers the same API to synchronous code: it runs an `AsyncClient` on
an event loop in a background thread.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import random
import ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, Final, TypeVar

import attrs

from rsm import aio
from rsm.config import Address, format_address, load_config, parse_address
from rsm.errors import ConfigError, RsmError
from rsm.net.connection import Connection, connect
from rsm.net.errors import AuthenticationError, ConnectionClosed, HandshakeError, RejectReason
from rsm.net.settings import TransportSettings
from rsm.protocol import (
    CONSISTENCIES,
    Code,
    ProtocolError,
    Request,
    Response,
    decode_response,
    encode_request,
)
from rsm.sessions import SessionExpired, StaleSequence
from rsm.statemachine import (
    COMMAND,
    BadArguments,
    CallRejected,
    CommandError,
    PreparedCall,
    StateMachine,
    UnknownMethod,
    decode_result,
    encode_close_session,
    encode_keepalive,
    encode_register_session,
    prepare_call,
)

__all__ = [
    "AsyncClient",
    "AsyncMachineProxy",
    "AuthenticationError",
    "BadArguments",
    "BadRequest",
    "Busy",
    "CallRejected",
    "Client",
    "ClientClosed",
    "ClientError",
    "ClientSettings",
    "ClientStats",
    "CommandError",
    "MachineProxy",
    "OutcomeUnknown",
    "Unavailable",
    "UnknownMethod",
]

log = logging.getLogger("rsm.client")

T = TypeVar("T")
Addresses = Mapping[str, Address | str] | Sequence[Address | str]

#: Handshake failures no retry can fix: the client is configured for another
#: cluster, speaks another protocol version, or dialed the wrong port.
_FATAL_REJECTS: Final = frozenset({RejectReason.AUTH, RejectReason.CLUSTER, RejectReason.VERSION, RejectReason.ROLE})
_REQUEST_IDS_MAX: Final = 2**63 - 1

# ==========================================================================
# Settings and counters
# ==========================================================================


@attrs.frozen(kw_only=True)
class ClientSettings:
    """Every limit and period of a client. Call `validate()` (clients do)."""

    #: Longest time one call (command, query, status), all its retries
    #: included, may take. Then it fails with `Unavailable`.
    timeout_s: float = 10.0
    #: How long to wait for the answer to one attempt before assuming it (or
    #: the replica) lost and sending again, to the next replica. A resent
    #: command keeps its session and seq, so it still runs at most once.
    attempt_timeout_s: float = 2.0
    #: First delay after BUSY, UNAVAILABLE, an unknown leader, or a round of
    #: unreachable replicas; it doubles with each further failure ...
    backoff_min_s: float = 0.01
    #: ... up to this cap. Each delay is drawn uniformly from [min, cap].
    backoff_max_s: float = 0.5
    #: Most calls in progress at once on one client; further calls wait (their
    #: wait counts against `timeout_s`). Bounds the client's memory and keeps
    #: the connection's send queue (`client_queue_frames_max`) from overflowing.
    in_flight_max: int = 1024
    #: Most sequence numbers between a session's lowest unanswered command and
    #: its newest. Must not exceed the cluster's `results_per_session_max`
    #: (default 32), or a late retry could find its result forgotten and fail
    #: with `OutcomeUnknown` instead of returning it.
    session_window: int = 32
    #: Most sessions the client opens; commands in flight are bounded by
    #: ``sessions_max * session_window``. Each costs a slot in the cluster's
    #: session table (`sessions_max` there, 10 000 by default).
    sessions_max: int = 16
    #: A session with no command for this long gets a keep-alive entry. Keep it
    #: well below the cluster's `session_timeout_ms` (10 min by default).
    keepalive_interval_s: float = 60.0
    #: How long `close()` may spend closing sessions before it drops them (an
    #: unclosed session expires on its own).
    close_timeout_s: float = 2.0
    #: The name the client gives in the handshake (in replica logs).
    client_id: str = attrs.field(factory=lambda: f"rsm-client-{os.getpid()}")
    #: Connection limits and timings (connect and handshake timeouts, frame size).
    transport: TransportSettings = attrs.field(factory=TransportSettings)

    def validate(self) -> ClientSettings:
        """Raise `ConfigError` on a bad value or relation; return self."""
        for name in ("timeout_s", "attempt_timeout_s", "backoff_min_s", "backoff_max_s",
                     "keepalive_interval_s", "close_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e9:
                raise ConfigError(f"ClientSettings.{name} must be a positive number of seconds, got {value!r}")
        for name in ("in_flight_max", "session_window", "sessions_max"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"ClientSettings.{name} must be a positive integer, got {value!r}")
        if self.backoff_max_s < self.backoff_min_s:
            raise ConfigError("ClientSettings.backoff_max_s must be at least backoff_min_s")
        if not isinstance(self.transport, TransportSettings):
            raise ConfigError("ClientSettings.transport must be a TransportSettings")
        self.transport.validate(codec_limits=None)
        return self


@attrs.define
class ClientStats:
    """What a client has done, as plain counters (they only grow)."""

    #: Request frames sent (retries included) and responses received.
    requests_sent: int = 0
    responses_received: int = 0
    #: Attempts sent again after a failure, and NOT_LEADER redirects followed.
    retries: int = 0
    redirects: int = 0
    #: BUSY and UNAVAILABLE answers.
    busy: int = 0
    unavailable: int = 0
    #: Attempts with no answer within `attempt_timeout_s`.
    attempt_timeouts: int = 0
    #: Connections opened; dials and connections that failed or broke.
    connections_opened: int = 0
    connection_failures: int = 0
    #: Sessions registered, found expired, and keep-alives sent.
    sessions_registered: int = 0
    sessions_expired: int = 0
    keepalives_sent: int = 0


# ==========================================================================
# Errors
# ==========================================================================


class ClientError(RsmError):
    """Base of the errors the client raises itself."""


class Unavailable(ClientError):
    """No replica completed the call within `timeout_s`: no quorum reachable, no
    leader elected, or the replicas unreachable.

    `problems` maps each replica tried to what last went wrong there.
    `maybe_applied` is True for a command that reached a replica at least once:
    it may still be applied (once); retrying it is a new command.
    """

    def __init__(self, message: str, problems: Mapping[str, str], maybe_applied: bool = False) -> None:
        super().__init__(message)
        self.problems = dict(problems)
        self.maybe_applied = maybe_applied


class Busy(Unavailable):
    """The replicas kept answering BUSY (overloaded) until `timeout_s` passed."""


class OutcomeUnknown(ClientError):
    """A retried command's session expired (or forgot its result) before the
    retry was answered: the command may or may not have been applied once."""


class BadRequest(ClientError):
    """A replica refused the request itself (for example larger than its
    `command_bytes_max`); sending it again would not help."""


class ClientClosed(ClientError):
    """The client was used after `close()`."""


class _NodeFailed(Exception):
    """Internal: one attempt failed at the connection level (refused, broken,
    no answer in time). The caller moves on to another replica.

    `cut_short`: the call's deadline, not the replica, ended the attempt.
    """

    def __init__(self, problem: str, *, cut_short: bool = False) -> None:
        super().__init__(problem)
        self.cut_short = cut_short


# ==========================================================================
# One connection and the requests waiting on it
# ==========================================================================


class _Link:
    """A connection to one replica and the futures of its unanswered requests."""

    def __init__(self, node_id: str, conn: Connection, stats: ClientStats) -> None:
        self.node_id = node_id
        self.conn = conn
        self.stats = stats
        self.pending: dict[int, asyncio.Future[Response]] = {}
        self.ended = False
        self.loop = asyncio.get_running_loop()
        self.reader = self.loop.create_task(self._read(), name=f"rsm.client reader {node_id}")

    @property
    def is_open(self) -> bool:
        return not self.ended and self.conn.close_reason is None

    def send(self, request: Request) -> asyncio.Future[Response]:
        """Queue `request`; return the future its response will resolve.

        Raises `ConnectionClosed` if the connection is (or just got) closed.
        """
        future: asyncio.Future[Response] = self.loop.create_future()
        self.conn.send(encode_request(request))
        self.pending[request.request_id] = future
        self.stats.requests_sent += 1
        return future

    def forget(self, request_id: int) -> None:
        """Stop waiting for `request_id`; a late response is then dropped."""
        self.pending.pop(request_id, None)

    async def _read(self) -> None:
        try:
            while frames := await self.conn.recv_batch():
                for frame in frames:
                    try:
                        response = decode_response(frame)
                    except ProtocolError as exc:
                        log.warning("%s sent a malformed response, closing the connection: %s", self.node_id, exc)
                        self.conn.abort("malformed")
                        return
                    self.stats.responses_received += 1
                    future = self.pending.pop(response.request_id, None)
                    if future is not None and not future.done():
                        future.set_result(response)
        finally:
            # Also after a clean EOF, which leaves the connection's close_reason unset.
            self.ended = True
            lost = ConnectionClosed(self.conn.close_reason or "eof", f"connection to {self.node_id} closed")
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(lost)
            self.pending.clear()

    async def close(self) -> None:
        await self.conn.close()
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)


# ==========================================================================
# Sessions
# ==========================================================================


class _Session:
    """A registered session: its next seq and the seqs sent without a result."""

    __slots__ = ("_taken", "expired", "last_used_s", "next_seq", "session_id", "unanswered")

    def __init__(self, session_id: int, now_s: float) -> None:
        self.session_id = session_id
        self.next_seq = 1
        self.unanswered: set[int] = set()
        # Seqs in the order taken (increasing), answered ones dropped from the
        # front as `ack` passes them: the front is the lowest unanswered seq.
        self._taken: collections.deque[int] = collections.deque()
        self.last_used_s = now_s
        self.expired = False

    def ack(self) -> int:
        """The lowest seq without a result: the replicas may forget all below it.
        Amortized O(1): each seq leaves the front once."""
        taken, unanswered = self._taken, self.unanswered
        while taken and taken[0] not in unanswered:
            taken.popleft()
        return taken[0] if taken else self.next_seq

    def has_room(self, window: int) -> bool:
        return not self.expired and self.next_seq - self.ack() < window

    def answered(self, seq: int) -> None:
        self.unanswered.discard(seq)

    def take(self, now_s: float) -> int:
        seq = self.next_seq
        self.next_seq += 1
        self.unanswered.add(seq)
        self._taken.append(seq)
        self.last_used_s = now_s
        return seq


# ==========================================================================
# Retry state of one call
# ==========================================================================


class _Attempts:
    """Deadline, backoff and what went wrong where, for one call."""

    def __init__(self, client: AsyncClient, deadline_s: float, what: str) -> None:
        self.client = client
        self.deadline_s = deadline_s
        self.what = what
        self.failures = 0  # consecutive, for the backoff
        self.node_failures = 0  # consecutive connection-level failures
        self.redirects = 0
        self.problems: dict[str, str] = {}
        self.last_was_busy = False
        #: Submits that may have reached the log (not refused with NOT_LEADER/BUSY).
        self.maybe_landed = 0
        self.sent = 0

    def remaining_s(self) -> float:
        return self.deadline_s - self.client._now()

    def note(self, node_id: str, problem: str, *, busy: bool = False) -> None:
        self.problems[node_id] = problem
        self.last_was_busy = busy

    async def backoff(self) -> None:
        """Sleep a jittered, doubling delay, never past the deadline."""
        settings = self.client.settings
        cap = min(settings.backoff_max_s, settings.backoff_min_s * 2.0 ** min(self.failures, 32))
        self.failures += 1
        delay_s = self.client._rng.uniform(settings.backoff_min_s, cap)
        await asyncio.sleep(max(0.0, min(delay_s, self.remaining_s())))

    def unavailable(self) -> Unavailable:
        timeout_s = self.client.settings.timeout_s
        where = "; ".join(f"{node}: {problem}" for node, problem in self.problems.items()) or "nothing was tried"
        maybe = self.maybe_landed > 0
        tail = " (it may still be applied, once)" if maybe else ""
        if self.last_was_busy:
            return Busy(f"{self.what}: the cluster stayed overloaded for {timeout_s:g} s ({where}){tail}",
                        self.problems, maybe)
        return Unavailable(f"{self.what}: no leader with a quorum answered within {timeout_s:g} s ({where}){tail}",
                           self.problems, maybe)


# ==========================================================================
# AsyncClient
# ==========================================================================


def _normalise(addresses: Addresses) -> dict[str, Address]:
    """{node_id: (host, port)} from a mapping or a list; list entries are named
    by their address."""
    items = addresses.items() if isinstance(addresses, Mapping) else ((None, a) for a in addresses)
    result: dict[str, Address] = {}
    for node_id, address in items:
        parsed = parse_address(address) if isinstance(address, str) else (str(address[0]), int(address[1]))
        result[node_id if node_id is not None else format_address(parsed)] = parsed
    if not result:
        raise ConfigError("a client needs at least one replica address")
    return result


def _config_arguments(path: str | os.PathLike[str], ssl_context: ssl.SSLContext | None) -> dict[str, Any]:
    """A client's connection arguments from a cluster.toml."""
    config = load_config(path)
    if ssl_context is None and config.tls is not None:
        ssl_context = config.tls.client_context()  # [tls] cert and key: the client's certificate too
    return {"addresses": config.client_addresses(), "cluster_id": config.cluster_id, "secret": config.secret,
            "ssl_context": ssl_context}


class AsyncClient:
    """A client of one rsm cluster, for asyncio code. See the module docstring.

    Usage::

        async with AsyncClient.from_config("cluster.toml") as client:
            counter = client.proxy(Counter)
            await counter.increment(5)          # a command: exactly once
            await counter.get()                 # a linearizable query

    `addresses` maps replica ids to their client addresses ((host, port) or
    "host:port"); a plain list works too. `read_from` names the replica that
    serves queries (default: the leader). `ssl_context` wraps every
    connection in TLS (mutual TLS if it holds a client certificate); the
    secret handshake runs inside it.
    """

    def __init__(self, addresses: Addresses, *, cluster_id: str, secret: bytes,
                 settings: ClientSettings | None = None, read_from: str | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.settings = (settings or ClientSettings()).validate()
        self.cluster_id = cluster_id
        self._secret = secret
        self._ssl_context = ssl_context
        self._addresses = _normalise(addresses)
        if read_from is not None and read_from not in self._addresses:
            raise ConfigError(f"read_from={read_from!r} is not one of the replicas {sorted(self._addresses)}")
        self.read_from = read_from
        self.stats = ClientStats()
        self._rng = random.Random()
        self._ids = itertools.count(self._rng.randrange(1 << 32))
        self._nodes = list(self._addresses)
        self._cursor = 0
        self._leader: str | None = None
        self._links: dict[str, _Link] = {}
        self._dials: dict[str, asyncio.Task[_Link]] = {}
        self._sessions: list[_Session] = []
        self._registering = False
        self._room: asyncio.Event | None = None
        self._in_flight: asyncio.Semaphore | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._closing = False  # no new calls
        self._loop: asyncio.AbstractEventLoop | None = None  # see _running_loop
        self._closed = False  # no more requests at all

    @classmethod
    def from_config(cls, path: str | os.PathLike[str], *, settings: ClientSettings | None = None,
                    read_from: str | None = None, ssl_context: ssl.SSLContext | None = None) -> AsyncClient:
        """A client of the cluster described by a cluster.toml (and its secret
        file). Its ``[tls]`` section, if any, gives the TLS context, unless
        `ssl_context` is passed."""
        return cls(**_config_arguments(path, ssl_context), settings=settings, read_from=read_from)

    @property
    def leader(self) -> str | None:
        """The replica the client believes leads, or None."""
        return self._leader

    @property
    def replicas(self) -> dict[str, Address]:
        """The replicas the client knows: {node_id: client address}."""
        return dict(self._addresses)

    def __repr__(self) -> str:
        state = "closed" if self._closing else f"leader {self._leader}"
        return f"<AsyncClient {self.cluster_id} {len(self._addresses)} replicas, {state}>"

    # -- the public calls ------------------------------------------------------

    def proxy(self, machine_cls: type[StateMachine], *, consistency: str = "linearizable") -> AsyncMachineProxy:
        """The machine's commands and queries as async methods of an object.

        `consistency` applies to the proxy's queries: "linearizable" or "stale".
        """
        return AsyncMachineProxy(self, machine_cls, consistency)

    async def call(self, machine_cls: type[StateMachine], name: str, args: Sequence[Any] = (),
                   kwargs: Mapping[str, Any] | None = None, *, consistency: str = "linearizable") -> Any:
        """Run command or query `name` of `machine_cls` and return its result.

        The call is checked before anything is sent (`UnknownMethod`,
        `BadArguments`, ...: all `CallRejected`). A command's own exception
        comes back as `CommandError`; see the module docstring for the rest.
        """
        _check_consistency(consistency)
        prepared = prepare_call(machine_cls, name, args, kwargs)
        self._check_open()
        deadline_s = self._now() + self.settings.timeout_s
        what = prepared.what
        async with self._call_slot(deadline_s, what):
            if prepared.kind == COMMAND:
                return await self._command(prepared, deadline_s)
            payload = prepared.payload()
            attempts = _Attempts(self, deadline_s, what)
            value = await self._roundtrip(lambda rid: Request(rid, "query", payload, consistency), attempts,
                                          reads=True)
            return decode_result(value)

    async def status(self, node_id: str) -> dict[str, Any]:
        """The status map of one replica (see docs/client.md); one attempt,
        bounded by `attempt_timeout_s`. Raises `Unavailable` if it cannot answer."""
        self._check_open()
        if node_id not in self._addresses:
            raise ConfigError(f"{node_id!r} is not one of the replicas {sorted(self._addresses)}")
        attempts = _Attempts(self, self._now() + self.settings.attempt_timeout_s, f"status of {node_id}")
        try:
            response = await self._attempt(node_id, Request(self._next_id(), "status"), attempts)
        except _NodeFailed as exc:
            problem = str(exc) or "no answer in time"
            raise Unavailable(f"status of {node_id}: {problem}", {node_id: problem}) from None
        if response.code != Code.OK or not isinstance(response.value, dict):
            raise Unavailable(f"status of {node_id}: answered {response.code.name} {response.value!r:.200}",
                              {node_id: response.code.name})
        return response.value

    async def status_all(self) -> dict[str, dict[str, Any] | Exception]:
        """Every replica's status map, or the exception that replaced it, asked concurrently."""
        nodes = list(self._addresses)
        answers = await asyncio.gather(*(self.status(n) for n in nodes), return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException) and not isinstance(answer, Exception):
                raise answer
        return dict(zip(nodes, answers, strict=True))  # type: ignore[arg-type]

    async def aclose(self) -> None:
        """Close the sessions (for at most `close_timeout_s`) and every connection. Idempotent."""
        if self._closing:
            return
        self._closing = True
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            await asyncio.gather(self._keepalive_task, return_exceptions=True)
        await self._close_sessions()
        self._closed = True
        self._room_changed()  # calls waiting for session room now fail with ClientClosed
        for task in self._dials.values():
            task.cancel()
        await asyncio.gather(*self._dials.values(), return_exceptions=True)
        await asyncio.gather(*(link.close() for link in self._links.values()))
        self._links.clear()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- commands and sessions ---------------------------------------------------

    async def _command(self, prepared: PreparedCall, deadline_s: float) -> Any:
        """Send a command in a session until it is answered; return its result."""
        what = prepared.what
        while True:
            session, seq = await self._take_seq(deadline_s, what)
            payload = prepared.payload(session.session_id, seq, session.ack())
            attempts = _Attempts(self, deadline_s, what)
            try:
                value = await self._submit(payload, attempts)
            finally:
                session.answered(seq)
                self._room_changed()
            try:
                return decode_result(value)
            except SessionExpired as exc:
                self._expire(session)
                if attempts.maybe_landed > 1:
                    raise OutcomeUnknown(f"{what}: {exc}; an earlier attempt may have been applied") from exc
                log.info("%s: session %d expired before the command ran; sending it in a new session",
                         what, session.session_id)
            except StaleSequence as exc:
                raise OutcomeUnknown(f"{what}: {exc}") from exc

    async def _take_seq(self, deadline_s: float, what: str) -> tuple[_Session, int]:
        """A (session, seq) for a new command: from a session with room, else
        from a session this call registers, else once another call frees room."""
        while True:
            for session in self._sessions:
                if session.has_room(self.settings.session_window):
                    return session, session.take(self._now())
            if self._registering or len(self._sessions) >= self.settings.sessions_max:
                await self._wait_for_room(deadline_s, what)
                continue
            self._registering = True
            try:
                await self._register(deadline_s, what)
            finally:
                self._registering = False
                self._room_changed()

    async def _wait_for_room(self, deadline_s: float, what: str) -> None:
        try:
            async with asyncio.timeout_at(deadline_s):
                await self._room_event().wait()
        except TimeoutError:
            raise Unavailable(f"{what}: no session had room for {self.settings.timeout_s:g} s "
                              f"({len(self._sessions)} sessions with {self.settings.session_window} commands "
                              "in flight each)", {}) from None

    async def _register(self, deadline_s: float, what: str) -> None:
        attempts = _Attempts(self, deadline_s, f"{what}: registering a session")
        value = await self._submit(encode_register_session(), attempts)
        session_id = decode_result(value)
        if type(session_id) is not int or session_id < 1:
            raise ProtocolError(f"registering a session returned {session_id!r}, not a session id")
        self._sessions.append(_Session(session_id, self._now()))
        self.stats.sessions_registered += 1
        log.debug("registered session %d", session_id)
        if self._keepalive_task is None:
            self._keepalive_task = asyncio.get_running_loop().create_task(self._keepalives(),
                                                                          name="rsm.client keepalives")

    def _expire(self, session: _Session) -> None:
        if not session.expired:
            session.expired = True
            self.stats.sessions_expired += 1
            self._sessions.remove(session)
            self._room_changed()

    def _room_event(self) -> asyncio.Event:
        """An event set the next time session room may have changed."""
        if self._room is None:
            self._room = asyncio.Event()
        return self._room

    def _room_changed(self) -> None:
        """Wake every caller waiting for session room (they check again)."""
        if self._room is not None:
            self._room.set()
            self._room = None

    async def _keepalives(self) -> None:
        """Every `keepalive_interval_s`, keep alive the sessions idle that long."""
        interval_s = self.settings.keepalive_interval_s
        while True:
            await asyncio.sleep(interval_s)
            idle = [s for s in self._sessions if not s.unanswered and self._now() - s.last_used_s >= interval_s]
            await asyncio.gather(*(self._keepalive(s) for s in idle))

    async def _keepalive(self, session: _Session) -> None:
        attempts = _Attempts(self, self._now() + self.settings.timeout_s, f"keep-alive of session {session.session_id}")
        payload = encode_keepalive(session.session_id)
        try:
            decode_result(await self._submit(payload, attempts))
        except SessionExpired:
            self._expire(session)
        except RsmError as exc:  # whatever it is, the keep-alive task must live on
            log.warning("could not keep session %d alive: %s", session.session_id, exc)
        else:
            session.last_used_s = self._now()
            self.stats.keepalives_sent += 1

    async def _close_sessions(self) -> None:
        sessions, self._sessions = self._sessions, []
        if not sessions:
            return

        async def close_one(session: _Session) -> None:
            payload = encode_close_session(session.session_id)
            attempts = _Attempts(self, self._now() + self.settings.close_timeout_s,
                                 f"closing session {session.session_id}")
            try:
                await self._submit(payload, attempts)
            except RsmError as exc:
                log.info("session %d left to expire: %s", session.session_id, exc)

        await asyncio.gather(*(close_one(s) for s in sessions))

    # -- routing and retries -----------------------------------------------------

    async def _submit(self, payload: bytes, attempts: _Attempts) -> Any:
        """Send a log entry (command or session entry) to the leader until it is
        answered; return the encoded result."""
        return await self._roundtrip(lambda rid: Request(rid, "submit", payload), attempts, reads=False)

    async def _roundtrip(self, build: Callable[[int], Request], attempts: _Attempts, *, reads: bool) -> Any:
        """Send the request built by `build(request_id)` until a replica answers
        OK; return the answer's value. Queries (`reads`) start at `read_from`.
        Raises `Unavailable` at the deadline."""
        target = self._query_target if reads else self._leader_target
        node = target()
        while True:
            if self._closed:
                raise ClientClosed("the client was closed")
            if attempts.remaining_s() <= 0:
                raise attempts.unavailable()
            if attempts.sent:
                self.stats.retries += 1
            try:
                response = await self._attempt(node, build(self._next_id()), attempts)
            except _NodeFailed as exc:
                node = await self._after_node_failure(node, exc, attempts)
                continue
            attempts.node_failures = 0
            if response.code == Code.OK:
                if not reads:
                    self._set_leader(node)
                return response.value
            node = await self._after_refusal(node, response, target, attempts)

    async def _attempt(self, node_id: str, request: Request, attempts: _Attempts) -> Response:
        """Send one request to one replica and wait for its answer, for at most
        `attempt_timeout_s`. Connection-level failures raise `_NodeFailed`;
        authentication failures propagate."""
        timeout_s = min(self.settings.attempt_timeout_s, attempts.remaining_s())
        loop = self._running_loop()
        deadline_s = loop.time() + timeout_s
        link: _Link | None = self._links.get(node_id)
        try:
            if link is None or not link.is_open:
                link = None
                async with asyncio.timeout_at(deadline_s):
                    link = await self._link(node_id)
            future = link.send(request)
            attempts.sent += 1
            if request.kind == "submit":
                attempts.maybe_landed += 1
            # One timer per request rather than an asyncio.timeout: this is
            # the hot path, and the future is all there is to time out.
            timer = loop.call_at(deadline_s, _time_out, future)
            try:
                return await future
            finally:
                timer.cancel()
        except TimeoutError:
            self.stats.attempt_timeouts += 1
            if timeout_s < self.settings.attempt_timeout_s:
                raise _NodeFailed("", cut_short=True) from None
            raise _NodeFailed(f"no answer within {timeout_s:.3g} s") from None
        except HandshakeError as exc:
            if exc.reason in _FATAL_REJECTS:
                raise
            raise _NodeFailed(f"handshake failed: {exc}") from None
        except (OSError, ConnectionClosed) as exc:
            self.stats.connection_failures += 1
            raise _NodeFailed(_describe(exc)) from None
        finally:
            if link is not None:
                link.forget(request.request_id)

    async def _after_node_failure(self, node: str, failure: _NodeFailed, attempts: _Attempts) -> str:
        """Note the failure, forget `node` as leader, back off after a whole round
        of failures, and return the next replica to try."""
        log.debug("%s: %s failed: %s", attempts.what, node, failure)
        if not failure.cut_short:
            attempts.note(node, str(failure))
        elif node not in attempts.problems:
            attempts.note(node, "no answer before the deadline")
        attempts.node_failures += 1
        if self._leader == node:
            self._leader = None
        next_node = self._next_after(node)
        if attempts.node_failures % len(self._nodes) == 0:
            await attempts.backoff()
        return next_node

    async def _after_refusal(self, node: str, response: Response, target: Callable[[], str],
                             attempts: _Attempts) -> str:
        """Handle NOT_LEADER, BUSY, UNAVAILABLE, BAD_REQUEST; return the next replica to try."""
        code, value = response.code, response.value
        if code in (Code.NOT_LEADER, Code.BUSY) and attempts.maybe_landed:
            attempts.maybe_landed -= 1  # refused before it was proposed: it cannot be in the log
        if code == Code.NOT_LEADER:
            return await self._redirect(node, value, attempts)
        if code == Code.BUSY:
            self.stats.busy += 1
            attempts.note(node, f"busy: {value}", busy=True)
            await attempts.backoff()
            return node
        if code == Code.UNAVAILABLE:
            self.stats.unavailable += 1
            attempts.note(node, f"unavailable: {value}")
            if self._leader == node:
                self._leader = None
            await attempts.backoff()
            return target()
        raise BadRequest(f"{attempts.what}: {node} refused the request: {value}")

    async def _redirect(self, node: str, hint: object, attempts: _Attempts) -> str:
        """Follow a NOT_LEADER hint; without a usable one, back off and try the next replica."""
        self.stats.redirects += 1
        attempts.redirects += 1
        leader = self._leader_from_hint(hint)
        attempts.note(node, f"not the leader (hint: {leader or 'none'})")
        if leader is None or leader == node:
            if self._leader == node:
                self._leader = None
            await attempts.backoff()
            return self._next_after(node)
        if attempts.redirects > len(self._nodes):
            await attempts.backoff()  # stale hints sending us in circles during an election
        self._set_leader(leader)
        return leader

    def _leader_from_hint(self, hint: object) -> str | None:
        """The node id to try from a NOT_LEADER value ``[leader_id, "host:port"]``;
        an unknown leader with an address is added to the replicas."""
        if not (isinstance(hint, list) and len(hint) == 2):
            return None
        leader, address = hint
        if isinstance(leader, str) and leader in self._addresses:
            return leader
        if not isinstance(address, str):
            return None
        try:
            parsed = parse_address(address)
        except ConfigError:
            return None
        for node_id, known in self._addresses.items():
            if known == parsed:
                return node_id
        node_id = leader if isinstance(leader, str) and leader else address
        log.info("learned of replica %s at %s from a NOT_LEADER hint", node_id, address)
        self._addresses[node_id] = parsed
        self._nodes.append(node_id)
        return node_id

    def _set_leader(self, node: str) -> None:
        if self._leader != node:
            log.debug("leader is now %s", node)
            self._leader = node

    def _leader_target(self) -> str:
        return self._leader if self._leader is not None else self._nodes[self._cursor]

    def _query_target(self) -> str:
        return self.read_from if self.read_from is not None else self._leader_target()

    def _next_after(self, node: str) -> str:
        self._cursor = (self._nodes.index(node) + 1) % len(self._nodes)
        return self._nodes[self._cursor]

    # -- connections -------------------------------------------------------------

    async def _link(self, node_id: str) -> _Link:
        """The open connection to `node_id`, dialing it if needed. Concurrent
        callers share one dial; a caller that gives up does not cancel it."""
        link = self._links.get(node_id)
        if link is not None and link.is_open:
            return link
        dial = self._dials.get(node_id)
        if dial is None:
            dial = asyncio.get_running_loop().create_task(self._dial(node_id), name=f"rsm.client dial {node_id}")
            self._dials[node_id] = dial
            dial.add_done_callback(lambda task: self._dial_done(node_id, task))
        return await asyncio.shield(dial)

    async def _dial(self, node_id: str) -> _Link:
        old = self._links.pop(node_id, None)
        if old is not None:
            await old.close()
        try:
            conn = await connect(self._addresses[node_id], cluster_id=self.cluster_id, secret=self._secret,
                                 client_id=self.settings.client_id, settings=self.settings.transport,
                                 ssl_context=self._ssl_context)
        except (OSError, HandshakeError):
            self.stats.connection_failures += 1
            raise
        self.stats.connections_opened += 1
        link = _Link(node_id, conn, self.stats)
        if self._closed:
            await link.close()
            raise ClientClosed("the client was closed")
        self._links[node_id] = link
        return link

    def _dial_done(self, node_id: str, task: asyncio.Task[_Link]) -> None:
        if self._dials.get(node_id) is task:
            del self._dials[node_id]
        if not task.cancelled():
            task.exception()  # retrieved here, so a dial nobody awaits any more logs nothing

    # -- small helpers -------------------------------------------------------------

    def _call_slot(self, deadline_s: float, what: str) -> _CallSlot:
        if self._in_flight is None:
            self._in_flight = asyncio.Semaphore(self.settings.in_flight_max)
        return _CallSlot(self._in_flight, deadline_s, what, self.settings.timeout_s)

    def _next_id(self) -> int:
        return next(self._ids) & _REQUEST_IDS_MAX

    def _now(self) -> float:
        return self._running_loop().time()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The loop this client runs in, looked up once: on Python 3.11 every
        `asyncio.get_running_loop()` is a `getpid()` system call, and the hot
        path used to make several per command."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _check_open(self) -> None:
        if self._closing:
            raise ClientClosed("the client was closed")


class _CallSlot:
    """``async with``: one of `in_flight_max` call slots, waited for until the deadline."""

    def __init__(self, semaphore: asyncio.Semaphore, deadline_s: float, what: str, timeout_s: float) -> None:
        self.semaphore = semaphore
        self.deadline_s = deadline_s
        self.what = what
        self.timeout_s = timeout_s

    async def __aenter__(self) -> None:
        if not self.semaphore.locked():
            await self.semaphore.acquire()  # returns at once: no timer needed
            return
        try:
            async with asyncio.timeout_at(self.deadline_s):
                await self.semaphore.acquire()
        except TimeoutError:
            raise Unavailable(f"{self.what}: in_flight_max calls were in progress for {self.timeout_s:g} s",
                              {}) from None

    async def __aexit__(self, *exc_info: object) -> None:
        self.semaphore.release()


def _time_out(future: asyncio.Future[Response]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionClosed):
        return f"connection closed ({exc.reason})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _check_consistency(consistency: str) -> None:
    if consistency not in CONSISTENCIES:
        raise BadArguments(f"consistency must be one of {CONSISTENCIES}, got {consistency!r}")


# ==========================================================================
# Proxies
# ==========================================================================


class _ProxyBase:
    """Looks up a machine's commands and queries by attribute name."""

    def __init__(self, machine_cls: type[StateMachine], consistency: str) -> None:
        if not (isinstance(machine_cls, type) and issubclass(machine_cls, StateMachine)):
            raise TypeError(f"proxy() takes a StateMachine subclass, got {machine_cls!r}")
        _check_consistency(consistency)
        self._machine_cls = machine_cls
        self._consistency = consistency

    def _names(self) -> list[str]:
        return sorted([*self._machine_cls.commands(), *self._machine_cls.queries()])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        spec = self._machine_cls.commands().get(name) or self._machine_cls.queries().get(name)
        if spec is None:
            raise AttributeError(f"{self._machine_cls.__qualname__} has no command or query {name!r}; "
                                 f"it has {self._names()}")
        method = self._bind(name)
        method.__name__ = name
        method.__qualname__ = f"{self._machine_cls.__qualname__}.{name}"
        method.__doc__ = spec.function.__doc__
        method.__signature__ = spec.signature  # type: ignore[attr-defined]
        self.__dict__[name] = method  # found directly next time
        return method

    def __dir__(self) -> list[str]:
        return self._names()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._machine_cls.__qualname__} consistency={self._consistency}>"

    def _bind(self, name: str) -> Callable[..., Any]:
        raise NotImplementedError


class AsyncMachineProxy(_ProxyBase):
    """`AsyncClient.proxy(Machine)`: ``await proxy.method(*args, **kwargs)``."""

    def __init__(self, client: AsyncClient, machine_cls: type[StateMachine], consistency: str) -> None:
        super().__init__(machine_cls, consistency)
        self._client = client

    def _bind(self, name: str) -> Callable[..., Awaitable[Any]]:
        client, machine_cls, consistency = self._client, self._machine_cls, self._consistency

        async def method(*args: Any, **kwargs: Any) -> Any:
            return await client.call(machine_cls, name, args, kwargs, consistency=consistency)

        return method


class MachineProxy(_ProxyBase):
    """`Client.proxy(Machine)`: ``proxy.method(*args, **kwargs)``, blocking."""

    def __init__(self, client: Client, machine_cls: type[StateMachine], consistency: str) -> None:
        super().__init__(machine_cls, consistency)
        self._client = client

    def _bind(self, name: str) -> Callable[..., Any]:
        client, machine_cls, consistency = self._client, self._machine_cls, self._consistency

        def method(*args: Any, **kwargs: Any) -> Any:
            return client.call(machine_cls, name, args, kwargs, consistency=consistency)

        return method


# ==========================================================================
# Client: the same, for synchronous code
# ==========================================================================


class Client:
    """A blocking client: an `AsyncClient` on an event loop in a background thread.

    Usage::

        with Client.from_config("cluster.toml") as client:
            counter = client.proxy(Counter)
            counter.increment(5)

    Thread-safe: any number of threads may call it at once (their calls are
    pipelined on the same connections). Close it (or use ``with``) to close
    its sessions and stop its thread.
    """

    def __init__(self, addresses: Addresses, *, cluster_id: str, secret: bytes,
                 settings: ClientSettings | None = None, read_from: str | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        # Built here so bad arguments raise in the caller's thread.
        self._async = AsyncClient(addresses, cluster_id=cluster_id, secret=secret, settings=settings,
                                  read_from=read_from, ssl_context=ssl_context)
        self._loop = aio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="rsm.client loop", daemon=True)
        self._thread.start()
        self._closed = False

    @classmethod
    def from_config(cls, path: str | os.PathLike[str], *, settings: ClientSettings | None = None,
                    read_from: str | None = None, ssl_context: ssl.SSLContext | None = None) -> Client:
        """A client of the cluster described by a cluster.toml; see `AsyncClient.from_config`."""
        return cls(**_config_arguments(path, ssl_context), settings=settings, read_from=read_from)

    @property
    def settings(self) -> ClientSettings:
        return self._async.settings

    @property
    def stats(self) -> ClientStats:
        return self._async.stats

    @property
    def leader(self) -> str | None:
        """The replica the client believes leads, or None."""
        return self._async.leader

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncClient", "Client", 1)

    def proxy(self, machine_cls: type[StateMachine], *, consistency: str = "linearizable") -> MachineProxy:
        """The machine's commands and queries as blocking methods of an object."""
        return MachineProxy(self, machine_cls, consistency)

    def call(self, machine_cls: type[StateMachine], name: str, args: Sequence[Any] = (),
             kwargs: Mapping[str, Any] | None = None, *, consistency: str = "linearizable") -> Any:
        """Run command or query `name`; see `AsyncClient.call`."""
        return self._run(self._async.call(machine_cls, name, args, kwargs, consistency=consistency))

    def status(self, node_id: str) -> dict[str, Any]:
        """One replica's status map; see `AsyncClient.status`."""
        return self._run(self._async.status(node_id))

    def status_all(self) -> dict[str, dict[str, Any] | Exception]:
        """Every replica's status map or exception; see `AsyncClient.status_all`."""
        return self._run(self._async.status_all())

    def close(self) -> None:
        """Close the sessions and connections and stop the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._async.aclose(), self._loop).result()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise ClientClosed("the client was closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            # KeyboardInterrupt in the caller: do not leave the call running.
            future.cancel()
            raise

