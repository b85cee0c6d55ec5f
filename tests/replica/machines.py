"""Machines for replica tests (imported by the replica processes)."""

from __future__ import annotations

import os

from rsm.statemachine import StateMachine, command, query


class Dice(StateMachine):
    """Non-deterministic on purpose: reads the OS's randomness in apply."""

    def __init__(self) -> None:
        self.total = 0

    @command
    def roll(self) -> int:
        self.total += os.urandom(1)[0]
        return self.total

    @query
    def get(self) -> int:
        return self.total
