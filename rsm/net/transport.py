"""The replica-to-replica transport: authenticated frames to and from each peer.

Theory of operation
-------------------
Each replica listens on one address and dials every peer it knows. Frames
flow one way per TCP connection: a replica *sends* only on the connection it
dialed, and *receives* only on connections peers dialed to it. So between two
replicas there are two connections, and there is never a question of which
of two simultaneous dials to keep (the duplicate-connection race that
two-way designs must resolve).

Outbound, per peer (a `_PeerLink`): a bounded `SendQueue` that outlives
connections, and one task that keeps a connection up: dial, handshake, then
pump the queue into the socket until the connection breaks, then wait a
jittered exponential backoff (`reconnect_backoff_min_s` doubling up to
`reconnect_backoff_max_s`, jitter drawn from the `random.Random` the
transport was handed) and dial again. `send` never waits: it queues the frame,
dropping the oldest queued frame if the queue is full. Raft is built for lossy
networks (retransmission comes from the leader's heartbeats and the
followers' rejections), so losing old frames to a dead peer is safe, while
memory stays bounded. A watcher task notices at once when the peer hangs up,
so reconnection starts without waiting for the next send.

Inbound: the `Listener` authenticates each connection (peer role, same
cluster and secret, not our own node id), then this module reads frames from
it and calls ``on_frame(peer_id, frame)`` for each, in order. If a peer
connects again, its older inbound connection is closed (the newest wins: a
restarted peer must not leave a half-open socket behind). A frame that is
oversized or truncated, or that ``on_frame`` rejects by raising an `RsmError`
(the codec's `DecodeError`, for instance), closes that connection only and is
counted in `stats.frames_malformed`.

Delivery is in order per connection and at most once; there is no ordering
or delivery guarantee across reconnections. That is exactly what Raft needs.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable, Mapping

from rsm.codec import DEFAULT_LIMITS, CodecLimits
from rsm.errors import RsmError
from rsm.net.connection import Address, SendQueue, close_stream, open_stream, pump
from rsm.net.errors import FrameError, HandshakeError, TransportClosed, UnknownPeer
from rsm.net.framing import FrameReader, FrameWriter
from rsm.net.handshake import Hello, Identity, Role, describe_peer, handshake
from rsm.net.server import Listener
from rsm.net.settings import TransportSettings
from rsm.net.stats import TransportStats

__all__ = ["OnFrame", "PeerTransport", "backoff_delay_s"]

log = logging.getLogger("rsm.net")

#: Called with (peer node id, frame payload) for every frame a peer sends us.
#: It must not block. Raising an `RsmError` rejects the frame and closes that
#: peer's connection; any other exception is logged as a bug and does the same.
OnFrame = Callable[[str, bytes], None]


def backoff_delay_s(failures: int, settings: TransportSettings, rng: random.Random) -> float:
    """Seconds to wait before the next dial after `failures` consecutive failures.

    Drawn uniformly from [min, cap], cap = min(max, min * 2**failures): the
    first retry after losing a good connection waits exactly the minimum.
    """
    low = settings.reconnect_backoff_min_s
    cap = min(settings.reconnect_backoff_max_s, low * 2.0 ** min(failures, 64))
    return rng.uniform(low, cap)


class PeerTransport:
    """Moves frames between this replica and its peers; see the module docstring.

    Usage::

        transport = PeerTransport(("0.0.0.0", 7000), cluster_id="c1", node_id="a",
                                  secret=secret, on_frame=inbox, rng=random.Random(seed),
                                  peers={"b": ("10.0.0.2", 7000), "c": ("10.0.0.3", 7000)})
        await transport.start()
        transport.send("b", encode_message(msg))    # never waits
        ...
        await transport.close()
    """

    def __init__(
        self,
        address: Address,
        *,
        cluster_id: str,
        node_id: str,
        secret: bytes,
        on_frame: OnFrame,
        rng: random.Random,
        peers: Mapping[str, Address] | None = None,
        settings: TransportSettings | None = None,
        codec_limits: CodecLimits | None = DEFAULT_LIMITS,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.node_id = node_id
        self.settings = (settings or TransportSettings()).validate(codec_limits)
        self.stats = TransportStats()
        self._local = Identity(
            cluster_id=cluster_id, node_id=node_id, role=Role.PEER, secret=secret
        )
        self._on_frame = on_frame
        self._rng = rng
        self._client_ssl = client_ssl
        self._links: dict[str, _PeerLink] = {}
        self._inbound: dict[str, asyncio.Task[None]] = {}
        self._retired: set[asyncio.Task[None]] = set()
        self._started = False
        self._closed = False
        self._listener = Listener(
            address,
            self._local,
            self._receive,
            settings=self.settings,
            stats=self.stats,
            ssl_context=server_ssl,
        )
        for peer_id, peer_address in (peers or {}).items():
            self.add_peer(peer_id, peer_address)

    # -- lifecycle -------------------------------------------------------------

    @property
    def address(self) -> Address:
        """The bound (host, port) of the listener (the real port if 0 was asked)."""
        return self._listener.address

    async def start(self) -> None:
        """Listen, and start dialing every peer. Raises `OSError` if the address is taken."""
        if self._closed:
            raise TransportClosed("the transport was closed; make a new one")
        if self._started:
            return
        await self._listener.start()
        self._started = True
        for link in self._links.values():
            link.start()

    async def close(self) -> None:
        """Stop listening, close every connection, and wait for every task. Idempotent."""
        self._closed = True
        await self._listener.close()
        tasks = [link.stop() for link in self._links.values()]
        tasks.extend(self._retired)
        await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)

    async def __aenter__(self) -> PeerTransport:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- peers -----------------------------------------------------------------

    def add_peer(self, node_id: str, address: Address) -> None:
        """Dial `node_id` at `address` from now on (redial if its address changed)."""
        if node_id == self.node_id:
            raise ValueError(f"{node_id!r} is this node; it is not its own peer")
        link = self._links.get(node_id)
        if link is None:
            link = self._links[node_id] = _PeerLink(self, node_id, address)
        elif link.address == address:
            return
        else:
            link.address = address
            self._retire(link.stop())
        if self._started and not self._closed:
            link.start()

    def remove_peer(self, node_id: str) -> None:
        """Stop dialing `node_id` and drop what is queued for it. Unknown ids are ignored."""
        link = self._links.pop(node_id, None)
        if link is not None:
            self._retire(link.stop())

    def _retire(self, task: asyncio.Task[None] | None) -> None:
        # A cancelled link task still has to close its socket; keep it so that
        # close() can wait for it.
        if task is not None and not task.done():
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)

    @property
    def peers(self) -> dict[str, Address]:
        """Every peer this transport dials, with its address."""
        return {node_id: link.address for node_id, link in self._links.items()}

    # -- sending ---------------------------------------------------------------

    def send(self, node_id: str, frame: bytes) -> None:
        """Queue `frame` for peer `node_id`; never waits.

        If the peer's queue is full the oldest queued frame is dropped and
        counted in `stats.frames_dropped_queue_full`. Raises `UnknownPeer` for
        a node without an address, `FrameError` for a frame over
        `frame_bytes_max`, `TransportClosed` after `close()`.
        """
        if self._closed:
            raise TransportClosed("send after close()")
        link = self._links.get(node_id)
        if link is None:
            raise UnknownPeer(f"no address for peer {node_id!r}; call add_peer first")
        if len(frame) > self.settings.frame_bytes_max:
            raise FrameError(
                f"frame of {len(frame)} bytes exceeds frame_bytes_max "
                f"({self.settings.frame_bytes_max})"
            )
        dropped = link.queue.push(frame)
        if dropped:
            self.stats.frames_dropped_queue_full += dropped

    def queued_frames(self, node_id: str) -> int:
        """Frames waiting for `node_id` (0 for an unknown peer)."""
        link = self._links.get(node_id)
        return len(link.queue) if link is not None else 0

    def is_connected(self, node_id: str) -> bool:
        """Whether an authenticated outbound connection to `node_id` is up."""
        link = self._links.get(node_id)
        return link is not None and link.connected.is_set()

    async def wait_connected(self, node_id: str) -> None:
        """Return once an outbound connection to `node_id` is authenticated."""
        link = self._links.get(node_id)
        if link is None:
            raise UnknownPeer(f"no address for peer {node_id!r}")
        await link.connected.wait()

    # -- receiving -------------------------------------------------------------

    async def _receive(
        self, remote: Hello, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Serve one authenticated inbound connection (a `Listener` callback)."""
        peer_id = remote.node_id
        task = asyncio.current_task()
        assert task is not None
        previous = self._inbound.get(peer_id)
        if previous is not None:
            log.info(
                "%r connected again from %s; closing its older connection",
                peer_id,
                describe_peer(writer),
            )
            previous.cancel()
        self._inbound[peer_id] = task
        try:
            await self._read_frames(peer_id, reader, describe_peer(writer))
        finally:
            if self._inbound.get(peer_id) is task:
                del self._inbound[peer_id]

    async def _read_frames(self, peer_id: str, reader: asyncio.StreamReader, where: str) -> None:
        frames = FrameReader(
            reader,
            frame_bytes_max=self.settings.frame_bytes_max,
            chunk_bytes=self.settings.read_buffer_bytes,
            stats=self.stats,
        )
        on_frame = self._on_frame
        while True:
            try:
                batch = await frames.read_batch()
            except FrameError as exc:
                self.stats.frames_malformed += 1
                log.warning("closing connection from %r (%s): %s", peer_id, where, exc)
                return
            except (ConnectionError, OSError) as exc:
                log.info("connection from %r (%s) lost: %r", peer_id, where, exc)
                return
            if not batch:
                log.info("connection from %r (%s) closed by the peer", peer_id, where)
                return
            try:
                for frame in batch:
                    on_frame(peer_id, frame)
            except RsmError as exc:
                self.stats.frames_malformed += 1
                log.warning("closing connection from %r (%s): bad frame: %s", peer_id, where, exc)
                return


