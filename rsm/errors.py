"""Exceptions rsm raises, grouped by who must act.

- `RsmError` subclasses named here are expected conditions a caller handles
  (not the leader, proposal dropped, compacted log).
- `InvariantViolation` is a broken invariant: the process must stop, never retry.
"""

from __future__ import annotations


class RsmError(Exception):
    """Base of every expected rsm error."""


class NotLeader(RsmError):
    """This node cannot accept the request; `leader_hint` is who might."""

    def __init__(self, leader_hint: str | None) -> None:
        super().__init__(f"not the leader (leader hint: {leader_hint or 'unknown'})")
        self.leader_hint = leader_hint


class ProposalDropped(RsmError):
    """The proposal was not appended (leadership transfer, full queue, too large)."""


class LogCompacted(RsmError):
    """The requested log index lies in a prefix replaced by a snapshot."""


class LogUnavailable(RsmError):
    """The requested log index is past the end of the log."""


class SnapshotUnavailable(RsmError):
    """The requested snapshot is no longer (or not yet) in the snapshot store."""


class ConfChangeRefused(RsmError):
    """A membership change or leadership transfer that is invalid or unsafe now."""


class ConfigError(RsmError):
    """A setting, or a relation between settings, is invalid."""


class InvariantViolation(AssertionError):
    """A condition that must always hold did not. Never caught, never retried."""


def invariant(condition: bool, message: str) -> None:
    """Check `condition` even under `python -O` (unlike `assert`)."""
    if not condition:
        raise InvariantViolation(message)
