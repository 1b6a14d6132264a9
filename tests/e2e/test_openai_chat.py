"""End to end: the official openai SDK -> llmrelay (gunicorn+gevent) -> mock OpenAI upstream."""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import orjson
import pytest
import requests

from tests.mock_upstream import MockOpenAI
from tests.servers import ProxyProcess, free_port

MASTER = "sk-master-e2e"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def proxy(request: pytest.FixtureRequest, upstream: MockOpenAI) -> Iterator[ProxyProcess]:
    config = {
        "model_list": [
            {"model_name": "gpt-4o-mini", "litellm_params": {
                "model": "openai/gpt-4o-mini", "api_base": upstream.url, "api_key": "sk-upstream",
                "organization": "org-e2e", "extra_headers": {"X-Team": "blue"}, "seed": 7}},
            {"model_name": "wrong-key", "litellm_params": {
                "model": "openai/gpt-4o-mini", "api_base": upstream.url, "api_key": "sk-wrong"}},
            {"model_name": "refused", "litellm_params": {
                "model": "openai/gpt-4o-mini", "api_base": f"http://127.0.0.1:{free_port()}/v1",
                "api_key": "x"}},
            {"model_name": "tls-refused", "litellm_params": {
                "model": "openai/gpt-4o-mini", "api_base": f"https://127.0.0.1:{free_port()}/v1", "api_key": "x"}},
            {"model_name": "slow", "litellm_params": {
                "model": "openai/gpt-4o-mini", "api_base": upstream.url, "api_key": "sk-upstream",
                "timeout": 0.5}},
            {"model_name": "demo", "litellm_params": {"model": "openai/demo", "mock_response": "hi there"}},
        ],
        "general_settings": {"master_key": MASTER},
    }
    with ProxyProcess(config, workers=request.param) as server:
        yield server


@pytest.fixture
def client(proxy: ProxyProcess) -> openai.OpenAI:
    return openai.OpenAI(api_key=MASTER, base_url=f"{proxy.url}/v1", max_retries=0)


def last_request(upstream: MockOpenAI) -> dict:
    return upstream.requests()[-1]


def test_chat_reaches_upstream_with_deployment_params(client, upstream) -> None:
    upstream.clear()
    resp = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hello proxy"}],
        temperature=0.3,
        extra_body={"metadata": {"trace_id": "t-1"}, "top_k": 5},
    )
    assert resp.choices[0].message.content == "echo: hello proxy"
    assert resp.usage is not None and resp.usage.prompt_tokens == 2
    sent = last_request(upstream)
    assert sent["headers"]["authorization"] == "Bearer sk-upstream"
    assert sent["headers"]["openai-organization"] == "org-e2e"
    assert sent["headers"]["x-team"] == "blue"
    body = sent["body"]
    assert body["model"] == "gpt-4o-mini" and body["seed"] == 7 and body["temperature"] == 0.3
    assert body["top_k"] == 5  # unknown params pass through
    assert "metadata" not in body  # proxy-only field stays in the proxy


def test_client_value_wins_over_deployment_default(client, upstream) -> None:
    upstream.clear()
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], seed=99)
    assert last_request(upstream)["body"]["seed"] == 99


def test_streaming_chunks_and_done(client, proxy) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "one two three"}], stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    raw = requests.post(f"{proxy.url}/chat/completions", headers={"Authorization": f"Bearer {MASTER}"},
                        json={"model": "gpt-4o-mini", "stream": True,
                              "messages": [{"role": "user", "content": "a"}]})
    assert raw.headers["Content-Type"].startswith("text/event-stream")
    assert raw.headers["X-Accel-Buffering"] == "no"
    assert raw.text.rstrip().endswith("data: [DONE]")


def test_stream_chunks_are_forwarded_as_they_arrive(proxy) -> None:
    started = time.monotonic()
    arrivals = []
    with requests.post(
        f"{proxy.url}/v1/chat/completions", stream=True, headers={"Authorization": f"Bearer {MASTER}"},
        json={"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "a b c d"}],
              "mock_controls": {"chunk_delay": 0.25}},
    ) as resp:
        for line in resp.iter_lines():
            if line.startswith(b"data: {"):
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) >= 6
    # the first chunk left the proxy long before the last one was produced upstream
    assert arrivals[-1] - arrivals[0] > 1.0
    assert arrivals[0] < 0.6


def test_tools_and_tool_choice(client, upstream) -> None:
    upstream.clear()
    resp = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER],
        tool_choice="auto",
    )
    call = resp.choices[0].message.tool_calls[0]
    assert resp.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and orjson.loads(call.function.arguments) == {"city": "mock"}
    assert last_request(upstream)["body"]["tools"] == [WEATHER]
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER], stream=True)
    args = "".join(c.choices[0].delta.tool_calls[0].function.arguments or ""
                   for c in stream if c.choices and c.choices[0].delta.tool_calls)
    assert orjson.loads(args) == {"city": "mock"}


