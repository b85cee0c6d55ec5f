"""Counters of one transport or server, as plain ints.

They only ever grow. The replica exports them (prometheus counters); tests
read them directly. Nothing here is thread-safe: one event loop owns them.
"""

from __future__ import annotations

import attrs

from rsm.net.errors import RejectReason

__all__ = ["TransportStats"]


@attrs.define
class TransportStats:
    """What a `PeerTransport`, `ClientServer` or client connection has done."""

    #: Frames handed to a socket, and their bytes including length prefixes.
    frames_sent: int = 0
    bytes_sent: int = 0
    #: `transport.write` calls; frames_sent / flushes is the coalescing factor.
    flushes: int = 0
    #: Frames read from authenticated connections, and their bytes with prefixes.
    frames_received: int = 0
    bytes_received: int = 0
    #: Inbound connections that completed the handshake.
    connections_accepted: int = 0
    #: Outbound connections that completed the handshake.
    connections_established: int = 0
    #: Handshakes that failed, in either direction, by `RejectReason`.
    connections_rejected_auth: int = 0
    connections_rejected_cluster: int = 0
    connections_rejected_version: int = 0
    connections_rejected_role: int = 0
    connections_rejected_identity: int = 0
    connections_rejected_malformed: int = 0
    connections_rejected_timeout: int = 0
    connections_rejected_closed: int = 0
    connections_rejected_limit: int = 0
    #: Authenticated connections closed because a frame was oversized or
    #: truncated, or because the frame callback rejected it (an `RsmError`
    #: such as the codec's `DecodeError`).
    frames_malformed: int = 0
    #: Frames dropped (oldest first) because a peer's send queue was full.
    frames_dropped_queue_full: int = 0
    #: Client connections closed because their send queue overflowed.
    connections_closed_slow: int = 0
    #: Outbound dials after the first one to a peer (after a failure or loss).
    reconnect_attempts: int = 0
    #: Outbound dials that failed (refused, timed out, or handshake failed).
    connect_failures: int = 0
    #: Exceptions other than `RsmError` raised by application callbacks; each
    #: is logged with its traceback and closes the connection it came from.
    callback_errors: int = 0

    def count_rejected(self, reason: RejectReason) -> None:
        """Add one to the `connections_rejected_<reason>` counter."""
        name = f"connections_rejected_{reason.value}"
        setattr(self, name, getattr(self, name) + 1)

    def connections_rejected(self) -> int:
        """All rejected connections, whatever the reason."""
        return sum(getattr(self, f"connections_rejected_{r.value}") for r in RejectReason)

    def as_dict(self) -> dict[str, int]:
        """Every counter by name, for exporters."""
        return attrs.asdict(self)
