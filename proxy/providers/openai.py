"""OpenAI and every server that speaks its wire format (vLLM, LM Studio, DeepSeek, Groq, ...).

The internal format is OpenAI's, so this adapter mostly adds the URL and headers; bodies pass
through as they are, and unknown params reach the upstream untouched.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from proxy.errors import ProxyError, UpstreamError
from proxy.providers.base import Adapter, UpstreamCall, error_message, load_json, merged_body
from proxy.providers.shapes import text_of

if TYPE_CHECKING:
    from proxy.context import RequestContext
    from proxy.deployment import Deployment

CHAT_PARAMS = frozenset(
    {
        "messages", "model", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
        "max_tokens", "max_completion_tokens", "n", "presence_penalty", "response_format", "seed",
        "service_tier", "stop", "stream", "stream_options", "temperature", "top_p", "tools",
        "tool_choice", "parallel_tool_calls", "user", "functions", "function_call", "modalities",
        "audio", "prediction", "reasoning_effort", "store", "web_search_options", "verbosity",
        "prompt_cache_key", "safety_identifier", "extra_headers",
    }
)

PATHS = {
    "chat": "/chat/completions",
    "completion": "/completions",
    "embedding": "/embeddings",
    "moderation": "/moderations",
}


def iter_sse_data(lines: Iterable[bytes]) -> Iterator[bytes]:
    """The payload of each ``data:`` line of a server-sent event stream, up to ``[DONE]``."""
    for line in lines:
        if not line.startswith(b"data:"):
            continue  # blank separators, ``event:``, ``: keep-alive`` comments
        data = line[5:].strip()
        if data == b"[DONE]":
            return
        if data:
            yield data


class OpenAIAdapter(Adapter):
    provider: ClassVar[str] = "openai"
    supported_params: ClassVar[frozenset[str]] = CHAT_PARAMS
    kinds: ClassVar[frozenset[str]] = frozenset(PATHS)
    default_api_base: ClassVar[str | None] = "https://api.openai.com/v1"
    api_key_env: ClassVar[str | None] = "OPENAI_API_KEY"

    def api_base(self, deployment: Deployment) -> str:
        base = deployment.api_base
        if not base:  # LiteLLM's per-provider variable: OPENAI_API_BASE, XINFERENCE_API_BASE, ...
            base = os.environ.get(f"{self.provider.upper()}_API_BASE")
        base = base or self.default_api_base
        if not base:
            raise UpstreamError(f"deployment {deployment.label} has no api_base", status=500)
        return base.rstrip("/")

    def shown_api_base(self, deployment: Deployment) -> str | None:
        try:
            return self.api_base(deployment)
        except ProxyError:  # no base configured: the call itself will say so
            return None

    def headers(self, deployment: Deployment) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = deployment.api_key or (os.environ.get(self.api_key_env) if self.api_key_env else None)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        org = deployment.params.get("organization")
        if isinstance(org, str) and org:
            headers["OpenAI-Organization"] = org
        headers.update(deployment.headers)
        return headers

    def build_request(self, ctx: RequestContext, deployment: Deployment) -> UpstreamCall:
        body = merged_body(ctx, deployment)
        body["model"] = deployment.upstream_model
        headers = self.headers(deployment)
        extra = body.pop("extra_headers", None)
        if isinstance(extra, dict):
            headers.update({str(k): str(v) for k, v in extra.items()})
        if ctx.stream:
            headers["Accept"] = "text/event-stream"
        return UpstreamCall(
            method="POST",
            url=self.api_base(deployment) + PATHS[ctx.kind],
            headers=headers,
            body=orjson.dumps(body),
            stream=ctx.stream,
        )

    def parse_response(
        self, ctx: RequestContext, deployment: Deployment, status: int, body: bytes
    ) -> dict[str, Any]:
        data = load_json(body, self.provider)
        if not isinstance(data, dict):
            raise UpstreamError(f"upstream {self.provider} returned an unexpected body")
        return data

    def parse_stream(
        self, ctx: RequestContext, deployment: Deployment, lines: Iterable[bytes]
    ) -> Iterator[dict[str, Any]]:
        for data in iter_sse_data(lines):
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise UpstreamError(f"upstream {self.provider} sent an invalid stream chunk") from exc
            if isinstance(chunk, dict) and "error" in chunk and "choices" not in chunk:
                message, code, _ = error_message(data)
                raise UpstreamError(f"upstream {self.provider} stream error: {message}", code=code)
            yield chunk


def messages_to_prompt(messages: list[dict[str, Any]]) -> str:
    """Flatten chat messages into one prompt for completion-only models."""
    return "\n".join(text_of(m.get("content")) for m in messages)


def text_choice_to_chat(choice: dict[str, Any], delta: bool) -> dict[str, Any]:
    text = choice.get("text", "")
    out = {"index": choice.get("index", 0), "finish_reason": choice.get("finish_reason")}
    if delta:
        out["delta"] = {"content": text}
    else:
        out["message"] = {"role": "assistant", "content": text}
    if choice.get("logprobs") is not None:
        out["logprobs"] = choice["logprobs"]
    return out


class TextCompletionOpenAIAdapter(OpenAIAdapter):
    """``text-completion-openai/...``: chat requests are served by the legacy /completions API."""

    provider: ClassVar[str] = "text-completion-openai"

    def build_request(self, ctx: RequestContext, deployment: Deployment) -> UpstreamCall:
        call = super().build_request(ctx, deployment)
        if ctx.kind != "chat":
            return call
        body = orjson.loads(call.body or b"{}")
        body["prompt"] = messages_to_prompt(body.pop("messages", []))
        for key in ("tools", "tool_choice", "parallel_tool_calls", "functions", "function_call",
                    "response_format"):
            body.pop(key, None)
        call.body = orjson.dumps(body)
        call.url = self.api_base(deployment) + PATHS["completion"]
        return call

    def parse_response(
        self, ctx: RequestContext, deployment: Deployment, status: int, body: bytes
    ) -> dict[str, Any]:
        data = super().parse_response(ctx, deployment, status, body)
        if ctx.kind == "chat" and data.get("object") == "text_completion":
            data["object"] = "chat.completion"
            data["choices"] = [text_choice_to_chat(c, False) for c in data.get("choices", [])]
        return data

    def parse_stream(
        self, ctx: RequestContext, deployment: Deployment, lines: Iterable[bytes]
    ) -> Iterator[dict[str, Any]]:
        for chunk in super().parse_stream(ctx, deployment, lines):
            if ctx.kind == "chat" and chunk.get("object") == "text_completion":
                chunk["object"] = "chat.completion.chunk"
                chunk["choices"] = [text_choice_to_chat(c, True) for c in chunk.get("choices", [])]
            yield chunk


class OpenAICompatibleAdapter(OpenAIAdapter):
    """A named OpenAI-compatible provider with its own default base URL and key variable."""

    def __init__(self, provider: str, default_api_base: str | None, api_key_env: str | None) -> None:
        self.provider = provider  # type: ignore[misc]
        self.default_api_base = default_api_base  # type: ignore[misc]
        self.api_key_env = api_key_env  # type: ignore[misc]
