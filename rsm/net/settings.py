"""Settings of the transport. Every limit is named here, with its reason."""

from __future__ import annotations

import attrs

from rsm.codec import DEFAULT_LIMITS, CodecLimits
from rsm.errors import ConfigError

__all__ = ["FRAME_BYTES_LIMIT", "TransportSettings"]

KiB = 1 << 10
MiB = 1 << 20

#: The frame length prefix is 4 bytes, so no frame can be larger than this.
FRAME_BYTES_LIMIT = (1 << 32) - 1


@attrs.frozen(kw_only=True)
class TransportSettings:
    """Limits and timings of `rsm.net`; call `validate()` (constructors do)."""

    #: Most payload bytes in one frame (the 4-byte length prefix not counted).
    #: A frame that announces more is refused before any of it is read, so
    #: this bounds the memory one frame can cost. Must be at least the codec's
    #: `CodecLimits.frame_bytes_max`, or a valid Raft message could not travel.
    frame_bytes_max: int = 64 * MiB
    #: Time a new connection has to complete the whole handshake (TLS
    #: included). A connection that is silent longer is closed and counted,
    #: so idle sockets cannot pin resources.
    handshake_timeout_s: float = 5.0
    #: Time an outbound TCP connect may take before it counts as failed.
    connect_timeout_s: float = 5.0
    #: First delay before redialing a peer; doubles on each failure ...
    reconnect_backoff_min_s: float = 0.05
    #: ... up to this cap. Each delay is drawn uniformly from [min, current cap]
    #: (jitter), so peers restarting together do not redial in lockstep.
    reconnect_backoff_max_s: float = 2.0
    #: Most frames waiting for one peer. Raft tolerates message loss, so when
    #: the queue is full the OLDEST frame is dropped (newer heartbeats and
    #: appends supersede older ones) and counted.
    peer_queue_frames_max: int = 4096
    #: Most payload bytes waiting for one peer, dropped the same way. At least
    #: `frame_bytes_max`, so that the newest frame always fits.
    peer_queue_bytes_max: int = 256 * MiB
    #: Most frames waiting on one client connection. A client that does not
    #: read its responses fills it; the connection is then closed (reason
    #: ``slow_consumer``) rather than silently losing a response.
    client_queue_frames_max: int = 4096
    #: Most payload bytes waiting on one client connection; at least
    #: `frame_bytes_max`.
    client_queue_bytes_max: int = 128 * MiB
    #: Target bytes per coalesced write: frames queued in one loop turn are
    #: joined into one buffer and written with one `transport.write`, in chunks
    #: of about this size (at least one frame), to bound the copy.
    flush_bytes_max: int = 1 * MiB
    #: High-water mark of each socket's user-space write buffer. Writers only
    #: wait (drain) while the buffer is above it, so a fast link never waits.
    write_buffer_bytes_high: int = 1 * MiB
    #: Most bytes taken from a stream per read, to be split into frames; also
    #: the stream's buffer size hint (reading from the socket pauses while
    #: about twice this is buffered and unread). A larger frame is read whole
    #: with one exact read.
    read_buffer_bytes: int = 256 * KiB
    #: Most simultaneous inbound connections per listener, handshakes included.
    #: Further connections are closed at once and counted (reason ``limit``).
    connections_max: int = 1024
    #: How long closing a connection waits for buffered bytes to be flushed
    #: before the socket is aborted.
    close_timeout_s: float = 1.0

    def validate(self, codec_limits: CodecLimits | None = DEFAULT_LIMITS) -> TransportSettings:
        """Raise `ConfigError` on a bad value or relation; return self.

        `codec_limits` is the codec the frames will carry; pass the replica's
        own limits if it changed them, or None for a channel that carries no
        consensus messages.
        """
        _require_int(self, "frame_bytes_max", 1, FRAME_BYTES_LIMIT)
        for name in (
            "peer_queue_frames_max",
            "peer_queue_bytes_max",
            "client_queue_frames_max",
            "client_queue_bytes_max",
            "flush_bytes_max",
            "write_buffer_bytes_high",
            "read_buffer_bytes",
            "connections_max",
        ):
            _require_int(self, name, 1)
        for name in (
            "handshake_timeout_s",
            "connect_timeout_s",
            "reconnect_backoff_min_s",
            "reconnect_backoff_max_s",
            "close_timeout_s",
        ):
            _require_positive(self, name)
        _require_at_least(self, "reconnect_backoff_max_s", "reconnect_backoff_min_s")
        _require_at_least(self, "peer_queue_bytes_max", "frame_bytes_max")
        _require_at_least(self, "client_queue_bytes_max", "frame_bytes_max")
        if codec_limits is not None and self.frame_bytes_max < codec_limits.frame_bytes_max:
            raise ConfigError(
                f"frame_bytes_max ({self.frame_bytes_max}) must be at least the codec's "
                f"frame_bytes_max ({codec_limits.frame_bytes_max}), or a valid message "
                "could never be sent"
            )
        return self


def _require_int(settings: TransportSettings, name: str, low: int, high: int | None = None) -> None:
    value = getattr(settings, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{name} must be <= {high}, got {value!r}")


def _require_positive(settings: TransportSettings, name: str) -> None:
    value = getattr(settings, name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e9:
        raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")


def _require_at_least(settings: TransportSettings, name: str, other: str) -> None:
    value, bound = getattr(settings, name), getattr(settings, other)
    if value < bound:
        raise ConfigError(f"{name} must be at least {other} ({value} < {bound})")
