"""Request schemas: the fast path accepts exactly what marshmallow accepts unchanged."""

from __future__ import annotations

import pytest
from marshmallow import ValidationError

from proxy.api.schemas import SCHEMAS

MSG = [{"role": "user", "content": "hi"}]
BODIES = [
    {"model": "m", "messages": MSG},
    {"model": "m", "messages": MSG, "temperature": 1, "n": 2, "stream": True, "tools": [{"type": "function"}]},
    {"model": "m", "messages": MSG, "temperature": "0.5"},
    {"model": "m", "messages": MSG, "n": True},
    {"model": "m", "messages": MSG, "n": 0},
    {"model": "m", "messages": []},
    {"model": "m", "messages": [{"content": "no role"}]},
    {"model": "m", "messages": "hi"},
    {"model": "", "messages": MSG},
    {"messages": MSG},
    {"model": "m", "messages": MSG, "stream": None, "metadata": {"a": 1}, "unknown_param": [1]},
    {"model": "m", "messages": MSG, "stream": "yes"},
]


@pytest.mark.parametrize("body", BODIES)
def test_fast_path_agrees_with_marshmallow(body) -> None:
    loader = SCHEMAS["chat"]
    try:
        expected = loader.schema.load(dict(body))
    except ValidationError as exc:
        expected = exc
    if loader.plainly_valid(dict(body)):
        assert not isinstance(expected, ValidationError)
        assert expected == body  # marshmallow would not have changed it either
    try:
        got = loader.load(dict(body))
    except ValidationError as exc:
        assert isinstance(expected, ValidationError) and exc.messages == expected.messages
    else:
        assert got == expected
