"""The replica at its limits and under bad input: clear answers, nothing lost."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from examples.counter.machine import Counter
from rsm.net.connection import connect
from rsm.net.errors import AuthenticationError
from rsm.protocol import Code, Request, decode_response
from rsm.statemachine import decode_result, encode_call

from .cluster import LocalCluster, RawClient

COUNTER = "examples.counter.machine:Counter"


def run(cluster: LocalCluster, scenario) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        client = RawClient(cluster)
        try:
            await scenario(client)
        finally:
            await client.close()

    try:
        asyncio.run(main())
    finally:
        cluster.stop_all()


def test_command_size_limit_and_malformed_frames(tmp_path: Path) -> None:
    base = encode_call(Counter, "increment", (1,))
    limit = len(base) + 10
    cluster = LocalCluster(tmp_path, COUNTER, extra=f"\n[replica]\ncommand_bytes_max = {limit}\n")
    cluster.start_all()

    async def scenario(client: RawClient) -> None:
        leader = await client.leader()
        # A payload exactly at the limit goes through the log (the machine
        # rejects the trailing garbage, deterministically, as its result).
        at_limit = await client.call(leader, Request(client.rid(), "submit", base + b"\x00" * 10))
        assert Code.OK == at_limit.code
        past = await client.call(leader, Request(client.rid(), "submit", base + b"\x00" * 11))
        assert Code.BAD_REQUEST == past.code
        assert "command_bytes_max" in past.value
        # A malformed frame gets a clear answer; the connection keeps working.
        conn = await client.conn(leader)
        conn.send(b"\xc1 not msgpack")
        bad = decode_response(await asyncio.wait_for(conn.recv(), 5))
        assert Code.BAD_REQUEST == bad.code
        ok = await client.call(leader, Request(client.rid(), "submit", base))
        assert Code.OK == ok.code
        assert 1 == decode_result(ok.value)  # only the valid increment counted

    run(cluster, scenario)


def test_back_pressure_answers_busy(tmp_path: Path) -> None:
    extra = "\n[replica]\npending_requests_max = 1\n\n[consensus]\ncheck_quorum = false\n"
    cluster = LocalCluster(tmp_path, COUNTER, extra=extra)
    cluster.start_all()

    async def scenario(client: RawClient) -> None:
        leader = await client.leader()
        for node_id in cluster.ids:
            if node_id != leader:
                cluster.kill(node_id)  # nothing can commit now: the first command stays pending
        conn = await client.conn(leader)
        from rsm.protocol import encode_request

        conn.send(encode_request(Request(1, "submit", encode_call(Counter, "increment", (1,)))))
        conn.send(encode_request(Request(2, "submit", encode_call(Counter, "increment", (1,)))))
        busy = decode_response(await asyncio.wait_for(conn.recv(), 5))
        assert (2, Code.BUSY) == (busy.request_id, busy.code)

    run(cluster, scenario)


def test_wrong_secret_is_refused(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, COUNTER, replicas=1)
    cluster.start_all()

    async def scenario(client: RawClient) -> None:
        with pytest.raises(AuthenticationError):
            await connect(cluster.client_addresses["n1"], cluster_id="test", secret=b"x" * 32)
        assert "n1" == (await client.status("n1"))["id"]  # still serving

    run(cluster, scenario)


def test_a_data_directory_of_another_cluster_is_refused(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, COUNTER, replicas=1)
    cluster.start_all()
    cluster.stop_all()
    config = tmp_path / "cluster.toml"
    config.write_text(config.read_text().replace('cluster_id = "test"', 'cluster_id = "other"'))
    proc = cluster.spawn("n1")
    assert 2 == proc.wait(timeout=20)
    assert "cluster" in cluster.log("n1").lower()


def test_non_deterministic_apply_is_reported_as_divergence(tmp_path: Path) -> None:
    extra = "\n[replica]\ndigest_every_entries = 5\n"
    cluster = LocalCluster(tmp_path, "tests.replica.machines:Dice", extra=extra)
    cluster.start_all()
    from .machines import Dice

    async def scenario(client: RawClient) -> None:
        leader = await client.leader()
        for _ in range(12):
            response = await client.call(leader, Request(client.rid(), "submit", encode_call(Dice, "roll")))
            assert Code.OK == response.code
        for _ in range(250):
            views = [await client.status(n) for n in cluster.ids]
            if any(v["divergence"] for v in views):
                break
            await asyncio.sleep(0.02)
        reports = [v["divergence"] for v in views if v["divergence"]]
        assert reports, views
        assert "not deterministic" in reports[0]

    run(cluster, scenario)


def test_sigterm_is_a_clean_shutdown_and_sigkill_loses_nothing_acknowledged(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, COUNTER)
    cluster.start_all()

    async def scenario(client: RawClient) -> None:
        leader = await client.leader()
        for _ in range(10):
            assert Code.OK == (await client.call(leader, Request(client.rid(), "submit", encode_call(Counter, "increment", (1,))))).code
        for node_id in list(cluster.procs):
            cluster.kill(node_id, signal.SIGKILL)  # everyone at once
        client.conns.clear()
        cluster.start_all()
        leader = await client.leader()
        response = await client.call(leader, Request(client.rid(), "query", encode_call(Counter, "get"), "linearizable"))
        assert 10 == decode_result(response.value)

    run(cluster, scenario)
