"""Ollama adapters, fed with recorded Ollama payloads: requests built, answers and NDJSON streams
translated to OpenAI's shapes, errors mapped."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator

import orjson
import pytest

from middleware.prompt_template import render
from proxy.context import RequestContext
from proxy.deployment import Deployment
from proxy.errors import BadRequest, ContextWindowExceeded, NotFound, UpstreamError
from proxy.providers.base import Adapter
from proxy.providers.ollama import OllamaAdapter, OllamaChatAdapter
from proxy.providers.registry import ProviderRegistry
from proxy.transport import Transport
from tests.mock_upstream.prompt import MockPromptServers

# ruff: noqa: E501 - recorded payloads keep their lines whole, as they came over the wire
# /api/generate, stream: true (Ollama's docs, llama3.2): one JSON object per line, stats on the last.
GENERATE_STREAM = b"""{"model":"llama3.2","created_at":"2023-08-04T08:52:19.385406455-07:00","response":"The","done":false}
{"model":"llama3.2","created_at":"2023-08-04T08:52:19.405406455-07:00","response":" sky","done":false}
{"model":"llama3.2","created_at":"2023-08-04T08:52:19.425406455-07:00","response":" is blue.","done":false}
{"model":"llama3.2","created_at":"2023-08-04T19:22:45.499127Z","response":"","done":true,"done_reason":"stop","context":[1,2,3],"total_duration":10706818083,"load_duration":6338219291,"prompt_eval_count":26,"prompt_eval_duration":130079000,"eval_count":259,"eval_duration":4232710000}
"""
# /api/generate, stream: false.
GENERATE_ANSWER = b'{"model":"llama3.2","created_at":"2023-08-04T19:22:45.499127Z","response":"The sky is blue because it is the color of the sky.","done":true,"done_reason":"stop","context":[1,2,3],"total_duration":5043500667,"load_duration":5025959,"prompt_eval_count":26,"prompt_eval_duration":325953000,"eval_count":290,"eval_duration":4709213000}'
# /api/chat with tools, stream: false.
CHAT_TOOL_ANSWER = b'{"model":"llama3.2","created_at":"2024-07-22T20:33:28.123648Z","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"get_current_weather","arguments":{"format":"celsius","location":"Paris, FR"}}}]},"done_reason":"stop","done":true,"total_duration":885095291,"load_duration":3753500,"prompt_eval_count":122,"prompt_eval_duration":328493000,"eval_count":33,"eval_duration":552222000}'
# /api/chat, stream: true, a thinking model calling a tool.
CHAT_STREAM = b"""{"model":"qwen3","created_at":"2025-05-29T09:35:56.836222Z","message":{"role":"assistant","content":"","thinking":"The user wants weather."},"done":false}
{"model":"qwen3","created_at":"2025-05-29T09:35:57.010000Z","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"get_weather","arguments":{"city":"Paris"}}}]},"done":false}
{"model":"qwen3","created_at":"2025-05-29T09:35:57.200000Z","message":{"role":"assistant","content":""},"done_reason":"stop","done":true,"total_duration":2000000000,"prompt_eval_count":180,"eval_count":40}
"""
EMBED_ANSWER = b'{"model":"all-minilm","embeddings":[[0.010071029,-0.0017594862,0.05007221],[-0.0098027075,0.06042469,0.025257962]],"total_duration":14143917,"load_duration":1019500,"prompt_eval_count":8}'
TEMPLATE = {
    "roles": {"system": {"pre_message": "<|im_start|>system\n", "post_message": "<|im_end|>"},
              "user": {"pre_message": "<|im_start|>user\n", "post_message": "<|im_end|>"}},
    "initial_prompt_value": "\n", "final_prompt_value": "\n",
}


def make_deployment(adapter: Adapter, model: str, **params) -> Deployment:
    """A deployment built from a model_list entry, by a registry that knows ``adapter``."""
    registry = ProviderRegistry()
    registry.register(adapter)
    entry = {"model_name": "g", "litellm_params": {"model": f"{adapter.provider}/{model}", **params}}
    return Deployment.from_entry(entry, registry)


def chat(messages: list[dict] | None = None, **body) -> RequestContext:
    return RequestContext("chat", {"model": "g", "messages": messages or [{"role": "user", "content": "Why is the sky blue?"}], **body})


def body_of(call) -> dict:
    return orjson.loads(call.body)


def test_generate_request_maps_openai_params_to_options(monkeypatch) -> None:
    monkeypatch.delenv("OLLAMA_API_BASE", raising=False)
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)
    adapter = OllamaAdapter()
    dep = make_deployment(adapter, "llama3.2", num_ctx=8192, keep_alive="10m", temperature=0.1)
    ctx = chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why is the sky blue?"}],
               temperature=0.7, top_p=0.9, seed=42, stop="\n\n", max_tokens=100, frequency_penalty=0.5,
               presence_penalty=0.2, response_format={"type": "json_object"}, user="u-1", n=1)
    call = adapter.build_request(ctx, dep)
    assert call.method == "POST" and call.url == "http://localhost:11434/api/generate"
    assert "Authorization" not in call.headers and call.stream is False
    body = body_of(call)
    assert body == {
        "model": "llama3.2", "prompt": "Why is the sky blue?", "system": "Be brief.", "stream": False,
        "keep_alive": "10m", "format": "json",
        "options": {"num_ctx": 8192, "temperature": 0.7, "top_p": 0.9, "seed": 42, "stop": ["\n\n"],
                    "num_predict": 100, "frequency_penalty": 0.5, "presence_penalty": 0.2},
    }


def test_generate_sends_the_rendered_template_prompt() -> None:
    adapter = OllamaAdapter()
    dep = make_deployment(adapter, "mistral", api_base="http://gpu:11434/", raw=True, **TEMPLATE)
    ctx = chat([{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}], stream=True)
    ctx.extra["prompt"] = render(ctx.body["messages"], dep.params)  # what the prompt_template stage does
    call = adapter.build_request(ctx, dep)
    body = body_of(call)
    assert call.url == "http://gpu:11434/api/generate" and call.stream is True
    assert body["prompt"] == "\n<|im_start|>system\nS<|im_end|><|im_start|>user\nHi<|im_end|>\n"
    assert body["raw"] is True and body["stream"] is True and "system" not in body
    assert "roles" not in body and "options" not in body  # template params are not provider params


def test_generate_renders_a_conversation_with_role_headings_and_images() -> None:
    adapter = OllamaAdapter()
    dep = make_deployment(adapter, "llava")
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    ctx = chat([{"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]},
                {"role": "assistant", "content": "A cat."},
                {"role": "user", "content": "What colour?"}])
    body = body_of(adapter.build_request(ctx, dep))
    assert body["prompt"] == "### User:\nWhat is this?\n\n### Assistant:\nA cat.\n\n### User:\nWhat colour?\n\n"
    assert body["images"] == ["iVBORw0KGgo="]
    remote = chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/cat.png"}}]}])
    with pytest.raises(BadRequest, match="data: URLs"):
        adapter.build_request(remote, dep)


def test_generate_refuses_tools() -> None:
    adapter = OllamaAdapter()
    ctx = chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    with pytest.raises(BadRequest, match="ollama_chat/"):
        adapter.build_request(ctx, make_deployment(adapter, "llama3.2"))


def test_chat_request_carries_messages_tools_and_tool_results(monkeypatch) -> None:
    monkeypatch.setenv("OLLAMA_API_BASE", "http://env-host:11434")
    monkeypatch.setenv("OLLAMA_API_KEY", "ok-env")
    adapter = OllamaChatAdapter()
    dep = make_deployment(adapter, "llama3.2", extra_headers={"X-Team": "a"})
    tools = [{"type": "function", "function": {"name": "get_current_weather", "parameters": {
        "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}]
    messages = [
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_current_weather", "arguments": "{\"location\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22C"},
    ]
    ctx = chat(messages, tools=tools, tool_choice="auto", stream=True,
               response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}})
    call = adapter.build_request(ctx, dep)
    assert call.url == "http://env-host:11434/api/chat" and call.stream is True
    assert call.headers["Authorization"] == "Bearer ok-env" and call.headers["X-Team"] == "a"
    body = body_of(call)
    assert body["messages"] == [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_current_weather", "arguments": {"location": "Paris"}}}]},
        {"role": "tool", "content": "22C", "tool_name": "get_current_weather"},
    ]
    assert body["tools"] == tools and "tool_choice" not in body
    assert body["format"] == {"type": "object"} and body["stream"] is True
    none = chat(tools=tools, tool_choice="none")
    assert "tools" not in body_of(adapter.build_request(none, dep))


def test_api_base_may_name_the_endpoint_itself() -> None:
    adapter = OllamaChatAdapter()
    dep = make_deployment(adapter, "llama3.2", api_base="https://ollama.example.com/api/chat", api_key="k")
    call = adapter.build_request(chat(), dep)
    assert call.url == "https://ollama.example.com/api/chat" and call.headers["Authorization"] == "Bearer k"


def test_generate_answer_becomes_a_chat_completion() -> None:
    adapter = OllamaAdapter()
    dep = make_deployment(adapter, "llama3.2")
    answer = adapter.parse_response(chat(), dep, 200, GENERATE_ANSWER)
    assert answer["object"] == "chat.completion" and answer["model"] == "llama3.2"
    assert answer["id"].startswith("chatcmpl-")
    assert answer["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "The sky is blue because it is the color of the sky."},
                                  "logprobs": None, "finish_reason": "stop"}]
    assert answer["usage"] == {"prompt_tokens": 26, "completion_tokens": 290, "total_tokens": 316}
    cut = orjson.loads(GENERATE_ANSWER) | {"done_reason": "length"}
    assert adapter.parse_response(chat(), dep, 200, orjson.dumps(cut))["choices"][0]["finish_reason"] == "length"


def test_chat_tool_call_answer() -> None:
    adapter = OllamaChatAdapter()
    answer = adapter.parse_response(chat(), make_deployment(adapter, "llama3.2"), 200, CHAT_TOOL_ANSWER)
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_current_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"format": "celsius", "location": "Paris, FR"}
    assert answer["usage"]["total_tokens"] == 155


def test_generate_stream_translates_ndjson_lines() -> None:
    adapter = OllamaAdapter()
    dep = make_deployment(adapter, "llama3.2")
    ctx = chat(stream=True, stream_options={"include_usage": True})
    chunks = list(adapter.parse_stream(ctx, dep, GENERATE_STREAM.splitlines(keepends=True)))
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "The sky is blue."
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {"prompt_tokens": 26, "completion_tokens": 259, "total_tokens": 285}


def test_stream_without_include_usage_reports_usage_to_accounting_only() -> None:
    adapter = OllamaAdapter()
    ctx = chat(stream=True)
    chunks = list(adapter.parse_stream(ctx, make_deployment(adapter, "llama3.2"), GENERATE_STREAM.splitlines()))
    assert all("usage" not in c for c in chunks) and chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert ctx.usage == {"prompt_tokens": 26, "completion_tokens": 259, "total_tokens": 285}


def test_chat_stream_with_thinking_and_tool_call() -> None:
    adapter = OllamaChatAdapter()
    ctx = chat(stream=True)
    chunks = list(adapter.parse_stream(ctx, make_deployment(adapter, "qwen3"), CHAT_STREAM.splitlines()))
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[1] == {"reasoning_content": "The user wants weather."}
    (call,) = deltas[2]["tool_calls"]
    assert call["index"] == 0 and call["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert ctx.usage == {"prompt_tokens": 180, "completion_tokens": 40, "total_tokens": 220}


def test_stream_error_line_raises() -> None:
    adapter = OllamaChatAdapter()
    dep = make_deployment(adapter, "llama3.2")
    lines = [b'{"error":"model \\"llama3.2\\" not found, try pulling it first"}\n']
    with pytest.raises(UpstreamError, match="not found"):
        next(adapter.parse_stream(chat(stream=True), dep, lines))
    cut = GENERATE_STREAM.splitlines()[:2]
    with pytest.raises(UpstreamError, match="ended before"):
        list(OllamaAdapter().parse_stream(chat(stream=True), dep, cut))


def test_embeddings_through_api_embed() -> None:
    adapter = OllamaAdapter()
    dep = make_deployment(adapter, "all-minilm", keep_alive="1m")
    ctx = RequestContext("embedding", {"model": "g", "input": ["Why is the sky blue?", "Why is the grass green?"],
                                       "encoding_format": "float"})
    call = adapter.build_request(ctx, dep)
    assert call.url == "http://localhost:11434/api/embed" and call.stream is False
    assert body_of(call) == {"model": "all-minilm", "input": ["Why is the sky blue?", "Why is the grass green?"],
                             "keep_alive": "1m"}
    answer = adapter.parse_response(ctx, dep, 200, EMBED_ANSWER)
    assert answer["object"] == "list" and [d["index"] for d in answer["data"]] == [0, 1]
    assert answer["data"][0]["embedding"] == [0.010071029, -0.0017594862, 0.05007221]
    assert answer["usage"] == {"prompt_tokens": 8, "total_tokens": 8}
    b64 = RequestContext("embedding", {"model": "g", "input": "x", "encoding_format": "base64"})
    packed = adapter.parse_response(b64, dep, 200, EMBED_ANSWER)["data"][1]["embedding"]
    assert struct.unpack("<3f", base64.b64decode(packed)) == pytest.approx((-0.0098027075, 0.06042469, 0.025257962))
    with pytest.raises(BadRequest):
        adapter.build_request(RequestContext("embedding", {"model": "g", "input": [[1, 2, 3]]}), dep)


@pytest.mark.parametrize(("status", "body", "kind", "out_status"), [
    (404, b'{"error":"model \\"llama3.2\\" not found, try pulling it first"}', NotFound, 404),
    (400, b'{"error":"invalid options: num_predict"}', BadRequest, 400),
    (400, b'{"error":"the input length exceeds the context length"}', ContextWindowExceeded, 400),
    (500, b'{"error":"llama runner process has terminated: signal: killed"}', UpstreamError, 500),
])
def test_map_error(status, body, kind, out_status) -> None:
    err = OllamaChatAdapter().map_error(status, {}, body)
    assert type(err) is kind and err.status == out_status
    assert orjson.loads(body)["error"] in err.message


# -- round trip through the real transport to the mock upstream ---------------------------------------

@pytest.fixture(scope="module")
def upstream() -> Iterator[MockPromptServers]:
    with MockPromptServers() as mock:
        yield mock


@pytest.fixture
def transport() -> Iterator[Transport]:
    client = Transport()
    yield client
    client.close()


def test_round_trip_with_the_mock_upstream(upstream: MockPromptServers, transport: Transport) -> None:
    adapter = OllamaChatAdapter()
    dep = make_deployment(adapter, "llama3.2", api_base=upstream.ollama_url, num_ctx=4096)
    ctx = chat([{"role": "user", "content": "hello there"}], max_tokens=50)
    resp = transport.send(adapter.build_request(ctx, dep), 10)
    answer = adapter.parse_response(ctx, dep, resp.status, resp.body)
    assert answer["choices"][0]["message"]["content"] == "echo: hello there"
    assert answer["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert upstream.requests()[-1]["body"]["options"] == {"num_ctx": 4096, "num_predict": 50}

    generate = OllamaAdapter()
    gdep = make_deployment(generate, "llama3.2", api_base=upstream.ollama_url)
    sctx = chat([{"role": "user", "content": "hello there"}], stream=True)
    stream = transport.open_stream(generate.build_request(sctx, gdep), 10, 10)
    chunks = list(generate.parse_stream(sctx, gdep, stream.lines()))
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "echo: hello there"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and sctx.usage["completion_tokens"] == 3

    failing = transport.send(adapter.build_request(chat(extra_headers={"x-mock-error": "context_length_exceeded"}), dep), 10)
    assert type(adapter.map_error(failing.status, failing.headers, failing.body)) is ContextWindowExceeded
