"""One authenticated, framed, two-way connection, and the send machinery shared
by every connection kind.

Theory of operation
-------------------
Sending never blocks the caller: `send` appends the frame to a bounded
`SendQueue` and wakes the connection's *pump* task. The pump runs at most once
per event-loop turn, takes everything queued since it last ran (up to
`flush_bytes_max` per write) and writes it with one `transport.write` (see
`FrameWriter`); it waits only while the socket buffer is above the high-water
mark. So many sends in one turn cost one syscall, and a slow reader on the
other side fills our queue rather than our memory without bound.

What happens when a queue is full is the owner's policy: a peer link drops the
oldest frame (Raft tolerates loss, see `rsm.net.transport`); a `Connection`
(the client channel) closes itself with reason ``slow_consumer``, because a
client waits for every response and would rather reconnect and retry than
wait forever for one that was silently dropped.

Receiving is pulled by the application: iterate the connection (or call
`recv`). A frame that breaks the framing rules closes the connection, is
counted in `frames_malformed` and ends the iteration; it never raises into the
server.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from collections.abc import Callable

from rsm.net.errors import ConnectionClosed, FrameError, HandshakeError
from rsm.net.framing import FrameReader, FrameWriter
from rsm.net.handshake import Hello, Identity, Role, describe_peer, handshake
from rsm.net.settings import TransportSettings
from rsm.net.stats import TransportStats

__all__ = ["Address", "Connection", "SendQueue", "close_stream", "connect", "open_stream", "refuse_self_connection"]

log = logging.getLogger("rsm.net")

#: (host, port) of a listener.
Address = tuple[str, int]


class SendQueue:
    """A bounded FIFO of frames waiting for one socket, with a wake-up event.

    Bounded by frame count and by payload bytes. The event is set whenever
    the queue is not empty (or `wake` was called), so a pump can wait on it.
    """

    def __init__(self, frames_max: int, bytes_max: int) -> None:
        self.frames_max = frames_max
        self.bytes_max = bytes_max
        self._frames: collections.deque[bytes] = collections.deque()
        self._bytes = 0
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def bytes_queued(self) -> int:
        """Payload bytes queued."""
        return self._bytes

    def fits(self, frame: bytes) -> bool:
        """Whether `frame` can be pushed without dropping anything."""
        return len(self._frames) < self.frames_max and self._bytes + len(frame) <= self.bytes_max

    def push(self, frame: bytes) -> int:
        """Append `frame`, dropping the oldest frames if over a bound; return how many.

        The new frame itself is always kept: settings guarantee that one frame
        fits in `bytes_max`.
        """
        frames = self._frames
        frames.append(frame)
        self._bytes += len(frame)
        dropped = 0
        while len(frames) > self.frames_max or self._bytes > self.bytes_max:
            self._bytes -= len(frames.popleft())
            dropped += 1
        self._ready.set()
        return dropped

    def take(self, bytes_max: int) -> list[bytes]:
        """Remove and return the oldest frames, at least one if any, about `bytes_max` bytes."""
        frames = self._frames
        taken: list[bytes] = []
        size = 0
        while frames and (not taken or size + len(frames[0]) <= bytes_max):
            frame = frames.popleft()
            size += len(frame)
            taken.append(frame)
        self._bytes -= size
        if not frames:
            self._ready.clear()
        return taken

    def wake(self) -> None:
        """Make a waiting `wait` return even though the queue may be empty."""
        self._ready.set()

    async def wait(self) -> None:
        """Return when the queue is not empty or `wake` was called."""
        await self._ready.wait()


async def pump(
    queue: SendQueue,
    frames: FrameWriter,
    flush_bytes_max: int,
    is_lost: Callable[[], bool] = lambda: False,
) -> None:
    """Write what `queue` holds, batch by batch, until the connection is lost.

    Returns when `is_lost()` or the transport is closing (wake the queue to
    make it check). Raises `ConnectionError` if a drain finds the connection
    broken. Frames taken from the queue are handed to the transport, which
    may still lose them if the connection breaks: the owner accepts that.
    """
    while True:
        await queue.wait()
        if is_lost() or frames.is_closing():
            return
        batch = queue.take(flush_bytes_max)
        if batch:
            frames.write_frames(batch)
        if frames.needs_drain():
            await frames.drain()


async def close_stream(writer: asyncio.StreamWriter, timeout_s: float) -> None:
    """Close `writer`'s connection, flushing its buffer for at most `timeout_s`.

    Never raises (except `CancelledError`); after it returns, or is
    cancelled, the socket is closed or aborted.
    """
    try:
        writer.close()
        async with asyncio.timeout(timeout_s):
            await writer.wait_closed()
    except (ConnectionError, OSError):  # TimeoutError is an OSError
        pass
    finally:
        # A no-op after a clean close; otherwise drop the unflushed bytes.
        writer.transport.abort()


async def open_stream(
    address: Address,
    settings: TransportSettings,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Dial `address` (TLS if `ssl_context`) within `connect_timeout_s`.

    Raises `OSError` (`TimeoutError` included) if the connection fails.
    """
    host, port = address
    tls: dict[str, object] = {}
    if ssl_context is not None:
        tls = {
            "ssl": ssl_context,
            "server_hostname": server_hostname,
            "ssl_handshake_timeout": settings.handshake_timeout_s,
        }
    async with asyncio.timeout(settings.connect_timeout_s):
        reader, writer = await asyncio.open_connection(
            host,
            port,
            limit=settings.read_buffer_bytes,
            **tls,  # type: ignore[arg-type]
        )
    refuse_self_connection(writer)
    return reader, writer


