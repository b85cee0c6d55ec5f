"""rsm bench measures a real cluster; a short run must produce sane figures."""

from __future__ import annotations

from rsm.bench import BenchOptions, percentile, run


def test_a_short_benchmark_run_reports_every_figure() -> None:
    result = run(BenchOptions(processes=1, in_flight=8, duration_s=1.0))
    assert result["commands"] > 0
    assert result["throughput_per_s"] == round(result["commands"] / 1.0, 1)
    assert 0 < result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"] <= result["p999_ms"] <= result["max_ms"]
    assert {"leader", "follower"} == {r["role"] for r in result["replicas"].values()}
    for replica in result["replicas"].values():
        assert replica["commands_per_fsync"] >= 1.0
        assert replica["cpu_s_per_1000_commands"] > 0
        assert replica["rss_mib"] > 0
    leader = next(r for r in result["replicas"].values() if r["role"] == "leader")
    assert leader["entries_per_append"] >= 1.0


def test_percentiles() -> None:
    values = list(range(1000, 101000, 1000))  # 1..100 ms in microseconds
    assert 51.0 == percentile(values, 0.5)
    assert 100.0 == percentile(values, 0.999)
    assert 0.0 == percentile([], 0.5)


def test_rsm_bench_json_prints_one_object() -> None:
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "rsm.cli", "bench", "--processes", "1", "--in-flight", "4", "--duration", "0.5", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert 0 == proc.returncode, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["commands"] > 0 and result["in_flight"] == 4
