"""The `LogStore` contract (rsm.consensus.storage), checked against both the
in-memory reference and the LMDB store: one suite, two backends."""

from __future__ import annotations

import pytest

from rsm.consensus.membership import encode_conf
from rsm.consensus.types import ConfState, Entry, EntryKind, HardState, SnapshotMeta
from rsm.errors import InvariantViolation, LogCompacted, LogUnavailable, SnapshotUnavailable

from .conftest import CONF, Store, ents, fill, meta

CONF2 = ConfState(voters=frozenset({"a", "b", "c", "d"}))
CONF3 = ConfState(voters=frozenset({"a", "b"}), learners=frozenset({"e"}))


def config_entry(index: int, term: int, conf: ConfState) -> Entry:
    return Entry(index=index, term=term, kind=EntryKind.CONFIG, data=encode_conf(conf))


def read_snapshot(store: Store, index: int, chunk: int) -> bytes:
    """Read snapshot `index` in chunks of `chunk` bytes, as a leader sends it."""
    out = b""
    while piece := store.snapshot_chunk(index, len(out), chunk):
        out += piece
    return out


# -- empty store ----------------------------------------------------------------------
def test_empty_store(store: Store) -> None:
    assert store.first_index() == 1
    assert store.last_index() == 0
    assert store.term(0) == 0
    assert store.initial_state() == (HardState(), CONF)
    assert store.snapshot_meta() == SnapshotMeta(conf=CONF)
    assert store.entries(1, 1) == []
    with pytest.raises(LogUnavailable):
        store.term(1)
    with pytest.raises(LogUnavailable):
        store.entries(1, 2)


# -- append, overwrite, lookups -------------------------------------------------------
def test_append_and_read_back(store: Store) -> None:
    store.save(HardState(term=1, vote="a", commit=0), ents(1, 4, 1))
    store.save(HardState(term=2, vote="b", commit=3), ents(4, 11, 2))
    assert (store.first_index(), store.last_index()) == (1, 10)
    assert [store.term(i) for i in range(0, 11)] == [0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2]
    assert store.entries(1, 11) == ents(1, 4, 1) + ents(4, 11, 2)
    assert store.entries(3, 6) == ents(3, 4, 1) + ents(4, 6, 2)
    assert store.initial_state() == (HardState(term=2, vote="b", commit=3), CONF)
    with pytest.raises(LogUnavailable):
        store.term(11)
    with pytest.raises(LogUnavailable):
        store.entries(5, 12)


def test_hard_state_alone(store: Store) -> None:
    store.save(HardState(term=5, vote=None, commit=0), [])
    assert store.initial_state()[0] == HardState(term=5, vote=None, commit=0)
    store.save(HardState(term=5, vote="c", commit=0), [])
    assert store.initial_state()[0] == HardState(term=5, vote="c", commit=0)
    assert store.last_index() == 0


def test_overwrite_conflicting_suffix_shorter(store: Store) -> None:
    fill(store, 10, term=1, commit=4)
    store.save(HardState(term=2, vote="b", commit=4), ents(6, 8, 2))
    assert store.last_index() == 7
    assert store.entries(1, 8) == ents(1, 6, 1) + ents(6, 8, 2)
    assert store.term(7) == 2
    with pytest.raises(LogUnavailable):
        store.term(8)


def test_overwrite_conflicting_suffix_longer(store: Store) -> None:
    fill(store, 5, term=1)
    store.save(HardState(term=3, vote="c", commit=0), ents(2, 12, 3))
    assert store.last_index() == 11
    assert store.entries(1, 12) == ents(1, 2, 1) + ents(2, 12, 3)


def test_overwrite_whole_log(store: Store) -> None:
    fill(store, 5, term=1)
    store.save(HardState(term=2, vote="b", commit=0), ents(1, 3, 2))
    assert store.entries(1, 3) == ents(1, 3, 2)
    assert store.last_index() == 2


