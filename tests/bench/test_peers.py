"""benchmarks/peers.py: the JSON it ends with, its helpers, and that it leaves
no cluster process behind.

The smoke tests run the real entry point for well under a second per
workload: they check shapes and that every figure is positive, never a
figure's size (that is the benchmark's job, on a quiet machine).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "peers.py"
if str(ROOT) not in sys.path:  # `benchmarks` is not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.peers.common import Recorder, Timing, Workload, median_result, percentile  # noqa: E402

#: Tiny settings: enough commands for a p99, short enough for `make test`.
SMOKE_ARGS = ["--warmup", "0.2", "--seconds", "0.5", "--startup-timeout", "20"]
RUN_TIMEOUT_S = 120
FIGURES = {"throughput_per_s", "p50_ms", "p99_ms"}

needs_pysyncobj = pytest.mark.skipif(importlib.util.find_spec("pysyncobj") is None,
                                     reason="pysyncobj not installed (pip install -e '.[bench]')")
needs_etcd = pytest.mark.skipif(shutil.which("etcd") is None,
                                reason="etcd not installed (apt-get install etcd-server; make bench-peers does)")


def run_bench(*args: str, dir: Path) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run([sys.executable, str(SCRIPT), *SMOKE_ARGS, "--dir", str(dir), *args],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=ROOT, check=False)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    return proc.returncode, json.loads(last) if last.startswith("{") else {}, proc.stderr


def assert_figures(result: dict[str, Any], systems: list[str], workloads: list[str]) -> None:
    assert sorted(systems) == sorted(result)
    for system in systems:
        assert sorted(workloads) == sorted(result[system]), result[system]
        for workload in workloads:
            figures = result[system][workload]
            assert FIGURES == set(figures), (system, workload, figures)
            assert all(figures[k] > 0 for k in FIGURES), (system, workload, figures)
            assert figures["p50_ms"] <= figures["p99_ms"], (system, workload, figures)


def test_rsm_smoke(tmp_path: Path) -> None:
    code, result, stderr = run_bench("--systems", "rsm", "--workloads", "10B@1,1KB@256", dir=tmp_path)
    assert 0 == code, stderr
    assert_figures(result, ["rsm"], ["10B@1", "1KB@256"])


def test_rsm_client_smoke(tmp_path: Path) -> None:
    code, result, stderr = run_bench("--systems", "rsm_client", "--workloads", "10B@1,10B@256", dir=tmp_path)
    assert 0 == code, stderr
    assert_figures(result, ["rsm_client"], ["10B@1", "10B@256"])
    assert [] == list(tmp_path.iterdir()), "rsm bench left its cluster directory behind"


@needs_pysyncobj
def test_pysyncobj_smoke(tmp_path: Path) -> None:
    # 1 in flight takes the synchronous-call path, 256 the callback path.
    code, result, stderr = run_bench("--systems", "pysyncobj", "--workloads", "10B@1,10B@256", dir=tmp_path)
    assert 0 == code, stderr
    assert_figures(result, ["pysyncobj"], ["10B@1", "10B@256"])


@needs_etcd
def test_etcd_smoke(tmp_path: Path) -> None:
    code, result, stderr = run_bench("--systems", "etcd", "--workloads", "10B@1,1KB@256", dir=tmp_path)
    assert 0 == code, stderr
    assert_figures(result, ["etcd"], ["10B@1", "1KB@256"])


@pytest.mark.slow
@needs_pysyncobj
@needs_etcd
def test_every_system_and_workload(tmp_path: Path) -> None:
    code, result, stderr = run_bench(dir=tmp_path)
    assert 0 == code, stderr
    assert_figures(result, ["rsm", "rsm_client", "pysyncobj", "pysyncobj_nobatch", "etcd"],
                   ["10B@1", "10B@256", "1KB@1", "1KB@256"])


def test_a_missing_system_maps_to_skipped(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": "/nonexistent"}  # no etcd on this PATH
    proc = subprocess.run([sys.executable, str(SCRIPT), *SMOKE_ARGS, "--systems", "etcd", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=ROOT, env=env, check=False)
    assert 0 == proc.returncode, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"etcd": {"skipped": "etcd not installed (Debian: apt-get install etcd-server)"}} == result


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the replicas")
def test_sigterm_stops_every_replica(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--systems", "rsm", "--workloads", "10B@1",
                             "--warmup", "0", "--seconds", "30", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        deadline = time.monotonic() + 20
        while len(_processes_mentioning(str(tmp_path) + "/")) < 3:  # the replicas' cluster.toml
            assert time.monotonic() < deadline, "replicas did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert 130 == proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [] == _processes_mentioning(str(tmp_path) + "/")


def test_bad_workload_is_a_usage_error() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--workloads", "10B@0"],
                          capture_output=True, text=True, timeout=30, cwd=ROOT, check=False)
    assert 2 == proc.returncode
    assert "bad workload '10B@0'" in proc.stderr


# --------------------------------------------------------------------------- helpers
def test_workload_parse() -> None:
    assert Workload("1KB@256", 1024, 256) == Workload.parse("1KB@256")
    assert 1024 == len(Workload.parse("1KB@1").payload())
    assert 10 == len(Workload.parse("10B@1").payload())
    for bad in ("10B", "2KB@1", "10B@x", "10B@0", "@1"):
        with pytest.raises(ValueError):
            Workload.parse(bad)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert 50.0 == percentile(values, 0.50)
    assert 99.0 == percentile(values, 0.99)
    assert 100.0 == percentile(values, 1.0)
    assert 7.0 == percentile([7.0], 0.99)


def test_median_result_takes_each_figure_separately() -> None:
    runs = [{"a": 1.0, "b": 30.0}, {"a": 3.0, "b": 10.0}, {"a": 2.0, "b": 20.0}]
    assert {"a": 2.0, "b": 20.0} == median_result(runs)
    assert {"a": 2.5, "b": 15.0} == median_result([{"a": 1.0, "b": 20.0}, {"a": 4.0, "b": 10.0}])


def test_recorder_counts_only_the_window() -> None:
    recorder = Recorder(Timing(warmup_s=10, measure_s=2))
    start = recorder.window_start_s
    recorder.record(start - 1.0, start - 0.5)  # warm-up: not counted
    recorder.record(start, start + 0.001)
    recorder.record(start + 1, start + 1.003)
    recorder.record(start + 1.9, start + 2.5)  # done after the window: not counted
    result = recorder.result()
    assert 1.0 == result["throughput_per_s"]  # 2 commands / 2 s
    assert 4 == recorder.completed
    assert pytest.approx(3.0) == result["p99_ms"]
