"""Benchmark: appends per second through the durable log store vs raw LMDB.

For batches of 1, 16 and 256 small entries, measures entries/s through
`DiskStorage.save()` (one LMDB transaction + fsync per batch, checksums,
invariants, in-memory index caches) and through a bare LMDB loop (fresh
environment, same flags: sync=True, metasync=True, writemap=False; one
transaction per batch; `txn.put(key, value, append=True)` with keys and values
encoded before the clock starts, so the baseline is as fast as raw LMDB gets).
Single batches alternate between the two (raw/store, store/raw, ...), so disk
noise and drift hit both alike.

The target: the store reaches at least 80% of the raw figure at every batch
size. Prints a table and, last, one JSON line. Not a test: `make bench-storage`.

    .venv/bin/python benchmarks/storage.py [--seconds 3] [--entry-bytes 16] [--dir PATH]

Run it on the file system the replicas will use: on tmpfs an fsync is free and
the figures say nothing about durability costs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

import lmdb
from rich.console import Console
from rich.table import Table

from rsm.consensus.types import ConfState, Entry, HardState
from rsm.storage import StorageSettings, open_store

BATCH_SIZES = (1, 16, 256)
TARGET_RATIO = 0.8
_KEY = struct.Struct(">Q")


class RawLoop:
    """A bare LMDB append loop: one transaction of `txn.put(append=True)` per batch."""

    def __init__(self, path: Path, batch: int, payload: bytes) -> None:
        self.env = lmdb.open(str(path), map_size=1 << 30, max_dbs=4, sync=True, metasync=True, writemap=False)
        self.db = self.env.open_db(b"entries")
        self.batch, self.payload, self.next = batch, payload, 1

    def one_batch(self) -> float:
        """Append one batch; return the seconds it took (encoding excluded)."""
        items = [(_KEY.pack(i), self.payload) for i in range(self.next, self.next + self.batch)]
        start = time.perf_counter()
        with self.env.begin(write=True, db=self.db) as txn:
            for key, value in items:
                txn.put(key, value, append=True)
        elapsed = time.perf_counter() - start
        self.next += self.batch
        return elapsed


class StoreLoop:
    """The same appends through `DiskStorage.save()`, given ready `Entry` objects
    (building them is the consensus core's work, not the store's)."""

    def __init__(self, path: Path, batch: int, payload: bytes) -> None:
        self.store = open_store(
            path, cluster_id="bench", node_id="n1",
            initial_conf=ConfState(voters=frozenset({"n1"})),
            settings=StorageSettings(map_size_initial_bytes=1 << 30),
        )
        self.store.save(HardState(term=1, vote="n1"), [])
        self.batch, self.payload, self.next = batch, payload, 1

    def one_batch(self) -> float:
        entries = [Entry(index=i, term=1, data=self.payload) for i in range(self.next, self.next + self.batch)]
        start = time.perf_counter()
        self.store.save(None, entries)
        elapsed = time.perf_counter() - start
        self.next += self.batch
        return elapsed


def measure(root: Path, batch: int, seconds: float, payload: bytes) -> dict[str, float]:
    """Alternate single batches raw/store, store/raw, ... so that drift and
    disk noise, and any cost of going first after the other's fsync, hit both alike."""
    raw = RawLoop(root / f"raw-{batch}", batch, payload)
    store = StoreLoop(root / f"store-{batch}", batch, payload)
    raw_s = store_s = 0.0
    batches = 0
    while min(raw_s, store_s) < seconds:
        if batches % 2 == 0:
            raw_s += raw.one_batch()
            store_s += store.one_batch()
        else:
            store_s += store.one_batch()
            raw_s += raw.one_batch()
        batches += 1
    store.store.close()
    raw.env.close()
    raw_eps, store_eps = batches * batch / raw_s, batches * batch / store_s
    return {"batch": batch, "raw_eps": raw_eps, "store_eps": store_eps, "ratio": store_eps / raw_eps}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per side and batch size")
    parser.add_argument("--entry-bytes", type=int, default=16, help="payload bytes per entry")
    parser.add_argument("--dir", default=".", help="where to create the scratch directory")
    args = parser.parse_args()
    payload = os.urandom(args.entry_bytes)
    root = Path(tempfile.mkdtemp(prefix="rsm-bench-storage-", dir=args.dir))
    console = Console()
    try:
        results = [measure(root, batch, args.seconds, payload) for batch in BATCH_SIZES]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    table = Table(title=f"appends/s, {args.entry_bytes}-byte entries, one fsync per batch ({root.parent.resolve()})")
    for column in ("batch", "raw LMDB entries/s", "store entries/s", "store batches/s", "store/raw"):
        table.add_column(column, justify="right")
    for r in results:
        style = "green" if r["ratio"] >= TARGET_RATIO else "red"
        table.add_row(
            str(r["batch"]), f"{r['raw_eps']:,.0f}", f"{r['store_eps']:,.0f}",
            f"{r['store_eps'] / r['batch']:,.0f}", f"[{style}]{r['ratio']:.2f}[/{style}]",
        )
    console.print(table)
    ok = all(r["ratio"] >= TARGET_RATIO for r in results)
    print(json.dumps({"benchmark": "storage", "entry_bytes": args.entry_bytes, "target_ratio": TARGET_RATIO,
                      "ok": ok, "results": [{k: round(v, 3) for k, v in r.items()} for r in results]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