def test_append_past_the_end_is_refused(store: Store) -> None:
    fill(store, 3)
    with pytest.raises(InvariantViolation):
        store.save(None, ents(5, 6, 1))
    assert store.last_index() == 3


# -- entries() with max_bytes ------------------------------------------------------------
@pytest.mark.parametrize(
    ("max_bytes", "count"),
    [(0, 1), (115, 1), (116, 1), (231, 1), (232, 2), (233, 2), (116 * 5, 5), (10**9, 6)],
)
def test_entries_max_bytes(store: Store, max_bytes: int, count: int) -> None:
    # Each entry is 100 data bytes: size_bytes() == 116. At least one is always returned.
    store.save(HardState(term=1, vote="a"), ents(1, 7, 1, size=100))
    assert [e.size_bytes() for e in store.entries(1, 7)] == [116] * 6
    assert store.entries(1, 7, max_bytes) == ents(1, 1 + count, 1, size=100)


def test_entries_max_bytes_from_the_middle(store: Store) -> None:
    store.save(HardState(term=1, vote="a"), ents(1, 7, 1, size=100))
    assert store.entries(3, 7, 232) == ents(3, 5, 1, size=100)


def test_entries_empty_range(store: Store) -> None:
    fill(store, 5)
    assert store.entries(3, 3) == []
    assert store.entries(6, 6) == []


# -- compaction ------------------------------------------------------------------------------
def test_compact(store: Store) -> None:
    fill(store, 10, commit=8)
    store.create_snapshot(meta(6, 1), b"state at 6")
    store.compact(4)
    assert store.first_index() == 5
    assert store.term(4) == 1  # the entry just before the log still answers
    with pytest.raises(LogCompacted):
        store.term(3)
    with pytest.raises(LogCompacted):
        store.entries(4, 6)
    assert store.entries(5, 11) == ents(5, 11, 1)
    store.compact(6)
    assert (store.first_index(), store.last_index()) == (7, 10)
    store.compact(5)  # below the first index: nothing to do
    assert store.first_index() == 7
    assert store.entries(7, 11) == ents(7, 11, 1)


def test_compact_past_the_snapshot_is_refused(store: Store) -> None:
    fill(store, 10, commit=8)
    store.create_snapshot(meta(6, 1), b"s")
    with pytest.raises(InvariantViolation):
        store.compact(7)
    assert store.first_index() == 1


def test_compact_everything_then_append(store: Store) -> None:
    fill(store, 5, commit=5)
    store.create_snapshot(meta(5, 1), b"s")
    store.compact(5)
    assert (store.first_index(), store.last_index(), store.term(5)) == (6, 5, 1)
    assert store.entries(6, 6) == []
    with pytest.raises(InvariantViolation):
        store.save(None, ents(5, 6, 2))  # at or below the compaction point
    store.save(HardState(term=2, vote="a", commit=5), ents(6, 8, 2))
    assert store.entries(6, 8) == ents(6, 8, 2)


# -- snapshots: local ----------------------------------------------------------------------
SNAP_DATA = bytes(range(256)) * 40  # 10240 bytes: several records on disk


def test_create_snapshot_and_read_in_chunks(store: Store) -> None:
    fill(store, 10, commit=7)
    store.create_snapshot(meta(7, 1), SNAP_DATA)
    assert store.snapshot_meta() == meta(7, 1)
    assert store.snapshot_chunk(7, 0, 1000) == SNAP_DATA[:1000]
    assert store.snapshot_chunk(7, 999, 2) == SNAP_DATA[999:1001]
    assert store.snapshot_chunk(7, 10000, 1000) == SNAP_DATA[10000:]
    assert store.snapshot_chunk(7, len(SNAP_DATA), 1000) == b""
    for chunk in (1, 777, 1000, 4096, 20000):
        assert read_snapshot(store, 7, chunk) == SNAP_DATA
    assert store.snapshot_data() == SNAP_DATA
    assert store.first_index() == 1  # creating a snapshot does not compact


