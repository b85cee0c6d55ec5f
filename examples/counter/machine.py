"""The counter from the README: the whole of an in-memory state machine.

Its state is one int, so snapshots, restores and digests come for free.
"""

from rsm.statemachine import StateMachine, command, query


class Counter(StateMachine):
    def __init__(self) -> None:
        self.value = 0

    @command
    def increment(self, by: int = 1) -> int:
        self.value += by
        return self.value

    @query
    def get(self) -> int:
        return self.value
