"""Connection handshake: hellos, then HMAC-SHA256 challenge-response both ways.

Theory of operation
-------------------
Right after the TCP (or TLS) connection opens, both sides send at once, each
as one frame (see `rsm.net.framing`):

1. a **hello**: the msgpack array
   ``["rsm", version, cluster_id, role, node_id, nonce]`` where ``nonce`` is 32
   fresh random bytes (from `secrets`, not from an injected generator: a
   predictable nonce would allow replay);
2. after reading and checking the other's hello, a **proof**: the 32-byte
   ``HMAC-SHA256(secret, label || transcript)`` where ``transcript`` is
   ``"rsm-handshake\\0" || len(hello_i) || hello_i || len(hello_r) || hello_r``
   (``hello_i`` is the initiator's hello exactly as sent, ``hello_r`` the
   responder's, lengths 4-byte big-endian) and ``label`` is
   ``"rsm-v1 initiator proof"`` or ``"rsm-v1 responder proof"`` for the side
   that computes it.

Each side then compares the proof it received with the one it expects
(`hmac.compare_digest`). Because every proof covers both fresh nonces and a
direction label, a recorded proof cannot be replayed on another connection
nor reflected back in the other direction, and the secret itself never
crosses the wire. Both sides send their proof before checking the other's,
so a secret mismatch is detected, and reported as `AuthenticationError`, on
both sides.

Hello checks, in order: it is an rsm hello at all (else ``malformed``), the
version is ours (``version``), the cluster id is ours (``cluster``), the role
is the counterpart of ours (``role``: peer<->peer, client<->server), the node
id is the one dialed and is not our own (``identity``). Anything wrong raises
`HandshakeError` with that `RejectReason`; the caller closes the connection.

The HMAC authenticates the opening of the connection, not each later frame:
on a network where someone can inject packets into a live TCP connection, use
mutual TLS too (the handshake then runs inside TLS).
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import secrets
import struct
from typing import Any

import attrs
import msgpack

from rsm.errors import ConfigError
from rsm.net.errors import AuthenticationError, FrameError, HandshakeError, RejectReason
from rsm.net.framing import encode_frame, read_frame

__all__ = [
    "HELLO_BYTES_MAX",
    "NAME_BYTES_MAX",
    "NONCE_BYTES",
    "PROTOCOL_VERSION",
    "SECRET_BYTES_MIN",
    "Hello",
    "Identity",
    "Role",
    "describe_peer",
    "handshake",
]

#: The handshake protocol version this code speaks. Both sides must match.
PROTOCOL_VERSION = 1
#: First element of every hello, so a stray client is told apart from a peer
#: running another version.
MAGIC = "rsm"
#: Random bytes each side contributes to the transcript.
NONCE_BYTES = 32
#: An HMAC-SHA256 digest.
PROOF_BYTES = 32
#: Most UTF-8 bytes in a cluster id or node id (the codec's node id limit).
NAME_BYTES_MAX = 255
#: Shortest cluster secret accepted. One recorded handshake lets anyone test
#: guesses offline, so the secret must be too long to guess: use, for example,
#: ``secrets.token_bytes(32)``.
SECRET_BYTES_MIN = 16
#: Largest hello frame: two names at their limit, a nonce, and small fields.
HELLO_BYTES_MAX = 1024

_TRANSCRIPT_LABEL = b"rsm-handshake\0"
_INITIATOR_LABEL = b"rsm-v1 initiator proof"
_RESPONDER_LABEL = b"rsm-v1 responder proof"
_LENGTH = struct.Struct(">I")

_UNPACK_OPTIONS: dict[str, Any] = {
    "raw": False,
    "strict_map_key": True,
    "max_str_len": NAME_BYTES_MAX,
    "max_bin_len": NONCE_BYTES,
    "max_array_len": 16,
    "max_map_len": 0,
    "max_ext_len": 0,
}


class Role(enum.Enum):
    """What a side of a connection is. Replica-to-replica links are PEER on both
    sides; a client connection is CLIENT (who dials) and SERVER (the replica)."""

    PEER = "peer"
    CLIENT = "client"
    SERVER = "server"


#: The role each role must meet on the other side.
_COUNTERPART = {Role.PEER: Role.PEER, Role.CLIENT: Role.SERVER, Role.SERVER: Role.CLIENT}
_ROLES = {role.value: role for role in Role}


def _check_name(what: str, value: object) -> str:
    if type(value) is not str or not value or len(value.encode()) > NAME_BYTES_MAX:
        raise ConfigError(f"{what} must be a non-empty str of at most {NAME_BYTES_MAX} UTF-8 bytes")
    return value


@attrs.frozen(kw_only=True)
class Identity:
    """Who this side is, and the cluster secret it proves it knows.

    The secret is left out of `repr`, so logging an Identity cannot leak it.
    """

    cluster_id: str
    node_id: str
    role: Role
    secret: bytes = attrs.field(repr=False)

    def __attrs_post_init__(self) -> None:
        _check_name("cluster_id", self.cluster_id)
        _check_name("node_id", self.node_id)
        if not isinstance(self.role, Role):
            raise ConfigError(f"role must be a Role, got {self.role!r}")
        if type(self.secret) is not bytes or len(self.secret) < SECRET_BYTES_MIN:
            raise ConfigError(f"the cluster secret must be at least {SECRET_BYTES_MIN} bytes")


@attrs.frozen(kw_only=True)
class Hello:
    """The first frame each side sends; the other side's is what `handshake` returns."""

    version: int
    cluster_id: str
    role: Role
    node_id: str
    nonce: bytes = attrs.field(repr=False)

    def encode(self) -> bytes:
        """The hello's wire bytes: ``["rsm", version, cluster_id, role, node_id, nonce]``."""
        fields = [MAGIC, self.version, self.cluster_id, self.role.value, self.node_id, self.nonce]
        return msgpack.packb(fields, use_bin_type=True)  # type: ignore[no-any-return]

    @classmethod
    def decode(cls, data: bytes) -> Hello:
        """Parse a hello; raise `HandshakeError` (malformed or version) on anything else."""
        try:
            obj = msgpack.unpackb(data, **_UNPACK_OPTIONS)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise _malformed(f"the hello is not valid msgpack ({type(exc).__name__})") from None
        if type(obj) is not list or len(obj) < 2 or obj[0] != MAGIC:
            raise _malformed("the first frame is not an rsm hello")
        version = obj[1]
        if type(version) is not int:
            raise _malformed("the hello's version is not an integer")
        if version != PROTOCOL_VERSION:
            raise HandshakeError(
                RejectReason.VERSION,
                f"unsupported handshake protocol version {version}; "
                f"this node speaks version {PROTOCOL_VERSION}",
            )
        if len(obj) != 6:
            raise _malformed(f"a version {version} hello has 6 fields, got {len(obj)}")
        _, _, cluster_id, role, node_id, nonce = obj
        for what, name in (("cluster id", cluster_id), ("node id", node_id)):
            if type(name) is not str or not name:
                raise _malformed(f"the hello's {what} is not a non-empty string")
        if role not in _ROLES:
            raise _malformed(f"the hello's role {role!r} is not one of {sorted(_ROLES)}")
        if type(nonce) is not bytes or len(nonce) != NONCE_BYTES:
            raise _malformed(f"the hello's nonce is not {NONCE_BYTES} bytes")
        return cls(
            version=version, cluster_id=cluster_id, role=_ROLES[role], node_id=node_id, nonce=nonce
        )


