"""Property-based fuzzing of every endpoint that takes a body, against a real proxy.

Bodies are generated from each endpoint's schema (valid values, and for every field wrong types,
huge numbers, nesting) plus byte-level mutations (invalid UTF-8, truncated JSON, deep nesting).
Whatever is sent, the proxy answers without a 5xx of its own, with no traceback, and every error
in the surface's own shape. ``LLMRELAY_FUZZ_CASES`` sets the number of cases for the whole module
(default 480, a few seconds); the long run is ``LLMRELAY_FUZZ_CASES=12000 pytest tests/e2e/test_fuzz.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.mock_upstream import MockOpenAI
from tests.servers import ProxyProcess

MASTER = "sk-fuzz"
HUGE = [1e308, -1e308, 2**63, -(2**63) - 1, 2**64, 1e19, 5e-324, -0.0, 10**30]
MSG = [{"role": "user", "content": "hi"}]

#: path -> (valid base body, {field: strategy of valid values}), per surface.
OPENAI_BODIES: dict[str, tuple[dict[str, Any], dict[str, st.SearchStrategy[Any]]]] = {
    "/v1/chat/completions": ({"model": "demo", "messages": MSG}, {
        "model": st.sampled_from(["demo", "up", "missing"]), "messages": st.just(MSG),
        "stream": st.booleans(), "n": st.integers(1, 3), "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1), "max_tokens": st.integers(1, 50), "seed": st.integers(0, 99),
        "presence_penalty": st.floats(-2, 2), "frequency_penalty": st.floats(-2, 2),
        "logit_bias": st.dictionaries(st.sampled_from(["1", "50256"]), st.integers(-100, 100)),
        "stop": st.lists(st.text(max_size=5), max_size=3), "user": st.text(max_size=10),
        "tools": st.just([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]),
        "stream_options": st.just({"include_usage": True}), "metadata": st.dictionaries(st.text(max_size=5),
                                                                                        st.text(max_size=5)),
        "num_retries": st.integers(0, 2), "timeout": st.floats(1, 30), "mock_response": st.text(max_size=20),
        "response_format": st.just({"type": "json_object"}), "top_logprobs": st.integers(0, 20),
    }),
    "/v1/completions": ({"model": "demo", "prompt": "hi"}, {
        "model": st.sampled_from(["demo", "up"]), "prompt": st.one_of(st.text(max_size=20),
                                                                      st.lists(st.text(max_size=5), max_size=3)),
        "max_tokens": st.integers(1, 50), "best_of": st.integers(1, 3), "logprobs": st.integers(0, 5),
        "echo": st.booleans(), "stream": st.booleans(), "temperature": st.floats(0, 2),
    }),
    "/v1/embeddings": ({"model": "demo", "input": "hi"}, {
        "model": st.sampled_from(["demo", "up"]), "input": st.one_of(st.text(max_size=20),
                                                                     st.lists(st.text(max_size=5), max_size=3)),
        "dimensions": st.integers(1, 16), "encoding_format": st.sampled_from(["float", "base64"]),
    }),
    "/v1/moderations": ({"model": "up", "input": "hi"}, {"input": st.text(max_size=20)}),
    "/utils/token_counter": ({"model": "demo", "messages": MSG}, {
        "model": st.sampled_from(["demo", "gpt-4o", "x"]), "messages": st.just(MSG),
        "prompt": st.text(max_size=20)}),
    "/route/explain": ({"model": "demo", "messages": MSG}, {"model": st.sampled_from(["demo", "up"])}),
    "/key/generate": ({"models": ["demo"]}, {
        "models": st.lists(st.sampled_from(["demo", "up", "*"]), max_size=2), "max_budget": st.floats(0, 100),
        "budget_duration": st.sampled_from(["1h", "30d", "1mo"]), "duration": st.sampled_from(["1h", "7d"]),
        "rpm_limit": st.integers(0, 100), "tpm_limit": st.integers(0, 10**6), "key_alias": st.text(max_size=8),
        "max_parallel_requests": st.integers(0, 10), "metadata": st.just({"a": 1}), "team_id": st.text(max_size=5),
    }),
    "/key/update": ({"key": "sk-missing"}, {"max_budget": st.floats(0, 100), "rpm_limit": st.integers(0, 10)}),
    "/team/new": ({"team_alias": "t"}, {
        "team_alias": st.text(max_size=8), "max_budget": st.floats(0, 100), "rpm_limit": st.integers(0, 100),
        "members_with_roles": st.just([{"role": "user", "user_id": "u1"}]),
        "models": st.lists(st.sampled_from(["demo", "up"]), max_size=2)}),
    "/model/new": ({"model_name": "fz", "litellm_params": {"model": "openai/fz", "mock_response": "x"}}, {
        "model_name": st.text(max_size=8), "model_info": st.just({"max_input_tokens": 100}),
        "litellm_params": st.just({"model": "openai/fz", "mock_response": "x", "rpm": 5})}),
}
ANTHROPIC_BODIES = {
    "/v1/messages": ({"model": "demo", "max_tokens": 16, "messages": MSG}, {
        "model": st.sampled_from(["demo", "up"]), "max_tokens": st.integers(1, 50), "stream": st.booleans(),
        "system": st.text(max_size=10), "temperature": st.floats(0, 1), "top_k": st.integers(0, 50),
        "stop_sequences": st.lists(st.text(max_size=4), max_size=2), "messages": st.just(MSG),
        "tools": st.just([{"name": "f", "input_schema": {"type": "object"}}])}),
    "/v1/messages/count_tokens": ({"model": "demo", "messages": MSG}, {"system": st.text(max_size=10)}),
}
ENDPOINTS = {**OPENAI_BODIES, **ANTHROPIC_BODIES}
CASES = int(os.environ.get("LLMRELAY_FUZZ_CASES", "480"))
PER_ENDPOINT = max(10, CASES // len(ENDPOINTS))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.sampled_from(HUGE)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def bodies(draw: st.DrawFn, path: str) -> bytes:
    """A body for ``path``: its base with fields set to valid or hostile values, maybe mangled."""
    base, fields = ENDPOINTS[path]
    body = dict(base)
    names = sorted(fields)
    for name in draw(st.lists(st.sampled_from(names), max_size=4, unique=True)):
        body[name] = draw(st.one_of(fields[name], fields[name], json_values))
    if draw(st.booleans()):
        for name in draw(st.lists(st.sampled_from([*names, "messages", "model", "input"]), max_size=2)):
            body[name] = draw(st.one_of(json_values, st.sampled_from(HUGE)))
    if draw(st.integers(0, 9)) == 0:
        del body[draw(st.sampled_from(sorted(body)))]
    # stdlib json: it writes integers of any size; lone surrogates become invalid UTF-8
    raw = json.dumps(body, ensure_ascii=draw(st.booleans()), allow_nan=False).encode("utf-8", "surrogatepass")
    mangle = draw(st.sampled_from(["none"] * 6 + ["truncate", "utf8", "nest", "top"]))
    if mangle == "truncate":
        raw = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    elif mangle == "utf8":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x00"])) + raw[at:]
    elif mangle == "nest":
        depth = draw(st.integers(100, 5000))
        raw = raw[:-1] + b', "deep": ' + b"[" * depth + b"]" * depth + b"}"
    elif mangle == "top":
        raw = draw(st.sampled_from([b"[]", b"null", b"1e999", b'"x"', b"", b"{", b"123456789012345678901234567890"]))
    return raw


@pytest.fixture(scope="module")
def proxy(upstream: MockOpenAI) -> Iterator[ProxyProcess]:
    config = {
        "model_list": [
            {"model_name": "demo", "litellm_params": {"model": "openai/demo", "mock_response": "hello there"}},
            {"model_name": "up", "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": upstream.url,
                                                    "api_key": "sk-upstream"}},
        ],
        "general_settings": {"master_key": MASTER, "max_request_size_mb": 1},
    }
    with ProxyProcess(config) as server:
        yield server


def check(path: str, resp: requests.Response) -> None:
    text = resp.text
    assert resp.status_code < 500, f"{path} -> {resp.status_code}: {text[:500]}"
    assert "Traceback" not in text and 'File "' not in text, text[:500]
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        assert resp.status_code == 200
        for line in text.split("\n"):  # SSE lines end at \n only (str.splitlines also cuts at U+0085)
            if line.startswith("data: ") and line != "data: [DONE]":
                orjson.loads(line[6:])
        return
    body = resp.json()
    if resp.status_code < 400:
        return
    if path in ANTHROPIC_BODIES:
        assert body["type"] == "error" and set(body["error"]) >= {"type", "message"}, body
    else:
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
        assert isinstance(body["error"]["message"], str)


@pytest.mark.parametrize("path", sorted(ENDPOINTS))
def test_no_body_makes_the_proxy_fail(proxy: ProxyProcess, path: str) -> None:
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {MASTER}", "Content-Type": "application/json"})

    @settings(max_examples=PER_ENDPOINT, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(raw=bodies(path))
    def one(raw: bytes) -> None:
        check(path, session.post(proxy.url + path, data=raw, timeout=30))

    one()
    assert requests.get(f"{proxy.url}/health/liveliness", timeout=5).status_code == 200