class _PeerLink:
    """The outbound half of one peer: its send queue and the task that dials it."""

    def __init__(self, owner: PeerTransport, node_id: str, address: Address) -> None:
        self.node_id = node_id
        self.address = address
        settings = owner.settings
        self.queue = SendQueue(settings.peer_queue_frames_max, settings.peer_queue_bytes_max)
        #: Set while an authenticated outbound connection is up.
        self.connected = asyncio.Event()
        self._owner = owner
        self._settings = settings
        self._stats = owner.stats
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"rsm.net link {self._owner.node_id}->{self.node_id}"
            )

    def stop(self) -> asyncio.Task[None] | None:
        """Cancel the dialing task; return it so the caller can await its cleanup."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        self.connected.clear()
        return task

    async def _run(self) -> None:
        failures = 0
        first = True
        while True:
            if not first:
                self._stats.reconnect_attempts += 1
            first = False
            try:
                streams = await self._dial()
                if streams is None:
                    failures += 1
                else:
                    failures = 0
                    await self._serve(*streams)
            except Exception:
                # A bug, not a network failure; keep the link alive regardless.
                self._stats.connect_failures += 1
                failures += 1
                log.exception("unexpected error on the link to %r", self.node_id)
            await asyncio.sleep(backoff_delay_s(failures, self._settings, self._owner._rng))

    async def _dial(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """An authenticated connection to the peer, or None (counted and logged)."""
        settings = self._settings
        try:
            reader, writer = await open_stream(self.address, settings, self._owner._client_ssl)
        except OSError as exc:
            self._stats.connect_failures += 1
            level = logging.WARNING if isinstance(exc, ssl.SSLError) else logging.DEBUG
            log.log(level, "dialing %r at %s failed: %r", self.node_id, self.address, exc)
            return None
        try:
            await handshake(
                reader,
                writer,
                self._owner._local,
                initiator=True,
                timeout_s=settings.handshake_timeout_s,
                expect_node_id=self.node_id,
            )
        except HandshakeError as exc:
            self._stats.connect_failures += 1
            self._stats.count_rejected(exc.reason)
            log.warning("handshake with %r failed: %s", self.node_id, exc)
            await close_stream(writer, settings.close_timeout_s)
            return None
        except BaseException:
            writer.transport.abort()
            raise
        return reader, writer

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Pump the queue into one connection until it breaks; then close it."""
        settings = self._settings
        frames = FrameWriter(
            writer,
            frame_bytes_max=settings.frame_bytes_max,
            write_buffer_bytes_high=settings.write_buffer_bytes_high,
            stats=self._stats,
        )
        lost = asyncio.Event()
        watcher = asyncio.get_running_loop().create_task(self._watch(reader, lost))
        self._stats.connections_established += 1
        self.connected.set()
        log.info("connected to %r at %s", self.node_id, self.address)
        try:
            await pump(self.queue, frames, settings.flush_bytes_max, lost.is_set)
        except (ConnectionError, OSError) as exc:
            log.info("connection to %r lost while sending: %r", self.node_id, exc)
        finally:
            self.connected.clear()
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await close_stream(writer, settings.close_timeout_s)
        log.info("disconnected from %r; redialing", self.node_id)

    async def _watch(self, reader: asyncio.StreamReader, lost: asyncio.Event) -> None:
        """Set `lost` and wake the pump when the peer hangs up.

        The peer never sends on a connection we dialed, so any byte is a
        protocol violation and ends the connection too.
        """
        try:
            if await reader.read(1):
                self._stats.frames_malformed += 1
                log.warning("%r sent data on our outbound connection; closing it", self.node_id)
        except (ConnectionError, OSError):
            pass
        lost.set()
        self.queue.wake()
