"""rsm against its peers: PySyncObj and etcd, same machine, same workloads.

The entry point is `benchmarks/peers.py` (`make bench-peers`); this package
holds one module per system, each with a ``run_<system>(workload, timing)``
that starts a fresh 3-replica cluster on 127.0.0.1, loads it, stops it and
returns ``{"throughput_per_s", "p50_ms", "p99_ms"}`` (or raises `Skipped`).

- `common`: workloads, timing, the latency recorder, child processes.
- `machine`: `BenchCounter`, the rsm machine the workloads call.
- `rsm_bench`, `pysyncobj_bench`, `etcd_bench`: one system each.

docs/performance.md says how to run and read the results.
"""
