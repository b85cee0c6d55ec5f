"""Real replica processes on 127.0.0.1 for end-to-end tests."""

from __future__ import annotations

import asyncio
import atexit
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rsm.config import free_local_ports, render_config, write_secret
from rsm.net.connection import Connection, connect
from rsm.protocol import Code, Request, Response, decode_response, encode_request

READY_TIMEOUT_S = 20.0
REPO_ROOT = Path(__file__).resolve().parents[2]




class LocalCluster:
    """Writes a cluster.toml in `root` and runs its replicas as child processes."""

    def __init__(self, root: Path, app: str, replicas: int = 3, extra: str = "") -> None:
        self.root = root
        ports = free_local_ports(2 * replicas)
        self.ids = [f"n{i + 1}" for i in range(replicas)]
        table = {
            node_id: (f"127.0.0.1:{ports[2 * i]}", f"127.0.0.1:{ports[2 * i + 1]}", f"data/{node_id}")
            for i, node_id in enumerate(self.ids)
        }
        self.client_addresses = {node_id: ("127.0.0.1", ports[2 * i + 1]) for i, node_id in enumerate(self.ids)}
        write_secret(root / "cluster.secret")
        self.secret = (root / "cluster.secret").read_bytes().strip()
        text = render_config(cluster_id="test", app=app, secret_file="cluster.secret", replicas=table, tick_ms=10)
        (root / "cluster.toml").write_text(text + extra)
        self.procs: dict[str, subprocess.Popen[str]] = {}
        atexit.register(self._kill_leftovers)  # a failing test must not leave replicas running

    def _kill_leftovers(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()

    def spawn(self, node_id: str) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO_ROOT)}
        with open(self.root / f"{node_id}.log", "a") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "rsm.replica", str(self.root / "cluster.toml"), node_id],
                stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=REPO_ROOT,
            )

    def log(self, node_id: str) -> str:
        return (self.root / f"{node_id}.log").read_text()

    def start(self, node_id: str) -> None:
        proc = self.spawn(node_id)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the replica prints one line once it listens
        assert "ready" in line, f"{node_id} did not start: {line!r}; log:\n{self.log(node_id)[-2000:]}"
        self.procs[node_id] = proc

    def start_all(self) -> None:
        for node_id in self.ids:
            self.start(node_id)

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> int:
        proc = self.procs.pop(node_id)
        proc.send_signal(sig)
        return proc.wait(timeout=10)

    def stop_all(self) -> dict[str, int]:
        codes = {}
        for node_id in list(self.procs):
            codes[node_id] = self.kill(node_id, signal.SIGTERM)
        return codes


class RawClient:
    """The protocol spoken by hand: one connection per replica, numbered requests."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.conns: dict[str, Connection] = {}
        self.next_id = 0

    async def conn(self, node_id: str) -> Connection:
        if node_id not in self.conns:
            self.conns[node_id] = await connect(
                self.cluster.client_addresses[node_id], cluster_id="test", secret=self.cluster.secret
            )
        return self.conns[node_id]

    async def call(self, node_id: str, request: Request, timeout_s: float = 5.0) -> Response:
        conn = await self.conn(node_id)
        conn.send(encode_request(request))
        response = decode_response(await asyncio.wait_for(conn.recv(), timeout_s))
        assert response.request_id == request.request_id
        return response

    def rid(self) -> int:
        self.next_id += 1
        return self.next_id

    async def status(self, node_id: str) -> dict:
        response = await self.call(node_id, Request(self.rid(), "status"))
        assert response.code == Code.OK
        return response.value

    async def leader(self, timeout_s: float = READY_TIMEOUT_S, exclude: str | None = None) -> str:
        """Wait until the live replicas agree on one leader."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            views = []
            for node_id in self.cluster.procs:
                try:
                    views.append(await self.status(node_id))
                except (TimeoutError, OSError, ConnectionError):
                    self.conns.pop(node_id, None)
            leaders = {v["leader"] for v in views}
            roles = [v for v in views if v["role"] == "leader"]
            if len(leaders) == 1 and None not in leaders and len(roles) == 1 and roles[0]["id"] != exclude:
                return roles[0]["id"]
            await asyncio.sleep(0.02)
        raise AssertionError(f"no leader within {timeout_s} s")

    async def close(self) -> None:
        for conn in self.conns.values():
            await conn.close()
        self.conns.clear()
