"""Run a 3-replica counter cluster on this machine, use it, crash its leader, stop it.

    python -m examples.counter.run        (or: python examples/counter/run.py)

Everything lives in a temporary directory that is removed at the end: the
config, the secret, the replicas' data and their logs (``--keep`` keeps it,
to look at the logs or restart the cluster with ``rsm cluster up``).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from examples.counter.machine import Counter
from rsm.cli import ReplicaProcesses, free_base_port, init_cluster
from rsm.client import Client

APP = "examples.counter.machine:Counter"
REPLICAS = 3


def leader_of(client: Client) -> str | None:
    """The replica that says it leads, per a status round."""
    for node_id, status in client.status_all().items():
        if isinstance(status, dict) and status.get("role") == "leader":
            return node_id
    return None


def demo(directory: Path) -> None:
    config = init_cluster(directory, replicas=REPLICAS, base_port=free_base_port(2 * REPLICAS), app=APP)
    print(f"cluster config: {config}")
    with ReplicaProcesses(config, [f"n{i}" for i in range(1, REPLICAS + 1)], directory / "logs") as replicas, \
            Client.from_config(config) as client:
        counter = client.proxy(Counter)
        # The first command waits for the election: the client retries until a
        # leader answers (or ClientSettings.timeout_s passes).
        for by in (1, 2, 3):
            print(f"increment({by}) -> {counter.increment(by)}")
        print(f"get() -> {counter.get()}  (linearizable)")

        leader = leader_of(client)
        print(f"killing the leader, {leader}, with SIGKILL")
        if leader is not None:
            replicas.kill(leader, signal.SIGKILL)
        print(f"increment(10) -> {counter.increment(10)}  (the client found the new leader)")
        print(f"get() -> {counter.get()}; new leader: {leader_of(client)}")
        stale = client.proxy(Counter, consistency="stale")
        print(f"get() from one replica's state at once -> {stale.get()}  (stale)")
    print("stopped every replica")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="rsm-counter-"))
    try:
        demo(directory)
    finally:
        if args.keep:
            print(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
