"""rsm: total-order replicated state machines in Python.

Write a deterministic `StateMachine`, run it on N replicas (`rsm cluster up`),
and talk to it with a `Client`. See README.md and docs/.
"""

from rsm.errors import ConfChangeRefused, NotLeader, ProposalDropped, RsmError
from rsm.lmdb_machine import LMDBStateMachine
from rsm.statemachine import (
    ApplyContext,
    CommandError,
    MembershipView,
    StateMachine,
    command,
    query,
    register,
)

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # The client pulls in asyncio and the transport; import it only when asked.
    if name in ("Client", "AsyncClient"):
        from rsm import client

        return getattr(client, name)
    raise AttributeError(f"module 'rsm' has no attribute {name!r}")


__all__ = [
    "ApplyContext",
    "AsyncClient",
    "Client",
    "CommandError",
    "ConfChangeRefused",
    "LMDBStateMachine",
    "MembershipView",
    "NotLeader",
    "ProposalDropped",
    "RsmError",
    "StateMachine",
    "command",
    "query",
    "register",
]
