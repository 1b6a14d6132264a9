"""``custom/<model>``: LiteLLM's generic "custom LLM API endpoint" format, posted to ``api_base``.

Request (the URL is used exactly as configured)::

    {"model": "<model without custom/>",
     "params": {"prompt": ["<prompt>"], "max_tokens": 32, "temperature": 0.7, "top_p": 1.0, "top_k": 40}}

Answer::

    {"data": [{"prompt": "...", "output": ["<completion>"], "params": {...}}], "message": "ok"}

The prompt is the one the ``prompt_template`` stage rendered, else the message contents joined
with spaces (as LiteLLM does). The API reports no token counts, so answers carry no ``usage``.
It cannot stream either: for a streaming request the adapter still makes a plain call
(``UpstreamCall.stream`` is False) and ``parse_stream`` turns the complete body, handed over line
by line, into a short OpenAI stream.

This module also holds the small builders of OpenAI chat shapes that the adapters of prompt-style
APIs (Ollama, Hugging Face TGI, custom) share.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from proxy.errors import UpstreamError
from proxy.providers.base import Adapter, UpstreamCall, load_json, merged_body

if TYPE_CHECKING:
    from proxy.context import RequestContext
    from proxy.router.deployment import Deployment


# -- OpenAI chat shapes, shared by the prompt-style adapters ------------------------------------

def chat_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def text_of(content: Any) -> str:
    """The text of a message content: a string, or the text parts of a content-part list."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def token_usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_response(
    model: str, message: dict[str, Any], finish_reason: str, usage: dict[str, int] | None = None
) -> dict[str, Any]:
    """A complete ``chat.completion`` with one choice; ``usage`` is left out when unknown."""
    out: dict[str, Any] = {
        "id": chat_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "logprobs": None,
                     "finish_reason": finish_reason}],
    }
    if usage is not None:
        out["usage"] = usage
    return out


class ChatChunks:
    """Builds the chunks of one streamed chat answer: one id, time and model throughout."""

    def __init__(self, ctx: RequestContext, model: str) -> None:
        self.ctx = ctx
        self.base = {"id": chat_id(), "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": model, "system_fingerprint": None}

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {**self.base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": finish_reason}]}

    def role(self) -> dict[str, Any]:
        """The opening chunk, as OpenAI sends it: the role and empty content."""
        return self.chunk({"role": "assistant", "content": ""})

    def finish(self, finish_reason: str, usage: dict[str, int] | None) -> Iterator[dict[str, Any]]:
        """The closing chunk, then the usage chunk if the client asked for one.

        Usage the client did not ask for still reaches accounting, through ``ctx.usage``.
        """
        yield self.chunk({}, finish_reason)
        if usage is None:
            return
        if (self.ctx.body.get("stream_options") or {}).get("include_usage"):
            yield {**self.base, "choices": [], "usage": usage}
        else:
            self.ctx.usage = usage


# -- the custom adapter ---------------------------------------------------------------------------

def joined_prompt(messages: list[dict[str, Any]]) -> str:
    """LiteLLM's custom-endpoint prompt: every message's content, joined with spaces."""
    return " ".join(text_of(m.get("content")) for m in messages)


class CustomAdapter(Adapter):
    provider: ClassVar[str] = "custom"
    supported_params: ClassVar[frozenset[str]] = frozenset(
        {"messages", "model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stream",
         "stream_options", "extra_headers"}
    )
    kinds: ClassVar[frozenset[str]] = frozenset({"chat"})

    def build_request(self, ctx: RequestContext, deployment: Deployment) -> UpstreamCall:
        if not deployment.api_base:
            raise UpstreamError(f"deployment {deployment.label} has no api_base", status=500)
        body = merged_body(ctx, deployment)
        prompt = ctx.extra.get("prompt")
        if not isinstance(prompt, str):
            prompt = joined_prompt(body.get("messages") or [])
        payload = {
            "model": deployment.upstream_model,
            "params": {
                "prompt": [prompt],
                "max_tokens": body.get("max_tokens", body.get("max_completion_tokens")),
                "temperature": body.get("temperature"),
                "top_p": body.get("top_p"),
                "top_k": body.get("top_k", 40),  # LiteLLM's default
            },
        }
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if deployment.api_key:  # the format names no auth; a configured key goes as a bearer token
            headers["Authorization"] = f"Bearer {deployment.api_key}"
        headers.update(deployment.headers)
        extra = body.get("extra_headers")
        if isinstance(extra, dict):
            headers.update({str(k): str(v) for k, v in extra.items()})
        # The endpoint cannot stream: even a streaming request is one plain call.
        return UpstreamCall("POST", deployment.api_base, headers, orjson.dumps(payload), stream=False)

    def output(self, body: bytes) -> str:
        data = load_json(body, self.provider)
        try:
            output = data["data"][0]["output"][0]
        except (KeyError, IndexError, TypeError):
            raise UpstreamError(f"upstream {self.provider} answer has no data[0].output[0]") from None
        return text_of(output)

    def parse_response(
        self, ctx: RequestContext, deployment: Deployment, status: int, body: bytes
    ) -> dict[str, Any]:
        return chat_response(deployment.upstream_model, {"content": self.output(body)}, "stop")

    def parse_stream(
        self, ctx: RequestContext, deployment: Deployment, lines: Iterable[bytes]
    ) -> Iterator[dict[str, Any]]:
        """The whole (non-streamed) answer, arriving as lines, replayed as a three-chunk stream."""
        text = self.output(b"".join(lines))
        chunks = ChatChunks(ctx, deployment.upstream_model)
        yield chunks.role()
        if text:
            yield chunks.chunk({"content": text})
        yield from chunks.finish("stop", None)
