"""The event loop rsm runs on: uvloop when it is installed, asyncio's otherwise.

uvloop (the `fast` extra) roughly halves the cost of each socket operation,
which is most of what a replica and a client do per command. Nothing in rsm
depends on it: every code path runs on the standard loop too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_uvloop: Any
try:
    import uvloop as _uvloop
except ImportError:  # pragma: no cover - depends on the installed extras
    _uvloop = None


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion on a new loop (uvloop if installed)."""
    if _uvloop is not None:
        result: T = _uvloop.run(coro)
        return result
    return asyncio.run(coro)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new loop (uvloop if installed), for a thread that runs one itself."""
    if _uvloop is not None:
        loop: asyncio.AbstractEventLoop = _uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()
