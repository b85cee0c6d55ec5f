"""Every storage setting at its limit and one past it."""

from __future__ import annotations

import pytest

from rsm.errors import ConfigError
from rsm.storage import StorageSettings
from rsm.storage.settings import MAP_GROWTH_FACTOR_LIMIT, MAP_SIZE_MIN_BYTES


def test_defaults_are_valid() -> None:
    settings = StorageSettings().validate()
    assert settings.snapshots_kept == 2
    assert settings.map_growth_factor == 2.0


@pytest.mark.parametrize(
    ("good", "bad"),
    [
        ({"map_size_initial_bytes": MAP_SIZE_MIN_BYTES}, {"map_size_initial_bytes": MAP_SIZE_MIN_BYTES - 1}),
        (
            {"map_size_initial_bytes": MAP_SIZE_MIN_BYTES, "map_size_max_bytes": MAP_SIZE_MIN_BYTES},
            {"map_size_initial_bytes": MAP_SIZE_MIN_BYTES + 1, "map_size_max_bytes": MAP_SIZE_MIN_BYTES},
        ),
        ({"map_growth_factor": MAP_GROWTH_FACTOR_LIMIT}, {"map_growth_factor": MAP_GROWTH_FACTOR_LIMIT + 0.1}),
        ({"map_growth_factor": 1.01}, {"map_growth_factor": 1.0}),
        ({"snapshots_kept": 1}, {"snapshots_kept": True}),
        ({"verify_snapshot_on_open": False}, {"verify_snapshot_on_open": 0}),
    ],
)
def test_limits(good: dict[str, object], bad: dict[str, object]) -> None:
    StorageSettings(**good).validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        StorageSettings(**bad).validate()  # type: ignore[arg-type]
