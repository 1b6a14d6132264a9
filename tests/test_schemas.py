"""Request schemas: the fast path accepts exactly what marshmallow accepts unchanged."""

from __future__ import annotations

import orjson
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


STRICT_CASES = [
    ("chat", "max_tokens", 1e308), ("chat", "max_tokens", 2.0), ("chat", "max_tokens", 0),
    ("chat", "max_tokens", 2**40), ("chat", "max_tokens", "10"), ("chat", "max_completion_tokens", -1),
    ("chat", "n", 0), ("chat", "n", 1000), ("chat", "n", True), ("chat", "temperature", 2.5),
    ("chat", "temperature", -0.1), ("chat", "temperature", 1e308), ("chat", "temperature", [1]),
    ("chat", "top_p", 1.5), ("chat", "presence_penalty", 3), ("chat", "frequency_penalty", -2.01),
    ("chat", "seed", 1.5), ("chat", "seed", 1e30), ("chat", "logit_bias", {"50256": 101}),
    ("chat", "logit_bias", {"50256": "x"}), ("chat", "logit_bias", [1]), ("chat", "top_logprobs", 21),
    ("chat", "top_k", -1), ("chat", "num_retries", 1e9), ("chat", "timeout", 0), ("chat", "timeout", 1e308),
    ("completion", "best_of", 0), ("completion", "logprobs", 6), ("completion", "max_tokens", 1e308),
    ("completion", "temperature", 9), ("embedding", "dimensions", 0), ("embedding", "dimensions", 1e10),
]


@pytest.mark.parametrize(("kind", "field", "value"), STRICT_CASES)
def test_numeric_fields_are_strict_and_the_400_names_the_field(kind, field, value) -> None:
    from proxy.api.openai import parse_body
    from proxy.errors import BadRequest

    body = {"model": "m", "messages": MSG, "prompt": "p", "input": "i", field: value}
    with pytest.raises(BadRequest) as caught:
        parse_body(kind, orjson.dumps(body))
    assert caught.value.status == 400 and caught.value.param == field


@pytest.mark.parametrize(("field", "value"), [
    ("max_tokens", 1), ("max_tokens", 2**31 - 1), ("n", 128), ("temperature", 0), ("temperature", 2),
    ("top_p", 0.5), ("seed", -(2**63)), ("seed", 2**63 - 1), ("logit_bias", {"1": -100, "2": 100.0}),
    ("presence_penalty", -2), ("num_retries", 3), ("timeout", 0.5), ("max_completion_tokens", None),
])
def test_values_in_range_pass_unchanged(field, value) -> None:
    from proxy.api.openai import parse_body

    body = {"model": "m", "messages": MSG, field: value}
    assert parse_body("chat", orjson.dumps(body))[field] == value


@pytest.mark.parametrize("path", ["/v1/embeddings", "/v1/moderations"])
def test_a_stream_asked_of_embeddings_or_moderations_is_a_400_not_an_sse_error(path: str) -> None:
    """Found by schemathesis: "stream": true got a 200 text/event-stream holding an error event."""
    from proxy.app import create_app
    from tests.helpers import mock_model

    client = create_app({"model_list": [mock_model("m")]}, live=False).test_client()
    resp = client.post(path, json={"model": "m", "input": "hi", "stream": True})
    assert resp.status_code == 400 and resp.mimetype == "application/json"
    assert resp.get_json()["error"]["param"] == "stream"
    plain = client.post(path, json={"model": "m", "input": "hi", "stream": False})
    assert plain.status_code == 200 or plain.get_json()["error"]["param"] != "stream"
