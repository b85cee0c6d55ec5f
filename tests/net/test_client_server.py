"""ClientServer and connect(): request/response, rejections, slow and bad clients."""

from __future__ import annotations

import asyncio

import attrs
import pytest

from rsm.net import (
    AuthenticationError,
    ClientServer,
    Connection,
    ConnectionClosed,
    HandshakeError,
    RejectReason,
    TransportSettings,
    connect,
    encode_frame,
)
from rsm.net.connection import close_stream

from .conftest import CLUSTER, FAST, LOCALHOST, OTHER_SECRET, SECRET, make_peer, run, wait_until


async def echo(conn: Connection) -> None:
    async for request in conn:
        conn.send(b"re: " + request)


def make_server(handler=echo, settings: TransportSettings = FAST, **kwargs) -> ClientServer:  # type: ignore[no-untyped-def]
    return ClientServer(
        (LOCALHOST, 0),
        cluster_id=CLUSTER,
        node_id="replica-a",
        secret=SECRET,
        handler=handler,
        settings=settings,
        **kwargs,
    )


async def dial(server: ClientServer, **kwargs) -> Connection:  # type: ignore[no-untyped-def]
    options = {"cluster_id": CLUSTER, "secret": SECRET, "client_id": "app-1", "settings": FAST}
    options.update(kwargs)
    return await connect(server.address, **options)  # type: ignore[arg-type]


def test_client_exchanges_requests_and_responses() -> None:
    async def main() -> None:
        async with make_server() as server:
            async with await dial(server) as conn:
                assert "replica-a" == conn.node_id
                for i in range(3):
                    conn.send(b"req %d" % i)
                assert [b"re: req %d" % i for i in range(3)] == [
                    await conn.recv() for _ in range(3)
                ]
                conn.send(b"")
                assert b"re: " == await conn.recv()
            await wait_until(lambda: server.stats.frames_sent == 4)
            assert 4 == server.stats.frames_received
            assert 1 == server.stats.connections_accepted

    run(main)


def test_many_requests_in_one_turn_are_coalesced() -> None:
    async def main() -> None:
        async with make_server() as server, await dial(server) as conn:
            for i in range(1000):
                conn.send(b"%d" % i)
            replies = [await conn.recv() for _ in range(1000)]
            assert [b"re: %d" % i for i in range(1000)] == replies
            assert 1 == conn.stats.flushes  # all 1000 sends went out in one write
            assert 1000 == conn.stats.frames_sent

    run(main)


def test_wrong_secret_client_is_rejected_and_the_server_keeps_serving() -> None:
    async def main() -> None:
        async with make_server() as server:
            with pytest.raises(AuthenticationError, match="HMAC mismatch"):
                await dial(server, secret=OTHER_SECRET)
            await wait_until(lambda: server.stats.connections_rejected_auth == 1)
            async with await dial(server) as conn:
                conn.send(b"ping")
                assert b"re: ping" == await conn.recv()

    run(main)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [({"cluster_id": "other"}, RejectReason.CLUSTER)],
)
def test_client_of_another_cluster_is_rejected(
    kwargs: dict[str, str], reason: RejectReason
) -> None:
    async def main() -> None:
        async with make_server() as server:
            with pytest.raises(HandshakeError) as caught:
                await dial(server, **kwargs)
            assert reason == caught.value.reason
            await wait_until(lambda: server.stats.connections_rejected() == 1)

    run(main)


def test_client_on_the_peer_port_and_peer_on_the_client_port_are_refused() -> None:
    async def main() -> None:
        peer = make_peer("a")
        async with peer, make_server() as server:
            with pytest.raises(HandshakeError, match="wrong role") as caught:
                await connect(peer.address, cluster_id=CLUSTER, secret=SECRET, settings=FAST)
            assert RejectReason.ROLE == caught.value.reason
            await wait_until(lambda: peer.stats.connections_rejected_role == 1)
            peer.add_peer("b", server.address)
            await wait_until(lambda: server.stats.connections_rejected_role >= 1)
            assert not peer.is_connected("b")

    run(main)


