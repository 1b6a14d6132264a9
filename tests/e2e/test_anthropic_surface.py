"""End to end: the official anthropic SDK -> llmrelay's /v1/messages (gunicorn+gevent) -> any deployment.

The same Messages API calls are served by an OpenAI deployment (the mock OpenAI upstream) and by
an Anthropic deployment (the mock Anthropic upstream), so both translations run in each direction.
"""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import orjson
import pytest
import requests

from tests.mock_upstream import MockOpenAI
from tests.mock_upstream.anthropic import MockAnthropic
from tests.servers import ProxyProcess

MASTER = "sk-master-anthropic-e2e"
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}

@pytest.fixture(scope="module")
def anthropic_upstream() -> Iterator[MockAnthropic]:
    with MockAnthropic(api_key="sk-ant-upstream") as server:
        yield server


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def proxy(request: pytest.FixtureRequest, upstream: MockOpenAI,
          anthropic_upstream: MockAnthropic) -> Iterator[ProxyProcess]:
    config = {
        "model_list": [
            {"model_name": "gpt-4o-mini", "litellm_params": {
                "model": "openai/gpt-4o-mini", "api_base": upstream.url, "api_key": "sk-upstream"}},
            {"model_name": "claude-native", "litellm_params": {
                "model": "anthropic/claude-3-5-sonnet-20241022", "api_base": anthropic_upstream.url,
                "api_key": "sk-ant-upstream"}},
            {"model_name": "demo", "litellm_params": {"model": "openai/demo", "mock_response": "hi there"}},
        ],
        "general_settings": {"master_key": MASTER},
    }
    with ProxyProcess(config, workers=request.param) as server:
        yield server


@pytest.fixture
def client(proxy: ProxyProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=MASTER, base_url=proxy.url, max_retries=0)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_create_text(client, upstream) -> None:
    upstream.clear()
    raw = client.messages.with_raw_response.create(model="gpt-4o-mini", max_tokens=100, messages=user("hello proxy"),
                                                   stop_sequences=["END"], extra_body={"temperature": 0.2})
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant" and message.model == "gpt-4o-mini"
    assert message.id.startswith("msg_")
    assert [b.type for b in message.content] == ["text"] and message.content[0].text == "echo: hello proxy"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (2, 3)
    assert raw.headers["x-litellm-model-group"] == "gpt-4o-mini" and "upstream;dur=" in raw.headers["server-timing"]
    body = upstream.requests()[-1]["body"]
    assert body["max_tokens"] == 100 and body["temperature"] == 0.2 and body["stop"] == ["END"]
    assert body["messages"] == [{"role": "user", "content": "hello proxy"}]


def test_system_prompt_reaches_upstream_as_system_message(client, upstream) -> None:
    upstream.clear()
    message = client.messages.create(
        model="gpt-4o-mini", max_tokens=50, system=[{"type": "text", "text": "Be brief."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    assert message.content[0].text == "echo: hi" and message.usage.input_tokens == 3
    assert upstream.requests()[-1]["body"]["messages"] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]


def test_stream_text(client, upstream) -> None:
    upstream.clear()
    with client.messages.stream(model="gpt-4o-mini", max_tokens=100, system="Be brief.",
                                messages=user("one two three")) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: one two three"
    assert final.content[0].text == text and final.stop_reason == "end_turn" and final.model == "gpt-4o-mini"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (5, 4)
    assert upstream.requests()[-1]["body"]["stream_options"] == {"include_usage": True}


def test_stream_raw_events_in_documented_order(client, proxy) -> None:
    events = [e.type for e in client.messages.create(model="gpt-4o-mini", max_tokens=100,
                                                      messages=user("a b"), stream=True)]
    assert events == ["message_start", "content_block_start", *["content_block_delta"] * 3,
                      "content_block_stop", "message_delta", "message_stop"]  # the SDK skips ping
    r = requests.post(f"{proxy.url}/v1/messages", headers={"x-api-key": MASTER},
                      json={"model": "gpt-4o-mini", "max_tokens": 10, "stream": True, "messages": user("a")})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    frames = [f.split("\n") for f in r.text.split("\n\n") if f]
    assert [f[0] for f in frames[:3]] == ["event: message_start", "event: content_block_start", "event: ping"]
    assert all(orjson.loads(f[1].removeprefix("data: "))["type"] == f[0].removeprefix("event: ") for f in frames)


def test_tool_use_round_trip(client, upstream) -> None:
    upstream.clear()
    asked = user("What is the weather in Paris?")
    first = client.messages.create(model="gpt-4o-mini", max_tokens=200, tools=[WEATHER], messages=asked,
                                   tool_choice={"type": "auto"})
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "get_weather" and call.input == {"location": "mock"}
    sent = upstream.requests()[-1]["body"]
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": WEATHER["description"], "parameters": WEATHER["input_schema"]}}]
    assert sent["tool_choice"] == "auto"

    second = client.messages.create(
        model="gpt-4o-mini", max_tokens=200, tools=[WEATHER],
        messages=[*asked, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                "content": "15 degrees"}]}])
    assert second.stop_reason == "end_turn" and second.content[0].text == "echo: 15 degrees"
    history = upstream.requests()[-1]["body"]["messages"]
    assert history[1]["tool_calls"][0]["id"] == call.id
    assert orjson.loads(history[1]["tool_calls"][0]["function"]["arguments"]) == {"location": "mock"}
    assert history[2] == {"role": "tool", "tool_call_id": call.id, "content": "15 degrees"}


