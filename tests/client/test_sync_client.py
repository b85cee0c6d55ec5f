"""The blocking `Client`, used from plain code and from several threads at once.

The fake replicas run on an event loop in their own thread (`LoopThread`), so
the test itself is ordinary blocking code, like a user's script.
"""

from __future__ import annotations

import gc
import threading
import warnings
from collections.abc import Iterator

import pytest

from examples.counter.machine import Counter
from rsm.client import Client, ClientClosed, CommandError
from rsm.statemachine import PayloadKind

from .fakes import CLUSTER, FAST, SECRET, Echo, FakeCluster, LoopThread


@pytest.fixture
def servers() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


def start(servers: LoopThread, machine: Counter | Echo) -> FakeCluster:
    return servers.run(FakeCluster(machine).start())


def test_a_script_calls_the_cluster_and_closes_cleanly(servers: LoopThread) -> None:
    cluster = start(servers, Counter())
    threads_before = set(threading.enumerate())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Client(cluster.addresses(), cluster_id=CLUSTER, secret=SECRET, settings=FAST) as client:
            counter = client.proxy(Counter)
            assert 5 == counter.increment(5)
            assert 5 == counter.get()
            assert 5 == client.call(Counter, "get", consistency="stale")
            assert "n1" == client.leader
            assert "leader" == client.status("n1")["role"]
        gc.collect()
    assert threads_before == set(threading.enumerate())  # the loop thread is gone
    assert [] == [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    with pytest.raises(ClientClosed):
        counter.get()
    client.close()  # idempotent
    servers.run(cluster.close())
    assert 1 == cluster.count(PayloadKind.CLOSE_SESSION)


def test_errors_reach_the_calling_thread(servers: LoopThread) -> None:
    cluster = start(servers, Echo())
    with Client(cluster.addresses(), cluster_id=CLUSTER, secret=SECRET, settings=FAST) as client:
        with pytest.raises(CommandError, match="ValueError: boom"):
            client.proxy(Echo).fail("boom")
        with pytest.raises(TypeError):  # BadArguments is a TypeError, raised before sending
            client.proxy(Echo).echo()
    servers.run(cluster.close())


def test_many_threads_share_one_client(servers: LoopThread) -> None:
    cluster = start(servers, Counter())
    results: list[int] = []
    with Client(cluster.addresses(), cluster_id=CLUSTER, secret=SECRET, settings=FAST) as client:
        counter = client.proxy(Counter)

        def work() -> None:
            for _ in range(25):
                results.append(counter.increment())

        workers = [threading.Thread(target=work) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(10)
        assert list(range(1, 101)) == sorted(results)
        assert 100 == counter.get()
        assert 1 == client.stats.connections_opened
    servers.run(cluster.close())
