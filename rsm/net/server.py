"""Listening sockets: the shared accept/handshake loop, and the client server.

Theory of operation
-------------------
`Listener` owns one listening socket. Each accepted connection gets one task
that runs the handshake (bounded by `handshake_timeout_s`), counts the result,
and, once the other side is authenticated, hands the streams to the owner's
``on_authenticated`` coroutine. Whatever happens in that task (a bad
handshake, a bad frame, a bug in the owner's code), it ends by closing its own
socket; nothing propagates to the listener, so one connection can never stop
the server. At most `connections_max` connections are open at a time; more
are closed at once and counted (reason ``limit``).

`close` stops accepting, cancels every connection task and waits for them, so
no task or socket outlives it.

`ClientServer` is a `Listener` whose authenticated connections are wrapped in
a `Connection` and given to the application's handler, one task each.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable

from rsm.errors import RsmError
from rsm.net.connection import Address, Connection, close_stream
from rsm.net.errors import ConnectionClosed, HandshakeError, RejectReason, TransportClosed
from rsm.net.handshake import Hello, Identity, Role, describe_peer, handshake
from rsm.net.settings import TransportSettings
from rsm.net.stats import TransportStats

__all__ = ["ClientHandler", "ClientServer", "Listener"]

log = logging.getLogger("rsm.net")

#: What a `Listener` calls with each authenticated connection; the socket is
#: closed when it returns.
OnAuthenticated = Callable[[Hello, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
#: The application's handler of one client connection.
ClientHandler = Callable[[Connection], Awaitable[None]]

# Loop turns given to connections accepted just before close() to reach our
# accept callback, so that close() can cancel them too (accepting takes a task
# step and a call_soon in asyncio's selector loop).
_ACCEPT_SETTLE_TURNS = 3


class Listener:
    """Accepts connections on `address`, authenticates them, hands them on."""

    def __init__(
        self,
        address: Address,
        local: Identity,
        on_authenticated: OnAuthenticated,
        *,
        settings: TransportSettings,
        stats: TransportStats,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._requested = address
        self._local = local
        self._on_authenticated = on_authenticated
        self._settings = settings
        self._stats = stats
        self._ssl = ssl_context
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def address(self) -> Address:
        """The bound (host, port): the real port when 0 was asked for."""
        if self._server is None:
            raise TransportClosed("the listener is not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        """Bind and start accepting (once). Raises `OSError` if the address is taken."""
        if self._closing:
            raise TransportClosed("the listener was closed; make a new one")
        if self._server is not None:
            return
        host, port = self._requested
        tls: dict[str, object] = {}
        if self._ssl is not None:
            # asyncio's server runs the TLS handshake before our callback sees
            # the connection. (Upgrading inside our own task instead would let
            # us count TLS failures, but StreamWriter.start_tls on the server
            # side can lose the client's first bytes and hangs under uvloop.)
            tls = {"ssl": self._ssl, "ssl_handshake_timeout": self._settings.handshake_timeout_s}
        # A plain (not async) callback: asyncio runs it inside connection_made,
        # so we create and track the connection's task ourselves.
        self._server = await asyncio.start_server(
            self._accept,
            host,
            port,
            limit=self._settings.read_buffer_bytes,
            **tls,  # type: ignore[arg-type]
        )

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:
            writer.transport.abort()
            return
        if len(self._tasks) >= self._settings.connections_max:
            self._stats.count_rejected(RejectReason.LIMIT)
            log.warning(
                "%s: refused, connections_max (%d) connections are open",
                describe_peer(writer),
                self._settings.connections_max,
            )
            writer.transport.abort()
            return
        task = asyncio.get_running_loop().create_task(
            self._serve(reader, writer), name=f"rsm.net connection from {describe_peer(writer)}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                remote = await handshake(
                    reader,
                    writer,
                    self._local,
                    initiator=False,
                    timeout_s=self._settings.handshake_timeout_s,
                )
            except HandshakeError as exc:
                self._stats.count_rejected(exc.reason)
                log.warning("rejected connection: %s", exc)
                return
            self._stats.connections_accepted += 1
            log.info(
                "accepted %s %r from %s", remote.role.value, remote.node_id, describe_peer(writer)
            )
            await self._on_authenticated(remote, reader, writer)
        except Exception:
            # A bug in the owner's code: log it, close this connection only.
            self._stats.callback_errors += 1
            log.exception("error serving %s", describe_peer(writer))
        finally:
            await close_stream(writer, self._settings.close_timeout_s)

    async def close(self) -> None:
        """Stop accepting; cancel and await every connection task. Idempotent."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for _ in range(_ACCEPT_SETTLE_TURNS):
            await asyncio.sleep(0)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


class ClientServer:
    """Serves client connections: authenticates each and runs `handler(connection)`.

    The handler runs in its own task; when it returns (or raises) the
    connection is closed after what it queued is sent. Malformed frames end
    the connection's iteration; counters are in `stats`.

    Usage::

        async def handler(conn: Connection) -> None:
            async for request in conn:
                conn.send(answer(request))

        server = ClientServer(("0.0.0.0", 7001), cluster_id="c1", node_id="a",
                              secret=secret, handler=handler)
        await server.start()
        ...
        await server.close()
    """

    def __init__(
        self,
        address: Address,
        *,
        cluster_id: str,
        node_id: str,
        secret: bytes,
        handler: ClientHandler,
        settings: TransportSettings | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = (settings or TransportSettings()).validate(codec_limits=None)
        self.stats = TransportStats()
        self._handler = handler
        local = Identity(cluster_id=cluster_id, node_id=node_id, role=Role.SERVER, secret=secret)
        self._listener = Listener(
            address,
            local,
            self._serve,
            settings=self.settings,
            stats=self.stats,
            ssl_context=ssl_context,
        )

    @property
    def address(self) -> Address:
        """The bound (host, port)."""
        return self._listener.address

    async def start(self) -> None:
        """Bind and start serving. Raises `OSError` if the address is taken."""
        await self._listener.start()

    async def close(self) -> None:
        """Stop accepting, cancel every handler, close every connection."""
        await self._listener.close()

    async def __aenter__(self) -> ClientServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _serve(
        self, remote: Hello, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        connection = Connection(reader, writer, remote, self.settings, self.stats)
        try:
            await self._handler(connection)
        except ConnectionClosed:
            pass  # the connection ended under the handler; already counted
        except RsmError as exc:
            # The handler judged the client's input invalid (a DecodeError, ...).
            self.stats.frames_malformed += 1
            log.warning("%r: closing: %s", connection, exc)
        finally:
            await connection.close()