def test_empty_snapshot(store: Store) -> None:
    fill(store, 3, commit=3)
    store.create_snapshot(meta(3, 1), b"")
    assert store.snapshot_meta() == meta(3, 1)
    assert store.snapshot_chunk(3, 0, 100) == b""
    assert store.snapshot_data() == b""


def test_newer_snapshot_replaces(store: Store) -> None:
    fill(store, 10, commit=9)
    store.create_snapshot(meta(4, 1), b"four")
    store.create_snapshot(meta(9, 1), b"nine")
    assert store.snapshot_meta() == meta(9, 1)
    assert store.snapshot_data() == b"nine"


def test_unknown_snapshot_is_unavailable(store: Store) -> None:
    fill(store, 10, commit=9)
    store.create_snapshot(meta(4, 1), b"four")
    with pytest.raises(SnapshotUnavailable):
        store.snapshot_chunk(5, 0, 10)


def test_snapshot_older_than_newest_is_refused(store: Store) -> None:
    fill(store, 10, commit=9)
    store.create_snapshot(meta(6, 1), b"six")
    with pytest.raises(InvariantViolation):
        store.create_snapshot(meta(5, 1), b"five")
    with pytest.raises(InvariantViolation):
        store.create_snapshot(meta(11, 1), b"past the end")
    assert store.snapshot_meta() == meta(6, 1)


# -- snapshots: received in chunks ------------------------------------------------------------
def write_in_chunks(store: Store, m: SnapshotMeta, data: bytes, chunk: int) -> None:
    offset = 0
    while True:
        piece = data[offset : offset + chunk]
        store.write_snapshot_chunk(m, offset, piece)
        offset += len(piece)
        if offset >= len(data):
            return


def test_install_snapshot_discards_a_log_without_its_last_entry(store: Store) -> None:
    fill(store, 10, term=1, commit=3)
    incoming = meta(20, 3, CONF2)
    write_in_chunks(store, incoming, SNAP_DATA, 3000)
    store.install_snapshot(incoming)
    assert store.snapshot_meta() == incoming
    assert (store.first_index(), store.last_index(), store.term(20)) == (21, 20, 3)
    assert store.entries(21, 21) == []
    hard_state, conf = store.initial_state()
    assert hard_state == HardState(term=1, vote="a", commit=20)  # commit raised to the snapshot
    assert conf == CONF2
    assert store.snapshot_data() == SNAP_DATA
    assert read_snapshot(store, 20, 4096) == SNAP_DATA
    with pytest.raises(LogCompacted):
        store.term(19)


def test_install_snapshot_keeps_entries_after_a_matching_entry(store: Store) -> None:
    fill(store, 10, term=1, commit=3)
    incoming = meta(6, 1)
    write_in_chunks(store, incoming, b"state at six", 5)
    store.install_snapshot(incoming)
    assert (store.first_index(), store.last_index()) == (7, 10)
    assert store.entries(7, 11) == ents(7, 11, 1)
    assert store.initial_state()[0].commit == 6
    assert store.snapshot_data() == b"state at six"


def test_install_snapshot_with_a_conflicting_term_discards_the_log(store: Store) -> None:
    fill(store, 10, term=1, commit=3)
    incoming = meta(6, 2)
    write_in_chunks(store, incoming, b"x", 1)
    store.install_snapshot(incoming)
    assert (store.first_index(), store.last_index(), store.term(6)) == (7, 6, 2)
    store.save(HardState(term=2, vote="b", commit=6), ents(7, 9, 2))
    assert store.entries(7, 9) == ents(7, 9, 2)


def test_install_does_not_lower_the_commit_index(store: Store) -> None:
    fill(store, 10, term=1, commit=8)
    incoming = meta(6, 1)
    write_in_chunks(store, incoming, b"s", 1)
    store.install_snapshot(incoming)
    assert store.initial_state()[0].commit == 8


