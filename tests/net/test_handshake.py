"""The handshake on its own: success, every rejection, on both sides; the transcript."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import struct
from typing import Any

import msgpack
import pytest

from rsm.errors import ConfigError
from rsm.net import (
    PROTOCOL_VERSION,
    AuthenticationError,
    HandshakeError,
    Hello,
    Identity,
    RejectReason,
    Role,
    encode_frame,
    handshake,
    read_frame,
)

from .conftest import CLUSTER, OTHER_SECRET, SECRET, TcpPair, run, tcp_pair

TIMEOUT_S = 0.5


def ident(
    node_id: str, role: Role = Role.PEER, *, secret: bytes = SECRET, cluster_id: str = CLUSTER
) -> Identity:
    return Identity(cluster_id=cluster_id, node_id=node_id, role=role, secret=secret)


async def closing_on_error(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, local: Identity, **kwargs: Any
) -> Hello:
    """`handshake`, closing the connection if it fails, as every real caller does."""
    try:
        return await handshake(reader, writer, local, timeout_s=TIMEOUT_S, **kwargs)
    except HandshakeError:
        writer.close()
        raise


async def both_sides(
    pair: TcpPair, initiator: Identity, responder: Identity, expect_node_id: str | None = None
) -> list[Hello | BaseException]:
    """Run the handshake on both ends of `pair` at once; results or errors, initiator first."""
    return await asyncio.gather(
        closing_on_error(
            pair.client_reader,
            pair.client_writer,
            initiator,
            initiator=True,
            expect_node_id=expect_node_id,
        ),
        closing_on_error(pair.server_reader, pair.server_writer, responder, initiator=False),
        return_exceptions=True,
    )


def test_success_returns_the_other_sides_hello() -> None:
    async def main() -> None:
        async with tcp_pair() as pair:
            a_sees, b_sees = await both_sides(pair, ident("a"), ident("b"), expect_node_id="b")
            assert isinstance(a_sees, Hello) and isinstance(b_sees, Hello)
            assert ("b", Role.PEER, CLUSTER, PROTOCOL_VERSION) == (
                a_sees.node_id,
                a_sees.role,
                a_sees.cluster_id,
                a_sees.version,
            )
            assert "a" == b_sees.node_id
            assert a_sees.nonce != b_sees.nonce

    run(main)


def test_client_and_server_roles_meet() -> None:
    async def main() -> None:
        async with tcp_pair() as pair:
            a_sees, b_sees = await both_sides(
                pair, ident("app-1", Role.CLIENT), ident("replica-a", Role.SERVER)
            )
            assert isinstance(a_sees, Hello) and Role.SERVER == a_sees.role
            assert isinstance(b_sees, Hello) and Role.CLIENT == b_sees.role

    run(main)


@pytest.mark.parametrize("wrong_side", ["initiator", "responder"])
def test_wrong_secret_fails_authentication_on_both_sides(wrong_side: str) -> None:
    async def main() -> None:
        a = ident("a", secret=OTHER_SECRET if wrong_side == "initiator" else SECRET)
        b = ident("b", secret=OTHER_SECRET if wrong_side == "responder" else SECRET)
        async with tcp_pair() as pair:
            results = await both_sides(pair, a, b)
        for result in results:
            assert isinstance(result, AuthenticationError), result
            assert RejectReason.AUTH == result.reason
            assert "HMAC mismatch" in str(result)
            assert "127.0.0.1:" in str(result)

    run(main)


@pytest.mark.parametrize(
    ("initiator", "responder", "reason", "message"),
    [
        (ident("a", cluster_id="other"), ident("b"), RejectReason.CLUSTER, "wrong cluster"),
        (ident("a", Role.CLIENT), ident("b"), RejectReason.ROLE, "wrong role"),
        (ident("a"), ident("b", Role.SERVER), RejectReason.ROLE, "wrong role"),
        (ident("a"), ident("a"), RejectReason.IDENTITY, "our own node id"),
    ],
)
def test_mismatched_hellos_are_rejected_on_both_sides(
    initiator: Identity, responder: Identity, reason: RejectReason, message: str
) -> None:
    async def main() -> None:
        async with tcp_pair() as pair:
            results = await both_sides(pair, initiator, responder)
        for result in results:
            assert isinstance(result, HandshakeError), result
            assert not isinstance(result, AuthenticationError)
            assert reason == result.reason
            assert message in str(result)

    run(main)


def test_dialing_one_node_and_reaching_another_is_rejected() -> None:
    async def main() -> None:
        async with tcp_pair() as pair:
            a_result, b_result = await both_sides(pair, ident("a"), ident("c"), expect_node_id="b")
        assert isinstance(a_result, HandshakeError) and RejectReason.IDENTITY == a_result.reason
        assert "dialed 'b' but the other side is 'c'" in str(a_result)
        # The responder only sees the initiator hang up.
        assert isinstance(b_result, HandshakeError) and RejectReason.CLOSED == b_result.reason

    run(main)


async def responder_error(raw_bytes: bytes, *, eof: bool = False) -> HandshakeError:
    """The error of a responder that receives `raw_bytes` instead of a proper hello."""
    async with tcp_pair() as pair:
        pair.client_writer.write(raw_bytes)
        if eof:
            pair.client_writer.write_eof()
        with pytest.raises(HandshakeError) as caught:
            await handshake(
                pair.server_reader,
                pair.server_writer,
                ident("b"),
                initiator=False,
                timeout_s=TIMEOUT_S,
            )
        return caught.value


def hello_frame(fields: list[object]) -> bytes:
    return encode_frame(msgpack.packb(fields, use_bin_type=True), 1024)


NONCE = b"n" * 32


@pytest.mark.parametrize(
    ("raw", "reason", "message"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", RejectReason.MALFORMED, "not an rsm handshake"),
        (encode_frame(b"\xc1", 100), RejectReason.MALFORMED, "not valid msgpack"),
        (hello_frame(["http", 1]), RejectReason.MALFORMED, "not an rsm hello"),
        (hello_frame({"rsm": 1}), RejectReason.MALFORMED, "not valid msgpack"),  # type: ignore[arg-type]
        (
            hello_frame(["rsm", 2, CLUSTER, "peer", "a", NONCE]),
            RejectReason.VERSION,
            "unsupported handshake protocol version 2; this node speaks version 1",
        ),
        (hello_frame(["rsm", 1, CLUSTER, "peer", "a"]), RejectReason.MALFORMED, "6 fields"),
        (
            hello_frame(["rsm", 1, CLUSTER, "admin", "a", NONCE]),
            RejectReason.MALFORMED,
            "role 'admin'",
        ),
        (hello_frame(["rsm", 1, CLUSTER, "peer", "", NONCE]), RejectReason.MALFORMED, "node id"),
        (hello_frame(["rsm", 1, CLUSTER, "peer", "a", b"short"]), RejectReason.MALFORMED, "nonce"),
        (
            hello_frame(["rsm", 1, "x" * 256, "peer", "a", NONCE]),
            RejectReason.MALFORMED,
            "not valid msgpack",
        ),
    ],
)
def test_garbage_instead_of_a_hello_is_rejected(
    raw: bytes, reason: RejectReason, message: str
) -> None:
    error = run(lambda: responder_error(raw))
    assert reason == error.reason
    assert message in str(error)


def test_hang_up_during_the_handshake_is_reported() -> None:
    error = run(lambda: responder_error(b"\x00\x00", eof=True))
    assert RejectReason.MALFORMED == error.reason  # a truncated frame
    error = run(lambda: responder_error(b"", eof=True))
    assert RejectReason.CLOSED == error.reason
    assert "closed before the other side sent its hello" in str(error)


def test_silent_peer_is_timed_out() -> None:
    error = run(lambda: responder_error(b"\x00"))
    assert RejectReason.TIMEOUT == error.reason
    assert f"within handshake_timeout_s ({TIMEOUT_S} s)" in str(error)


def test_reflected_hello_is_rejected() -> None:
    async def main() -> HandshakeError:
        async with tcp_pair() as pair:
            # Echo whatever the responder sends straight back to it.
            task = asyncio.create_task(
                handshake(
                    pair.server_reader,
                    pair.server_writer,
                    ident("b", Role.SERVER),
                    initiator=False,
                    timeout_s=TIMEOUT_S,
                )
            )
            hello = await read_frame(pair.client_reader, 1024)
            assert hello is not None
            pair.client_writer.write(encode_frame(hello, 1024))
            with pytest.raises(HandshakeError) as caught:
                await task
            return caught.value

    error = run(main)
    # A server's own hello comes back as a server, so the role check fires first.
    assert RejectReason.ROLE == error.reason


def test_transcript_and_proofs_are_as_documented_and_the_secret_never_travels() -> None:
    """An independent responder, written from docs/transport.md, authenticates a client."""

    def proof(label: bytes, hello_i: bytes, hello_r: bytes) -> bytes:
        transcript = (
            b"rsm-handshake\0"
            + struct.pack(">I", len(hello_i))
            + hello_i
            + struct.pack(">I", len(hello_r))
            + hello_r
        )
        return hmac.new(SECRET, label + transcript, hashlib.sha256).digest()

    async def main() -> None:
        async with tcp_pair() as pair:
            client = asyncio.create_task(
                handshake(
                    pair.client_reader,
                    pair.client_writer,
                    ident("app", Role.CLIENT),
                    initiator=True,
                    timeout_s=TIMEOUT_S,
                )
            )
            seen = b""
            hello_i = await read_frame(pair.server_reader, 1024)
            assert hello_i is not None
            seen += hello_i
            fields = msgpack.unpackb(hello_i)
            assert ["rsm", 1, CLUSTER, "client", "app"] == fields[:5]
            assert 32 == len(fields[5])
            hello_r = msgpack.packb(
                ["rsm", 1, CLUSTER, "server", "r", secrets.token_bytes(32)], use_bin_type=True
            )
            pair.server_writer.write(encode_frame(hello_r, 1024))
            client_proof = await read_frame(pair.server_reader, 1024)
            assert client_proof is not None
            seen += client_proof
            assert proof(b"rsm-v1 initiator proof", hello_i, hello_r) == client_proof
            pair.server_writer.write(
                encode_frame(proof(b"rsm-v1 responder proof", hello_i, hello_r), 1024)
            )
            remote = await client
            assert "r" == remote.node_id
            assert SECRET not in seen

    run(main)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"secret": b"short"}, "at least 16 bytes"),
        ({"secret": "a str is not bytes, whatever its length"}, "at least 16 bytes"),
        ({"node_id": ""}, "node_id"),
        ({"cluster_id": "é" * 128}, "cluster_id"),
        ({"role": "peer"}, "role must be a Role"),
    ],
)
def test_identity_validates(kwargs: dict[str, object], message: str) -> None:
    values: dict[str, object] = {
        "cluster_id": CLUSTER,
        "node_id": "a",
        "role": Role.PEER,
        "secret": SECRET,
        **kwargs,
    }
    with pytest.raises(ConfigError, match=message):
        Identity(**values)  # type: ignore[arg-type]


def test_identity_repr_hides_the_secret() -> None:
    assert SECRET.decode() not in repr(ident("a"))
