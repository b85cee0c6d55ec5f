"""Replicas configured for mutual TLS in cluster.toml replicate over TLS, and a
client without a certificate from the cluster's CA cannot talk to them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from net.conftest import Certs, certs  # noqa: F401  (the session fixture making test certificates)

from examples.counter.machine import Counter
from rsm.config import load_config
from rsm.net.connection import connect
from rsm.net.errors import TransportError
from rsm.protocol import Code, Request, decode_response, encode_request
from rsm.statemachine import decode_result, encode_call

from .cluster import LocalCluster, RawClient


def test_replicas_and_clients_over_mutual_tls(tmp_path: Path, certs: Certs) -> None:  # noqa: F811
    extra = f'\n[tls]\nca = "{certs.ca}"\ncert = "{certs.node_cert}"\nkey = "{certs.node_key}"\n'
    cluster = LocalCluster(tmp_path, "examples.counter.machine:Counter", extra=extra)
    cluster.start_all()
    tls = load_config(tmp_path / "cluster.toml").tls
    assert tls is not None

    async def scenario() -> None:
        client = RawClient(cluster)

        async def conn(node_id: str):  # type: ignore[no-untyped-def]
            if node_id not in client.conns:
                client.conns[node_id] = await connect(
                    cluster.client_addresses[node_id], cluster_id="test", secret=cluster.secret,
                    ssl_context=tls.client_context(),
                )
            return client.conns[node_id]

        client.conn = conn  # type: ignore[method-assign]
        try:
            leader = await client.leader()
            response = await client.call(leader, Request(client.rid(), "submit", encode_call(Counter, "increment", (2,))))
            assert (Code.OK, 2) == (response.code, decode_result(response.value))  # replicated over TLS
            with pytest.raises((OSError, asyncio.TimeoutError, TransportError)):  # no certificate: refused
                plain = await connect(cluster.client_addresses[leader], cluster_id="test", secret=cluster.secret)
                plain.send(encode_request(Request(1, "status")))
                decode_response(await asyncio.wait_for(plain.recv(), 3))
        finally:
            await client.close()

    try:
        asyncio.run(scenario())
    finally:
        cluster.stop_all()
