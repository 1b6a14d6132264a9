"""Cohere's v2 API (``cohere/command-r-plus``, ``cohere/embed-english-v3.0``, ...).

Chat: ``POST {base}/v2/chat``. Messages keep OpenAI's roles (system, user, assistant with
``tool_calls``, tool with ``tool_call_id``) and function tools keep OpenAI's shape; the params are
renamed: ``top_p`` -> ``p``, ``stop`` -> ``stop_sequences``, ``max_completion_tokens`` ->
``max_tokens``, ``tool_choice`` required/none -> ``REQUIRED``/``NONE`` (auto is the default),
``response_format`` json_object/json_schema -> ``{"type": "json_object"[, "json_schema"]}``; any
other key (``k``, ``documents``, ``citation_options``, ``safety_mode``, ...) is Cohere's own and
passes through. The answer's ``message.content`` text blocks, ``tool_calls`` and
``finish_reason`` (COMPLETE, STOP_SEQUENCE, MAX_TOKENS, TOOL_CALL) map back; usage is
``usage.tokens`` (else ``billed_units``).

Streams are server-sent events (``event: <type>`` + ``data: {"type": ...}``): ``message-start``,
``content-start``/``content-delta``/``content-end`` (``delta.message.content.text``),
``tool-plan-delta``, ``tool-call-start`` (``delta.message.tool_calls`` with id and name),
``tool-call-delta`` (argument fragments), ``tool-call-end``, ``citation-*``, ``message-end``
(``delta.finish_reason``, ``delta.usage``).

Embeddings: ``POST {base}/v2/embed`` with ``texts``, ``input_type`` (``search_document`` unless the
request says), ``embedding_types: ["float"]``, ``dimensions`` -> ``output_dimension``; the answer's
``embeddings.float`` and ``meta.billed_units.input_tokens``.

Key: ``api_key``, else ``COHERE_API_KEY`` (or ``CO_API_KEY``), as a bearer token. ``api_base`` is
the server root (``https://api.cohere.com``); a full ``.../v2/chat`` or ``.../v2/embed`` URL works too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from proxy.errors import AuthenticationError, BadRequest, UpstreamError
from proxy.providers.base import Adapter, UpstreamCall, load_json, merged_body
from proxy.providers.openai import CHAT_PARAMS, iter_sse_data
from proxy.providers.shapes import ChatChunks, chat_response, embedding_response, text_inputs, token_usage

if TYPE_CHECKING:
    from proxy.context import RequestContext
    from proxy.deployment import Deployment

DEFAULT_BASE = "https://api.cohere.com"
FINISH_REASONS = {"COMPLETE": "stop", "STOP_SEQUENCE": "stop", "MAX_TOKENS": "length", "TOOL_CALL": "tool_calls",
                  "ERROR": "stop", "TIMEOUT": "length"}
RENAMED = {"top_p": "p", "stop": "stop_sequences", "max_completion_tokens": "max_tokens"}
TRANSLATED = frozenset({"messages", "model", "stream", "stream_options", "max_tokens", "max_completion_tokens",
                        "temperature", "top_p", "stop", "seed", "frequency_penalty", "presence_penalty",
                        "tools", "tool_choice", "response_format", "user", "extra_headers", "n"})
UNSUPPORTED = CHAT_PARAMS - TRANSLATED
EMBED_INPUT_TYPE = "search_document"  # LiteLLM's default for Cohere embeddings


class CohereAdapter(Adapter):
    provider: ClassVar[str] = "cohere"
    supported_params: ClassVar[frozenset[str]] = TRANSLATED | {"input", "encoding_format", "dimensions"}
    kinds: ClassVar[frozenset[str]] = frozenset({"chat", "embedding"})
    default_api_base: ClassVar[str | None] = DEFAULT_BASE
    api_key_env: ClassVar[str | None] = "COHERE_API_KEY"

    def url(self, deployment: Deployment, kind: str) -> str:
        base = str(deployment.api_base or DEFAULT_BASE).rstrip("/")
        path = "/v2/embed" if kind == "embedding" else "/v2/chat"
        for known in ("/v2/chat", "/v2/embed"):
            if base.endswith(known):
                return base[: -len(known)] + path
        return base.removesuffix("/v2") + path

    def headers(self, deployment: Deployment, stream: bool) -> dict[str, str]:
        key = deployment.api_key or os.environ.get("COHERE_API_KEY") or os.environ.get("CO_API_KEY")
        if not key:
            raise AuthenticationError("cohere: no API key: set api_key on the deployment or COHERE_API_KEY")
        return {"Content-Type": "application/json", "Accept": "text/event-stream" if stream else "application/json",
                "Authorization": f"Bearer {key}", **deployment.headers}

    def build_request(self, ctx: RequestContext, deployment: Deployment) -> UpstreamCall:
        request = merged_body(ctx, deployment)
        headers = self.headers(deployment, ctx.stream)
        extra = request.pop("extra_headers", None)
        if isinstance(extra, dict):
            headers.update({str(k): str(v) for k, v in extra.items()})
        if ctx.kind == "embedding":
            body = embed_request(request, deployment.upstream_model)
        else:
            body = chat_request(request, deployment.upstream_model)
        return UpstreamCall("POST", self.url(deployment, ctx.kind), headers, orjson.dumps(body),
                            stream=ctx.stream and ctx.kind == "chat")

    def parse_response(
        self, ctx: RequestContext, deployment: Deployment, status: int, body: bytes
    ) -> dict[str, Any]:
        data = load_json(body, self.provider)
        if not isinstance(data, dict):
            raise UpstreamError("upstream cohere returned an unexpected body")
        if ctx.kind == "embedding":
            vectors = data.get("embeddings")
            if isinstance(vectors, dict):
                vectors = vectors.get("float")
            if not isinstance(vectors, list):
                raise UpstreamError("upstream cohere returned no float embeddings")
            billed = ((data.get("meta") or {}).get("billed_units") or {}).get("input_tokens")
            return embedding_response(ctx, deployment.upstream_model, vectors,
                                      int(billed) if billed is not None else None)
        if not isinstance(data.get("message"), dict):
            raise UpstreamError("upstream cohere returned an unexpected body")
        message = openai_message(data["message"])
        reason = FINISH_REASONS.get(str(data.get("finish_reason")), "stop")
        return chat_response(deployment.upstream_model, message, reason, openai_usage(data.get("usage")))

    def parse_stream(
        self, ctx: RequestContext, deployment: Deployment, lines: Iterable[bytes]
    ) -> Iterator[dict[str, Any]]:
        chunks = ChatChunks(ctx, deployment.upstream_model)
        started = finished = False
        tools: dict[int, int] = {}  # Cohere's tool-call index -> OpenAI tool_calls index
        for data in iter_sse_data(lines):
            try:
                event = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise UpstreamError("upstream cohere sent an invalid stream event") from exc
            if not isinstance(event, dict):
                continue
            kind = event.get("type")
            if not started:
                started = True
                yield chunks.role()
            message = (event.get("delta") or {}).get("message") or {}
            if kind == "content-delta":
                text = (message.get("content") or {}).get("text")
                if text:
                    yield chunks.chunk({"content": text})
            elif kind == "tool-call-start":
                call = message.get("tool_calls") or {}
                position = tools[int(event.get("index") or 0)] = len(tools)
                fn = call.get("function") or {}
                yield chunks.chunk({"tool_calls": [{"index": position, "id": call.get("id"), "type": "function",
                                                    "function": {"name": fn.get("name"),
                                                                 "arguments": fn.get("arguments") or ""}}]})
            elif kind == "tool-call-delta":
                fragment = ((message.get("tool_calls") or {}).get("function") or {}).get("arguments")
                position = tools.get(int(event.get("index") or 0))
                if fragment and position is not None:
                    yield chunks.chunk({"tool_calls": [{"index": position, "function": {"arguments": fragment}}]})
            elif kind == "message-end":
                finished = True
                delta = event.get("delta") or {}
                reason = FINISH_REASONS.get(str(delta.get("finish_reason")), "stop")
                yield from chunks.finish(reason, openai_usage(delta.get("usage")))
            elif kind == "error" or "error" in event:
                raise UpstreamError(f"upstream cohere stream error: {event.get('error') or event.get('message')}")
        if not finished:
            raise UpstreamError("upstream cohere stream ended before message-end")


def chat_request(request: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat request -> a Cohere v2 chat body."""
    refused = sorted(k for k in UNSUPPORTED if request.get(k) not in (None, False))
    if request.get("n") not in (None, 1):
        refused.append("n")
    if refused:
        raise BadRequest(f"cohere does not support {', '.join(refused)}; remove them or set drop_params: true",
                         param=refused[0])
    body: dict[str, Any] = {"model": model, "messages": [cohere_message(m) for m in request.get("messages") or ()]}
    for key, value in request.items():
        if value is None or key in ("messages", "model", "stream_options", "user", "n", "tool_choice",
                                    "response_format", "extra_headers"):
            continue
        if key == "stop":
            value = [value] if isinstance(value, str) else value
        body[RENAMED.get(key, key)] = value
    choice = request.get("tool_choice")
    if choice in ("required", "none"):
        body["tool_choice"] = choice.upper()
    elif choice not in (None, "auto"):
        raise BadRequest("cohere's tool_choice is auto, required or none (a named function is not supported)",
                         param="tool_choice")
    fmt = request.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        body["response_format"] = {"type": "json_object", **({"json_schema": schema} if schema else {})}
    return body


