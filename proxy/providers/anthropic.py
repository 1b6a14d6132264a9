"""Anthropic's Messages API (``anthropic/claude-...``, and bare ``claude-...`` names).

The proxy speaks OpenAI's chat format; this adapter translates a chat request into a Messages
request (``POST {api_base}/v1/messages``) and the answer back into a ``chat.completion``, or, for
streams, Anthropic's server-sent events into ``chat.completion.chunk``s (``anthropic_stream``).

Request translation:

- ``system`` and ``developer`` messages become the top-level ``system``;
- consecutive messages of the same role are merged into one turn (Anthropic wants turns to
  alternate); ``tool`` messages become ``tool_result`` blocks of a user turn, assistant
  ``tool_calls`` become ``tool_use`` blocks;
- content parts: text; ``image_url`` with a ``data:`` URL becomes a base64 image, with an
  http(s) URL a ``url`` image; ``file`` with PDF data becomes a base64 document;
- ``max_tokens`` is required by Anthropic: ``max_completion_tokens``, else ``max_tokens``, else
  ``DEFAULT_MAX_TOKENS``; ``stop`` becomes ``stop_sequences``, ``user`` ``metadata.user_id``;
- ``tools`` (function tools) get an ``input_schema``; ``tool_choice`` ``auto``/``required``/
  ``none``/named maps to ``auto``/``any``/``none``/``tool``; ``parallel_tool_calls: false`` sets
  ``disable_parallel_tool_use``.

OpenAI params with no Anthropic meaning (``n``, ``logprobs``, ``response_format``, ...) are
refused with a 400 naming them, as LiteLLM does, unless null or neutral; ``drop_params`` removes
them before they get here. Any other key (``top_k``, ``thinking``, ...) is sent as it is.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from proxy.errors import BadRequest, ContextWindowExceeded, ProxyError, ServiceUnavailable, UpstreamError
from proxy.providers.anthropic_stream import (
    StreamTranslator,
    error_status,
    finish_reason,
    openai_usage,
)
from proxy.providers.base import Adapter, UpstreamCall, error_message, load_json, merged_body, parse_retry_after
from proxy.providers.openai import CHAT_PARAMS, iter_sse_data
from proxy.providers.shapes import alternating_turns, include_usage

if TYPE_CHECKING:
    from proxy.context import RequestContext
    from proxy.deployment import Deployment

ANTHROPIC_VERSION = "2023-06-01"
#: Sent when the request sets no max_tokens (Anthropic requires one; LiteLLM sends 4096 too).
DEFAULT_MAX_TOKENS = 4096

#: OpenAI params this adapter translates, plus Anthropic's own that pass straight through.
TRANSLATED = frozenset(
    {
        "messages", "model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop",
        "stream", "stream_options", "tools", "tool_choice", "parallel_tool_calls", "user",
        "extra_headers",
    }
)
NATIVE = frozenset({"top_k", "thinking"})
#: OpenAI params Anthropic has no equivalent for.
UNSUPPORTED = CHAT_PARAMS - TRANSLATED
TOOL_CHOICES = {"auto": {"type": "auto"}, "required": {"type": "any"}, "any": {"type": "any"},
                "none": {"type": "none"}}
CONTEXT_MARKERS = ("prompt is too long", "exceed context limit")


class AnthropicAdapter(Adapter):
    provider: ClassVar[str] = "anthropic"
    supported_params: ClassVar[frozenset[str]] = TRANSLATED | NATIVE
    kinds: ClassVar[frozenset[str]] = frozenset({"chat"})
    default_api_base: ClassVar[str | None] = "https://api.anthropic.com"
    api_key_env: ClassVar[str | None] = "ANTHROPIC_API_KEY"
    api_base_env: ClassVar[str | None] = "ANTHROPIC_API_BASE"
    rate_limit_names: ClassVar[tuple[tuple[str, str], ...]] = (
        ("anthropic-ratelimit-requests-limit", "x-ratelimit-limit-requests"),
        ("anthropic-ratelimit-requests-remaining", "x-ratelimit-remaining-requests"),
        ("anthropic-ratelimit-tokens-limit", "x-ratelimit-limit-tokens"),
        ("anthropic-ratelimit-tokens-remaining", "x-ratelimit-remaining-tokens"),
    )

    def url(self, deployment: Deployment) -> str:
        base = deployment.api_base or os.environ.get("ANTHROPIC_API_BASE") or self.default_api_base or ""
        base = base.rstrip("/")
        if base.endswith("/v1/messages"):
            return base
        return base + ("/messages" if base.endswith("/v1") else "/v1/messages")

    def headers(self, deployment: Deployment) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "anthropic-version": ANTHROPIC_VERSION}
        key = deployment.api_key or os.environ.get(self.api_key_env or "")
        if key:
            headers["x-api-key"] = key
        headers.update(deployment.headers)
        return headers

    def build_request(self, ctx: RequestContext, deployment: Deployment) -> UpstreamCall:
        request = merged_body(ctx, deployment)
        body = translate_request(request, deployment.upstream_model)
        headers = self.headers(deployment)
        extra = request.get("extra_headers")
        if isinstance(extra, dict):
            headers.update({str(k): str(v) for k, v in extra.items()})
        if ctx.stream:
            body["stream"] = True
            headers["Accept"] = "text/event-stream"
        return UpstreamCall("POST", self.url(deployment), headers, orjson.dumps(body), stream=ctx.stream)

    def parse_response(
        self, ctx: RequestContext, deployment: Deployment, status: int, body: bytes
    ) -> dict[str, Any]:
        data = load_json(body, self.provider)
        if not isinstance(data, dict):
            raise UpstreamError("upstream anthropic returned an unexpected body")
        if data.get("type") == "error":
            raise self.map_error(error_status(data), {}, body)
        return to_chat_completion(data, deployment.upstream_model)

    def parse_stream(
        self, ctx: RequestContext, deployment: Deployment, lines: Iterable[bytes]
    ) -> Iterator[dict[str, Any]]:
        wants_usage = include_usage(ctx.body)
        translator = StreamTranslator(deployment.upstream_model, wants_usage)
        for data in iter_sse_data(lines):
            try:
                event = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise UpstreamError("upstream anthropic sent an invalid stream event") from exc
            if not isinstance(event, dict):
                continue
            if event.get("type") == "error":
                raise self.map_error(error_status(event), {}, data)
            yield from translator.feed(event)
        yield from translator.close()
        if not wants_usage and translator.usage is not None:
            ctx.usage = translator.usage  # exact accounting without an extra chunk to the client

    def map_error(self, status: int, headers: dict[str, str], body: bytes) -> ProxyError:
        message, kind, _ = error_message(body)
        if status == 529 or kind == "overloaded_error":
            return ServiceUnavailable(f"upstream anthropic is overloaded: {message}",
                                      retry_after=parse_retry_after(headers.get("retry-after")))
        if status in (400, 413) and any(m in message.lower() for m in CONTEXT_MARKERS):
            return ContextWindowExceeded(message)
        return super().map_error(status, headers, body)


def translate_request(request: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat request -> a Messages API body (``stream`` is set by the caller)."""
    refused = sorted(k for k in UNSUPPORTED if k in request and not neutral(k, request[k]))
    if refused:
        raise BadRequest(
            f"anthropic does not support {', '.join(refused)}; remove them or set drop_params: true",
            param=refused[0],
        )
    system, messages = split_system(request.get("messages") or [])
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens") or DEFAULT_MAX_TOKENS
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": messages}
    if system:
        body["system"] = system
    for key in ("temperature", "top_p"):
        if request.get(key) is not None:
            body[key] = request[key]
    stop = request.get("stop")
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else [s for s in stop if s]
    if request.get("user"):
        body["metadata"] = {"user_id": str(request["user"])}
    tools = [anthropic_tool(t) for t in request.get("tools") or () if t.get("type", "function") == "function"]
    if tools:
        body["tools"] = tools
        choice = tool_choice(request.get("tool_choice"), request.get("parallel_tool_calls"))
        if choice:
            body["tool_choice"] = choice
    for key, value in request.items():
        if key not in TRANSLATED and key not in UNSUPPORTED and value is not None:
            body[key] = value  # Anthropic's own params (top_k, thinking, ...)
    return body


