"""`make demo`: a real 3-replica key-value store cluster, narrated.

From nothing: writes a cluster.toml and a secret in a temporary directory,
starts three replica processes, writes and reads keys through the client,
kills the leader with SIGKILL, shows the new leader and that writes go on,
restarts the killed replica, shows it caught up (identical state digest on
all replicas), and stops everything. Each step checks what it claims; the exit
status is 0 only if every step did what it says.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from examples.kvstore.machine import KVStore
from rsm.cli import ReplicaProcesses
from rsm.client import Client
from rsm.config import free_local_ports, render_config, write_secret
from rsm.sim.demo import DemoFailed, expect

console = Console(highlight=False)
APP = "examples.kvstore.machine:KVStore"
IDS = ["n1", "n2", "n3"]
WAIT_S = 20.0




def wait_until(predicate: Callable[[], object], timeout_s: float = WAIT_S) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # a replica may be restarting; ask again
            value = None
        if value:
            return value
        time.sleep(0.05)
    return None


def statuses(client: Client) -> dict[str, dict]:  # type: ignore[type-arg]
    return {k: v for k, v in client.status_all().items() if isinstance(v, dict)}


def agreed_leader(client: Client, live: set[str]) -> str | None:
    views = statuses(client)
    if set(views) != live:
        return None
    leaders = {v["leader"] for v in views.values()}
    if len(leaders) == 1 and leaders <= live and views[next(iter(leaders))]["role"] == "leader":
        return str(leaders.pop())
    return None


def show(client: Client) -> None:
    table = Table(show_header=True, header_style="bold")
    for column in ("replica", "role", "term", "commit", "applied", "state digest"):
        table.add_column(column)
    views = client.status_all()
    for node_id in IDS:
        view = views.get(node_id)
        if isinstance(view, dict):
            table.add_row(node_id, view["role"], str(view["term"]), str(view["commit"]), str(view["applied"]),
                          view["state_digest"][:16])
        else:
            table.add_row(node_id, "[red]down[/red]", "-", "-", "-", "-")
    console.print(table)


def scenario(root: Path, procs: ReplicaProcesses) -> None:
    ports = free_local_ports(2 * len(IDS))
    replicas = {n: (f"127.0.0.1:{ports[2 * i]}", f"127.0.0.1:{ports[2 * i + 1]}", f"data/{n}") for i, n in enumerate(IDS)}
    write_secret(root / "cluster.secret")
    (root / "cluster.toml").write_text(render_config(cluster_id="demo", app=APP, secret_file="cluster.secret",
                                                     replicas=replicas))
    console.print(f"[bold]1. Start 3 replicas[/bold] (cluster.toml in {root})")
    procs.start()
    with Client.from_config(root / "cluster.toml") as client:
        kv = client.proxy(KVStore)
        leader = wait_until(lambda: agreed_leader(client, set(IDS)))
        expect(bool(leader), f"the replicas elected a leader: {leader}")

        console.print("[bold]2. Write and read keys[/bold]")
        for i in range(20):
            kv.put(f"key{i}", f"value{i}")
        expect(kv.get("key7") == "value7", "20 puts acknowledged; get key7 -> 'value7'")
        expect(kv.cas("key7", "value7", "seven") and kv.get("key7") == "seven", "cas key7 value7 -> seven")
        show(client)

        console.print(f"[bold]3. SIGKILL the leader {leader}[/bold]")
        procs.kill(str(leader))  # SIGKILL
        live = set(IDS) - {str(leader)}
        new_leader = wait_until(lambda: agreed_leader(client, live))
        expect(bool(new_leader) and new_leader != leader, f"a new leader took over: {new_leader}")

        console.print("[bold]4. Writes go on[/bold]")
        for i in range(20, 40):
            kv.put(f"key{i}", f"value{i}")
        expect(kv.get("key0") == "value0" and kv.get("key39") == "value39",
               "20 more puts acknowledged; nothing written before the kill was lost")

        console.print(f"[bold]5. Restart {leader}[/bold]")
        procs.start()  # starts again the one replica that is not running

        def caught_up() -> bool:
            views = statuses(client)
            return len(views) == 3 and len({(v["applied"], v["state_digest"]) for v in views.values()}) == 1

        expect(bool(wait_until(caught_up)), f"{leader} caught up: same applied index and state digest on all 3")
        show(client)


def main(parent_dir: str | None = None) -> int:
    """Run the demo in a new directory under `parent_dir` (default: the temp
    directory), which is left in place for the reader; return the exit status."""
    console.print("[bold]rsm demo[/bold]: a 3-replica key-value store in real processes on 127.0.0.1\n")
    root = Path(tempfile.mkdtemp(prefix="rsm-demo-", dir=parent_dir))
    procs = ReplicaProcesses(root / "cluster.toml", IDS, root)
    try:
        scenario(root, procs)
    except (DemoFailed, Exception) as failure:  # any failure must make the exit status non-zero
        console.print(f"  [red]FAILED[/red] {type(failure).__name__}: {failure} (logs in {root})")
        procs.stop()
        return 1
    console.print("[bold]6. Stop everything (SIGTERM)[/bold]")
    clean = all(code == 0 for code in procs.stop().values())
    try:
        expect(clean, "every replica shut down cleanly")
    except DemoFailed as failure:
        console.print(f"  [red]FAILED[/red] {failure}")
        return 1
    console.print(f"\n[bold green]demo complete[/bold green] (data and logs in {root})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
