"""examples/kvstore: put, get, delete, compare-and-set, scans, TTLs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples.kvstore.machine import KEY_BYTES_LIMIT, PURGE_PER_COMMAND, SCAN_LIMIT_MAX, KVStore
from rsm.statemachine import CommandError, MachineHost, decode_result, encode_call

from .machines import Log, Point, ask


@pytest.fixture
def kv(tmp_path: Path) -> Iterator[tuple[MachineHost, Log]]:
    host = MachineHost(KVStore(), path=tmp_path)
    yield host, Log(host, clock_ms=10_000)
    host.close()


def test_put_get_delete(kv: tuple[MachineHost, Log]) -> None:
    host, log = kv
    assert log.call("put", "a", {"any": ["msgpack", 1]}) is None
    log.call("put", "p", Point(1, 2))
    assert {"any": ["msgpack", 1]} == ask(host, "get", "a")
    assert Point(1, 2) == ask(host, "get", "p")
    assert log.call("delete", "a") is True
    assert log.call("delete", "a") is False
    assert ask(host, "get", "a") is None


def test_compare_and_set(kv: tuple[MachineHost, Log]) -> None:
    host, log = kv
    assert log.call("cas", "k", None, 1) is True  # absent -> set
    assert log.call("cas", "k", None, 2) is False
    assert log.call("cas", "k", 5, 2) is False
    assert log.call("cas", "k", 1, 2) is True
    assert 2 == ask(host, "get", "k")


def test_scan_bounds_and_limit(kv: tuple[MachineHost, Log]) -> None:
    host, log = kv
    for key in ("b", "a", "d", "c", "é"):
        log.call("put", key, key.upper())
    assert [["a", "A"], ["b", "B"], ["c", "C"], ["d", "D"], ["é", "É"]] == ask(host, "scan")
    assert [["b", "B"], ["c", "C"]] == ask(host, "scan", "b", "d")
    assert [["a", "A"], ["b", "B"]] == ask(host, "scan", limit=2)
    ask(host, "scan", limit=SCAN_LIMIT_MAX)
    with pytest.raises(CommandError, match="limit"):
        ask(host, "scan", limit=SCAN_LIMIT_MAX + 1)
    with pytest.raises(CommandError, match="limit"):
        ask(host, "scan", limit=0)


def test_ttl_hides_expired_keys_from_get_and_scan(kv: tuple[MachineHost, Log]) -> None:
    host, log = kv
    log.call("put", "short", 1, ttl_ms=100)
    log.call("put", "forever", 2)
    written_at = log.clock_ms - 1  # "short" was written one entry earlier
    deadline = written_at + 100
    assert 1 == decode_result(host.query(encode_call(KVStore, "get", ["short"]), timestamp_ms=deadline - 1))
    assert decode_result(host.query(encode_call(KVStore, "get", ["short"]), timestamp_ms=deadline)) is None
    scan = encode_call(KVStore, "scan")
    assert [["forever", 2]] == decode_result(host.query(scan, timestamp_ms=deadline))
    # Commands see expiry through the entry's timestamp.
    log.clock_ms = deadline - 1
    assert log.call("cas", "short", None, 3) is True  # expired: counts as absent


def test_ttl_purge_is_deterministic_and_bounded(tmp_path: Path) -> None:
    a, b = MachineHost(KVStore(), path=tmp_path / "a"), MachineHost(KVStore(), path=tmp_path / "b")
    log = Log(a, b, clock_ms=0)
    n = PURGE_PER_COMMAND + 10
    for i in range(n):
        log.call("put", f"k{i:03}", i, ttl_ms=10_000)
    log.clock_ms += 20_000
    log.call("put", "x", 0)  # purges PURGE_PER_COMMAND of them
    assert 10 == log.call("purge")
    assert 0 == log.call("purge")
    assert a.digest() == b.digest()
    with pytest.raises(CommandError):
        log.call("purge", 0)
    a.close()
    b.close()


def test_overwrite_replaces_ttl(kv: tuple[MachineHost, Log]) -> None:
    host, log = kv
    log.call("put", "k", 1, ttl_ms=10)
    log.call("put", "k", 2)
    log.clock_ms += 1000
    assert 0 == log.call("purge")  # the old deadline was removed with the old value
    assert 2 == ask(host, "get", "k")


def test_bad_input(kv: tuple[MachineHost, Log]) -> None:
    host, log = kv
    log.call("put", "x" * KEY_BYTES_LIMIT, 1)
    for args, kwargs in ((("x" * (KEY_BYTES_LIMIT + 1), 1), {}), (("", 1), {}), (("k", None), {}),
                         (("k", 1), {"ttl_ms": 0}), ((b"k", 1), {})):
        with pytest.raises(CommandError):
            log.call("put", *args, **kwargs)
    assert 1 + 5 == host.applied_index  # failed commands still used their slots


def test_restart_keeps_ttls(tmp_path: Path) -> None:
    host = MachineHost(KVStore(), path=tmp_path)
    log = Log(host, clock_ms=0)
    log.call("put", "k", "v", ttl_ms=500)
    host.close()
    host = MachineHost(KVStore(), path=tmp_path)
    assert "v" == ask(host, "get", "k")
    Log(host, clock_ms=1000).call("put", "other", 1)
    assert ask(host, "get", "k") is None
    host.close()


ops = st.lists(st.tuples(
    st.sampled_from(["put", "delete", "cas", "purge"]),
    st.sampled_from(["a", "b", "c", "d"]),
    st.integers(0, 3),
    st.one_of(st.none(), st.integers(1, 40)),
    st.integers(0, 30),
), max_size=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops)
def test_matches_a_model_and_replicas_agree(tmp_path_factory: pytest.TempPathFactory,
                                             script: list[tuple[str, str, int, int | None, int]]) -> None:
    root = tmp_path_factory.mktemp("kv")
    a, b = MachineHost(KVStore(), path=root / "a"), MachineHost(KVStore(), path=root / "b")
    log = Log(a, b, clock_ms=0)
    model: dict[str, tuple[int, int]] = {}  # key -> (value, expires_at_ms or 0)

    def live(key: str, now: int) -> int | None:
        value, expires_at = model.get(key, (None, 0))
        return value if expires_at == 0 or now < expires_at else None

    for name, key, value, ttl, step in script:
        log.clock_ms += step
        now = log.clock_ms + 1  # Log.call advances the clock by 1 for the entry
        if name == "put":
            assert log.call("put", key, value, ttl_ms=ttl) is None
            model[key] = (value, now + ttl if ttl else 0)
        elif name == "delete":
            assert (live(key, now) is not None) == log.call("delete", key)
            model.pop(key, None)
        elif name == "cas":
            swapped = live(key, now) == value
            assert swapped == log.call("cas", key, value, value + 1)
            if swapped:
                model[key] = (value + 1, 0)
        else:
            assert log.call("purge") >= 0
    expected = sorted([k, live(k, log.clock_ms)] for k in model if live(k, log.clock_ms) is not None)
    assert expected == ask(a, "scan")
    assert a.digest() == b.digest()
    a.close()
    b.close()
