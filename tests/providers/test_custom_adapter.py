"""``custom/`` adapter, fed with LiteLLM's documented custom-endpoint payloads, and its one-shot
"stream" run through the real dispatcher."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace

import orjson
import pytest

from middleware.prompt_template import render
from proxy.context import RequestContext
from proxy.deployment import Deployment
from proxy.dispatch import Dispatcher
from proxy.errors import AuthenticationError, BadRequest, RateLimited, ServiceUnavailable, UpstreamError
from proxy.providers.base import UpstreamCall
from proxy.providers.custom import CustomAdapter
from proxy.providers.registry import ProviderRegistry

# ruff: noqa: E501 - recorded payloads keep their lines whole, as they came over the wire
ANSWER = {
    "data": [{"prompt": "The capital of France is P",
              "output": ["The capital of France is PARIS.\nThe capital of France is PARIS."],
              "params": {"temperature": 0.7, "top_k": 40, "top_p": 1}}],
    "message": "ok",
}


def deployment(**params) -> Deployment:
    registry = ProviderRegistry()
    registry.register(CustomAdapter())
    entry = {"model_name": "g", "litellm_params": {"model": "custom/meta-llama/Llama-2-13b-hf",
                                                   "api_base": "https://api.autoai.dev/inference", **params}}
    return Deployment.from_entry(entry, registry)


def chat(*texts: str, **body) -> RequestContext:
    messages = [{"role": "user", "content": t} for t in texts or ("The capital of France is P",)]
    return RequestContext("chat", {"model": "g", "messages": messages, **body})


def test_request_follows_the_documented_format() -> None:
    dep = deployment()
    call = dep.adapter.build_request(chat(temperature=0.7, max_tokens=32, top_p=1.0), dep)
    assert call.method == "POST" and call.url == "https://api.autoai.dev/inference" and call.stream is False
    assert "Authorization" not in call.headers
    assert orjson.loads(call.body) == {
        "model": "meta-llama/Llama-2-13b-hf",
        "params": {"prompt": ["The capital of France is P"], "max_tokens": 32, "temperature": 0.7,
                   "top_p": 1.0, "top_k": 40},
    }


def test_prompt_is_the_messages_joined_or_the_rendered_template() -> None:
    dep = deployment(temperature=0.2, max_tokens=10, top_k=5, api_key="k")
    call = dep.adapter.build_request(chat("You are terse.", "what is custom llama?"), dep)
    params = orjson.loads(call.body)["params"]
    assert params == {"prompt": ["You are terse. what is custom llama?"], "max_tokens": 10, "temperature": 0.2,
                      "top_p": None, "top_k": 5}
    assert call.headers["Authorization"] == "Bearer k"
    templated = deployment(roles={"user": {"pre_message": "[INST] ", "post_message": " [/INST]"}})
    ctx = chat("hi")
    ctx.extra["prompt"] = render(ctx.body["messages"], templated.params)
    assert orjson.loads(templated.adapter.build_request(ctx, templated).body)["params"]["prompt"] == ["[INST] hi [/INST]"]


def test_streaming_requests_make_a_plain_call() -> None:
    dep = deployment()
    call = dep.adapter.build_request(chat(stream=True), dep)
    assert call.stream is False and "stream" not in orjson.loads(call.body)


def test_api_base_is_required() -> None:
    registry = ProviderRegistry()
    registry.register(CustomAdapter())
    dep = Deployment.from_entry({"model_name": "g", "litellm_params": {"model": "custom/m"}}, registry)
    with pytest.raises(UpstreamError, match="no api_base"):
        dep.adapter.build_request(chat(), dep)


def test_answer_becomes_a_chat_completion_without_usage() -> None:
    dep = deployment()
    answer = dep.adapter.parse_response(chat(), dep, 200, orjson.dumps(ANSWER))
    assert answer["object"] == "chat.completion" and answer["model"] == "meta-llama/Llama-2-13b-hf"
    assert answer["choices"] == [{"index": 0, "message": {"role": "assistant", "content": ANSWER["data"][0]["output"][0]},
                                  "logprobs": None, "finish_reason": "stop"}]
    assert "usage" not in answer
    for bad in (b'{"data": [], "message": "ok"}', b'{"message": "error"}', b"<html>oops</html>"):
        with pytest.raises(UpstreamError):
            dep.adapter.parse_response(chat(), dep, 200, bad)


def test_whole_answer_arriving_as_lines_becomes_a_short_stream() -> None:
    dep = deployment()
    pretty = orjson.dumps(ANSWER, option=orjson.OPT_INDENT_2)  # a body with newlines inside it
    chunks = list(dep.adapter.parse_stream(chat(stream=True), dep, pretty.splitlines(keepends=True)))
    assert [c["object"] for c in chunks] == ["chat.completion.chunk"] * 3
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["delta"] == {"content": ANSWER["data"][0]["output"][0]}
    assert chunks[2]["choices"][0]["finish_reason"] == "stop" and chunks[2]["choices"][0]["delta"] == {}


@pytest.mark.parametrize(("status", "body", "kind"), [
    (500, b"Internal Server Error", UpstreamError),
    (400, b'{"message": "bad params"}', BadRequest),
    (429, b'{"error": "too many requests"}', RateLimited),
    (401, b'{"detail": "unauthorized"}', AuthenticationError),
])
def test_map_error(status, body, kind) -> None:
    err = CustomAdapter().map_error(status, {}, body)
    assert type(err) is kind and err.status == status


# -- the streaming path through the real dispatcher, with a scripted transport ------------------------

@dataclass
class ScriptedStream:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def lines(self) -> Iterator[bytes]:
        # as the transport's reader does: a last line without a newline is never yielded
        yield from (line for line in self.body.splitlines(keepends=True) if line.endswith(b"\n"))

    def read_all(self, timeout: float) -> bytes:
        return self.body


@dataclass
class ScriptedTransport:
    status: int
    body: bytes
    calls: list[UpstreamCall] = field(default_factory=list)

    def send(self, call: UpstreamCall, timeout: float | None = None) -> SimpleNamespace:
        self.calls.append(call)
        return SimpleNamespace(status=self.status, headers={}, body=self.body)

    def open_stream(self, call: UpstreamCall, timeout: float, read_timeout: float) -> ScriptedStream:
        self.calls.append(call)
        return ScriptedStream(self.status, self.body)


class WordCounter:
    def count(self, model: str, messages: list | None = None, prompt: str | None = None) -> SimpleNamespace:
        text = prompt if prompt is not None else " ".join(m["content"] for m in messages or [])
        return SimpleNamespace(total_tokens=len(text.split()))


def dispatch_stream(body: bytes) -> tuple[list[dict], RequestContext, ScriptedTransport]:
    transport = ScriptedTransport(200, body)
    dispatcher = Dispatcher(transport, WordCounter(), timeout=5.0)  # type: ignore[arg-type]
    ctx = chat(stream=True)
    ctx.deployment = deployment()
    return list(dispatcher(ctx)), ctx, transport


def test_dispatcher_streams_a_plain_answer_that_ends_with_a_newline() -> None:
    chunks, ctx, transport = dispatch_stream(orjson.dumps(ANSWER, option=orjson.OPT_INDENT_2) + b"\n")
    assert transport.calls[0].stream is False
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == ANSWER["data"][0]["output"][0]
    assert ctx.usage == {"prompt_tokens": 6, "completion_tokens": 12, "total_tokens": 18}  # estimated


def test_dispatcher_streams_a_plain_answer_without_a_final_newline() -> None:
    chunks, _, _ = dispatch_stream(orjson.dumps(ANSWER))  # what most JSON servers send
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == ANSWER["data"][0]["output"][0]


def test_dispatcher_maps_an_error_before_any_chunk() -> None:
    dispatcher = Dispatcher(ScriptedTransport(503, b"upstream down"), WordCounter(), timeout=5.0)  # type: ignore[arg-type]
    ctx = chat(stream=True)
    ctx.deployment = deployment()
    with pytest.raises(ServiceUnavailable) as info:
        dispatcher(ctx)
    assert info.value.status == 503 and info.value.retryable