def test_chunk_at_offset_zero_starts_over(store: Store) -> None:
    fill(store, 3, commit=1)
    first, second = meta(10, 2), meta(12, 2)
    store.write_snapshot_chunk(first, 0, b"abandoned")
    store.write_snapshot_chunk(second, 0, b"abc")
    store.write_snapshot_chunk(second, 3, b"def")
    with pytest.raises(InvariantViolation):
        store.install_snapshot(first)
    store.install_snapshot(second)
    assert store.snapshot_data() == b"abcdef"
    assert store.snapshot_meta() == second


def test_chunk_at_the_wrong_offset_is_refused(store: Store) -> None:
    m = meta(10, 2)
    store.write_snapshot_chunk(m, 0, b"abc")
    with pytest.raises(InvariantViolation):
        store.write_snapshot_chunk(m, 5, b"def")
    with pytest.raises(InvariantViolation):
        store.write_snapshot_chunk(meta(11, 2), 3, b"def")


def test_installing_without_chunks_is_refused(store: Store) -> None:
    with pytest.raises(InvariantViolation):
        store.install_snapshot(meta(5, 1))


# -- the latest configuration ------------------------------------------------------------------
def test_latest_conf_follows_config_entries(store: Store) -> None:
    store.save(HardState(term=1, vote="a"), [*ents(1, 3, 1), config_entry(3, 1, CONF2), *ents(4, 6, 1)])
    assert store.initial_state()[1] == CONF2
    store.save(None, [config_entry(6, 1, CONF3)])
    assert store.initial_state()[1] == CONF3
    store.save(HardState(term=2, vote="b"), ents(6, 8, 2))  # the newest CONFIG entry is overwritten
    assert store.initial_state()[1] == CONF2
    store.save(HardState(term=3, vote="c"), ents(2, 4, 3))  # and the older one
    assert store.initial_state()[1] == CONF


def test_two_config_entries_in_one_batch(store: Store) -> None:
    store.save(HardState(term=1, vote="a"), [config_entry(1, 1, CONF2), config_entry(2, 1, CONF3)])
    assert store.initial_state()[1] == CONF3
    store.save(HardState(term=2, vote="a"), ents(2, 3, 2))
    assert store.initial_state()[1] == CONF2


def test_latest_conf_after_compaction_comes_from_the_snapshot(store: Store) -> None:
    store.save(HardState(term=1, vote="a"), [*ents(1, 3, 1), config_entry(3, 1, CONF2), *ents(4, 9, 1)])
    store.save(HardState(term=1, vote="a", commit=8), [])
    store.create_snapshot(meta(5, 1, CONF2), b"s")
    store.compact(5)  # the CONFIG entry at 3 is gone; the snapshot carries CONF2
    assert store.initial_state()[1] == CONF2
    store.save(None, [config_entry(9, 1, CONF3)])
    assert store.initial_state()[1] == CONF3


def test_latest_conf_after_install(store: Store) -> None:
    store.save(HardState(term=1, vote="a"), [config_entry(1, 1, CONF2), *ents(2, 5, 1), config_entry(5, 1, CONF3)])
    incoming = meta(3, 1, CONF2)
    store.write_snapshot_chunk(incoming, 0, b"s")
    store.install_snapshot(incoming)  # keeps 4..5: the CONFIG entry at 5 still rules
    assert store.initial_state()[1] == CONF3
    replacing = meta(9, 2, CONF)
    store.write_snapshot_chunk(replacing, 0, b"t")
    store.install_snapshot(replacing)  # discards the log: the snapshot's conf rules
    assert store.initial_state()[1] == CONF


def test_a_refused_batch_changes_nothing(store: Store) -> None:
    fill(store, 5)
    with pytest.raises(InvariantViolation):
        store.save(None, [*ents(3, 4, 2), *ents(5, 6, 2)])  # not contiguous
    assert store.entries(1, 6) == ents(1, 6, 1)
