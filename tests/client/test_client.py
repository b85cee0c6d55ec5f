"""AsyncClient against fake replicas: leader discovery, failover, exactly-once
retries, backoff, errors, pipelining, sessions.

Every test runs under `run` (tests/net/conftest.py), which fails it if a task
is left pending, a socket leaks, or the event loop reports an error: so each
test also checks that the client cleans up after itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

# The transport tests' leak-checking runner, bounded waits and test certificates
# (tests/ is on sys.path; importing the fixture makes it available here).
from net.conftest import Certs, certs, free_port, run, wait_until  # noqa: F401

from examples.counter.machine import Counter
from rsm.client import (
    AsyncClient,
    AuthenticationError,
    BadArguments,
    Busy,
    ClientClosed,
    ClientSettings,
    CommandError,
    OutcomeUnknown,
    Unavailable,
    UnknownMethod,
)
from rsm.errors import ConfigError
from rsm.statemachine import (
    PayloadKind,
    StateMachine,
    UnencodableValue,
    decode_call,
    encode_close_session,
)

from .fakes import CLUSTER, FAST, OTHER_SECRET, SECRET, Echo, FakeCluster, write_config


def make_client(cluster: FakeCluster, *, settings: ClientSettings = FAST, secret: bytes = SECRET,
                **kwargs: Any) -> AsyncClient:
    return AsyncClient(cluster.addresses(), cluster_id=CLUSTER, secret=secret, settings=settings, **kwargs)


def with_cluster(test: Callable[[FakeCluster], Awaitable[None]], machine: StateMachine | None = None,
                 timeout_s: float = 8.0) -> None:
    """Run `test(cluster)` with a started 3-replica fake cluster, closed afterwards."""

    async def main() -> None:
        cluster = await FakeCluster(machine if machine is not None else Counter()).start()
        try:
            await test(cluster)
        finally:
            await cluster.close()

    run(main, timeout_s)


def command_calls(cluster: FakeCluster, node_id: str) -> list[Any]:
    """The decoded command payloads `node_id` received, in order."""
    calls = [decode_call(r.payload) for r in cluster.replicas[node_id].submits()]
    return [c for c in calls if c.kind == PayloadKind.COMMAND]


# -- the basics -------------------------------------------------------------------


def test_commands_and_queries_through_a_proxy() -> None:
    async def test(cluster: FakeCluster) -> None:
        async with make_client(cluster) as client:
            counter = client.proxy(Counter)
            assert 5 == await counter.increment(5)
            assert 7 == await counter.increment(by=2)
            assert 7 == await counter.get()
            assert 7 == await client.proxy(Counter, consistency="stale").get()
            assert 7 == await client.call(Counter, "get")
        assert 1 == cluster.count(PayloadKind.REGISTER_SESSION)
        assert 2 == cluster.count(PayloadKind.COMMAND)
        assert 1 == cluster.count(PayloadKind.CLOSE_SESSION)  # close() closed the session
        assert 0 == len(cluster.host.sessions)
        queries = [r.consistency for r in cluster.replicas["n1"].requests if r.kind == "query"]
        assert ["linearizable", "stale", "linearizable"] == queries

    with_cluster(test)


def test_proxy_methods_carry_the_machine_signature_and_docs() -> None:
    async def test(cluster: FakeCluster) -> None:
        async with make_client(cluster) as client:
            echo = client.proxy(Echo)
            assert "(value: 'Any') -> 'Any'" == str(echo.echo.__signature__)
            assert "Return `value` (and count the run)." == echo.echo.__doc__
            assert ["count", "echo", "fail"] == dir(echo)
            with pytest.raises(AttributeError, match="has no command or query 'nope'"):
                echo.nope  # noqa: B018

    with_cluster(test, Echo())


def test_a_command_exception_comes_back_as_command_error() -> None:
    async def test(cluster: FakeCluster) -> None:
        async with make_client(cluster) as client:
            with pytest.raises(CommandError) as caught:
                await client.proxy(Echo).fail("no such account")
            assert ("ValueError", "no such account") == (caught.value.type_name, caught.value.message)
            assert 1 == await client.proxy(Echo).count()

    with_cluster(test, Echo())


def test_calls_are_checked_before_anything_is_sent() -> None:
    async def test(cluster: FakeCluster) -> None:
        async with make_client(cluster) as client:
            counter = client.proxy(Counter)
            with pytest.raises(BadArguments):
                await counter.increment(1, 2, 3)
            with pytest.raises(BadArguments):
                await counter.increment(bad=1)
            with pytest.raises(UnencodableValue):
                await counter.increment(object())
            with pytest.raises(UnknownMethod):
                await client.call(Counter, "decrement")
            with pytest.raises(BadArguments, match="consistency"):
                await client.call(Counter, "get", consistency="eventual")
            with pytest.raises(BadArguments, match="consistency"):
                client.proxy(Counter, consistency="eventual")
            assert 0 == client.stats.connections_opened
        assert [0, 0, 0] == [r.frames_received for r in cluster.replicas.values()]

    with_cluster(test)


def test_settings_are_validated() -> None:
    for bad in ({"timeout_s": 0}, {"attempt_timeout_s": -1.0}, {"in_flight_max": 0}, {"session_window": 1.5},
                {"backoff_min_s": 1.0, "backoff_max_s": 0.5}, {"sessions_max": True}):
        with pytest.raises(ConfigError):
            ClientSettings(**bad).validate()
    with pytest.raises(ConfigError, match="read_from"):
        AsyncClient({"n1": "127.0.0.1:1"}, cluster_id=CLUSTER, secret=SECRET, read_from="n9")
    with pytest.raises(ConfigError, match="bad address"):
        AsyncClient(["localhost"], cluster_id=CLUSTER, secret=SECRET)


# -- finding the leader --------------------------------------------------------------


def test_follows_a_not_leader_hint_and_remembers_the_leader() -> None:
    async def test(cluster: FakeCluster) -> None:
        cluster.elect("n3")
        async with make_client(cluster) as client:
            counter = client.proxy(Counter)
            assert 1 == await counter.increment()
            assert "n3" == client.leader
            assert 2 == await counter.increment()
            assert 1 == client.stats.redirects
        assert 1 == len(cluster.replicas["n1"].submits())  # the register, redirected once
        assert [] == cluster.replicas["n2"].requests

    with_cluster(test)


def test_learns_a_leader_it_was_not_told_about_from_the_hint() -> None:
    async def test(cluster: FakeCluster) -> None:
        cluster.elect("n2")
        only_n1 = {"n1": cluster.replicas["n1"].address}
        async with AsyncClient(only_n1, cluster_id=CLUSTER, secret=SECRET, settings=FAST) as client:
            assert 1 == await client.proxy(Counter).increment()
            assert "n2" == client.leader
            assert cluster.replicas["n2"].address == client.replicas["n2"]

    with_cluster(test)


def test_fails_over_when_the_leader_dies() -> None:
    async def test(cluster: FakeCluster) -> None:
        async with make_client(cluster) as client:
            counter = client.proxy(Counter)
            assert 1 == await counter.increment()
            await cluster.replicas["n1"].stop()
            cluster.elect("n3")
            assert 2 == await counter.increment()
            assert "n3" == client.leader
            assert 2 == cluster.host.machine.value  # type: ignore[attr-defined]

    with_cluster(test)


def test_retries_when_a_replica_answers_unavailable() -> None:
    async def test(cluster: FakeCluster) -> None:
        cluster.replicas["n1"].unavailable = 2
        async with make_client(cluster) as client:
            assert 1 == await client.proxy(Counter).increment()
            assert 2 == client.stats.unavailable

    with_cluster(test)


# -- exactly once -------------------------------------------------------------------


def test_a_lost_response_is_retried_with_the_same_seq_and_answered_from_the_session() -> None:
    async def test(cluster: FakeCluster) -> None:
        async with make_client(cluster) as client:
            counter = client.proxy(Counter)
            assert 1 == await counter.increment()
            cluster.replicas["n1"].drop = 1  # applies the next command, never answers
            assert 3 == await counter.increment(2)
            assert 1 == client.stats.attempt_timeouts
        sent = command_calls(cluster, "n1")[1:]
        assert 2 == len(sent)
        assert (sent[0].session_id, 2) == (sent[1].session_id, sent[1].seq) == (sent[0].session_id, sent[0].seq)
        assert 3 == cluster.count(PayloadKind.COMMAND)  # both copies reached the log ...
        assert 3 == cluster.host.machine.value  # type: ignore[attr-defined]  # ... it ran once

    with_cluster(test)


def test_a_command_applied_by_a_leader_that_died_is_not_applied_again() -> None:
    async def test(cluster: FakeCluster) -> None:
        async with make_client(cluster) as client:
            echo = client.proxy(Echo)
            assert "a" == await echo.echo("a")
            cluster.replicas["n1"].drop = 1
            call = asyncio.ensure_future(echo.echo("b"))
            await wait_until(lambda: 2 == cluster.count(PayloadKind.COMMAND))  # applied, unanswered
            await cluster.replicas["n1"].stop()
            cluster.elect("n2")
            assert "b" == await call
            assert 2 == await echo.count()
        retried = command_calls(cluster, "n2")
        assert 1 == len(retried)
        assert (retried[0].session_id, retried[0].seq) == (command_calls(cluster, "n1")[1].session_id, 2)

    with_cluster(test, Echo())


def test_a_connection_lost_after_apply_is_retried_exactly_once() -> None:
    async def test(cluster: FakeCluster) -> None:
        async with make_client(cluster) as client:
            counter = client.proxy(Counter)
            assert 1 == await counter.increment()
            cluster.replicas["n1"].hang_up = 1
            assert 3 == await counter.increment(2)
            assert 0 == client.stats.attempt_timeouts  # noticed at once, not by a timeout
            assert 3 == client.stats.connections_opened  # n1; n2, which redirects; n1 again
        assert 3 == cluster.host.machine.value  # type: ignore[attr-defined]

    with_cluster(test)


def test_a_session_that_expired_before_the_command_ran_is_replaced() -> None:
    async def test(cluster: FakeCluster) -> None:
        async with make_client(cluster) as client:
            counter = client.proxy(Counter)
            assert 1 == await counter.increment()
            [session_id] = cluster.host.sessions.ids()
            cluster.apply(encode_close_session(session_id))  # expired behind the client's back
            assert 2 == await counter.increment()
            assert 1 == client.stats.sessions_expired
        assert 2 == cluster.count(PayloadKind.REGISTER_SESSION)

    with_cluster(test)


def test_a_retry_that_finds_its_session_gone_is_an_unknown_outcome() -> None:
    async def test(cluster: FakeCluster) -> None:
        async with make_client(cluster) as client:
            counter = client.proxy(Counter)
            assert 1 == await counter.increment()
            cluster.replicas["n1"].drop = 1
            call = asyncio.ensure_future(counter.increment())
            await wait_until(lambda: 2 == cluster.count(PayloadKind.COMMAND))
            [session_id] = cluster.host.sessions.ids()
            cluster.apply(encode_close_session(session_id))
            with pytest.raises(OutcomeUnknown, match="may have been applied"):
                await call
            assert 2 == cluster.host.machine.value  # type: ignore[attr-defined]

    with_cluster(test)


# -- overload, timeouts, authentication ------------------------------------------------


def test_busy_is_retried_with_backoff() -> None:
    async def test(cluster: FakeCluster) -> None:
        cluster.replicas["n1"].busy = 3
        async with make_client(cluster) as client:
            assert 1 == await client.proxy(Counter).increment()
            assert 3 == client.stats.busy

    with_cluster(test)


def test_busy_until_the_timeout_raises_busy() -> None:
    async def test(cluster: FakeCluster) -> None:
        cluster.replicas["n1"].busy = 10**9
        settings = attrs.evolve(FAST, timeout_s=0.3)
        async with make_client(cluster, settings=settings) as client:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(Busy, match=r"overloaded for 0\.3 s \(n1: busy: [^)]*\)$") as caught:
                await client.proxy(Counter).get()
            assert 0.3 <= loop.time() - started < 1.0
            assert "busy" in caught.value.problems["n1"]
            assert not caught.value.maybe_applied  # a query: nothing to apply
            assert client.stats.busy > 3  # backed off, did not spin: far fewer than a spin would send
            assert client.stats.busy < 100

    with_cluster(test)


def test_no_reachable_replica_raises_unavailable_at_the_timeout() -> None:
    async def main() -> None:
        addresses = {f"n{i}": ("127.0.0.1", free_port()) for i in range(1, 4)}
        settings = attrs.evolve(FAST, timeout_s=0.5)
        async with AsyncClient(addresses, cluster_id=CLUSTER, secret=SECRET, settings=settings) as client:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(Unavailable) as caught:
                await client.proxy(Counter).increment()
            assert 0.5 <= loop.time() - started < 1.5
        message = str(caught.value)
        assert message.startswith("Counter.increment: registering a session: no leader with a quorum answered "
                                  "within 0.5 s")
        assert "n1: connection refused" in message and "n3: connection refused" in message
        assert not caught.value.maybe_applied
        assert type(caught.value) is Unavailable

    run(main)


def test_no_leader_raises_unavailable() -> None:
    async def test(cluster: FakeCluster) -> None:
        cluster.elect(None)
        settings = attrs.evolve(FAST, timeout_s=0.3)
        async with make_client(cluster, settings=settings) as client:
            with pytest.raises(Unavailable, match=r"n1: not the leader \(hint: none\)"):
                await client.proxy(Counter).increment()

    with_cluster(test)


def test_a_command_that_reached_the_leader_but_timed_out_may_have_been_applied() -> None:
    async def test(cluster: FakeCluster) -> None:
        settings = attrs.evolve(FAST, timeout_s=0.3)
        async with make_client(cluster, settings=settings) as client:
            counter = client.proxy(Counter)
            assert 1 == await counter.increment()
            cluster.replicas["n1"].drop = 10**9  # applies everything, answers nothing
            with pytest.raises(Unavailable, match=r"\(it may still be applied, once\)$") as caught:
                await counter.increment()
            assert caught.value.maybe_applied
            assert 2 == cluster.host.machine.value  # type: ignore[attr-defined]

    with_cluster(test)


def test_a_wrong_secret_fails_fast() -> None:
    async def test(cluster: FakeCluster) -> None:
        async with make_client(cluster, secret=OTHER_SECRET) as client:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(AuthenticationError):
                await client.proxy(Counter).increment()
            assert loop.time() - started < FAST.timeout_s / 3
        rejected = [r.server.stats.connections_rejected_auth for r in cluster.replicas.values()]  # type: ignore[union-attr]
        assert [1, 0, 0] == rejected  # one try, no retries
        assert 0 == cluster.count(PayloadKind.COMMAND)

    with_cluster(test)


def test_a_closed_client_refuses_calls() -> None:
    async def test(cluster: FakeCluster) -> None:
        client = make_client(cluster)
        assert 1 == await client.proxy(Counter).increment()
        await client.aclose()
        await client.aclose()  # idempotent
        with pytest.raises(ClientClosed):
            await client.proxy(Counter).increment()

    with_cluster(test)


# -- pipelining and sessions -------------------------------------------------------------


def test_256_commands_in_flight_on_one_connection() -> None:
    async def test(cluster: FakeCluster) -> None:
        n1 = cluster.replicas["n1"]
        n1.hold = 256  # no command is answered before all 256 arrived; then newest first
        # No attempt may time out while the answers are held (slow CI, debug loop).
        settings = attrs.evolve(FAST, sessions_max=8, session_window=32, timeout_s=8.0, attempt_timeout_s=8.0)
        async with make_client(cluster, settings=settings) as client:
            echo = client.proxy(Echo)
            values = [f"v{i}" for i in range(256)]
            assert values == await asyncio.gather(*(echo.echo(v) for v in values))
            assert 1 == client.stats.connections_opened
            assert 0 == client.stats.retries
            assert 256 == await echo.count()  # nothing retried
        assert 8 == cluster.count(PayloadKind.REGISTER_SESSION)

    with_cluster(test, Echo(), timeout_s=12.0)


def test_a_session_never_has_more_than_its_window_in_flight() -> None:
    async def test(cluster: FakeCluster) -> None:
        settings = attrs.evolve(FAST, sessions_max=1, session_window=2)
        async with make_client(cluster, settings=settings) as client:
            echo = client.proxy(Echo)
            assert list(range(7)) == await asyncio.gather(*(echo.echo(i) for i in range(7)))
        calls = command_calls(cluster, "n1")
        assert list(range(1, 8)) == sorted(c.seq for c in calls)
        assert all(c.seq - c.ack < 2 for c in calls), [(c.seq, c.ack) for c in calls]

    with_cluster(test, Echo())


def test_calls_past_in_flight_max_wait_for_a_slot() -> None:
    async def test(cluster: FakeCluster) -> None:
        n1 = cluster.replicas["n1"]
        n1.hold = 1000  # hold the answers until release_held()
        settings = attrs.evolve(FAST, in_flight_max=2)
        async with make_client(cluster, settings=settings) as client:
            echo = client.proxy(Echo)
            first = [asyncio.ensure_future(echo.echo(i)) for i in range(2)]
            await wait_until(lambda: 2 == cluster.count(PayloadKind.COMMAND))
            sent = client.stats.requests_sent
            third = asyncio.ensure_future(echo.echo(2))
            await asyncio.sleep(0)  # with a slot, it would be sent within this turn
            assert sent == client.stats.requests_sent  # no slot: not sent ...
            n1.release_held()
            assert [0, 1] == await asyncio.gather(*first)
            assert 2 == await third  # ... until one was free

    with_cluster(test, Echo())


def test_idle_sessions_are_kept_alive() -> None:
    async def test(cluster: FakeCluster) -> None:
        settings = attrs.evolve(FAST, keepalive_interval_s=0.02)
        async with make_client(cluster, settings=settings) as client:
            assert 1 == await client.proxy(Counter).increment()
            await wait_until(lambda: cluster.count(PayloadKind.KEEPALIVE) >= 2)
            assert client.stats.keepalives_sent >= 1

    with_cluster(test)


def test_queries_go_to_read_from() -> None:
    async def test(cluster: FakeCluster) -> None:
        async with make_client(cluster, read_from="n2") as client:
            assert 1 == await client.proxy(Counter).increment()
            assert 1 == await client.proxy(Counter).get()
            assert 1 == await client.proxy(Counter, consistency="stale").get()
        assert ["linearizable", "stale"] == [r.consistency for r in cluster.replicas["n2"].requests]
        assert all(r.kind != "query" for r in cluster.replicas["n1"].requests)

    with_cluster(test)


def test_status_of_each_replica() -> None:
    async def test(cluster: FakeCluster) -> None:
        await cluster.replicas["n3"].stop()
        async with make_client(cluster) as client:
            statuses = await client.status_all()
        assert "leader" == statuses["n1"]["role"]  # type: ignore[index]
        assert "n1" == statuses["n2"]["leader"]  # type: ignore[index]
        assert isinstance(statuses["n3"], Unavailable)
        assert "status of n3: connection refused" == str(statuses["n3"])

    with_cluster(test)


def test_connects_over_mutual_tls(certs: Certs, tmp_path: Path) -> None:  # noqa: F811
    async def main() -> None:
        cluster = await FakeCluster(Counter(), ssl_context=certs.server_context()).start()
        try:
            async with make_client(cluster, ssl_context=certs.client_context()) as client:
                assert 1 == await client.proxy(Counter).increment()
            tls = f'\n[tls]\nca = "{certs.ca}"\ncert = "{certs.node_cert}"\nkey = "{certs.node_key}"\n'
            config = write_config(tmp_path, cluster.addresses(), extra=tls)
            async with AsyncClient.from_config(config, settings=FAST) as client:  # TLS from [tls]
                assert 2 == await client.proxy(Counter).increment()
            no_cert = certs.client_context(with_cert=False)
            async with make_client(cluster, ssl_context=no_cert, settings=attrs.evolve(FAST, timeout_s=0.3)) as client:
                with pytest.raises(Unavailable):
                    await client.proxy(Counter).get()
        finally:
            await cluster.close()

    # asyncio reports the server side of each refused TLS handshake to the loop.
    run(main, allowed_loop_errors=("Error on transport creation for incoming connection",))


@given(st.lists(st.one_of(st.just("take"), st.integers(0, 40)), max_size=120))
@settings(max_examples=300, deadline=None)
def test_session_ack_is_always_the_lowest_unanswered_seq(ops: list[Any]) -> None:
    from rsm.client import _Session

    session = _Session(7, 0.0)
    taken: list[int] = []
    model: set[int] = set()  # the seqs taken and not answered, kept here independently
    for op in ops:
        if op == "take":
            seq = session.take(0.0)
            taken.append(seq)
            model.add(seq)
        elif taken:
            seq = taken[op % len(taken)]  # answers out of order, some twice
            session.answered(seq)
            model.discard(seq)
        assert session.ack() == (min(model) if model else session.next_seq)
