"""PySyncObj: 3 replica processes on 127.0.0.1; the load runs INSIDE the leader.

PySyncObj is a library, not a server: it has no client protocol, and a
`@replicated` method can only be called on a `SyncObj` in the calling
process. So the load is generated where its own reference figures come from
(36,000 increments/s with 20,000 calls in flight in the leader process): the
benchmark starts three replica processes (this module, run as
``python -m benchmarks.peers.pysyncobj_bench``), asks each for its status
over stdin/stdout until all agree on a leader and it sees both followers,
then tells the leader to run the workload and print its figures:

- 1 in flight: synchronous calls one at a time (``add(payload, sync=True)``)
  from the process's main thread;
- more in flight: that many outstanding asynchronous calls with callbacks;
  each callback (on PySyncObj's thread) records the latency and makes the
  next call.

The load thread shares the leader's interpreter and GIL, which helps it
(no client network hop, no client protocol) and costs it (the load competes
with Raft for one core); rsm and etcd pay a client round trip instead.

Durability: none. The log is in memory (the default, ``journalFile=None``);
even with a journal file PySyncObj never fsyncs it. Two configurations:
``appendEntriesUseBatch=True`` (the default: the leader sends entries every
``appendEntriesPeriod``, 0.1 s) and ``False`` (one append per command, at
once). Everything else is the default `SyncObjConf`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import IO, Any

from .common import (
    CALL_TIMEOUT_S,
    POLL_INTERVAL_S,
    BenchError,
    Children,
    Recorder,
    Skipped,
    Timing,
    Workload,
    free_ports,
    log_tail,
    scratch_dir,
)

REPLICAS = 3
#: Connected status code in `SyncObj.getStatus()` for a partner.
_CONNECTED = 2
DURABILITY = "none (memory)"


def version() -> str:
    try:
        return dist_version("pysyncobj")
    except PackageNotFoundError:
        raise Skipped("pysyncobj not installed (pip install -e '.[bench]')") from None


def describe(batch: bool) -> str:
    return (f"no fsync, log in memory; appendEntriesUseBatch={batch}; load: inside the leader process "
            "(no client protocol), sync calls at 1 in flight, async callbacks above")


# --------------------------------------------------------------------------- replica process
def _replica_main(argv: list[str]) -> int:
    """One PySyncObj replica; JSON lines in on stdin, out on stdout. Exits on EOF."""
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--partners", required=True, help="comma-separated ports of the other replicas")
    parser.add_argument("--no-batch", action="store_true")
    args = parser.parse_args(argv)

    class BenchCounter(SyncObj):  # type: ignore[misc]
        def __init__(self, conf: Any) -> None:
            partners = [f"127.0.0.1:{p}" for p in args.partners.split(",")]
            super().__init__(f"127.0.0.1:{args.port}", partners, conf)
            self.value = 0
            self.payload_bytes_total = 0

        @replicated  # type: ignore[untyped-decorator]
        def add(self, payload: bytes) -> int:
            self.value += 1
            self.payload_bytes_total += len(payload)
            return self.value

    node = BenchCounter(SyncObjConf(appendEntriesUseBatch=not args.no_batch))

    def status() -> dict[str, Any]:
        raw = node.getStatus()
        connected = sum(1 for k, v in raw.items() if k.startswith("partner_node_status_server_") and v == _CONNECTED)
        leader = raw["leader"]
        return {"self": str(raw["self"]), "leader": None if leader is None else str(leader),
                "ready": node.isReady(), "partners_connected": connected}

    def run(workload: Workload, timing: Timing) -> dict[str, Any]:
        payload = workload.payload()
        recorder = Recorder(timing)
        if workload.in_flight == 1:
            while recorder.running():
                sent_s = time.perf_counter()
                node.add(payload, sync=True, timeout=CALL_TIMEOUT_S)
                recorder.record(sent_s, time.perf_counter())
        else:
            lock = threading.Lock()
            outstanding = [0]
            failures: list[int] = []
            drained = threading.Event()

            def call() -> None:
                sent_s = time.perf_counter()

                def done(_result: Any, error: int) -> None:
                    done_s = time.perf_counter()
                    if error != FAIL_REASON.SUCCESS:
                        failures.append(error)
                    else:
                        recorder.record(sent_s, done_s)
                    with lock:
                        outstanding[0] -= 1
                        again = recorder.running(done_s) and not failures
                        if again:
                            outstanding[0] += 1
                        elif outstanding[0] == 0:
                            drained.set()
                    if again:
                        call()

                node.add(payload, callback=done)

            with lock:
                outstanding[0] = workload.in_flight
            for _ in range(workload.in_flight):
                call()
            if not drained.wait(timing.warmup_s + timing.measure_s + timing.drain_timeout_s):
                raise BenchError(f"{outstanding[0]} calls still outstanding after the window")
            if failures:
                raise BenchError(f"calls failed with FAIL_REASON {sorted(set(failures))}")
        return {**recorder.result(), "completed": recorder.completed}

    _send({"event": "started"})
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["op"] == "status":
                _send(status())
            elif request["op"] == "run":
                timing = Timing(**request["timing"])
                _send(run(Workload(**request["workload"]), timing))
            elif request["op"] == "count":
                _send({"value": node.value})
        except Exception as exc:  # reported to the benchmark, which fails the run
            _send({"error": repr(exc)})
    node.destroy()
    return 0


def _send(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------- benchmark side
class _Replica:
    def __init__(self, proc: subprocess.Popen[str], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """One request, one answer line (blocking: the replica answers at once,
        except `run`, which takes the workload's duration)."""
        stdin: IO[str] | None = self.proc.stdin
        stdout: IO[str] | None = self.proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps(request) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise BenchError(f"pysyncobj replica exited ({self.proc.poll()}):\n{log_tail(self.log_path)}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise BenchError(f"pysyncobj replica: {answer['error']}\n{log_tail(self.log_path)}")
        return answer


def _wait_for_leader(replicas: list[_Replica], timeout_s: float) -> _Replica:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        views = [r.ask({"op": "status"}) for r in replicas]
        leaders = {v["leader"] for v in views}
        if len(leaders) == 1 and None not in leaders:
            (leader,) = leaders
            for replica, view in zip(replicas, views, strict=True):
                if view["self"] == leader and view["ready"] and view["partners_connected"] == REPLICAS - 1:
                    return replica
        time.sleep(POLL_INTERVAL_S)
    raise BenchError(f"pysyncobj: no leader within {timeout_s} s")


def run_pysyncobj(workload: Workload, timing: Timing, *, batch: bool = True,
                  parent_dir: str | None = None) -> dict[str, float]:
    """One measurement on a fresh 3-replica PySyncObj cluster."""
    version()
    ports = free_ports(REPLICAS)
    with scratch_dir(parent_dir, "rsm-bench-peers-pysyncobj-") as root, Children() as children:
        replicas = []
        for i, port in enumerate(ports):
            partners = ",".join(str(p) for p in ports if p != port)
            argv = [sys.executable, "-m", "benchmarks.peers.pysyncobj_bench", "--port", str(port),
                    "--partners", partners, *([] if batch else ["--no-batch"])]
            log_path = root / f"r{i + 1}.log"
            with open(log_path, "ab") as log:
                proc = children.spawn(argv, log=log, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            replica = _Replica(proc, log_path)
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if "started" not in line:
                raise BenchError(f"pysyncobj replica did not start: {line!r}\n{log_tail(log_path)}")
            replicas.append(replica)
        leader = _wait_for_leader(replicas, timing.startup_timeout_s)
        result = leader.ask({"op": "run", "workload": {"name": workload.name, "payload_bytes": workload.payload_bytes,
                                                       "in_flight": workload.in_flight},
                             "timing": {"warmup_s": timing.warmup_s, "measure_s": timing.measure_s,
                                        "startup_timeout_s": timing.startup_timeout_s,
                                        "drain_timeout_s": timing.drain_timeout_s}})
        count = leader.ask({"op": "count"})["value"]
        if count != result["completed"]:
            raise BenchError(f"pysyncobj: counter is {count} after {result['completed']} completed increments")
        return {k: result[k] for k in ("throughput_per_s", "p50_ms", "p99_ms")}


if __name__ == "__main__":
    sys.exit(_replica_main(sys.argv[1:]))