def neutral(key: str, value: Any) -> bool:
    """A value that asks for nothing (SDKs send some of these by default)."""
    return value is None or value is False or (key == "n" and value == 1)


def split_system(messages: list[dict[str, Any]]) -> tuple[str | list[dict[str, Any]], list[dict[str, Any]]]:
    """(system, turns): system text pulled out; the rest as alternating user/assistant turns."""
    system, turns = alternating_turns(
        messages, "anthropic",
        system_blocks=lambda content: [b for b in content_blocks(content) if b["type"] == "text"],
        user_blocks=content_blocks, assistant_blocks=assistant_blocks, tool_result=tool_result)
    if turns and turns[-1]["role"] == "assistant":
        # a prefilled answer may not end in whitespace (Anthropic rejects it)
        last = turns[-1]["content"][-1]
        if last["type"] == "text":
            last["text"] = last["text"].rstrip()
    if any(len(b) > 2 for b in system):  # cache_control and the like: keep the blocks
        return system, turns
    return "\n".join(b["text"] for b in system), turns


def content_blocks(content: Any) -> list[dict[str, Any]]:
    """OpenAI message content (a string or a list of parts) -> Anthropic content blocks."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for part in content or ():
        kind = part.get("type")
        if kind == "text":
            if not part.get("text"):
                continue  # Anthropic rejects empty text blocks
            block = {"type": "text", "text": part["text"]}
        elif kind == "image_url":
            image = part.get("image_url")
            block = {"type": "image", "source": media_source(image.get("url") if isinstance(image, dict) else image)}
        elif kind == "file" and isinstance(part.get("file"), dict) and part["file"].get("file_data"):
            block = {"type": "document", "source": media_source(part["file"]["file_data"])}
        else:
            raise BadRequest(f"anthropic does not accept content parts of type {kind!r}", param="messages")
        if part.get("cache_control"):
            block["cache_control"] = part["cache_control"]
        blocks.append(block)
    return blocks


def media_source(url: Any) -> dict[str, Any]:
    """A ``data:`` URL -> a base64 source; an http(s) URL -> a url source."""
    if not isinstance(url, str) or not url:
        raise BadRequest("image_url.url is missing", param="messages")
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    header, sep, data = url.partition(",")
    if not (url.startswith("data:") and sep and header.endswith(";base64")):
        raise BadRequest("images must be http(s) URLs or base64 data: URLs", param="messages")
    return {"type": "base64", "media_type": header[5:-7], "data": data}


def assistant_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = content_blocks(message.get("content"))
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        try:
            arguments = orjson.loads(fn.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            raise BadRequest(f"tool call {call.get('id')!r} has arguments that are not JSON",
                             param="messages") from None
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": arguments})
    return blocks


def tool_result(message: dict[str, Any]) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.get("tool_call_id")}
    content = message.get("content")
    if isinstance(content, list):
        content = content_blocks(content)
    if content:
        block["content"] = content
    return block


def anthropic_tool(tool: dict[str, Any]) -> dict[str, Any]:
    fn = tool.get("function") or {}
    out: dict[str, Any] = {"name": fn.get("name")}
    if fn.get("description"):
        out["description"] = fn["description"]
    out["input_schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
    if tool.get("cache_control"):
        out["cache_control"] = tool["cache_control"]
    return out


def tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        out = {"type": "tool", "name": name} if name else {"type": "auto"}
    elif isinstance(choice, str) and choice in TOOL_CHOICES:
        out = dict(TOOL_CHOICES[choice])
    elif choice is None:
        out = {"type": "auto"} if parallel is False else None
    else:
        raise BadRequest(f"tool_choice {choice!r} is not supported", param="tool_choice")
    if out and parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def to_chat_completion(data: dict[str, Any], model: str) -> dict[str, Any]:
    """A Messages API response -> an OpenAI chat.completion."""
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in data.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "thinking":
            thinking.append(block.get("thinking", ""))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"), "arguments": arguments}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["reasoning_content"] = "".join(thinking)
    return {
        "id": data.get("id"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("model") or model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish_reason(data.get("stop_reason"))}],
        "usage": openai_usage(data.get("usage") or {}),
    }
