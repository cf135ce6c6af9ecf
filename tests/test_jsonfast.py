"""orjson on the hot path reads and writes every document as the stdlib did."""

from __future__ import annotations

import json

import pytest

from gateway.jsonfast import canonical, dumps, fast_loads, loads


@pytest.mark.parametrize(
    "doc",
    [
        b'{"a":1,"a":2}',
        b'{"n":123456789012345678901234567890}',
        b'{"x":NaN,"y":-Infinity}',
        b'{"s":"\\ud800"}',
        b'{"f":1e400,"g":-0.0,"h":0.1}',
        b'{"u":"caf\\u00e9 \\u0000"}',
        b"[1, 2, 3]",
    ],
)
def test_loads_reads_as_the_stdlib(doc: bytes) -> None:
    want = json.loads(doc)
    got = loads(doc)
    assert repr(got) == repr(want)  # repr: NaN != NaN, and an int must stay an int
    assert repr(loads(doc.decode())) == repr(want)


def test_malformed_is_a_value_error() -> None:
    for bad in (b"", b"{", b"\xff{}", b'{"a":}'):
        with pytest.raises(ValueError):
            loads(bad)


def test_fast_loads_refuses_what_it_might_read_differently() -> None:
    with pytest.raises(ValueError):
        fast_loads(b'{"n":1234567890123456789}')
    assert fast_loads(b'{"n":123456789012345678}') == {"n": 123456789012345678}


def test_dumps_and_canonical() -> None:
    obj = {"b": [1, 2.5, None, True], "a": "é"}
    assert json.loads(dumps(obj)) == obj
    assert json.loads(dumps({1: "x", "s": "\ud800"})) == {"1": "x", "s": "\ud800"}  # stdlib
    assert canonical({"b": 1, "a": {"d": 2, "c": 3}}) == b'{"a":{"c":3,"d":2},"b":1}'
    assert canonical({"b": 1, "a": 2}) == canonical({"a": 2, "b": 1})
    assert canonical({"s": "\ud800"}) != canonical({"s": "x"})
