"""Storage backends: in-memory (simulation, tests) and LMDB (production)."""
