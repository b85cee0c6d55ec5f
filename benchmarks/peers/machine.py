"""The state machine the rsm workloads call: a counter whose increment carries
an argument of any size, so a 10-byte and a 1 KB command cost what their
size costs (log, network, fsync) while apply stays trivial."""

from rsm.statemachine import StateMachine, command, query


class BenchCounter(StateMachine):
    def __init__(self) -> None:
        self.value = 0
        self.payload_bytes_total = 0

    @command
    def add(self, payload: bytes) -> int:
        """Count one call and the size of its argument; return the count."""
        self.value += 1
        self.payload_bytes_total += len(payload)
        return self.value

    @query
    def get(self) -> int:
        return self.value
