"""PeerTransport: exchange, reconnection with backoff, bounded queues, bad peers."""

from __future__ import annotations

import asyncio
import random

import attrs
import pytest

from rsm.codec import DecodeError, decode_message, encode_message
from rsm.consensus.types import Message, MessageType
from rsm.net import (
    FrameError,
    Identity,
    Role,
    TransportClosed,
    TransportSettings,
    UnknownPeer,
    backoff_delay_s,
    encode_frame,
    handshake,
)
from rsm.net.connection import close_stream

from .conftest import (
    CLUSTER,
    FAST,
    LOCALHOST,
    OTHER_SECRET,
    SECRET,
    Inbox,
    free_port,
    make_peer,
    run,
    wait_until,
)


def test_three_transports_exchange_frames_both_ways_in_order() -> None:
    async def main() -> None:
        inboxes = {name: Inbox() for name in "abc"}
        nodes = {name: make_peer(name, inbox=inboxes[name]) for name in "abc"}
        for node in nodes.values():
            await node.start()
        for name, node in nodes.items():
            for other in nodes:
                if other != name:
                    node.add_peer(other, nodes[other].address)
        try:
            for name, node in nodes.items():
                for other in nodes:
                    if other != name:
                        for i in range(50):
                            node.send(other, f"{name}->{other} #{i}".encode())
            for name, inbox in inboxes.items():
                got = await inbox.take(100)
                for sender in set("abc") - {name}:
                    expected = [f"{sender}->{name} #{i}".encode() for i in range(50)]
                    assert expected == [frame for peer, frame in got if peer == sender]
            for node in nodes.values():
                assert 100 == node.stats.frames_sent == node.stats.frames_received
                assert 2 == node.stats.connections_established == node.stats.connections_accepted
                assert 0 == node.stats.connections_rejected()
        finally:
            for node in nodes.values():
                await node.close()

    run(main)


def test_raft_messages_travel_through_the_codec() -> None:
    async def main() -> None:
        received: list[Message] = []
        arrived = asyncio.Event()

        def on_frame(peer_id: str, frame: bytes) -> None:
            received.append(decode_message(frame))
            arrived.set()

        a = make_peer("a")
        b = make_peer("b", inbox=on_frame)  # type: ignore[arg-type]
        async with a, b:
            a.add_peer("b", b.address)
            msg = Message(MessageType.HEARTBEAT, "a", "b", term=3, commit=7, context=b"r1")
            a.send("b", encode_message(msg))
            await asyncio.wait_for(arrived.wait(), 3)
        assert [msg] == received

    run(main)


def test_restarted_peer_is_redialed_with_backoff_and_delivery_resumes() -> None:
    async def main() -> None:
        inbox_b = Inbox()
        a = make_peer("a")
        b = make_peer("b", inbox=inbox_b)
        await a.start()
        await b.start()
        port = b.address[1]
        a.add_peer("b", b.address)
        try:
            a.send("b", b"before")
            assert [("a", b"before")] == await inbox_b.take(1)
            await b.close()
            # a notices the hang-up by itself (no send needed) and starts redialing.
            await wait_until(lambda: not a.is_connected("b"))
            await wait_until(lambda: a.stats.connect_failures >= 2)
            for i in range(5):
                a.send("b", b"while down %d" % i)
            restarted_inbox = Inbox()
            b = make_peer("b", port, inbox=restarted_inbox)
            await b.start()
            got = await restarted_inbox.take(5)
            assert [("a", b"while down %d" % i) for i in range(5)] == got
            a.send("b", b"after")
            assert [("a", b"after")] == await restarted_inbox.take(1)
            assert 2 == a.stats.connections_established
            assert a.stats.reconnect_attempts == a.stats.connect_failures + 1
        finally:
            await a.close()
            await b.close()

    run(main)


def test_queue_to_a_down_peer_is_bounded_and_drops_the_oldest() -> None:
    settings = attrs.evolve(FAST, peer_queue_frames_max=10)

    async def main() -> None:
        port = free_port()
        a = make_peer("a", settings=settings, peers={"b": (LOCALHOST, port)})
        await a.start()
        try:
            await wait_until(lambda: a.stats.connect_failures >= 1)
            for i in range(25):
                a.send("b", b"%d" % i)
            assert 10 == a.queued_frames("b")
            assert 15 == a.stats.frames_dropped_queue_full
            inbox = Inbox()
            b = make_peer("b", port, inbox=inbox)
            async with b:
                got = await inbox.take(10)
                assert [("a", b"%d" % i) for i in range(15, 25)] == got
                assert 0 == a.queued_frames("b")
        finally:
            await a.close()

    run(main)


