"""TransportSettings.validate: every value and relation, at the limit and past it."""

from __future__ import annotations

import attrs
import pytest

from rsm.codec import CodecLimits
from rsm.errors import ConfigError
from rsm.net import TransportSettings
from rsm.net.settings import FRAME_BYTES_LIMIT


def test_defaults_are_valid() -> None:
    assert TransportSettings().validate() == TransportSettings()


def test_frame_limit_at_codec_limit_is_accepted_and_one_below_is_not() -> None:
    codec = CodecLimits()
    at = TransportSettings(frame_bytes_max=codec.frame_bytes_max)
    assert at.validate(codec) is at
    below = TransportSettings(frame_bytes_max=codec.frame_bytes_max - 1)
    with pytest.raises(ConfigError, match="codec's frame_bytes_max"):
        below.validate(codec)
    # A channel that carries no consensus messages is not bound by the codec.
    assert below.validate(codec_limits=None) is below


def test_frame_limit_fits_the_length_prefix() -> None:
    big = TransportSettings(
        frame_bytes_max=FRAME_BYTES_LIMIT,
        peer_queue_bytes_max=FRAME_BYTES_LIMIT,
        client_queue_bytes_max=FRAME_BYTES_LIMIT,
    )
    big.validate()
    with pytest.raises(ConfigError, match="frame_bytes_max must be <="):
        attrs.evolve(big, frame_bytes_max=FRAME_BYTES_LIMIT + 1).validate()


@pytest.mark.parametrize(
    "name",
    [
        "peer_queue_frames_max",
        "client_queue_frames_max",
        "flush_bytes_max",
        "write_buffer_bytes_high",
        "read_buffer_bytes",
        "connections_max",
    ],
)
@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "8"])
def test_counts_must_be_positive_integers(name: str, bad: object) -> None:
    with pytest.raises(ConfigError, match=name):
        TransportSettings(**{name: bad}).validate()
    TransportSettings(**{name: 1}).validate()


@pytest.mark.parametrize(
    "name",
    [
        "handshake_timeout_s",
        "connect_timeout_s",
        "reconnect_backoff_min_s",
        "reconnect_backoff_max_s",
        "close_timeout_s",
    ],
)
@pytest.mark.parametrize("bad", [0, -0.5, float("nan"), float("inf"), None, True])
def test_durations_must_be_positive_seconds(name: str, bad: object) -> None:
    with pytest.raises(ConfigError, match=name):
        TransportSettings(**{name: bad}).validate()


def test_backoff_max_not_below_min() -> None:
    TransportSettings(reconnect_backoff_min_s=1, reconnect_backoff_max_s=1).validate()
    with pytest.raises(ConfigError, match="reconnect_backoff_max_s must be at least"):
        TransportSettings(reconnect_backoff_min_s=1, reconnect_backoff_max_s=0.5).validate()


@pytest.mark.parametrize("name", ["peer_queue_bytes_max", "client_queue_bytes_max"])
def test_queues_hold_at_least_one_largest_frame(name: str) -> None:
    frame = TransportSettings().frame_bytes_max
    TransportSettings(**{name: frame}).validate()
    with pytest.raises(ConfigError, match=f"{name} must be at least frame_bytes_max"):
        TransportSettings(**{name: frame - 1}).validate()
