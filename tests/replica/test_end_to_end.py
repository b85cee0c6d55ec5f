"""Real replica processes on 127.0.0.1: commands are persisted, applied in one
order everywhere, survive SIGKILL, and a restarted replica catches up."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from examples.counter.machine import Counter
from rsm.protocol import Code, Request
from rsm.statemachine import decode_result, encode_call

from .cluster import LocalCluster, RawClient

COUNTER = "examples.counter.machine:Counter"


def increment(by: int = 1) -> bytes:
    return encode_call(Counter, "increment", (by,))


def get() -> bytes:
    return encode_call(Counter, "get")


async def submit(client: RawClient, leader: str, payload: bytes) -> object:
    response = await client.call(leader, Request(client.rid(), "submit", payload))
    assert response.code == Code.OK, response
    return decode_result(response.value)


def test_three_replicas_replicate_survive_a_leader_kill_and_catch_up(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, COUNTER)
    cluster.start_all()

    async def scenario() -> None:
        client = RawClient(cluster)
        try:
            leader = await client.leader()
            results = [await submit(client, leader, increment()) for _ in range(20)]
            assert list(range(1, 21)) == results  # one total order, each applied once

            # Linearizable reads from every replica see all 20.
            for node_id in cluster.ids:
                response = await client.call(node_id, Request(client.rid(), "query", get(), "linearizable"))
                assert (Code.OK, 20) == (response.code, decode_result(response.value))

            # SIGKILL the leader: acknowledged commands survive, writes go on.
            cluster.kill(leader, signal.SIGKILL)
            await client.conns.pop(leader).close()
            new_leader = await client.leader(exclude=leader)
            assert 25 == max([await submit(client, new_leader, increment()) for _ in range(5)])

            # The killed replica restarts and catches up with the same state.
            cluster.start(leader)
            for _ in range(500):
                views = [await client.status(n) for n in cluster.ids]
                if len({v["applied"] for v in views}) == 1:
                    break
                await asyncio.sleep(0.02)
            response = await client.call(leader, Request(client.rid(), "query", get(), "stale"))
            assert 25 == decode_result(response.value)
        finally:
            await client.close()

    try:
        asyncio.run(scenario())
    finally:
        codes = cluster.stop_all()
    assert all(code == 0 for code in codes.values()), codes  # SIGTERM is a clean shutdown
