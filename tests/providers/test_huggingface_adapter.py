"""Hugging Face adapter, fed with recorded TGI and router payloads: the three routes (/generate with
a template prompt, a TGI endpoint's Messages API, the serverless router), streams, errors."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from middleware.prompt_template import render
from proxy.context import RequestContext
from proxy.deployment import Deployment
from proxy.errors import (
    AuthenticationError,
    BadRequest,
    ContextWindowExceeded,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
)
from proxy.providers.huggingface import HuggingFaceAdapter
from proxy.providers.registry import ProviderRegistry
from proxy.transport import Transport
from tests.mock_upstream.prompt import MockPromptServers

# ruff: noqa: E501 - recorded payloads keep their lines whole, as they came over the wire
# TGI /generate, parameters {"details": true, "return_full_text": false}.
GENERATE_ANSWER = b'{"generated_text":" Paris.","details":{"finish_reason":"eos_token","generated_tokens":3,"seed":null,"prefill":[],"tokens":[{"id":6342,"text":" Paris","logprob":-0.17,"special":false},{"id":29889,"text":".","logprob":-0.52,"special":false},{"id":2,"text":"</s>","logprob":-0.1,"special":true}],"top_tokens":null}}'
# TGI /generate_stream: the last event carries the last token, the whole text and the details.
GENERATE_STREAM = b"""data:{"index":1,"token":{"id":6342,"text":" Paris","logprob":-0.17,"special":false},"generated_text":null,"details":null,"top_tokens":null}

data:{"index":2,"token":{"id":29889,"text":".","logprob":-0.52,"special":false},"generated_text":null,"details":null,"top_tokens":null}

data:{"index":3,"token":{"id":2,"text":"</s>","logprob":-0.1,"special":true},"generated_text":" Paris.","details":{"finish_reason":"eos_token","generated_tokens":3,"input_length":12,"seed":null},"top_tokens":null}

"""
CONTEXT_ERROR = b'{"error":"Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 4000 `inputs` tokens and 200 `max_new_tokens`","error_type":"validation"}'
# TGI's Messages API streaming, then failing validation inside the stream (status 200).
CHAT_STREAM_ERROR = b"""data: {"object":"chat.completion.chunk","id":"","created":1721737661,"model":"","system_fingerprint":"2.1.2-dev0-sha-5fca30e","choices":[{"index":0,"delta":{"role":"assistant","content":"Both"},"logprobs":null,"finish_reason":null}]}

data: {"error":"Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 6 `inputs` tokens and 4091 `max_new_tokens`","error_type":"validation"}

