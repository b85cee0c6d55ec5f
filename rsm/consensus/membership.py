"""Encoding of membership configurations carried in CONFIG log entries."""

from __future__ import annotations

import msgpack

from rsm.consensus.types import ConfState


def encode_conf(conf: ConfState) -> bytes:
    """Deterministic bytes for a configuration (sorted member lists)."""
    return msgpack.packb({"v": sorted(conf.voters), "l": sorted(conf.learners)})


def decode_conf(data: bytes) -> ConfState:
    raw = msgpack.unpackb(data, raw=False)
    if not isinstance(raw, dict) or not isinstance(raw.get("v"), list) or not isinstance(raw.get("l"), list):
        raise ValueError("malformed configuration entry")
    voters = raw["v"]
    learners = raw["l"]
    if not all(isinstance(x, str) for x in voters + learners):
        raise ValueError("malformed configuration entry: member ids must be strings")
    return ConfState(voters=frozenset(voters), learners=frozenset(learners))
