"""The client protocol: what a client and a replica say over a client connection.

Frames are authenticated by `rsm.net` (HMAC handshake); their payload is one
msgpack array.

Request ``[request_id, kind, *body]``:

- ``[id, "submit", payload]``: a command or session entry (`rsm.statemachine`
  payloads: `encode_call` for a command, `encode_register_session`, ...) to go
  through the log. Answered once it is applied on this replica.
- ``[id, "query", payload, consistency]``: a query; consistency is
  ``"linearizable"`` (ReadIndex; any replica may serve it) or ``"stale"``
  (served at once from this replica's state).
- ``[id, "status"]``: this replica's view of the group.

Response ``[request_id, code, value]``:

====================  ======================================================
``OK`` (0)            value: the host's encoded result (`decode_result`), or
                      the status map
``NOT_LEADER`` (1)    value: ``[leader_id or None, leader client address or None]``
``BUSY`` (2)          value: a message; the replica is overloaded, retry later
``UNAVAILABLE`` (3)   value: a message; no leader, or leadership was lost before
                      the request finished; retry (a command keeps its session
                      and sequence number, so a retry is applied at most once)
``BAD_REQUEST`` (4)   value: a message; the request itself is malformed
====================  ======================================================

Every decoder checks shapes and types and raises `ProtocolError`.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs
import msgpack

from rsm.errors import RsmError

#: Largest request id; ids are chosen by the client and echoed back.
REQUEST_ID_MAX = 2**63 - 1
CONSISTENCIES = ("linearizable", "stale")


class ProtocolError(RsmError):
    """A client frame that does not follow the protocol."""


class Code(enum.IntEnum):
    OK = 0
    NOT_LEADER = 1
    BUSY = 2
    UNAVAILABLE = 3
    BAD_REQUEST = 4


@attrs.frozen(slots=True)
class Request:
    request_id: int
    kind: str  # "submit" | "query" | "status"
    payload: bytes = b""
    consistency: str = "linearizable"


@attrs.frozen(slots=True)
class Response:
    request_id: int
    code: Code
    value: Any = None


_packer = msgpack.Packer(use_bin_type=True)


def encode_request(request: Request) -> bytes:
    if request.kind == "submit":
        return bytes(_packer.pack([request.request_id, "submit", request.payload]))
    if request.kind == "query":
        return bytes(_packer.pack([request.request_id, "query", request.payload, request.consistency]))
    return bytes(_packer.pack([request.request_id, request.kind]))


def encode_submit(request_id: int, payload: bytes) -> bytes:
    """`encode_request(Request(request_id, "submit", payload))`, without the object."""
    return bytes(_packer.pack([request_id, "submit", payload]))


def _unpack(frame: bytes) -> Any:
    try:
        return msgpack.unpackb(frame, raw=False, strict_map_key=True, max_ext_len=0)
    except Exception as exc:  # msgpack raises several types; all mean "malformed"
        raise ProtocolError(f"malformed frame: {exc}") from exc


def _request_id(value: object) -> int:
    if type(value) is not int or not 0 <= value <= REQUEST_ID_MAX:
        raise ProtocolError("request id must be an int in [0, 2**63)")
    return value


def decode_submit(frame: bytes) -> tuple[int, bytes] | None:
    """(request id, payload) if `frame` is a well-formed submit, else None
    (then `decode_request` says what it is, or what is wrong with it). The
    replica's hot path: no `Request` object."""
    try:
        obj = _unpack(frame)
    except ProtocolError:
        return None
    if (type(obj) is list and len(obj) == 3 and obj[1] == "submit" and type(rid := obj[0]) is int
            and 0 <= rid <= REQUEST_ID_MAX and type(payload := obj[2]) is bytes):
        return rid, payload
    return None


def decode_request(frame: bytes) -> Request:
    obj = _unpack(frame)
    if not isinstance(obj, list) or len(obj) < 2:
        raise ProtocolError("a request is an array [id, kind, ...]")
    request_id = _request_id(obj[0])
    kind = obj[1]
    if kind == "submit" and len(obj) == 3 and type(obj[2]) is bytes:
        return Request(request_id, "submit", obj[2])
    if kind == "query" and len(obj) == 4 and type(obj[2]) is bytes and obj[3] in CONSISTENCIES:
        return Request(request_id, "query", obj[2], obj[3])
    if kind == "status" and len(obj) == 2:
        return Request(request_id, "status")
    raise ProtocolError(f"unknown or malformed request kind {kind!r}")


def encode_response(response: Response) -> bytes:
    return bytes(_packer.pack([response.request_id, int(response.code), response.value]))


def encode_ok(request_id: int, value: Any) -> bytes:
    """`encode_response(Response(request_id, Code.OK, value))`, without the object."""
    return bytes(_packer.pack([request_id, 0, value]))


def decode_response(frame: bytes) -> Response:
    obj = _unpack(frame)
    if not isinstance(obj, list) or len(obj) != 3:
        raise ProtocolError("a response is an array [id, code, value]")
    code = _CODES.get(obj[1]) if type(obj[1]) is int else None  # a dict lookup: Code(x) is slow
    if code is None:
        raise ProtocolError(f"unknown response code {obj[1]!r}")
    return Response(_request_id(obj[0]), code, obj[2])


_CODES = {int(code): code for code in Code}
