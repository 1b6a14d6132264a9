"""Tests of the mock upstream itself: if its wire format drifts, end-to-end tests prove nothing."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import requests

from . import MockOpenAI

WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "required": ["city", "unit"],
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}}}}}


@pytest.fixture(scope="module")
def server() -> Iterator[MockOpenAI]:
    with MockOpenAI() as mock:
        yield mock


def chat(server: MockOpenAI, headers: dict[str, str] | None = None, **body: Any) -> requests.Response:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}], **body}
    return requests.post(server.url + "/chat/completions", json=body, headers=headers, timeout=10)


def events(response: requests.Response) -> list[Any]:
    """Parse an SSE body strictly: `data: ...` events separated by blank lines, ending in [DONE]."""
    text = response.text
    assert text.endswith("data: [DONE]\n\n")
    blocks = text[:-2].split("\n\n")
    assert all(block.startswith("data: ") and "\n" not in block for block in blocks)
    return [orjson.loads(b[6:]) for b in blocks[:-1]]


def test_chat_echoes_and_counts_words(server: MockOpenAI) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    data = chat(server, model="my-model", messages=messages).json()
    assert data["object"] == "chat.completion" and data["model"] == "my-model"
    choice = data["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "echo: hello there", "refusal": None}
    assert choice["finish_reason"] == "stop"
    usage = data["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (4, 3, 7)


def test_stream_chunks_role_first_then_words_finish_and_usage(server: MockOpenAI) -> None:
    response = chat(server, stream=True, stream_options={"include_usage": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = events(response)
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert text == "echo: hello there" and len(chunks) == 6  # role, 3 words, finish, usage
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-2]["usage"] is None
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


def test_tool_call_from_required_properties(server: MockOpenAI) -> None:
    choice = chat(server, tools=[WEATHER_TOOL]).json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "mock", "unit": "celsius"}

    chunks = events(chat(server, tools=[WEATHER_TOOL], stream=True))
    first = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert first["index"] == 0 and first["id"].startswith("call_") and first["function"]["name"] == "get_weather"
    arguments = "".join(c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in chunks[:-1])
    assert orjson.loads(arguments) == {"city": "mock", "unit": "celsius"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert chat(server, tools=[WEATHER_TOOL], tool_choice="none").json()["choices"][0]["finish_reason"] == "stop"


def test_429_with_retry_after_from_headers_or_body(server: MockOpenAI) -> None:
    response = chat(server, {"x-mock-status": "429", "x-mock-retry-after": "2"})
    assert response.status_code == 429 and response.headers["retry-after"] == "2"
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("requests", "rate_limit_exceeded", None)
    response = chat(server, mock_controls={"error": "context_length_exceeded"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "context_length_exceeded"


def test_fail_times_then_succeed_per_key(server: MockOpenAI) -> None:
    controls = {"x-mock-fail-times": "2", "x-mock-status": "503", "x-mock-fail-key": "retry-test"}
    assert [chat(server, controls).status_code for _ in range(3)] == [503, 503, 200]
    assert chat(server, {**controls, "x-mock-fail-key": "other"}).status_code == 503


def test_disconnect_drops_the_connection(server: MockOpenAI) -> None:
    with pytest.raises(requests.ConnectionError):
        chat(server, {"x-mock-disconnect": "1"})


def test_records_requests_and_checks_key() -> None:
    with MockOpenAI(api_key="sk-right") as mock:
        headers = {"Authorization": "Bearer sk-right", "OpenAI-Organization": "org-1"}
        assert chat(mock, headers, temperature=0.2, custom_field=[1]).status_code == 200
        wrong = chat(mock, {"Authorization": "Bearer sk-wrong"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        seen = mock.requests()
        assert [r["path"] for r in seen] == ["/v1/chat/completions"] * 2
        assert seen[0]["headers"]["openai-organization"] == "org-1"
        assert seen[0]["body"]["temperature"] == 0.2 and seen[0]["body"]["custom_field"] == [1]
        mock.clear()
        assert mock.requests() == []


def test_embeddings_float_and_base64_agree(server: MockOpenAI) -> None:
    def embed(**extra: Any) -> dict[str, Any]:
        body = {"model": "text-embedding-3-small", "input": ["a b", "c"], **extra}
        return requests.post(server.url + "/embeddings", json=body, timeout=10).json()
    floats, encoded = embed(), embed(encoding_format="base64")
    assert floats["object"] == "list" and floats["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    decoded = struct.unpack("<8f", base64.b64decode(encoded["data"][1]["embedding"]))
    assert decoded == pytest.approx(floats["data"][1]["embedding"], abs=1e-6)


def test_official_sdk_parses_the_stream(server: MockOpenAI) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.base_url, api_key="sk-any", max_retries=0)  # no /v1 prefix
    stream = client.chat.completions.create(model="gpt-4o-mini", stream=True,
                                            messages=[{"role": "user", "content": "hi"}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "echo: hi"