def _malformed(message: str) -> HandshakeError:
    return HandshakeError(RejectReason.MALFORMED, message)


def _transcript(initiator_hello: bytes, responder_hello: bytes) -> bytes:
    return b"".join(
        (
            _TRANSCRIPT_LABEL,
            _LENGTH.pack(len(initiator_hello)),
            initiator_hello,
            _LENGTH.pack(len(responder_hello)),
            responder_hello,
        )
    )


def _proof(secret: bytes, label: bytes, transcript: bytes) -> bytes:
    return hmac.new(secret, label + transcript, hashlib.sha256).digest()


def describe_peer(writer: asyncio.StreamWriter) -> str:
    """``host:port`` of the other end of `writer`, for log and error messages."""
    address = writer.get_extra_info("peername")
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


async def handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    local: Identity,
    *,
    initiator: bool,
    timeout_s: float,
    expect_node_id: str | None = None,
) -> Hello:
    """Run the handshake on a fresh connection; return the other side's hello.

    `initiator` is True on the side that dialed. `expect_node_id`, if given, is
    the node id the other side must claim (a peer link knows whom it dialed).
    Raises `HandshakeError` (or its subclass `AuthenticationError`) on any
    failure, timeout included; the caller must then close the connection.
    """
    where = describe_peer(writer)
    try:
        async with asyncio.timeout(timeout_s):
            return await _exchange(reader, writer, local, initiator, expect_node_id)
    except HandshakeError as exc:
        # Name the other end in the message; the reason stays as it was.
        exc.args = (f"{where}: {exc}",)
        raise
    except TimeoutError:
        raise HandshakeError(
            RejectReason.TIMEOUT,
            f"{where}: no complete handshake within handshake_timeout_s ({timeout_s} s)",
        ) from None
    except FrameError as exc:
        raise HandshakeError(
            RejectReason.MALFORMED, f"{where}: not an rsm handshake ({exc})"
        ) from None
    except (ConnectionError, OSError) as exc:
        raise HandshakeError(
            RejectReason.CLOSED, f"{where}: connection lost during the handshake ({exc!r})"
        ) from None


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    local: Identity,
    initiator: bool,
    expect_node_id: str | None,
) -> Hello:
    hello = Hello(
        version=PROTOCOL_VERSION,
        cluster_id=local.cluster_id,
        role=local.role,
        node_id=local.node_id,
        nonce=secrets.token_bytes(NONCE_BYTES),
    )
    mine = hello.encode()
    writer.write(encode_frame(mine, HELLO_BYTES_MAX))
    await writer.drain()
    theirs = await _read(reader, HELLO_BYTES_MAX, "hello")
    remote = Hello.decode(theirs)
    _check_hello(local, hello, remote, expect_node_id)

    transcript = _transcript(mine, theirs) if initiator else _transcript(theirs, mine)
    my_label, their_label = (
        (_INITIATOR_LABEL, _RESPONDER_LABEL) if initiator else (_RESPONDER_LABEL, _INITIATOR_LABEL)
    )
    writer.write(encode_frame(_proof(local.secret, my_label, transcript), PROOF_BYTES))
    await writer.drain()
    proof = await _read(reader, PROOF_BYTES, "proof")
    expected = _proof(local.secret, their_label, transcript)
    # compare_digest: the time taken must not tell how many bytes matched.
    if not hmac.compare_digest(proof, expected):
        raise AuthenticationError(
            f"authentication failed: node {remote.node_id!r} does not prove knowledge of "
            "this cluster's secret (HMAC mismatch); check that both sides use the same secret"
        )
    return remote