def refuse_self_connection(writer: asyncio.StreamWriter) -> None:
    """Raise `ConnectionRefusedError` (and abort) if the socket is connected to itself.

    Dialing a port on this host where nothing listens can succeed on Linux
    when the kernel happens to pick that same port as the local one (TCP
    simultaneous open): the socket then talks to itself. Local clusters take
    their ports from the ephemeral range, so a client redialing a stopped
    replica meets this sooner or later; it means "nobody listens there".
    """
    sockname, peername = writer.get_extra_info("sockname"), writer.get_extra_info("peername")
    if sockname is not None and sockname == peername:
        writer.transport.abort()
        raise ConnectionRefusedError(f"connected to itself at {peername[0]}:{peername[1]}: nothing listens there")


class Connection:
    """An authenticated connection carrying frames both ways (the client channel).

    Made by `connect` on the client side and handed to the `ClientServer`
    handler on the replica side. `send` queues a frame without waiting;
    iterating yields received frames until the other side hangs up or the
    connection is closed. Use ``async with`` or call `close`.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        remote: Hello,
        settings: TransportSettings,
        stats: TransportStats,
    ) -> None:
        self.remote = remote
        self.stats = stats
        self._reader = reader
        self._writer = writer
        self._settings = settings
        self._where = describe_peer(writer)
        self._frames = FrameWriter(
            writer,
            frame_bytes_max=settings.frame_bytes_max,
            write_buffer_bytes_high=settings.write_buffer_bytes_high,
            stats=stats,
        )
        self._reader_frames = FrameReader(
            reader,
            frame_bytes_max=settings.frame_bytes_max,
            chunk_bytes=settings.read_buffer_bytes,
            stats=stats,
        )
        # Frames read in bulk but not yet handed to the application.
        self._received: collections.deque[bytes] = collections.deque()
        self._queue = SendQueue(settings.client_queue_frames_max, settings.client_queue_bytes_max)
        self._close_reason: str | None = None
        self._pump_task = asyncio.get_running_loop().create_task(
            self._pump(), name=f"rsm.net pump to {self._where}"
        )

    def __repr__(self) -> str:
        state = f"closed ({self._close_reason})" if self._close_reason else "open"
        return (
            f"<Connection {self.remote.role.value} {self.remote.node_id!r} {self._where} {state}>"
        )

    @property
    def node_id(self) -> str:
        """The node id (or client id) the other side authenticated as."""
        return self.remote.node_id

    @property
    def close_reason(self) -> str | None:
        """None while open; else why it closed: closed, slow_consumer, malformed, lost."""
        return self._close_reason

    def send(self, frame: bytes) -> None:
        """Queue `frame` to be sent; never waits.

        Raises `FrameError` if `frame` is over `frame_bytes_max` (nothing is
        queued) and `ConnectionClosed` if the connection is closed, or if this
        frame overflows the send queue, which closes the connection.
        """
        if self._close_reason is not None:
            raise ConnectionClosed(self._close_reason, f"{self!r}: cannot send")
        if len(frame) > self._settings.frame_bytes_max:
            raise FrameError(
                f"frame of {len(frame)} bytes exceeds frame_bytes_max "
                f"({self._settings.frame_bytes_max})"
            )
        if not self._queue.fits(frame):
            self.stats.connections_closed_slow += 1
            log.warning("%r: send queue full; the other side is not reading, closing", self)
            self.abort("slow_consumer")
            raise ConnectionClosed(
                "slow_consumer",
                f"{self!r}: send queue full ({len(self._queue)} frames, {self._queue.bytes_queued} "
                "bytes); the other side is not reading",
            )
        self._queue.push(frame)

    def __aiter__(self) -> Connection:
        return self

    async def __anext__(self) -> bytes:
        frame = await self._read()
        if frame is None:
            raise StopAsyncIteration
        return frame

    async def recv(self) -> bytes:
        """The next received frame; `ConnectionClosed` once there are no more."""
        frame = await self._read()
        if frame is None:
            raise ConnectionClosed(self._close_reason or "eof", f"{self!r}: no more frames")
        return frame

    async def recv_batch(self) -> list[bytes]:
        """Every frame received so far and not yet taken, at least one; []
        once there are no more. Cheaper than iterating frame by frame when
        the other side pipelines many requests."""
        if not self._received:
            frame = await self._read()
            if frame is None:
                return []
            self._received.appendleft(frame)
        frames = list(self._received)
        self._received.clear()
        return frames

    async def _read(self) -> bytes | None:
        if self._received:
            return self._received.popleft()
        if self._close_reason is not None:
            return None
        try:
            frames = await self._reader_frames.read_batch()
        except FrameError as exc:
            self.stats.frames_malformed += 1
            log.warning("%r: closing after a bad frame: %s", self, exc)
            self.abort("malformed")
            return None
        except (ConnectionError, OSError) as exc:
            log.info("%r: connection lost: %r", self, exc)
            self.abort("lost")
            return None
        if not frames:
            return None
        self._received.extend(frames)
        return self._received.popleft()

    async def _pump(self) -> None:
        try:
            await pump(self._queue, self._frames, self._settings.flush_bytes_max)
        except (ConnectionError, OSError) as exc:
            log.info("%r: connection lost while sending: %r", self, exc)
        if self._close_reason is None:
            self._close_reason = "lost"

    def abort(self, reason: str = "aborted") -> None:
        """Close at once, discarding queued frames. `close` must still be awaited
        (or the pump task is simply left to finish, which it does immediately)."""
        if self._close_reason is None:
            self._close_reason = reason
        self._writer.transport.abort()
        self._pump_task.cancel()

    async def close(self) -> None:
        """Send what is queued (for at most `close_timeout_s`), then close. Idempotent."""
        if self._close_reason is None:
            self._close_reason = "closed"
        self._pump_task.cancel()
        await asyncio.gather(self._pump_task, return_exceptions=True)
        leftover = self._queue.take(self._queue.bytes_queued)
        if leftover and not self._frames.is_closing():
            self._frames.write_frames(leftover)
        await close_stream(self._writer, self._settings.close_timeout_s)

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def connect(
    address: Address,
    *,
    cluster_id: str,
    secret: bytes,
    client_id: str = "client",
    settings: TransportSettings | None = None,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    stats: TransportStats | None = None,
) -> Connection:
    """Dial a `ClientServer` at `address`, authenticate, and return the connection.

    Raises `OSError` if the connection cannot be made and `HandshakeError` /
    `AuthenticationError` if the handshake fails (the socket is then closed).
    """
    settings = (settings or TransportSettings()).validate(codec_limits=None)
    stats = stats if stats is not None else TransportStats()
    local = Identity(cluster_id=cluster_id, node_id=client_id, role=Role.CLIENT, secret=secret)
    reader, writer = await open_stream(address, settings, ssl_context, server_hostname)
    try:
        remote = await handshake(
            reader, writer, local, initiator=True, timeout_s=settings.handshake_timeout_s
        )
    except HandshakeError as exc:
        stats.count_rejected(exc.reason)
        await close_stream(writer, settings.close_timeout_s)
        raise
    except BaseException:
        writer.transport.abort()
        raise
    stats.connections_established += 1
    return Connection(reader, writer, remote, settings, stats)
