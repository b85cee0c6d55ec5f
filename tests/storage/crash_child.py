"""Child process of test_crash.py: runs crash-workload operations and reports
each one on stdout only after it returned (so only once it is durable).

    python crash_child.py DATADIR SEED FIRST_OP COUNT
"""

from __future__ import annotations

import sys

from crash_workload import apply, open_crash_store


def main() -> None:
    path, seed, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    store = open_crash_store(path)
    print("READY", flush=True)
    for n in range(first, first + count):
        apply(store, seed, n)
        print(f"ACK {n}", flush=True)
    store.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