def test_backoff_grows_with_jitter_up_to_the_cap_and_is_reproducible() -> None:
    settings = TransportSettings(reconnect_backoff_min_s=0.1, reconnect_backoff_max_s=1.0)
    delays = [backoff_delay_s(n, settings, random.Random(7)) for n in range(8)]
    assert delays == [backoff_delay_s(n, settings, random.Random(7)) for n in range(8)]
    assert 0.1 == delays[0]  # the first retry after a lost connection waits the minimum
    for n, delay in enumerate(delays):
        assert 0.1 <= delay <= min(1.0, 0.1 * 2**n)
    rng = random.Random(1)
    many = [backoff_delay_s(10, settings, rng) for _ in range(200)]
    assert max(many) <= 1.0 and len(set(many)) == 200  # jittered, capped
    assert 0.1 <= backoff_delay_s(10_000, settings, rng) <= 1.0  # huge counts do not overflow


async def authenticated_intruder(
    address: tuple[str, int], node_id: str = "b", secret: bytes = SECRET
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection that passed the handshake as peer `node_id`: it may send anything."""
    reader, writer = await asyncio.open_connection(*address)
    local = Identity(cluster_id=CLUSTER, node_id=node_id, role=Role.PEER, secret=secret)
    await handshake(reader, writer, local, initiator=True, timeout_s=1)
    return reader, writer


async def assert_closed_by_server(reader: asyncio.StreamReader) -> None:
    assert b"" == await asyncio.wait_for(reader.read(), 3)


@pytest.mark.parametrize(
    ("bad_bytes", "write_eof"),
    [
        # Announces one byte more than frame_bytes_max; the payload never comes.
        ((FAST.frame_bytes_max + 1).to_bytes(4, "big"), False),
        # The largest length a header can state.
        (b"\xff\xff\xff\xff", False),
        # A frame cut short by the peer hanging up.
        (b"\x00\x00\x01\x00" + b"x" * 10, True),
    ],
    ids=["one-past-limit", "max-header", "truncated"],
)
def test_bad_frame_from_an_authenticated_peer_closes_only_that_connection(
    bad_bytes: bytes, write_eof: bool
) -> None:
    async def main() -> None:
        inbox = Inbox()
        a = make_peer("a", inbox=inbox)
        async with a:
            reader, writer = await authenticated_intruder(a.address)
            writer.write(encode_frame(b"fine", 100) + bad_bytes)
            if write_eof:
                writer.write_eof()
            assert [("b", b"fine")] == await inbox.take(1)
            await assert_closed_by_server(reader)
            await close_stream(writer, 1)
            await wait_until(lambda: a.stats.frames_malformed == 1)
            # The server is still up: a real peer connects and is heard.
            b = make_peer("b", peers={"a": a.address})
            async with b:
                b.send("a", b"hello again")
                assert [("b", b"hello again")] == await inbox.take(1)
            assert 2 == a.stats.connections_accepted

    run(main)


def test_frame_rejected_by_the_decoder_closes_the_connection_and_is_counted() -> None:
    async def main() -> None:
        decoded: list[Message] = []
        a = make_peer("a", inbox=lambda peer, frame: decoded.append(decode_message(frame)))  # type: ignore[arg-type]
        async with a:
            reader, writer = await authenticated_intruder(a.address)
            good = encode_message(Message(MessageType.HEARTBEAT, "b", "a", term=1))
            writer.write(encode_frame(good, 100) + encode_frame(b"\x93\x01\x02", 100))
            await assert_closed_by_server(reader)
            await close_stream(writer, 1)
            await wait_until(lambda: a.stats.frames_malformed == 1)
            assert 1 == len(decoded)
            assert 2 == a.stats.frames_received

    run(main)
    with pytest.raises(DecodeError):
        decode_message(b"\x93\x01\x02")


def test_a_bug_in_on_frame_is_logged_counted_and_closes_only_that_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def on_frame(peer: str, frame: bytes) -> None:
        raise ZeroDivisionError("bug")

    async def main() -> None:
        a = make_peer("a", inbox=on_frame)  # type: ignore[arg-type]
        async with a:
            reader, writer = await authenticated_intruder(a.address)
            writer.write(encode_frame(b"boom", 100))
            await assert_closed_by_server(reader)
            await close_stream(writer, 1)
            await wait_until(lambda: a.stats.callback_errors == 1)

    run(main)
    assert any("ZeroDivisionError" in (r.exc_text or "") for r in caplog.records)


def test_wrong_secret_peer_is_rejected_and_the_server_keeps_serving() -> None:
    async def main() -> None:
        inbox = Inbox()
        a = make_peer("a", inbox=inbox)
        async with a:
            impostor = make_peer("b", secret=OTHER_SECRET, peers={"a": a.address})
            async with impostor:
                await wait_until(lambda: impostor.stats.connections_rejected_auth >= 1)
                await wait_until(lambda: a.stats.connections_rejected_auth >= 1)
                assert not impostor.is_connected("a")
            c = make_peer("c", peers={"a": a.address})
            async with c:
                c.send("a", b"from c")
                assert [("c", b"from c")] == await inbox.take(1)

    run(main)


def test_wrong_cluster_peer_is_rejected() -> None:
    async def main() -> None:
        a = make_peer("a")
        async with a:
            stranger = make_peer("b", cluster_id="other-cluster", peers={"a": a.address})
            async with stranger:
                await wait_until(lambda: a.stats.connections_rejected_cluster >= 1)
                await wait_until(lambda: stranger.stats.connections_rejected_cluster >= 1)
            assert 0 == a.stats.connections_accepted

    run(main)


def test_silent_connection_is_timed_out_by_the_server() -> None:
    async def main() -> None:
        a = make_peer("a")
        async with a:
            reader, writer = await asyncio.open_connection(*a.address)
            # The server sends its hello, waits handshake_timeout_s, then hangs up.
            assert b"rsm" in await asyncio.wait_for(reader.read(), 3)
            await close_stream(writer, 1)
            assert 1 == a.stats.connections_rejected_timeout

    run(main)


def test_connections_over_connections_max_are_refused() -> None:
    settings = attrs.evolve(FAST, connections_max=1)

    async def main() -> None:
        a = make_peer("a", settings=settings)
        async with a:
            first_reader, first_writer = await asyncio.open_connection(*a.address)
            assert await first_reader.readexactly(4)  # accepted: its hello is coming
            second_reader, second_writer = await asyncio.open_connection(*a.address)
            assert b"" == await asyncio.wait_for(second_reader.read(), 3)  # refused, no hello
            assert 1 == a.stats.connections_rejected_limit
            for writer in (first_writer, second_writer):
                await close_stream(writer, 1)

    run(main)


def test_newest_inbound_connection_from_a_peer_replaces_the_older() -> None:
    async def main() -> None:
        inbox = Inbox()
        a = make_peer("a", inbox=inbox)
        async with a:
            old_reader, old_writer = await authenticated_intruder(a.address)
            old_writer.write(encode_frame(b"old", 100))
            assert [("b", b"old")] == await inbox.take(1)
            _new_reader, new_writer = await authenticated_intruder(a.address)
            await assert_closed_by_server(old_reader)
            new_writer.write(encode_frame(b"new", 100))
            assert [("b", b"new")] == await inbox.take(1)
            for writer in (old_writer, new_writer):
                await close_stream(writer, 1)

    run(main)


def test_api_misuse_raises_named_errors() -> None:
    async def main() -> None:
        a = make_peer("a", peers={"b": (LOCALHOST, free_port())})
        await a.start()
        with pytest.raises(UnknownPeer, match="'z'"):
            a.send("z", b"x")
        with pytest.raises(FrameError, match="exceeds frame_bytes_max"):
            a.send("b", b"x" * (FAST.frame_bytes_max + 1))
        with pytest.raises(ValueError, match="its own peer"):
            a.add_peer("a", (LOCALHOST, 1))
        await a.close()
        await a.close()  # idempotent
        with pytest.raises(TransportClosed):
            a.send("b", b"x")
        with pytest.raises(TransportClosed):
            await a.start()

    run(main)


def test_peers_can_be_added_moved_and_removed() -> None:
    async def main() -> None:
        inbox_b, inbox_c = Inbox(), Inbox()
        a = make_peer("a")
        b1, b2 = make_peer("b", inbox=inbox_b), make_peer("b", inbox=inbox_c)
        async with a, b1, b2:
            a.add_peer("b", b1.address)
            a.send("b", b"to b1")
            assert [("a", b"to b1")] == await inbox_b.take(1)
            a.add_peer("b", b2.address)  # b moved: redial at the new address
            await wait_until(lambda: b2.stats.connections_accepted == 1)
            a.send("b", b"to b2")
            assert [("a", b"to b2")] == await inbox_c.take(1)
            a.remove_peer("b")
            assert {} == a.peers
            with pytest.raises(UnknownPeer):
                a.send("b", b"gone")

    run(main)
