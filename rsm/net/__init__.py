"""asyncio TCP transport: length-prefixed frames, authenticated connections.

The layer below the replica's two channels: `PeerTransport` moves Raft frames
between replicas; `ClientServer` and `connect` carry client requests and
responses. Both move opaque frames of bytes after an HMAC challenge-response
handshake (optionally inside mutual TLS); see docs/transport.md.
"""

from rsm.net.connection import Address, Connection, connect
from rsm.net.errors import (
    AuthenticationError,
    ConnectionClosed,
    FrameError,
    HandshakeError,
    RejectReason,
    TransportClosed,
    TransportError,
    UnknownPeer,
)
from rsm.net.framing import FrameReader, FrameWriter, encode_frame, read_frame
from rsm.net.handshake import PROTOCOL_VERSION, Hello, Identity, Role, handshake
from rsm.net.server import ClientHandler, ClientServer
from rsm.net.settings import TransportSettings
from rsm.net.stats import TransportStats
from rsm.net.transport import OnFrame, PeerTransport, backoff_delay_s

__all__ = [
    "PROTOCOL_VERSION",
    "Address",
    "AuthenticationError",
    "ClientHandler",
    "ClientServer",
    "Connection",
    "ConnectionClosed",
    "FrameError",
    "FrameReader",
    "FrameWriter",
    "HandshakeError",
    "Hello",
    "Identity",
    "OnFrame",
    "PeerTransport",
    "RejectReason",
    "Role",
    "TransportClosed",
    "TransportError",
    "TransportSettings",
    "TransportStats",
    "UnknownPeer",
    "backoff_delay_s",
    "connect",
    "encode_frame",
    "handshake",
    "read_frame",
]