def test_stream_tool_use(client) -> None:
    with client.messages.stream(model="gpt-4o-mini", max_tokens=200, tools=[WEATHER],
                                tool_choice={"type": "tool", "name": "get_weather"},
                                messages=user("weather?")) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [(b.type, b.name, b.input) for b in final.content] == [("tool_use", "get_weather", {"location": "mock"})]


def test_anthropic_deployment_behind_the_anthropic_surface(client, anthropic_upstream) -> None:
    anthropic_upstream.clear()
    message = client.messages.create(model="claude-native", max_tokens=100, system="Be brief.",
                                     messages=user("hello there"))
    assert message.content[0].text == "echo: hello there" and message.model == "claude-native"
    assert message.usage.output_tokens == 3
    sent = anthropic_upstream.requests()[-1]["body"]
    assert sent["system"] == "Be brief." and sent["model"] == "claude-3-5-sonnet-20241022"
    with client.messages.stream(model="claude-native", max_tokens=100, tools=[WEATHER],
                                messages=user("weather?"), tool_choice={"type": "any"}) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[0].input == {"location": "mock"}


def test_mock_response_deployment(client) -> None:
    message = client.messages.create(model="demo", max_tokens=10, messages=user("hello"))
    assert message.content[0].text == "hi there" and message.usage.output_tokens == 2
    with client.messages.stream(model="demo", max_tokens=10, messages=user("hello")) as stream:
        assert "".join(stream.text_stream) == "hi there"


def test_count_tokens(client) -> None:
    counted = client.messages.count_tokens(model="gpt-4o-mini", system="Be brief.", tools=[WEATHER],
                                           messages=user("How many tokens is this?"))
    assert counted.input_tokens > 10


def test_errors_are_typed_by_the_sdk(client, proxy) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model="nope", max_tokens=10, messages=user("x"))
    assert info.value.body["type"] == "error" and info.value.body["error"]["type"] == "invalid_request_error"
    assert "gpt-4o-mini" in info.value.body["error"]["message"]
    wrong = anthropic.Anthropic(api_key="sk-wrong", base_url=proxy.url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.create(model="gpt-4o-mini", max_tokens=10, messages=user("x"))
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(model="gpt-4o-mini", max_tokens=10, messages=user("x"),
                               extra_body={"mock_controls": {"status": 429, "retry_after": 7}})
    assert limited.value.response.headers["retry-after"] == "7"
    r = requests.post(f"{proxy.url}/v1/messages", headers={"x-api-key": MASTER},
                      json={"model": "gpt-4o-mini", "messages": user("x")})
    assert r.status_code == 400 and r.json() == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "max_tokens: Field required (an integer of at least 1)"}}


def test_mid_stream_error_is_an_error_event(client, proxy) -> None:
    stream = client.messages.stream(model="gpt-4o-mini", max_tokens=50, messages=user("a b c d e"),
                                    extra_body={"mock_controls": {"stream_error_after": 2}})
    with pytest.raises(anthropic.APIStatusError) as info, stream as events:
        for _ in events.text_stream:
            pass
    assert info.value.body["type"] == "error"
    r = requests.post(f"{proxy.url}/messages", headers={"Authorization": f"Bearer {MASTER}"},
                      json={"model": "gpt-4o-mini", "max_tokens": 50, "stream": True, "messages": user("a b c"),
                            "mock_controls": {"stream_error_after": 2}})
    last = r.text.rstrip("\n").split("\n\n")[-1].split("\n")
    assert last[0] == "event: error" and orjson.loads(last[1].removeprefix("data: "))["type"] == "error"


def test_anthropic_base_url_of_a_litellm_proxy(proxy, upstream, anthropic_upstream) -> None:
    """Anthropic SDK users point base_url at <proxy>/anthropic; the same surface answers there."""
    client = anthropic.Anthropic(api_key=MASTER, base_url=f"{proxy.url}/anthropic", max_retries=0)
    for model, mock in (("gpt-4o-mini", upstream), ("claude-native", anthropic_upstream)):
        mock.clear()
        message = client.messages.create(model=model, max_tokens=50, messages=user("under the prefix"))
        assert message.type == "message" and message.content[0].text == "echo: under the prefix", model
        assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
        with client.messages.stream(model=model, max_tokens=50, messages=user("streamed too")) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text == "echo: streamed too" and final.stop_reason == "end_turn", model
        assert len(mock.requests()) == 2  # both calls reached the deployment's upstream
    counted = client.messages.count_tokens(model="gpt-4o-mini", messages=user("hello world"))
    direct = anthropic.Anthropic(api_key=MASTER, base_url=proxy.url, max_retries=0)
    assert counted.input_tokens == direct.messages.count_tokens(model="gpt-4o-mini",
                                                                messages=user("hello world")).input_tokens > 0
    with pytest.raises(anthropic.BadRequestError) as info:  # errors in Anthropic's shape here too
        client.messages.create(model="no-such-model", max_tokens=5, messages=user("x"))
    assert info.value.body["type"] == "error" and "gpt-4o-mini" in info.value.body["error"]["message"]
