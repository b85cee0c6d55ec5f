"""Real replica processes on 127.0.0.1: commands are persisted, applied in one
order everywhere, survive SIGKILL, and a restarted replica catches up."""

from __future__ import annotations

import asyncio
import os
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
            # The default CPU policy is in force where the OS has it (and said so).
            expected = "batch" if hasattr(os, "SCHED_BATCH") else "unsupported"
            assert {expected} == {v["cpu_scheduling"] for v in views}
        finally:
            await client.close()

    try:
        asyncio.run(scenario())
    finally:
        codes = cluster.stop_all()
    assert all(code == 0 for code in codes.values()), codes  # SIGTERM is a clean shutdown


def test_a_replica_behind_the_compacted_log_catches_up_from_a_snapshot(tmp_path: Path) -> None:
    """Snapshots every 20 entries: a replica that was down for 100 commands
    finds the leader's log compacted past it, so it receives a snapshot in
    chunks over TCP, installs it, and then follows the log again."""
    extra = "\n[replica]\nsnapshot_every_entries = 20\n\n[consensus]\nsnapshot_chunk_bytes = 64\nlog_cache_entries_max = 0\n"
    cluster = LocalCluster(tmp_path, COUNTER, extra=extra)
    cluster.start_all()

    async def scenario() -> None:
        client = RawClient(cluster)
        try:
            leader = await client.leader()
            lagging = next(n for n in cluster.ids if n != leader)
            cluster.kill(lagging)
            client.conns.pop(lagging, None)
            for _ in range(100):
                await submit(client, leader, increment())
            status = await client.status(leader)
            assert status["snapshot_index"] >= 80  # the leader compacted its log
            cluster.start(lagging)
            for _ in range(500):
                view = await client.status(lagging)
                if view["applied"] >= status["applied"]:
                    break
                await asyncio.sleep(0.02)
            assert view["snapshot_index"] > 0  # it got there through a snapshot
            response = await client.call(lagging, Request(client.rid(), "query", get(), "stale"))
            assert 100 == decode_result(response.value)
            assert 101 == await submit(client, leader, increment())  # and it keeps following the log
            for _ in range(500):
                response = await client.call(lagging, Request(client.rid(), "query", get(), "stale"))
                if decode_result(response.value) == 101:
                    break
                await asyncio.sleep(0.02)
            assert 101 == decode_result(response.value)
        finally:
            await client.close()

    try:
        asyncio.run(scenario())
    finally:
        codes = cluster.stop_all()
    assert all(code == 0 for code in codes.values()), codes