"""
TEMPLATE = {
    "roles": {"user": {"pre_message": "<|im_start|>user\n", "post_message": "<|im_end|>"},
              "assistant": {"pre_message": "<|im_start|>assistant\n", "post_message": "<|im_end|>"}},
    "initial_prompt_value": "\n", "final_prompt_value": "\n<|im_start|>assistant\n",
}


def deployment(model: str = "HuggingFaceH4/zephyr-7b-beta", **params) -> Deployment:
    registry = ProviderRegistry()
    registry.register(HuggingFaceAdapter())
    entry = {"model_name": "g", "litellm_params": {"model": f"huggingface/{model}", **params}}
    return Deployment.from_entry(entry, registry)


def chat(templated: Deployment | None = None, text: str = "What is the capital of France?", **body) -> RequestContext:
    ctx = RequestContext("chat", {"model": "g", "messages": [{"role": "user", "content": text}], **body})
    if templated is not None:  # what the prompt_template stage does for a deployment with a template
        ctx.extra["prompt"] = render(ctx.body["messages"], templated.params)
    return ctx


@pytest.fixture(autouse=True)
def no_env_keys(monkeypatch) -> None:
    monkeypatch.delenv("HUGGINGFACE_API_KEY", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)


def test_template_prompt_goes_to_tgi_generate() -> None:
    dep = deployment(api_base="http://tgi:8080/v1/", api_key="hf_x", top_k=10, repetition_penalty=1.1,
                     max_tokens=256, **TEMPLATE)
    ctx = chat(dep, temperature=0, top_p=1, stop="<|im_end|>", seed=7, user="u", logprobs=True)
    call = dep.adapter.build_request(ctx, dep)
    assert call.url == "http://tgi:8080/generate" and call.stream is False
    assert call.headers["Authorization"] == "Bearer hf_x"
    assert orjson.loads(call.body) == {
        "inputs": "\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
        "parameters": {"top_k": 10, "repetition_penalty": 1.1, "max_new_tokens": 256, "stop": ["<|im_end|>"],
                       "seed": 7, "return_full_text": False, "details": True},
    }
    warm = chat(dep, temperature=0.7, top_p=0.9, response_format={"type": "json_object"})
    params = orjson.loads(dep.adapter.build_request(warm, dep).body)["parameters"]
    assert params["temperature"] == 0.7 and params["top_p"] == 0.9
    assert params["grammar"] == {"type": "json", "value": {"type": "object"}}


def test_streaming_template_prompt_goes_to_generate_stream() -> None:
    dep = deployment(api_base="https://xyz.us-east-1.aws.endpoints.huggingface.cloud", **TEMPLATE)
    call = dep.adapter.build_request(chat(dep, stream=True), dep)
    assert call.url == "https://xyz.us-east-1.aws.endpoints.huggingface.cloud/generate_stream"
    assert call.stream is True and call.headers["Accept"] == "text/event-stream"
    assert "stream" not in orjson.loads(call.body)


def test_endpoint_without_template_uses_the_messages_api(monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    dep = deployment(api_base="http://tgi:8080", temperature=0.3)
    call = dep.adapter.build_request(chat(stream=True, stream_options={"include_usage": True}), dep)
    assert call.url == "http://tgi:8080/v1/chat/completions" and call.stream is True
    assert call.headers["Authorization"] == "Bearer hf_env"
    body = orjson.loads(call.body)
    assert body["model"] == "HuggingFaceH4/zephyr-7b-beta" and body["temperature"] == 0.3
    assert body["messages"] == [{"role": "user", "content": "What is the capital of France?"}]
    full = deployment(api_base="http://tgi:8080/v1/chat/completions")
    assert full.adapter.build_request(chat(), full).url == "http://tgi:8080/v1/chat/completions"


def test_without_api_base_the_router_serves(monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    monkeypatch.setenv("HUGGINGFACE_API_KEY", "hf_first")
    dep = deployment("meta-llama/Llama-3.3-70B-Instruct", **TEMPLATE)  # no /generate on the router
    call = dep.adapter.build_request(chat(dep), dep)
    assert call.url == "https://router.huggingface.co/v1/chat/completions"
    assert call.headers["Authorization"] == "Bearer hf_first"
    assert orjson.loads(call.body)["model"] == "meta-llama/Llama-3.3-70B-Instruct"
    chosen = deployment("together/deepseek-ai/DeepSeek-R1")
    assert orjson.loads(chosen.adapter.build_request(chat(), chosen).body)["model"] == "deepseek-ai/DeepSeek-R1:together"


def test_model_may_be_the_endpoint_url() -> None:
    dep = deployment("https://abc.endpoints.huggingface.cloud", **TEMPLATE)
    assert dep.adapter.build_request(chat(dep), dep).url == "https://abc.endpoints.huggingface.cloud/generate"
    plain = deployment("https://abc.endpoints.huggingface.cloud")
    call = plain.adapter.build_request(chat(), plain)
    assert call.url == "https://abc.endpoints.huggingface.cloud/v1/chat/completions"
    assert orjson.loads(call.body)["model"] == "tgi"


def test_generate_answer_becomes_a_chat_completion() -> None:
    dep = deployment(api_base="http://tgi:8080", **TEMPLATE)
    answer = dep.adapter.parse_response(chat(dep), dep, 200, GENERATE_ANSWER)
    assert answer["object"] == "chat.completion" and answer["model"] == "HuggingFaceH4/zephyr-7b-beta"
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": " Paris."}
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert "usage" not in answer  # /generate reports no prompt length; the proxy counts it
    # the serverless text-generation API wraps the same object in a list
    stopped = b'[{"generated_text":" Paris.<|im_end|>","details":{"finish_reason":"stop_sequence","generated_tokens":4,"prefill":[{"id":1,"text":"<s>","logprob":null},{"id":2,"text":"Hi","logprob":-1.2}],"tokens":[]}}]'
    answer = dep.adapter.parse_response(chat(dep, stop=["<|im_end|>"]), dep, 200, stopped)
    assert answer["choices"][0]["message"]["content"] == " Paris."
    assert answer["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}
    cut = b'{"generated_text":" Par","details":{"finish_reason":"length","generated_tokens":1,"prefill":[],"tokens":[]}}'
    assert dep.adapter.parse_response(chat(dep), dep, 200, cut)["choices"][0]["finish_reason"] == "length"
    with pytest.raises(UpstreamError, match="generated_text"):
        dep.adapter.parse_response(chat(dep), dep, 200, b'{"unexpected": true}')


def test_generate_stream_becomes_openai_chunks() -> None:
    dep = deployment(api_base="http://tgi:8080", **TEMPLATE)
    ctx = chat(dep, stream=True, stream_options={"include_usage": True})
    chunks = list(dep.adapter.parse_stream(ctx, dep, GENERATE_STREAM.splitlines(keepends=True)))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:3]] == [" Paris", "."]  # </s> is special
    assert chunks[3]["choices"][0]["finish_reason"] == "stop"
    assert chunks[4] == {**chunks[4], "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}
    quiet = chat(dep, stream=True)
    assert all("usage" not in c for c in dep.adapter.parse_stream(quiet, dep, GENERATE_STREAM.splitlines()))
    assert quiet.usage == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}


def test_stream_errors_are_mapped_like_error_responses() -> None:
    dep = deployment(api_base="http://tgi:8080", **TEMPLATE)
    with pytest.raises(ContextWindowExceeded, match="must be <= 4096"):
        next(dep.adapter.parse_stream(chat(dep, stream=True), dep, [b"data:" + CONTEXT_ERROR + b"\n", b"\n"]))
    overloaded = b'data:{"error":"Model is overloaded","error_type":"overloaded"}\n'
    with pytest.raises(RateLimited):
        next(dep.adapter.parse_stream(chat(dep, stream=True), dep, [overloaded]))
    with pytest.raises(UpstreamError, match="ended before"):
        list(dep.adapter.parse_stream(chat(dep, stream=True), dep, GENERATE_STREAM.splitlines()[:3]))


def test_messages_api_stream_passes_through_until_an_error_event() -> None:
    dep = deployment(api_base="http://tgi:8080")
    stream = dep.adapter.parse_stream(chat(stream=True), dep, CHAT_STREAM_ERROR.splitlines(keepends=True))
    assert next(stream)["choices"][0]["delta"]["content"] == "Both"
    with pytest.raises(ContextWindowExceeded):
        next(stream)


@pytest.mark.parametrize(("status", "headers", "body", "kind", "out_status"), [
    (422, {}, CONTEXT_ERROR, ContextWindowExceeded, 400),
    (422, {}, b"data:" + CONTEXT_ERROR + b"\n\n", ContextWindowExceeded, 400),  # /generate_stream's error
    (422, {}, b'{"error":"Input validation error: `temperature` must be strictly positive","error_type":"validation"}', BadRequest, 400),
    (429, {}, b'{"error":"Model is overloaded","error_type":"overloaded"}', RateLimited, 429),
    (424, {}, b'{"error":"Request failed during generation: CUDA out of memory","error_type":"generation"}', UpstreamError, 502),
    (503, {}, b'{"error":"Model HuggingFaceH4/zephyr-7b-beta is currently loading","estimated_time":20.0}', ServiceUnavailable, 503),
    (401, {}, b'{"error":"Invalid credentials in Authorization header"}', AuthenticationError, 401),
    (400, {}, b'{"error":{"message":"This model\'s maximum context length is 8192 tokens.","type":"invalid_request_error","code":null}}', ContextWindowExceeded, 400),
])
def test_map_error(status, headers, body, kind, out_status) -> None:
    err = deployment().adapter.map_error(status, headers, body)
    assert type(err) is kind and err.status == out_status
    assert set(err.body()["error"]) == {"message", "type", "param", "code"}
    if status == 503:
        assert err.retry_after == 20.0 and err.retryable
    if status == 424:
        assert err.retryable and err.code == "generation"
    if status == 429:
        assert err.code == "rate_limit_exceeded"


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
    dep = deployment(api_base=upstream.tgi_url, **TEMPLATE)
    ctx = chat(dep, text="hello there", max_tokens=20)
    resp = transport.send(dep.adapter.build_request(ctx, dep), 10)
    answer = dep.adapter.parse_response(ctx, dep, resp.status, resp.body)
    assert answer["choices"][0]["message"]["content"] == "echo: <|im_start|>assistant"  # the prompt's last line
    assert upstream.requests()[-1]["path"] == "/generate"

    sctx = chat(dep, text="hello there", stream=True, stream_options={"include_usage": True})
    stream = transport.open_stream(dep.adapter.build_request(sctx, dep), 10, 10)
    chunks = list(dep.adapter.parse_stream(sctx, dep, stream.lines()))
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == answer["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"]["completion_tokens"] == 3

    plain = deployment(api_base=upstream.tgi_url)
    mctx = chat(text="hello there", stream=True)
    stream = transport.open_stream(plain.adapter.build_request(mctx, plain), 10, 10)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in plain.adapter.parse_stream(mctx, plain, stream.lines()))
    assert text == "echo: hello there" and upstream.requests()[-1]["path"] == "/v1/chat/completions"

    failing = transport.send(dep.adapter.build_request(chat(dep, extra_headers={"x-mock-error": "context_length_exceeded"}), dep), 10)
    assert type(dep.adapter.map_error(failing.status, failing.headers, failing.body)) is ContextWindowExceeded