def test_mock_response_deployment(client) -> None:
    resp = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hello"}])
    assert resp.choices[0].message.content == "hi there"
    assert resp.usage.completion_tokens == 2 and resp.usage.prompt_tokens > 0
    chunks = list(client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "hello"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "hi there"


def test_models_list_and_health(client, proxy) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["gpt-4o-mini", "wrong-key", "refused", "tls-refused", "slow", "demo"]
    assert requests.get(f"{proxy.url}/health/liveliness").status_code == 200
    assert requests.get(f"{proxy.url}/health/readiness").json()["status"] == "healthy"
    assert requests.get(f"{proxy.url}/v1/models").status_code == 401


def test_server_timing_names_every_stage(proxy) -> None:
    resp = requests.post(f"{proxy.url}/v1/chat/completions", headers={"Authorization": f"Bearer {MASTER}"},
                         json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    names = [part.split(";")[0] for part in resp.headers["Server-Timing"].split(", ")]
    assert names == ["callbacks", "auth", "retry_fallback", "route", "drop_params", "prompt_template",
                     "upstream", "total"]


def err(resp: requests.Response) -> dict:
    body = resp.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def post(proxy: ProxyProcess, body: object, raw: bytes | None = None, key: str = MASTER) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    data = raw if raw is not None else orjson.dumps(body)
    return requests.post(f"{proxy.url}/v1/chat/completions", headers=headers, data=data, timeout=10)


def test_bad_input_is_a_clear_400(proxy) -> None:
    r = post(proxy, None, raw=b'{"model": "gpt-4o-mini", "messages": [')
    assert r.status_code == 400 and "not valid JSON" in err(r)["message"]
    r = post(proxy, {"model": "gpt-4o-mini"})
    assert r.status_code == 400 and err(r)["param"] == "messages"
    r = post(proxy, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "n": "two"})
    assert r.status_code == 400 and err(r)["param"] == "n"
    r = post(proxy, {"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    e = err(r)
    assert r.status_code == 400 and "gpt-4o-mini" in e["message"] and "demo" in e["message"]
    r = post(proxy, {"model": "demo", "messages": [{"role": "user", "content": "x"}]}, key="sk-wrong")
    assert r.status_code == 401 and err(r)["type"] == "authentication_error"


def with_controls(proxy: ProxyProcess, model: str = "gpt-4o-mini", **controls: object) -> requests.Response:
    return post(proxy, {"model": model, "messages": [{"role": "user", "content": "x"}],
                        "mock_controls": controls})


def test_upstream_errors_are_mapped(proxy) -> None:
    r = with_controls(proxy, status=429, retry_after=7)
    assert r.status_code == 429 and r.headers["Retry-After"] == "7" and err(r)["type"] == "rate_limit_error"
    r = with_controls(proxy, status=500)
    assert r.status_code == 500
    r = with_controls(proxy, status=503)
    assert r.status_code == 503
    r = with_controls(proxy, error="html")
    assert r.status_code == 502 and "Bad Gateway" in err(r)["message"]
    r = with_controls(proxy, error="context_length_exceeded")
    assert r.status_code == 400 and err(r)["code"] == "context_length_exceeded"
    r = with_controls(proxy, disconnect=True)
    assert r.status_code in (502, 503)
    r = post(proxy, {"model": "wrong-key", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 401


def test_timeouts_and_refused_connections(proxy) -> None:
    r = with_controls(proxy, model="slow", delay=2)
    assert r.status_code == 408 and "0.5s" in err(r)["message"]
    r = post(proxy, {"model": "refused", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 503 and "refused the connection" in err(r)["message"]
    # an HTTPS upstream: the worker builds a TLS context (which breaks if gevent patched ssl late)
    r = post(proxy, {"model": "tls-refused", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 503 and "refused the connection" in err(r)["message"]


def test_sdk_raises_typed_errors(client) -> None:
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                       extra_body={"mock_controls": {"status": 429}})
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found"


def test_mid_stream_error_becomes_an_error_event(proxy) -> None:
    r = requests.post(f"{proxy.url}/v1/chat/completions", headers={"Authorization": f"Bearer {MASTER}"},
                      json={"model": "gpt-4o-mini", "stream": True,
                            "messages": [{"role": "user", "content": "a b c d e"}],
                            "mock_controls": {"stream_error_after": 2}})
    events = [line for line in r.text.split("\n\n") if line]
    assert r.status_code == 200
    assert "error" in orjson.loads(events[-1][len("data: "):])
    assert "[DONE]" not in r.text
