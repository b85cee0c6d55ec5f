"""rsm.config: ReplicaSettings validation and the CPU scheduling policy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rsm.config import CPU_SCHEDULING, ReplicaSettings, load_config, render_config, write_secret
from rsm.errors import ConfigError


def _config(tmp_path: Path, extra: str) -> Path:
    write_secret(tmp_path / "cluster.secret")
    path = tmp_path / "cluster.toml"
    path.write_text(render_config(cluster_id="c", app="rsm.bench:BenchCounter", secret_file="cluster.secret",
                                  replicas={"n1": ("127.0.0.1:7100", "127.0.0.1:7101", "data/n1")}) + extra)
    return path


def test_cpu_scheduling_defaults_to_batch_and_accepts_normal(tmp_path: Path) -> None:
    assert "batch" == ReplicaSettings().validate().cpu_scheduling
    config = load_config(_config(tmp_path, '\n[replica]\ncpu_scheduling = "normal"\n'))
    assert "normal" == config.replica.cpu_scheduling


@pytest.mark.parametrize("value", ['"fifo"', '"BATCH"', "1"])
def test_cpu_scheduling_refuses_anything_else(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="cpu_scheduling"):
        load_config(_config(tmp_path, f"\n[replica]\ncpu_scheduling = {value}\n"))


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="no SCHED_BATCH on this OS")
@pytest.mark.parametrize("policy", CPU_SCHEDULING)
def test_apply_cpu_scheduling_sets_the_policy_of_this_process_only(policy: str) -> None:
    # In a child: the policy is inherited by the test process's later children.
    code = (
        "import os; from rsm.config import apply_cpu_scheduling; "
        f"got = apply_cpu_scheduling({policy!r}); "
        "print(got, os.sched_getscheduler(0) == os.SCHED_BATCH)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert [policy, str(policy == "batch")] == out
