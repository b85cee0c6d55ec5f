"""Errors of the transport, split by who is at fault (as in h11).

- The remote side misbehaved or failed: `FrameError` (bad framing),
  `HandshakeError` and its subclass `AuthenticationError` (the connection
  could not be authenticated). The transport closes that one connection,
  counts it, logs it, and carries on; these reach application code only from
  the client-side `connect()` and the low-level framing/handshake functions.
- This process misused the API: `UnknownPeer`, `TransportClosed`,
  `ConnectionClosed`, and `FrameError` raised by a send of an oversized frame.

Every handshake failure carries a `RejectReason`, which is also the suffix of
the `TransportStats.connections_rejected_*` counter that counts it.
"""

from __future__ import annotations

import enum

from rsm.errors import RsmError

__all__ = [
    "AuthenticationError",
    "ConnectionClosed",
    "FrameError",
    "HandshakeError",
    "RejectReason",
    "TransportClosed",
    "TransportError",
    "UnknownPeer",
]


class RejectReason(enum.Enum):
    """Why a connection was refused before (or while) it was authenticated."""

    AUTH = "auth"  # the other side does not know the cluster secret
    CLUSTER = "cluster"  # the other side belongs to another cluster
    VERSION = "version"  # unsupported handshake protocol version
    ROLE = "role"  # a client on the peer port, a peer on the client port, ...
    IDENTITY = "identity"  # unexpected node id: not the one dialed, or our own
    MALFORMED = "malformed"  # the bytes are not an rsm handshake
    TIMEOUT = "timeout"  # no complete handshake within handshake_timeout_s
    CLOSED = "closed"  # the connection broke or was closed during the handshake
    LIMIT = "limit"  # connections_max inbound connections are already open


class TransportError(RsmError):
    """Base of every error raised by `rsm.net`."""


class FrameError(TransportError):
    """A frame is larger than `frame_bytes_max` or the stream ended inside one."""


class HandshakeError(TransportError):
    """The connection could not be established as an authenticated rsm channel.

    `reason` says why, as a `RejectReason`; the message says what to fix.
    """

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class AuthenticationError(HandshakeError):
    """The other side failed the HMAC challenge: it does not hold our cluster secret.

    Both sides of a connection with mismatched secrets raise this: each one
    checks the other's proof, and neither proof reveals the secret.
    """

    def __init__(self, message: str) -> None:
        super().__init__(RejectReason.AUTH, message)


class UnknownPeer(TransportError):
    """`send` named a peer the transport has no address for (call `add_peer`)."""


class TransportClosed(TransportError):
    """The transport or server was used after `close()` (or before `start()`)."""


class ConnectionClosed(TransportError):
    """`send` on a connection that is closed, or was just closed by that send.

    `reason` is the short label the connection was closed with (for example
    ``"slow_consumer"`` when the other side stopped reading and the send queue
    overflowed, ``"eof"`` when it hung up).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
