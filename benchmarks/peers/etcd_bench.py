"""etcd: a 3-member cluster of the `etcd` binary on 127.0.0.1, puts from the
benchmark process over etcd's HTTP/JSON gateway.

The "counter increment" for etcd is a put of the argument (10 bytes or 1 KB)
to one key, ``bench/counter``: the cheapest replicated write etcd has (its
transactions would add a compare and a read). Every member runs with etcd's
defaults apart from addresses and data directories; durability: the leader
and each follower fsync their WAL for every Raft batch before acknowledging
it (etcd's default; no ``--unsafe-no-fsync``).

Load: the benchmark process (not a member) keeps `in_flight` keep-alive
HTTP/1.1 connections to the leader, each with one ``POST /v3/kv/put``
outstanding at a time (HTTP/1.1 answers in order, so one request per
connection is what "in flight" can mean). The client is a small asyncio one
written here, with requests encoded before the clock starts: the Python
etcd clients on PyPI are unmaintained or tied to old protobuf releases. At
the end the store's revision must have grown by the number of answered puts.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from rsm import aio

from .common import (
    CALL_TIMEOUT_S,
    POLL_INTERVAL_S,
    BenchError,
    Children,
    Recorder,
    Skipped,
    Timing,
    Workload,
    free_ports,
    log_tail,
    scratch_dir,
)

MEMBERS = 3
KEY = b"bench/counter"
DURABILITY = "fsync per batch"
#: Largest response accepted from the gateway (a put answers ~200 bytes).
RESPONSE_BYTES_MAX = 1 << 20


def etcd_binary() -> str:
    path = shutil.which("etcd")
    if path is None:
        raise Skipped("etcd not installed (Debian: apt-get install etcd-server)")
    return path


def version() -> str:
    out = subprocess.run([etcd_binary(), "--version"], capture_output=True, text=True, timeout=10, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("etcd Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def describe() -> str:
    return (f"{DURABILITY} (WAL fsync, etcd's default); a put of the argument to one key; load: the benchmark process, "
            "one keep-alive HTTP/1.1 connection per command in flight, to the leader's gRPC gateway")


class _Http:
    """One keep-alive HTTP/1.1 connection; `post` sends a prepared request and
    returns the JSON body of its answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> _Http:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    @staticmethod
    def request(port: int, path: str, body: dict[str, Any]) -> bytes:
        data = json.dumps(body).encode()
        return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode() + data

    async def post(self, request: bytes) -> bytes:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            length = int(headers["content-length"])
            if length > RESPONSE_BYTES_MAX:
                raise BenchError(f"etcd: response of {length} bytes")
            body = await self.reader.readexactly(length)
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._chunked()
        else:
            raise BenchError(f"etcd: response without a length: {head!r}")
        if status_line.split(" ", 2)[1:2] != ["200"]:
            raise BenchError(f"etcd answered {status_line}: {body[:300]!r}")
        return body

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            total += size
            if total > RESPONSE_BYTES_MAX:
                raise BenchError(f"etcd: response over {RESPONSE_BYTES_MAX} bytes")
            if size == 0:
                await self.reader.readuntil(b"\r\n")  # no trailers expected
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


def _start(root: Path, children: Children) -> list[int]:
    """Start the members; return their client ports."""
    binary = etcd_binary()
    ports = free_ports(2 * MEMBERS)
    client_ports, peer_ports = ports[:MEMBERS], ports[MEMBERS:]
    names = [f"m{i + 1}" for i in range(MEMBERS)]
    initial = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in zip(names, peer_ports, strict=True))
    for name, client, peer in zip(names, client_ports, peer_ports, strict=True):
        argv = [binary, "--name", name, "--data-dir", str(root / name),
                "--listen-client-urls", f"http://127.0.0.1:{client}",
                "--advertise-client-urls", f"http://127.0.0.1:{client}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", initial, "--initial-cluster-token", "rsm-bench-peers",
                "--initial-cluster-state", "new", "--logger", "zap", "--log-outputs", "stderr"]
        with open(root / f"{name}.log", "ab") as log:
            children.spawn(argv, log=log)
    return client_ports


async def _status(port: int) -> dict[str, Any]:
    http = await _Http.open(port)
    try:
        body = await asyncio.wait_for(http.post(_Http.request(port, "/v3/maintenance/status", {})), CALL_TIMEOUT_S)
        status: dict[str, Any] = json.loads(body)
        return status
    finally:
        await http.close()


async def _wait_for_leader(ports: list[int], children: Children, timeout_s: float) -> tuple[int, int]:
    """The leader's client port and the store's revision, once every member
    names the same leader."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        children.check_alive("etcd")
        try:
            views = [await _status(port) for port in ports]
        except (OSError, BenchError, asyncio.IncompleteReadError, TimeoutError):
            views = []  # not listening yet, or no leader yet (the gateway answers an error)
        leaders = {v.get("leader") for v in views}
        if views and len(leaders) == 1 and None not in leaders:
            for port, view in zip(ports, views, strict=True):
                if view["header"]["member_id"] == view["leader"]:
                    return port, int(view["header"].get("revision", 0))
        await asyncio.sleep(POLL_INTERVAL_S)
    raise BenchError(f"etcd: no leader within {timeout_s} s")


async def _drive(ports: list[int], children: Children, workload: Workload, timing: Timing) -> dict[str, float]:
    port, revision_before = await _wait_for_leader(ports, children, timing.startup_timeout_s)
    request = _Http.request(port, "/v3/kv/put", {"key": base64.b64encode(KEY).decode(),
                                                 "value": base64.b64encode(workload.payload()).decode()})
    conns = [await _Http.open(port) for _ in range(workload.in_flight)]
    try:
        recorder = Recorder(timing)

        async def loop(http: _Http) -> None:
            while recorder.running():
                sent_s = time.perf_counter()
                await asyncio.wait_for(http.post(request), CALL_TIMEOUT_S)
                recorder.record(sent_s, time.perf_counter())

        await asyncio.wait_for(asyncio.gather(*(loop(c) for c in conns)),
                               timing.warmup_s + timing.measure_s + timing.drain_timeout_s)
        status = await _status(port)
        grown = int(status["header"]["revision"]) - revision_before
        if grown != recorder.completed:
            raise BenchError(f"etcd: revision grew by {grown} after {recorder.completed} answered puts")
        return recorder.result()
    finally:
        for c in conns:
            await c.close()


def run_etcd(workload: Workload, timing: Timing, *, parent_dir: str | None = None) -> dict[str, float]:
    """One measurement on a fresh 3-member etcd cluster."""
    etcd_binary()
    # SIGKILL, not SIGTERM: on SIGTERM an etcd leader first tries to hand its
    # leadership to a member that is stopping too, and waits seconds for it;
    # the data directory is thrown away anyway.
    with scratch_dir(parent_dir, "rsm-bench-peers-etcd-") as root, Children(signal.SIGKILL) as children:
        ports = _start(root, children)
        try:
            return aio.run(_drive(ports, children, workload, timing))
        except Exception as exc:  # any failure: add the members' logs
            logs = "\n".join(f"--- m{i + 1}\n{log_tail(root / f'm{i + 1}.log')}" for i in range(MEMBERS))
            raise BenchError(f"etcd {workload.name}: {exc!r}\n{logs}") from exc
