"""Helpers for the transport tests: a leak-checking runner, waits, sockets, certs.

Every test runs its coroutine with `run`, which fails the test if the
coroutine leaves a task pending, a socket unclosed (ResourceWarning), or an
error reported to the event loop's exception handler. Tests wait for events
and conditions, never for fixed sleeps; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import shutil
import socket
import ssl
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest

from rsm.net import PeerTransport, TransportSettings

T = TypeVar("T")

CLUSTER = "cluster-1"
SECRET = b"correct horse battery staple 123"
OTHER_SECRET = b"incorrect horse battery staple 1"
LOCALHOST = "127.0.0.1"

#: Short timings, so failure paths (timeouts, backoff) finish quickly.
FAST = TransportSettings(
    handshake_timeout_s=0.5,
    connect_timeout_s=1.0,
    reconnect_backoff_min_s=0.005,
    reconnect_backoff_max_s=0.05,
    close_timeout_s=0.5,
)


def run(
    main: Callable[[], Awaitable[T]],
    timeout_s: float = 8.0,
    allowed_loop_errors: tuple[str, ...] = (),
) -> T:
    """Run `main()` in a fresh debug event loop and check that it cleaned up.

    Fails if `main` takes longer than `timeout_s`, leaves any task pending,
    leaks a socket (ResourceWarning), or makes asyncio report an error other
    than those whose message starts with one of `allowed_loop_errors`.
    """
    loop_errors: list[dict[str, Any]] = []
    unraisable: list[Any] = []

    async def guarded() -> T:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
        result = await asyncio.wait_for(main(), timeout_s)
        await asyncio.sleep(0)
        gc.collect()
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not leftover, f"tasks left pending: {leftover}"
        return result

    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = asyncio.run(guarded(), debug=True)
            gc.collect()
    finally:
        sys.unraisablehook = old_hook
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, f"resources leaked: {leaks}"
    assert not unraisable, f"unraisable exceptions: {[u.exc_value for u in unraisable]}"
    unexpected = [
        ctx
        for ctx in loop_errors
        if not str(ctx.get("message", "")).startswith(allowed_loop_errors)
    ]
    assert not unexpected, f"errors reported to the event loop: {unexpected}"
    return result


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 3.0) -> None:
    """Return as soon as `predicate()` holds; fail after `timeout_s`.

    For conditions that no event signals (counters): checks once per loop
    turn, so it waits for the condition, not for a guessed duration.
    """
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.001)


def free_port() -> int:
    """A port nothing listens on (bound, then released), for a peer that is down."""
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


class Inbox:
    """An `on_frame` callback that records (peer, frame) pairs and can be awaited."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    def __call__(self, peer_id: str, frame: bytes) -> None:
        self.queue.put_nowait((peer_id, frame))

    async def take(self, count: int, timeout_s: float = 3.0) -> list[tuple[str, bytes]]:
        async with asyncio.timeout(timeout_s):
            return [await self.queue.get() for _ in range(count)]


def make_peer(
    node_id: str,
    port: int = 0,
    *,
    inbox: Inbox | None = None,
    settings: TransportSettings = FAST,
    secret: bytes = SECRET,
    cluster_id: str = CLUSTER,
    **kwargs: Any,
) -> PeerTransport:
    """A PeerTransport on 127.0.0.1 with test defaults and a seeded jitter source."""
    return PeerTransport(
        (LOCALHOST, port),
        cluster_id=cluster_id,
        node_id=node_id,
        secret=secret,
        on_frame=inbox if inbox is not None else Inbox(),
        rng=random.Random(node_id),
        settings=settings,
        **kwargs,
    )


@attrs.frozen
class TcpPair:
    """Both ends of one loopback TCP connection."""

    client_reader: asyncio.StreamReader
    client_writer: asyncio.StreamWriter
    server_reader: asyncio.StreamReader
    server_writer: asyncio.StreamWriter


@contextlib.asynccontextmanager
async def tcp_pair() -> AsyncIterator[TcpPair]:
    """A connected pair of streams over 127.0.0.1, closed on exit."""
    accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
        asyncio.get_running_loop().create_future()
    )

    def on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result((reader, writer))

    server = await asyncio.start_server(on_accept, LOCALHOST, 0)
    port = server.sockets[0].getsockname()[1]
    client_reader, client_writer = await asyncio.open_connection(LOCALHOST, port)
    server_reader, server_writer = await accepted
    server.close()
    try:
        yield TcpPair(client_reader, client_writer, server_reader, server_writer)
    finally:
        for writer in (client_writer, server_writer):
            writer.transport.abort()
        await server.wait_closed()


# -- TLS ---------------------------------------------------------------------------


@attrs.frozen
class Certs:
    ca: Path
    node_cert: Path
    node_key: Path
    rogue_cert: Path  # signed by another CA
    rogue_key: Path

    def server_context(self, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca))
        ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: clients need a certificate
        ctx.load_cert_chain(str(cert or self.node_cert), str(key or self.node_key))
        return ctx

    def client_context(
        self, cert: Path | None = None, key: Path | None = None, *, with_cert: bool = True
    ) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        if with_cert:
            ctx.load_cert_chain(str(cert or self.node_cert), str(key or self.node_key))
        return ctx


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _make_ca(directory: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
        cwd=directory,
    )  # fmt: skip


def _make_leaf(directory: Path, name: str, ca: str) -> None:
    (directory / "leaf.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", "leaf.ext",
        cwd=directory,
    )  # fmt: skip


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A test CA, a node certificate (IP SAN 127.0.0.1) and a rogue one from another CA.

    Made with the `openssl` command, because the `cryptography` package is not
    a dependency of rsm; skipped where neither is available.
    """
    if shutil.which("openssl") is None:
        pytest.skip("TLS tests need the openssl command to make test certificates")
    directory = tmp_path_factory.mktemp("certs")
    _make_ca(directory, "ca")
    _make_ca(directory, "rogue-ca")
    _make_leaf(directory, "node", "ca")
    _make_leaf(directory, "rogue", "rogue-ca")
    return Certs(
        ca=directory / "ca.pem",
        node_cert=directory / "node.pem",
        node_key=directory / "node.key",
        rogue_cert=directory / "rogue.pem",
        rogue_key=directory / "rogue.key",
    )