def cohere_message(message: dict[str, Any]) -> dict[str, Any]:
    role = message.get("role")
    content = message.get("content")
    if role == "developer":
        role = "system"
    if role == "tool":
        return {"role": "tool", "tool_call_id": message.get("tool_call_id"),
                "content": content if isinstance(content, (str, list)) and content else "(empty)"}
    out: dict[str, Any] = {"role": role}
    if isinstance(content, list):
        out["content"] = [part for part in content if isinstance(part, dict)
                          and part.get("type") in ("text", "image_url")]
    elif content is not None:
        out["content"] = content
    if role == "assistant" and message.get("tool_calls"):
        out["tool_calls"] = [{"id": c.get("id"), "type": "function",
                              "function": {"name": (c.get("function") or {}).get("name"),
                                           "arguments": (c.get("function") or {}).get("arguments") or "{}"}}
                             for c in message["tool_calls"]]
    return out


def openai_message(message: dict[str, Any]) -> dict[str, Any]:
    texts = [block.get("text") or "" for block in message.get("content") or ()
             if isinstance(block, dict) and block.get("type", "text") == "text"]
    calls = [{"id": c.get("id"), "type": "function",
              "function": {"name": (c.get("function") or {}).get("name"),
                           "arguments": (c.get("function") or {}).get("arguments") or "{}"}}
             for c in message.get("tool_calls") or () if isinstance(c, dict)]
    out: dict[str, Any] = {"content": "".join(texts) if texts or not calls else None}
    if calls:
        out["tool_calls"] = calls
    return out


def openai_usage(usage: Any) -> dict[str, int] | None:
    if not isinstance(usage, dict):
        return None
    counts = usage.get("tokens") or usage.get("billed_units")
    if not isinstance(counts, dict):
        return None
    return token_usage(int(counts.get("input_tokens") or 0), int(counts.get("output_tokens") or 0))


def embed_request(request: dict[str, Any], model: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "texts": text_inputs(request.get("input"), "cohere"),
                            "input_type": request.get("input_type") or EMBED_INPUT_TYPE,
                            "embedding_types": ["float"]}
    if request.get("dimensions") is not None:
        body["output_dimension"] = request["dimensions"]
    if request.get("truncate") is not None:
        body["truncate"] = request["truncate"]
    return body
