"""`rsm init`, `rsm status` and the kvstore command line, against fake replicas.

The fakes run on a loop in a background thread (`LoopThread`); the commands run
in this thread through click's `CliRunner`, as a user's shell would run them.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from examples.counter.machine import Counter
from examples.kvstore.__main__ import kv, prefix_end
from examples.kvstore.machine import KVStore
from rsm.cli import _create_atomically, cli, status_report
from rsm.config import format_address, load_config
from rsm.errors import ConfigError
from rsm.statemachine import encode_register_session

from .fakes import FakeCluster, LoopThread, write_config

KV_APP = "examples.kvstore.machine:KVStore"


@pytest.fixture
def servers() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


def rsm(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


# -- rsm init ---------------------------------------------------------------------


def test_init_writes_a_config_and_a_private_secret(tmp_path: Path) -> None:
    result = rsm("init", "--replicas", "3", "--base-port", "7100", "--app", KV_APP, "--dir", str(tmp_path))
    assert 0 == result.exit_code, result.output
    assert 0o600 == stat.S_IMODE((tmp_path / "cluster.secret").stat().st_mode)
    config = load_config(tmp_path / "cluster.toml")
    assert KV_APP == config.app
    assert ["n1", "n2", "n3"] == list(config.replicas)
    n2 = config.replicas["n2"]
    assert (("127.0.0.1", 7102), ("127.0.0.1", 7103)) == (n2.peer, n2.client)
    assert tmp_path / "data" / "n2" == n2.data
    assert len(config.secret) >= 32


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    assert 0 == rsm("init", "--app", KV_APP, "--dir", str(tmp_path)).exit_code
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = rsm("init", "--app", KV_APP, "--replicas", "5", "--dir", str(tmp_path))
    assert 1 == result.exit_code
    assert "refusing to overwrite" in result.output
    assert before == {p.name: p.read_bytes() for p in tmp_path.iterdir()}


def test_the_config_appears_whole_and_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    _create_atomically(path, "cluster_id = 'a'\n")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        _create_atomically(path, "cluster_id = 'b'\n")
    assert "cluster_id = 'a'\n" == path.read_text()
    assert [path] == list(tmp_path.iterdir())  # no temporary file left behind


def test_init_refuses_an_app_that_is_not_a_machine(tmp_path: Path) -> None:
    for app, problem in (("nosuch.module:X", "cannot import"), ("examples.counter.machine:command", "not a StateMachine"),
                         ("no-colon", "package.module:Class")):
        result = rsm("init", "--app", app, "--dir", str(tmp_path))
        assert 1 == result.exit_code
        assert problem in result.output
    assert [] == list(tmp_path.iterdir())


def test_init_needs_room_for_the_ports(tmp_path: Path) -> None:
    result = rsm("init", "--app", KV_APP, "--base-port", "65530", "--replicas", "5", "--dir", str(tmp_path))
    assert 1 == result.exit_code
    assert "no room for 10 ports" in result.output


# -- rsm status ----------------------------------------------------------------------


def test_status_json_reports_leader_lag_and_unreachable_replicas(servers: LoopThread, tmp_path: Path) -> None:
    cluster = servers.run(FakeCluster(Counter()).start())
    config = write_config(tmp_path, cluster.addresses())
    for _ in range(5):
        cluster.apply(encode_register_session())
    cluster.replicas["n2"].lag = 2
    servers.run(cluster.replicas["n3"].stop())
    result = rsm("status", "--config", str(config), "--json", "--timeout-s", "1")
    servers.run(cluster.close())
    assert 1 == result.exit_code  # not healthy: n3 is down
    report = json.loads(result.output)
    assert ("n1", 1, 5, False, []) == (report["leader"], report["term"], report["commit"], report["healthy"],
                                       report["divergence"])
    n1, n2, n3 = (report["replicas"][n] for n in ("n1", "n2", "n3"))
    assert ("leader", 5, 0) == (n1["role"], n1["applied"], n1["lag"])
    assert ("follower", 3, 2) == (n2["role"], n2["applied"], n2["lag"])
    assert {"reachable": False, "address": format_address(cluster.replicas["n3"].address),
            "error": "connection refused"} == n3


def test_status_table_for_people(servers: LoopThread, tmp_path: Path) -> None:
    cluster = servers.run(FakeCluster(Counter()).start())
    config = write_config(tmp_path, cluster.addresses())
    healthy = rsm("status", "--config", str(config))
    servers.run(cluster.replicas["n2"].stop())
    degraded = rsm("status", "--config", str(config))
    servers.run(cluster.close())
    assert 0 == healthy.exit_code, healthy.output
    assert "leader n1  term 1" in healthy.output
    assert "voters n1 n2 n3" in healthy.output
    assert 1 == degraded.exit_code
    assert "n2 unreachable: connection refused" in degraded.output


def test_status_of_a_missing_config_is_a_usage_error(tmp_path: Path) -> None:
    result = rsm("status", "--config", str(tmp_path / "nope.toml"))
    assert 2 == result.exit_code
    assert "does not exist" in result.output


ADDRESSES = {"a": ("10.0.0.1", 7001), "b": ("10.0.0.2", 7001), "c": ("10.0.0.3", 7001)}


def status(node_id: str, **fields: Any) -> dict[str, Any]:
    base = {"id": node_id, "role": "follower", "term": 4, "leader": "a", "commit": 10, "applied": 10,
            "last_index": 10, "voters": ["a", "b", "c"], "learners": [], "digest": None, "divergence": None}
    return base | fields


def test_status_report_finds_divergent_digests() -> None:
    report = status_report("c1", ADDRESSES, {
        "a": status("a", role="leader", digest=[8, "aaaa"]),
        "b": status("b", applied=8, digest=[8, "bbbb"]),
        "c": status("c", applied=9, digest=[8, "aaaa"], divergence="state diverged at applied index 8"),
    })
    assert ("a", False) == (report["leader"], report["healthy"])
    assert ["c: state diverged at applied index 8",
            "state digests differ at applied index 8: a=aaaa, b=bbbb, c=aaaa"] == report["divergence"]
    assert [0, 2, 1] == [report["replicas"][n]["lag"] for n in "abc"]


def test_status_report_takes_the_leader_of_the_newest_term() -> None:
    report = status_report("c1", ADDRESSES, {
        "a": status("a", role="leader", term=3),  # a deposed leader that has not heard yet
        "b": status("b", term=4, leader="c"),
        "c": status("c", term=4, leader="c", role="candidate"),
    })
    assert ("c", 4) == (report["leader"], report["term"])


# -- the kvstore command line --------------------------------------------------------------


@pytest.fixture
def kv_config(servers: LoopThread, tmp_path: Path) -> Iterator[Path]:
    cluster = servers.run(FakeCluster(KVStore(), path=tmp_path / "machine").start())
    yield write_config(tmp_path, cluster.addresses(), app=KV_APP)
    servers.run(cluster.close())


def kvcli(config: Path, *args: str) -> Result:
    return CliRunner().invoke(kv, ["--config", str(config), *args])


def outcome(result: Result) -> tuple[int, str]:
    return result.exit_code, result.output


def test_kvstore_put_get_delete(kv_config: Path) -> None:
    assert (0, "ok\n") == outcome(kvcli(kv_config, "put", "greeting", "hello world"))
    assert (0, "hello world\n") == outcome(kvcli(kv_config, "get", "greeting"))
    assert (0, "hello world\n") == outcome(kvcli(kv_config, "get", "--stale", "greeting"))
    assert (0, "deleted\n") == outcome(kvcli(kv_config, "delete", "greeting"))
    missing = kvcli(kv_config, "get", "greeting")
    assert (1, "greeting: not found\n") == (missing.exit_code, missing.output)
    assert 1 == kvcli(kv_config, "delete", "greeting").exit_code


def test_kvstore_json_values_and_cas(kv_config: Path) -> None:
    assert 0 == kvcli(kv_config, "cas", "--json", "n", "null", "1").exit_code  # absent -> 1
    mismatch = kvcli(kv_config, "cas", "--json", "n", "5", "6")
    assert (1, "n: the value is not 5 (nothing changed)\n") == (mismatch.exit_code, mismatch.output)
    assert 0 == kvcli(kv_config, "cas", "--json", "n", "1", '{"x": [1, 2]}').exit_code
    assert '{"x": [1, 2]}\n' == kvcli(kv_config, "get", "n").output
    bad = kvcli(kv_config, "put", "--json", "k", "{oops")
    assert 2 == bad.exit_code
    assert "is not JSON" in bad.output


def test_kvstore_scan_by_prefix(kv_config: Path) -> None:
    for key in ("user:1", "user:2", "user:3", "userx", "video:1"):
        assert 0 == kvcli(kv_config, "put", key, key.upper()).exit_code
    assert "user:1\tUSER:1\nuser:2\tUSER:2\nuser:3\tUSER:3\n" == kvcli(kv_config, "scan", "user:").output
    assert "user:1\tUSER:1\nuser:2\tUSER:2\n" == kvcli(kv_config, "scan", "user:", "--limit", "2").output
    assert 5 == len(kvcli(kv_config, "scan").output.splitlines())


def test_kvstore_errors_exit_with_status_3(kv_config: Path, tmp_path: Path) -> None:
    too_long = kvcli(kv_config, "put", "k" * 600, "v")
    assert 3 == too_long.exit_code
    assert "error: ValueError: keys are 1 to" in too_long.output
    assert 3 == kvcli(tmp_path / "missing.toml", "get", "k").exit_code


@pytest.mark.parametrize(("prefix", "end"), [
    ("", None), ("a", "b"), ("user:", "user;"), ("ab\U0010ffff", "ac"), ("\U0010ffff", None),
    ("x\ud7ff", "x\ue000"),
])
def test_prefix_end_bounds_exactly_the_keys_with_the_prefix(prefix: str, end: str | None) -> None:
    assert end == prefix_end(prefix)