def test_oversized_frame_from_a_client_closes_it_and_is_counted() -> None:
    async def main() -> None:
        ended = asyncio.Event()

        async def handler(conn: Connection) -> None:
            async for request in conn:
                conn.send(request)
            assert "malformed" == conn.close_reason
            ended.set()

        async with make_server(handler) as server:
            conn = await dial(server)
            conn.send(b"ok")
            assert b"ok" == await conn.recv()
            # Bypass send()'s own check: write a header one byte past the limit.
            conn._writer.write((FAST.frame_bytes_max + 1).to_bytes(4, "big"))
            await asyncio.wait_for(ended.wait(), 3)
            with pytest.raises(ConnectionClosed):
                await conn.recv()
            await conn.close()
            assert 1 == server.stats.frames_malformed
            async with await dial(server) as again:
                again.send(b"still up")
                assert b"still up" == await again.recv()

    run(main)


def test_client_that_stops_reading_is_disconnected_not_buffered_forever() -> None:
    settings = attrs.evolve(FAST, client_queue_frames_max=5)
    outcome: list[str] = []

    async def handler(conn: Connection) -> None:
        await conn.recv()
        try:
            for _ in range(6):  # one turn: the pump cannot empty the queue meanwhile
                conn.send(b"response")
        except ConnectionClosed as exc:
            outcome.append(exc.reason)
            raise

    async def main() -> None:
        async with make_server(handler, settings) as server:
            async with await dial(server) as conn:
                conn.send(b"go")
                with pytest.raises(ConnectionClosed):
                    await conn.recv()
            await wait_until(lambda: server.stats.connections_closed_slow == 1)
            assert ["slow_consumer"] == outcome

    run(main)


def test_send_on_a_closed_connection_raises() -> None:
    async def main() -> None:
        async with make_server() as server:
            conn = await dial(server)
            await conn.close()
            assert "closed" == conn.close_reason
            with pytest.raises(ConnectionClosed, match="cannot send"):
                conn.send(b"late")

    run(main)


def test_close_cancels_handlers_and_closes_connections() -> None:
    async def main() -> None:
        started = asyncio.Event()

        async def stubborn(conn: Connection) -> None:
            started.set()
            await asyncio.Event().wait()  # never returns by itself

        server = make_server(stubborn)
        await server.start()
        conn = await dial(server)
        await asyncio.wait_for(started.wait(), 3)
        await server.close()
        with pytest.raises(ConnectionClosed):
            await conn.recv()
        await conn.close()

    run(main)


def test_handler_bug_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    async def buggy(conn: Connection) -> None:
        await conn.recv()
        raise KeyError("bug")

    async def main() -> None:
        async with make_server(buggy) as server:
            async with await dial(server) as conn:
                conn.send(b"x")
                with pytest.raises(ConnectionClosed):
                    await conn.recv()
            await wait_until(lambda: server.stats.callback_errors == 1)

    run(main)
    assert any("KeyError" in (r.exc_text or "") for r in caplog.records)


def test_connect_to_a_closed_port_raises_oserror() -> None:
    from .conftest import free_port

    async def main() -> None:
        with pytest.raises(OSError):
            await connect(
                (LOCALHOST, free_port()), cluster_id=CLUSTER, secret=SECRET, settings=FAST
            )

    run(main)


def test_raw_silent_client_is_timed_out() -> None:
    async def main() -> None:
        async with make_server() as server:
            reader, writer = await asyncio.open_connection(*server.address)
            writer.write(encode_frame(b"", 10)[:2])
            assert b"rsm" in await asyncio.wait_for(reader.read(), 3)
            await close_stream(writer, 1)
            assert 1 == server.stats.connections_rejected_timeout

    run(main)
