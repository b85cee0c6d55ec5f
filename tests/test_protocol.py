"""rsm.protocol: the client frames, both ways, and what malformed frames get."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rsm.protocol import (
    REQUEST_ID_MAX,
    Code,
    ProtocolError,
    Request,
    Response,
    decode_request,
    decode_response,
    encode_ok,
    encode_request,
    encode_response,
    encode_submit,
)


@pytest.mark.parametrize("request_", [
    Request(0, "submit", b"payload"),
    Request(REQUEST_ID_MAX, "query", b"q", "stale"),
    Request(7, "query", b"", "linearizable"),
    Request(9, "status"),
])
def test_requests_round_trip(request_: Request) -> None:
    assert request_ == decode_request(encode_request(request_))


@pytest.mark.parametrize("code", list(Code))
def test_responses_round_trip(code: Code) -> None:
    response = Response(12, code, [b"value", "text", None])
    decoded = decode_response(encode_response(response))
    assert response == decoded
    assert decoded.code is code


def test_fast_encoders_match_the_object_forms() -> None:
    assert encode_submit(5, b"abc") == encode_request(Request(5, "submit", b"abc"))
    assert encode_ok(2**40, b"result") == encode_response(Response(2**40, Code.OK, b"result"))
    assert encode_ok(3, None) == encode_response(Response(3, Code.OK, None))


@pytest.mark.parametrize("obj", [
    [1, 99, None],  # unknown code
    [1, -1, None],
    [1, True, None],  # a bool is not a code
    [1, "0", None],
    [-1, 0, None],  # bad request id
    [2**63, 0, None],
    [1, 0],  # wrong arity
    {"id": 1},
])
def test_malformed_responses_are_protocol_errors(obj: Any) -> None:
    with pytest.raises(ProtocolError):
        decode_response(msgpack.packb(obj))


@pytest.mark.parametrize("obj", [
    [1, "submit"],
    [1, "submit", "not bytes"],
    [1, "query", b"q", "eventual"],
    [1, "status", b"x"],
    [1, "nope"],
    [-5, "status"],
    "status",
])
def test_malformed_requests_are_protocol_errors(obj: Any) -> None:
    with pytest.raises(ProtocolError):
        decode_request(msgpack.packb(obj))


@given(st.binary(max_size=64))
@settings(max_examples=300)
def test_arbitrary_bytes_decode_or_raise_protocol_error_only(frame: bytes) -> None:
    for decode in (decode_request, decode_response):
        try:
            decode(frame)
        except ProtocolError:
            pass


def test_decode_submit_takes_exactly_the_well_formed_submits() -> None:
    from rsm.protocol import decode_submit

    assert (5, b"abc") == decode_submit(encode_submit(5, b"abc"))
    assert (REQUEST_ID_MAX, b"") == decode_submit(encode_submit(REQUEST_ID_MAX, b""))
    for obj in ([5, "submit", "text"], [-1, "submit", b"x"], [2**63, "submit", b"x"], [5, "query", b"q", "stale"],
                [5, "submit"], [5, "status"], [True, "submit", b"x"]):
        assert decode_submit(msgpack.packb(obj)) is None
    assert decode_submit(b"\xc1 not msgpack") is None


@given(st.binary(max_size=64))
@settings(max_examples=300)
def test_decode_submit_agrees_with_decode_request(frame: bytes) -> None:
    from rsm.protocol import decode_submit

    submit = decode_submit(frame)
    try:
        request: Request | None = decode_request(frame)
    except ProtocolError:
        request = None
    expected = (request.request_id, request.payload) if request and request.kind == "submit" else None
    assert expected == submit
