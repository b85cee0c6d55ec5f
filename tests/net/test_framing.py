"""Frames: round trips, the size limit at and past its edge, truncation, coalescing."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rsm.net import FrameError, FrameReader, TransportStats, encode_frame, read_frame
from rsm.net.connection import SendQueue, pump
from rsm.net.framing import FrameWriter

from .conftest import run, tcp_pair

LIMIT = 1000


def fed(data: bytes, piece_bytes: int = 1 << 20) -> asyncio.StreamReader:
    """A stream that yields `data` (in pieces of `piece_bytes`) and then ends."""
    reader = asyncio.StreamReader()
    for start in range(0, len(data), piece_bytes):
        reader.feed_data(data[start : start + piece_bytes])
    reader.feed_eof()
    return reader


async def read_one_by_one(reader: asyncio.StreamReader, limit: int = LIMIT) -> list[bytes]:
    frames = []
    while (frame := await read_frame(reader, limit)) is not None:
        frames.append(frame)
    return frames


async def read_in_bulk(
    reader: asyncio.StreamReader, limit: int = LIMIT, chunk_bytes: int = 64
) -> list[bytes]:
    frames: list[bytes] = []
    bulk = FrameReader(
        reader, frame_bytes_max=limit, chunk_bytes=chunk_bytes, stats=TransportStats()
    )
    while batch := await bulk.read_batch():
        frames.extend(batch)
    return frames


READERS = pytest.mark.parametrize("read_all", [read_one_by_one, read_in_bulk])
read_all = read_one_by_one


@READERS
def test_round_trip_including_empty_and_at_limit(read_all) -> None:  # type: ignore[no-untyped-def]
    payloads = [b"", b"x", bytes(range(256)), b"\xff" * LIMIT, b""]

    async def main() -> list[bytes]:
        wire = b"".join(encode_frame(p, LIMIT) for p in payloads)
        return await read_all(fed(wire))

    assert payloads == run(main)


def test_wire_format_is_big_endian_length_then_payload() -> None:
    assert b"\x00\x00\x00\x03abc" == encode_frame(b"abc", LIMIT)
    assert b"\x00\x00\x00\x00" == encode_frame(b"", LIMIT)


@READERS
def test_one_byte_past_the_limit_is_refused_on_both_sides(read_all) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FrameError, match="1001 bytes exceeds frame_bytes_max \\(1000\\)"):
        encode_frame(b"x" * (LIMIT + 1), LIMIT)

    async def main() -> None:
        # Only the header arrives: the refusal must not wait for the payload.
        reader = asyncio.StreamReader()
        reader.feed_data((LIMIT + 1).to_bytes(4, "big"))
        with pytest.raises(FrameError, match="1001 bytes exceeds frame_bytes_max"):
            await read_all(reader)

    run(main)


def test_clean_end_of_stream_between_frames_is_not_an_error() -> None:
    async def main() -> None:
        assert await read_frame(fed(b""), LIMIT) is None
        reader = fed(encode_frame(b"last", LIMIT))
        assert b"last" == await read_frame(reader, LIMIT)
        assert await read_frame(reader, LIMIT) is None

    run(main)


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"\x00\x00", "after 2 of 4 header bytes"),
        (b"\x00\x00\x00\x05abc", "after 3 of 5 payload bytes"),
        (b"\x00\x00\x00\x05", "after 0 of 5 payload bytes"),
    ],
)
@READERS
def test_truncated_frame_is_an_error(read_all, wire: bytes, message: str) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        with pytest.raises(FrameError, match=message):
            await read_all(fed(wire, piece_bytes=2))

    run(main)


def test_bulk_reader_returns_good_frames_before_raising_for_a_bad_one() -> None:
    async def main() -> None:
        wire = encode_frame(b"one", LIMIT) + encode_frame(b"two", LIMIT) + b"\xff\xff\xff\xff"
        stats = TransportStats()
        bulk = FrameReader(fed(wire), frame_bytes_max=LIMIT, chunk_bytes=1024, stats=stats)
        assert [b"one", b"two"] == await bulk.read_batch()
        assert (2, 14) == (stats.frames_received, stats.bytes_received)
        with pytest.raises(FrameError, match="exceeds frame_bytes_max"):
            await bulk.read_batch()

    run(main)


def test_bulk_reader_reads_a_frame_larger_than_a_chunk_whole() -> None:
    async def main() -> None:
        big = bytes(range(256)) * 3
        wire = encode_frame(b"a", LIMIT) + encode_frame(big, LIMIT) + encode_frame(b"z", LIMIT)
        assert [b"a", big, b"z"] == await read_in_bulk(fed(wire, piece_bytes=100), chunk_bytes=16)
        with pytest.raises(FrameError, match="after 16 of 768 payload bytes"):
            await read_in_bulk(fed(wire[:25]), chunk_bytes=16)

    run(main)


@settings(max_examples=60, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=300), max_size=30),
    piece_bytes=st.integers(1, 700),
    chunk_bytes=st.integers(1, 700),
)
def test_bulk_reader_agrees_with_the_simple_reader_however_bytes_arrive(
    payloads: list[bytes], piece_bytes: int, chunk_bytes: int
) -> None:
    wire = b"".join(encode_frame(p, LIMIT) for p in payloads)

    async def main() -> None:
        assert payloads == await read_one_by_one(fed(wire, piece_bytes))
        assert payloads == await read_in_bulk(fed(wire, piece_bytes), chunk_bytes=chunk_bytes)

    # No sockets here, so the plain runner is enough (and far cheaper per example).
    asyncio.run(main())


def test_writer_coalesces_a_batch_into_one_write() -> None:
    frames = [f"frame {i}".encode() * (i % 7) for i in range(1000)]

    async def main() -> None:
        async with tcp_pair() as pair:
            stats = TransportStats()
            writer = FrameWriter(
                pair.client_writer,
                frame_bytes_max=LIMIT,
                write_buffer_bytes_high=1 << 20,
                stats=stats,
            )
            written = writer.write_frames(frames)
            pair.client_writer.write_eof()
            received = await read_all(pair.server_reader)
            assert frames == received
            assert (1, 1000) == (stats.flushes, stats.frames_sent)
            assert written == stats.bytes_sent == sum(4 + len(f) for f in frames)

    run(main)


def test_writer_refuses_a_batch_with_an_oversized_frame_and_writes_nothing() -> None:
    async def main() -> None:
        async with tcp_pair() as pair:
            stats = TransportStats()
            writer = FrameWriter(
                pair.client_writer,
                frame_bytes_max=LIMIT,
                write_buffer_bytes_high=1 << 20,
                stats=stats,
            )
            with pytest.raises(FrameError):
                writer.write_frames([b"ok", b"x" * (LIMIT + 1)])
            assert 0 == pair.client_writer.transport.get_write_buffer_size()
            assert 0 == stats.flushes

    run(main)


def test_frames_queued_in_one_loop_turn_go_out_in_one_flush() -> None:
    """The pump wakes once per turn and writes everything queued meanwhile."""

    async def main() -> None:
        async with tcp_pair() as pair:
            stats = TransportStats()
            writer = FrameWriter(
                pair.client_writer,
                frame_bytes_max=LIMIT,
                write_buffer_bytes_high=1 << 20,
                stats=stats,
            )
            queue = SendQueue(frames_max=10_000, bytes_max=1 << 20)
            task = asyncio.create_task(pump(queue, writer, flush_bytes_max=1 << 20))
            for i in range(500):  # one turn: no await between the pushes
                queue.push(b"%d" % i)
            first = [await read_frame(pair.server_reader, LIMIT) for _ in range(500)]
            for i in range(500, 600):
                queue.push(b"%d" % i)
            second = [await read_frame(pair.server_reader, LIMIT) for _ in range(100)]
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert [b"%d" % i for i in range(600)] == first + second
            assert 2 == stats.flushes

    run(main)


def test_flush_is_split_at_flush_bytes_max_but_keeps_order() -> None:
    async def main() -> None:
        async with tcp_pair() as pair:
            stats = TransportStats()
            writer = FrameWriter(
                pair.client_writer,
                frame_bytes_max=LIMIT,
                write_buffer_bytes_high=1 << 20,
                stats=stats,
            )
            queue = SendQueue(frames_max=1000, bytes_max=1 << 20)
            for i in range(100):
                queue.push(bytes([i]) * 100)
            task = asyncio.create_task(pump(queue, writer, flush_bytes_max=1000))
            received = [await read_frame(pair.server_reader, LIMIT) for _ in range(100)]
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert [bytes([i]) * 100 for i in range(100)] == received
            assert 10 == stats.flushes  # 10 frames of 100 bytes per 1000-byte flush

    run(main)


def test_send_queue_drops_oldest_by_count_and_by_bytes() -> None:
    async def main() -> None:
        queue = SendQueue(frames_max=3, bytes_max=10)
        assert [0, 0, 0] == [queue.push(b"a"), queue.push(b"b"), queue.push(b"c")]
        assert 1 == queue.push(b"d")  # count bound: "a" goes
        assert 2 == queue.push(b"123456789")  # byte bound: "b" and "c" go
        assert (2, 10) == (len(queue), queue.bytes_queued)
        assert not queue.fits(b"xx")
        assert [b"d", b"123456789"] == queue.take(1 << 20)
        assert (0, 0) == (len(queue), queue.bytes_queued)

    run(main)
