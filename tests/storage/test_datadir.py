"""Opening a data directory: identity, format, lock; refusals leave it untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rsm.errors import ConfigError
from rsm.storage import (
    FORMAT_VERSION,
    DataDirDamaged,
    DataDirLocked,
    FormatTooNew,
    FormatTooOld,
    NotADataDir,
    StorageSettings,
    WrongCluster,
    WrongNode,
    open_store,
)
from rsm.storage.datadir import ID_CHARS_MAX

from .conftest import CLUSTER, NODE, ents, open_disk

REPO = Path(__file__).resolve().parents[2]


def snapshot_tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes, except the lock file (whose pid changes)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in {"LOCK", "lock.mdb"}
    }


@pytest.fixture
def existing(tmp_path: Path) -> Path:
    """A data directory of node a in cluster-1, holding a few entries."""
    from rsm.consensus.types import HardState

    with open_disk(tmp_path / "d") as store:
        store.save(HardState(term=1, vote="a"), ents(1, 4, 1))
    return tmp_path / "d"


def test_layout_of_a_new_directory(tmp_path: Path) -> None:
    with open_disk(tmp_path / "deep" / "d"):
        pass
    root = tmp_path / "deep" / "d"
    assert sorted(os.listdir(root)) == ["LOCK", "STAMP", "log", "snapshots"]
    assert json.loads((root / "STAMP").read_text()) == {
        "format_version": FORMAT_VERSION, "cluster_id": CLUSTER, "node_id": NODE,
    }
    assert sorted(os.listdir(root / "log")) == ["data.mdb", "lock.mdb"]


@pytest.mark.parametrize(
    ("cluster_id", "node_id", "error", "words"),
    [
        ("cluster-2", NODE, WrongCluster, "belongs to cluster 'cluster-1', not 'cluster-2'"),
        (CLUSTER, "b", WrongNode, "belongs to node 'a', not 'b'"),
    ],
)
def test_another_clusters_or_nodes_directory_is_refused(
    existing: Path, cluster_id: str, node_id: str, error: type[Exception], words: str
) -> None:
    before = snapshot_tree(existing)
    with pytest.raises(error, match=words):
        open_store(existing, cluster_id=cluster_id, node_id=node_id)
    assert snapshot_tree(existing) == before
    with open_disk(existing) as store:  # and the lock was released
        assert store.last_index() == 3


@pytest.mark.parametrize(
    ("version", "error", "words"),
    [(FORMAT_VERSION - 1, FormatTooOld, "older rsm"), (FORMAT_VERSION + 1, FormatTooNew, "upgrade rsm")],
)
def test_another_format_is_refused(existing: Path, version: int, error: type[Exception], words: str) -> None:
    stamp = existing / "STAMP"
    record = json.loads(stamp.read_text())
    stamp.write_text(json.dumps({**record, "format_version": version}))
    before = snapshot_tree(existing)
    with pytest.raises(error, match=words):
        open_disk(existing)
    assert snapshot_tree(existing) == before


def test_a_second_open_in_the_same_process_is_refused(existing: Path) -> None:
    with open_disk(existing):
        with pytest.raises(DataDirLocked, match="this very process"):
            open_disk(existing)
    with open_disk(existing):  # closing released it
        pass


def test_a_directory_held_by_a_live_process_is_refused(existing: Path) -> None:
    holder = (
        "import sys\n"
        "from rsm.storage import open_store\n"
        "store = open_store(sys.argv[1], cluster_id=sys.argv[2], node_id=sys.argv[3])\n"
        "print('READY', flush=True)\n"
        "sys.stdin.read()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", holder, str(existing), CLUSTER, NODE],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "READY"
            with pytest.raises(DataDirLocked, match=f"pid {child.pid}"):
                open_disk(existing)
        finally:
            child.kill()  # SIGKILL: the lock must go with the process, however it dies
    with open_disk(existing) as store:
        assert store.last_index() == 3


def test_a_foreign_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "precious.txt").write_text("do not touch")
    with pytest.raises(NotADataDir, match=r"precious\.txt"):
        open_disk(tmp_path / "d")
    assert os.listdir(tmp_path / "d") == ["precious.txt"]  # not even a lock file was added
    assert (tmp_path / "d" / "precious.txt").read_text() == "do not touch"


def test_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADataDir, match="not a directory"):
        open_disk(tmp_path / "f")


def test_an_unreadable_stamp_is_damage(existing: Path) -> None:
    (existing / "STAMP").write_text("{ not json")
    with pytest.raises(DataDirDamaged, match="STAMP"):
        open_disk(existing)


def test_a_missing_log_is_damage_not_a_fresh_start(existing: Path) -> None:
    (existing / "log" / "data.mdb").unlink()
    with pytest.raises(DataDirDamaged, match="log"):
        open_disk(existing)
    assert not (existing / "log" / "data.mdb").exists()


def test_a_log_from_another_node_is_damage(tmp_path: Path, existing: Path) -> None:
    with open_store(tmp_path / "other", cluster_id=CLUSTER, node_id="b"):
        pass
    for name in ("data.mdb", "lock.mdb"):
        (existing / "log" / name).write_bytes((tmp_path / "other" / "log" / name).read_bytes())
    with pytest.raises(DataDirDamaged, match="belongs to"):
        open_disk(existing)


def test_an_interrupted_creation_is_completed(tmp_path: Path) -> None:
    """A crash before the stamp was written leaves an empty log: it is adopted."""
    with open_disk(tmp_path / "d"):
        pass
    (tmp_path / "d" / "STAMP").unlink()
    with open_disk(tmp_path / "d") as store:
        assert store.last_index() == 0
    assert (tmp_path / "d" / "STAMP").exists()


def test_a_log_with_data_but_no_stamp_is_refused(existing: Path) -> None:
    (existing / "STAMP").unlink()
    with pytest.raises(NotADataDir, match="no STAMP"):
        open_disk(existing)


@pytest.mark.parametrize("bad", ["", "x" * (ID_CHARS_MAX + 1), "new\nline", 7])
def test_bad_ids_are_refused(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ConfigError):
        open_store(tmp_path / "d", cluster_id=CLUSTER, node_id=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        open_store(tmp_path / "d", cluster_id=bad, node_id=NODE)  # type: ignore[arg-type]
    assert not (tmp_path / "d").exists()


def test_longest_id_is_accepted(tmp_path: Path) -> None:
    with open_store(tmp_path / "d", cluster_id="c" * ID_CHARS_MAX, node_id="n" * ID_CHARS_MAX):
        pass


def test_bad_settings_are_refused_before_touching_the_disk(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        open_disk(tmp_path / "d", StorageSettings(snapshots_kept=0))
    assert not (tmp_path / "d").exists()
