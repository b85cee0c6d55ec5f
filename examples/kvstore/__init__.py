"""A key-value store on LMDB: put, get, delete, compare-and-set, scans, TTLs."""
