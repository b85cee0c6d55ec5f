"""Settings of the durable store. Every limit is named here, with its reason."""

from __future__ import annotations

import attrs

from rsm.errors import ConfigError

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40

#: Smallest LMDB map accepted: room for the meta pages and the named databases.
MAP_SIZE_MIN_BYTES = 64 * KiB
#: Largest snapshot record: the record length field is 32 bits, and a record is
#: read whole to verify its checksum, so it must stay small enough to buffer.
SNAPSHOT_RECORD_BYTES_LIMIT = 64 * MiB
#: Largest growth step factor: more would be a typo, not a policy.
MAP_GROWTH_FACTOR_LIMIT = 16.0


@attrs.frozen(kw_only=True)
class StorageSettings:
    #: LMDB map size on first open. LMDB reserves address space, not disk: with
    #: `writemap=False` the file only grows as pages are written, so a large
    #: value costs nothing on 64-bit hosts. The map is grown when it fills.
    map_size_initial_bytes: int = 256 * MiB
    #: When a write fills the map, the map becomes `size * factor` (rounded up
    #: to whole pages) and the write is retried.
    map_growth_factor: float = 2.0
    #: The map never grows beyond this; a write that needs more raises
    #: `StorageFull` (a bound on how much disk one replica's log may take).
    map_size_max_bytes: int = 1 * TiB
    #: Complete snapshot files kept in the data directory. Keeping more than one
    #: lets a transfer of the previous snapshot finish after a new one is taken,
    #: and gives a fallback if the newest is found corrupt.
    snapshots_kept: int = 2
    #: Data bytes per checksummed record in a snapshot file. A read verifies
    #: whole records, so this bounds the memory and the work of one read.
    snapshot_record_bytes: int = 1 * MiB
    #: Most bytes one `snapshot_chunk` call returns, whatever the caller asks
    #: (the contract allows returning fewer than `max_bytes`).
    snapshot_read_bytes_max: int = 16 * MiB
    #: Verify the whole newest snapshot (every record checksum and the data
    #: checksum) when the store opens, so corruption is found before a restore.
    #: Off, only the file structure (header, record lengths, size) is checked.
    verify_snapshot_on_open: bool = True

    def validate(self) -> StorageSettings:
        """Raise `ConfigError` on a bad value or a bad relation between values."""
        _require_int(self, "map_size_initial_bytes", MAP_SIZE_MIN_BYTES)
        _require_int(self, "map_size_max_bytes", MAP_SIZE_MIN_BYTES)
        _require_int(self, "snapshots_kept", 1)
        _require_int(self, "snapshot_record_bytes", 1, SNAPSHOT_RECORD_BYTES_LIMIT)
        _require_int(self, "snapshot_read_bytes_max", 1)
        factor = self.map_growth_factor
        if not isinstance(factor, int | float) or not 1.0 < factor <= MAP_GROWTH_FACTOR_LIMIT:
            raise ConfigError(
                f"map_growth_factor must be in (1, {MAP_GROWTH_FACTOR_LIMIT}], got {factor!r}"
            )
        if self.map_size_max_bytes < self.map_size_initial_bytes:
            raise ConfigError(
                "map_size_max_bytes must be at least map_size_initial_bytes "
                f"({self.map_size_max_bytes} < {self.map_size_initial_bytes})"
            )
        if not isinstance(self.verify_snapshot_on_open, bool):
            raise ConfigError("verify_snapshot_on_open must be a bool")
        return self


def _require_int(settings: StorageSettings, name: str, low: int, high: int | None = None) -> None:
    value = getattr(settings, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{name} must be <= {high}, got {value!r}")
