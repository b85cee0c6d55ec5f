"""open_stream's guard against a socket connected to itself."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from rsm.net.connection import refuse_self_connection

from .conftest import LOCALHOST, run


@pytest.mark.skipif(sys.platform != "linux", reason="self-connection by simultaneous open is shown on Linux")
def test_a_socket_connected_to_itself_is_refused() -> None:
    # What a dial to a free local port can produce when the kernel picks the
    # same port as the local end: made here on purpose.
    sock = socket.socket()
    sock.bind((LOCALHOST, 0))
    sock.connect(sock.getsockname())
    assert sock.getsockname() == sock.getpeername()

    async def scenario() -> None:
        _reader, writer = await asyncio.open_connection(sock=sock)
        with pytest.raises(ConnectionRefusedError, match="connected to itself"):
            refuse_self_connection(writer)
        assert writer.transport.is_closing()
        await asyncio.sleep(0)  # let the aborted transport finish closing

    run(scenario)


def test_an_ordinary_connection_passes() -> None:
    async def scenario() -> None:
        server = await asyncio.start_server(lambda r, w: w.close(), LOCALHOST, 0)
        port = server.sockets[0].getsockname()[1]
        _reader, writer = await asyncio.open_connection(LOCALHOST, port)
        refuse_self_connection(writer)  # does not raise
        assert not writer.transport.is_closing()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    run(scenario)
