"""The deterministic simulator: many consensus cores, one thread, one seed.

`python -m rsm.sim --seeds N` runs seeds and reports violations; see cluster.py.
"""

from rsm.sim.checks import Checker, Violation
from rsm.sim.cluster import SimOptions, SimResult, Simulation, run_seed, sim_config

__all__ = ["Checker", "SimOptions", "SimResult", "Simulation", "Violation", "run_seed", "sim_config"]