async def _read(reader: asyncio.StreamReader, size_max: int, what: str) -> bytes:
    frame = await read_frame(reader, size_max)
    if frame is None:
        raise HandshakeError(
            RejectReason.CLOSED,
            f"the connection was closed before the other side sent its {what} "
            "(it may have rejected ours: see its log)",
        )
    return frame


def _check_hello(local: Identity, mine: Hello, remote: Hello, expect_node_id: str | None) -> None:
    """Refuse a hello from another cluster, the wrong role, or the wrong node."""
    if remote.cluster_id != local.cluster_id:
        raise HandshakeError(
            RejectReason.CLUSTER,
            f"wrong cluster: node {remote.node_id!r} belongs to cluster {remote.cluster_id!r}, "
            f"this node to {local.cluster_id!r}",
        )
    expected_role = _COUNTERPART[local.role]
    if remote.role is not expected_role:
        raise HandshakeError(
            RejectReason.ROLE,
            f"wrong role: a {local.role.value} talks to a {expected_role.value}, but "
            f"{remote.node_id!r} is a {remote.role.value} (wrong port?)",
        )
    if expect_node_id is not None and remote.node_id != expect_node_id:
        raise HandshakeError(
            RejectReason.IDENTITY,
            f"wrong node: dialed {expect_node_id!r} but the other side is {remote.node_id!r} "
            "(stale address?)",
        )
    if local.role is Role.PEER and remote.node_id == local.node_id:
        raise HandshakeError(
            RejectReason.IDENTITY,
            f"the other side claims our own node id {local.node_id!r} "
            "(a node dialing itself, or two nodes configured with one id)",
        )
    if remote.nonce == mine.nonce:
        # Only a reflection of our own hello can repeat a fresh 32-byte nonce.
        raise HandshakeError(RejectReason.IDENTITY, "the other side echoed our own hello")
