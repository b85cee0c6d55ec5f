"""What every system's benchmark shares: workloads, timing, the latency
recorder, and child processes that cannot outlive the benchmark.

A measurement is: start a fresh 3-replica cluster on 127.0.0.1, keep
`in_flight` commands outstanding for `warmup_s` (discarded) and then for
`measure_s`, stop it. A command counts if it completes inside the measured
window; its latency is from just before it was handed to the system's client
API until its result came back. Throughput is those commands / `measure_s`.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import attrs

from rsm.config import free_local_ports

REPO_ROOT = Path(__file__).resolve().parents[2]

#: The workloads of issue 6: a 10-byte and a 1 KB argument, at 1 and at 256
#: commands in flight.
PAYLOAD_BYTES = {"10B": 10, "1KB": 1024}
IN_FLIGHT = (1, 256)
DEFAULT_WORKLOADS = tuple(f"{size}@{n}" for size in PAYLOAD_BYTES for n in IN_FLIGHT)

#: Discarded load before the measured window: connections warm, leader
#: settled, allocator and caches past their first-use costs.
WARMUP_S = 1.0
#: The measured window per workload. 4 systems x 4 workloads x (start-up +
#: warm-up + this) keeps `make bench-peers` under ~5 minutes on 2 cores.
MEASURE_S = 5.0
#: A cluster that has no leader after this long is a failed run, not a slow one.
STARTUP_TIMEOUT_S = 30.0
#: The CPU policy of the run (`--cpu-scheduling`): rsm replicas are told to
#: keep it ("normal") or to set it ("batch", their default).
CPU_POLICY = "batch"
#: After the window, outstanding commands get this long to come back.
DRAIN_TIMEOUT_S = 10.0
#: One synchronous call that takes longer than this has failed.
CALL_TIMEOUT_S = 10.0
#: A child is sent SIGTERM, then SIGKILL after this long.
STOP_TIMEOUT_S = 5.0
#: How often start-up polls (status, health) are repeated.
POLL_INTERVAL_S = 0.05


class Skipped(Exception):
    """The system cannot run here (not installed); the reason goes in the JSON."""


class BenchError(Exception):
    """The system ran but misbehaved (an error answer, no leader, a crash)."""


@attrs.frozen
class Workload:
    name: str
    payload_bytes: int
    in_flight: int

    @classmethod
    def parse(cls, name: str) -> Workload:
        """"10B@1" -> 10-byte argument, one command in flight."""
        size, sep, count = name.partition("@")
        if not sep or size not in PAYLOAD_BYTES or not count.isdigit() or int(count) < 1:
            raise ValueError(f"bad workload {name!r}: expected SIZE@IN_FLIGHT, SIZE one of {sorted(PAYLOAD_BYTES)}")
        return cls(name=name, payload_bytes=PAYLOAD_BYTES[size], in_flight=int(count))

    def payload(self) -> bytes:
        """The argument: fixed, non-repeating-looking bytes (no system here compresses)."""
        pattern = bytes(range(33, 127))
        return (pattern * (self.payload_bytes // len(pattern) + 1))[: self.payload_bytes]


@attrs.frozen
class Timing:
    warmup_s: float = WARMUP_S
    measure_s: float = MEASURE_S
    startup_timeout_s: float = STARTUP_TIMEOUT_S
    drain_timeout_s: float = DRAIN_TIMEOUT_S

    def validate(self) -> Timing:
        if not (self.warmup_s >= 0 and self.measure_s > 0 and self.startup_timeout_s > 0 and self.drain_timeout_s > 0):
            raise ValueError(f"bad timing {self}: warm-up >= 0, other durations > 0")
        return self

    def as_args(self) -> list[str]:
        return [f"--warmup={self.warmup_s}", f"--seconds={self.measure_s}",
                f"--startup-timeout={self.startup_timeout_s}", f"--drain-timeout={self.drain_timeout_s}"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in (0, 1]) of an ascending sequence."""
    assert sorted_values, "no samples"
    assert 0 < q <= 1, q
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


class Recorder:
    """Latencies of the commands that complete inside the measured window.

    Thread-safe enough for its use: `record` only appends to a list (atomic
    under the GIL); PySyncObj calls it from its own thread.
    """

    def __init__(self, timing: Timing) -> None:
        self.timing = timing
        self.started_s = time.perf_counter()
        self.window_start_s = self.started_s + timing.warmup_s
        self.window_end_s = self.window_start_s + timing.measure_s
        self.latencies_s: list[float] = []
        self.completed = 0

    def running(self, now_s: float | None = None) -> bool:
        """Whether new commands should still be issued."""
        return (time.perf_counter() if now_s is None else now_s) < self.window_end_s

    def record(self, sent_s: float, done_s: float) -> None:
        self.completed += 1
        if self.window_start_s <= done_s < self.window_end_s:
            self.latencies_s.append(done_s - sent_s)

    def result(self) -> dict[str, float]:
        if not self.latencies_s:
            raise BenchError(f"no command completed in the {self.timing.measure_s} s window "
                             f"({self.completed} completed in all)")
        ordered = sorted(self.latencies_s)
        return {
            "throughput_per_s": len(ordered) / self.timing.measure_s,
            "p50_ms": percentile(ordered, 0.50) * 1000,
            "p99_ms": percentile(ordered, 0.99) * 1000,
        }


def median_result(results: Sequence[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over repeated runs (figures taken separately)."""
    assert results
    keys = results[0].keys()
    out = {}
    for key in keys:
        values = sorted(r[key] for r in results)
        mid = len(values) // 2
        out[key] = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    return out


free_ports = free_local_ports  # one port picker for the whole project (rsm.config)


def child_env() -> dict[str, str]:
    """The environment for children: the repo importable (for `benchmarks.peers`)."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(REPO_ROOT) + (os.pathsep + path if path else "")}


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the benchmark dies, even by
    SIGKILL, so no replica or etcd member outlives it (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Children:
    """The processes of one cluster; `stop_all` (or leaving the ``with``)
    sends them `stop_signal`, then kills the ones that do not exit in time.

    Each child gets its own session, so a Ctrl-C reaches only the benchmark,
    which then stops the children in order; the parent-death signal covers
    the benchmark being killed outright.
    """

    def __init__(self, stop_signal: int = signal.SIGTERM) -> None:
        self.procs: list[subprocess.Popen[Any]] = []
        self.stop_signal = stop_signal

    def spawn(self, argv: Sequence[str], *, log: IO[Any], stdin: int | None = subprocess.DEVNULL,
              stdout: int | IO[Any] | None = None, text: bool = False) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(
            list(argv), stdin=stdin, stdout=log if stdout is None else stdout, stderr=log,
            text=text, env=child_env(), start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(self.stop_signal)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()

    def check_alive(self, what: str) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise BenchError(f"{what}: process {proc.args!r} exited with {proc.returncode}")

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()


def log_tail(path: Path, lines: int = 15) -> str:
    """The end of a child's log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def scratch_dir(parent: str | None, prefix: str) -> Iterator[Path]:
    """A temporary directory for one cluster's data and logs, removed after
    (kept when `RSM_BENCH_KEEP` is set, to read the logs)."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield root
    finally:
        if os.environ.get("RSM_BENCH_KEEP"):
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
