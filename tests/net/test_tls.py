"""Mutual TLS under the HMAC handshake (certificates made by the openssl command)."""

from __future__ import annotations

import pytest

from rsm.net import ClientServer, Connection, HandshakeError, connect

from .conftest import CLUSTER, FAST, LOCALHOST, SECRET, Certs, Inbox, make_peer, run, wait_until


def test_peers_exchange_frames_over_mutual_tls(certs: Certs) -> None:
    async def main() -> None:
        inbox_a, inbox_b = Inbox(), Inbox()
        tls = {"server_ssl": certs.server_context(), "client_ssl": certs.client_context()}
        a = make_peer("a", inbox=inbox_a, **tls)
        b = make_peer("b", inbox=inbox_b, **tls)
        async with a, b:
            a.add_peer("b", b.address)
            b.add_peer("a", a.address)
            a.send("b", b"over tls")
            b.send("a", b"and back")
            assert [("a", b"over tls")] == await inbox_b.take(1)
            assert [("b", b"and back")] == await inbox_a.take(1)

    run(main)


# In debug mode asyncio reports a failed server-side TLS handshake to the
# loop's exception handler (otherwise it only logs it at debug level).
TLS_REFUSED = ("Error on transport creation for incoming connection",)


def test_peer_with_a_certificate_from_another_ca_cannot_connect(certs: Certs) -> None:
    async def main() -> None:
        a = make_peer("a", server_ssl=certs.server_context(), client_ssl=certs.client_context())
        rogue_tls = certs.client_context(certs.rogue_cert, certs.rogue_key)
        rogue = make_peer("b", client_ssl=rogue_tls, peers={"a": ("127.0.0.1", 0)})
        async with a:
            rogue.add_peer("a", a.address)
            async with rogue:
                await wait_until(lambda: rogue.stats.connect_failures >= 1)
                assert not rogue.is_connected("a")
            assert 0 == a.stats.connections_accepted

    run(main, allowed_loop_errors=TLS_REFUSED)


def test_client_over_tls_and_client_without_certificate(certs: Certs) -> None:
    async def echo(conn: Connection) -> None:
        async for request in conn:
            conn.send(request)

    async def main() -> None:
        server = ClientServer(
            (LOCALHOST, 0),
            cluster_id=CLUSTER,
            node_id="replica-a",
            secret=SECRET,
            handler=echo,
            settings=FAST,
            ssl_context=certs.server_context(),
        )
        async with server:
            options = {"cluster_id": CLUSTER, "secret": SECRET, "settings": FAST}
            async with await connect(
                server.address, ssl_context=certs.client_context(), **options
            ) as conn:  # type: ignore[arg-type]
                conn.send(b"secure")
                assert b"secure" == await conn.recv()
            # Without a client certificate the server refuses the TLS handshake;
            # under TLS 1.3 the client may only learn it when it reads.
            with pytest.raises((OSError, HandshakeError)):
                bad = await connect(
                    server.address, ssl_context=certs.client_context(with_cert=False), **options
                )  # type: ignore[arg-type]
                await bad.close()
            assert 1 == server.stats.connections_accepted

    run(main, allowed_loop_errors=TLS_REFUSED)
