"""Ollama's native API (``http://localhost:11434`` unless ``api_base`` says otherwise).

- ``ollama/<model>``: a chat request becomes one prompt for ``/api/generate``, as with LiteLLM.
  The prompt is the one the ``prompt_template`` stage rendered; without a template, system
  messages go in Ollama's ``system`` field and the other messages are rendered with role headings
  (a lone user message is sent as it is, so the model's own template still applies).
- ``ollama_chat/<model>``: a chat request goes to ``/api/chat`` with messages, images and tools.
- Both serve embeddings through ``/api/embed``.

OpenAI sampling params travel in Ollama's ``options`` (``max_tokens`` becomes ``num_predict``).
Provider params Ollama takes beside ``options`` (``keep_alive``, ``raw``, ``think``, ...) stay at
the top level; any other param OpenAI does not define (``num_ctx``, ``repeat_penalty``, ...) is
passed as an option, as LiteLLM does. Ollama streams newline-delimited JSON objects, not
server-sent events; each line becomes OpenAI chunks. Error bodies are ``{"error": "..."}``, which
the base ``map_error`` reads.
"""

from __future__ import annotations

import base64
import os
import struct
import uuid
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from proxy.errors import BadRequest, UpstreamError
from proxy.providers.base import Adapter, UpstreamCall, load_json, merged_body
from proxy.providers.openai import CHAT_PARAMS
from proxy.providers.shapes import ChatChunks, chat_response, text_of, token_usage

if TYPE_CHECKING:
    from proxy.context import RequestContext
    from proxy.deployment import Deployment

#: OpenAI param -> Ollama option.
OPTION_NAMES = {
    "temperature": "temperature", "top_p": "top_p", "seed": "seed", "stop": "stop",
    "max_tokens": "num_predict", "max_completion_tokens": "num_predict",
    "frequency_penalty": "frequency_penalty", "presence_penalty": "presence_penalty",
}
#: Ollama request fields that sit beside ``options``.
TOP_LEVEL = frozenset({"keep_alive", "raw", "system", "template", "think", "format", "suffix", "context",
                       "truncate", "dimensions"})
#: Request fields that are never options: handled here, or OpenAI params Ollama has no use for.
NOT_OPTIONS = CHAT_PARAMS | {"input", "encoding_format", "prompt"}
COMMON_PARAMS = frozenset(
    {"messages", "model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
     "top_p", "seed", "stop", "frequency_penalty", "presence_penalty", "response_format",
     "reasoning_effort", "extra_headers"}
)
ROLE_HEADINGS = {"assistant": "Assistant"}  # everything else that is not system speaks as the user
SUFFIXES = ("/api/generate", "/api/chat", "/api/embed", "/api/embeddings")


def split_params(body: dict[str, Any], model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(top-level fields, options) for an Ollama request from the merged request params."""
    top: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in body.items():
        if value is None:
            continue
        if key in OPTION_NAMES:
            options[OPTION_NAMES[key]] = [value] if key == "stop" and isinstance(value, str) else value
        elif key in TOP_LEVEL:
            top[key] = value
        elif key not in NOT_OPTIONS:
            options[key] = value
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and "format" not in top:
        if fmt.get("type") == "json_object":
            top["format"] = "json"
        elif fmt.get("type") == "json_schema" and (fmt.get("json_schema") or {}).get("schema"):
            top["format"] = fmt["json_schema"]["schema"]
    effort = body.get("reasoning_effort")
    if effort is not None and "think" not in top:
        # gpt-oss models take a level; the others only know on/off
        top["think"] = effort if model.startswith("gpt-oss") else effort != "none"
    return top, options


def images_of(content: Any) -> list[str]:
    """Base64 images of a content-part list; Ollama takes only inline images."""
    out = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict) or part.get("type") != "image_url":
            continue
        url = part.get("image_url")
        url = url.get("url", "") if isinstance(url, dict) else str(url or "")
        if not url.startswith("data:") or "base64," not in url:
            raise BadRequest("Ollama takes images only inline, as data: URLs", param="messages")
        out.append(url.split("base64,", 1)[1])
    return out


def ollama_tool_call(call: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """An OpenAI assistant tool call -> Ollama's (arguments as an object, no id)."""
    fn = call.get("function") or {}
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            args = orjson.loads(args) if args.strip() else {}
        except orjson.JSONDecodeError:
            raise BadRequest("tool call arguments are not valid JSON", param="messages") from None
    if call.get("id"):
        names[call["id"]] = fn.get("name", "")
    return {"function": {"name": fn.get("name", ""), "arguments": args or {}}}


def openai_tool_calls(calls: list[dict[str, Any]], first_index: int = 0) -> list[dict[str, Any]]:
    """Ollama's tool calls -> OpenAI's (arguments as a JSON string, an id each)."""
    out = []
    for i, call in enumerate(calls):
        fn = call.get("function") or {}
        args = fn.get("arguments")
        out.append({
            "index": first_index + i,
            "id": call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": fn.get("name", ""),
                         "arguments": args if isinstance(args, str) else orjson.dumps(args or {}).decode()},
        })
    return out


def finish_reason(data: dict[str, Any], tool_calls: bool) -> str:
    if tool_calls:
        return "tool_calls"
    return "length" if data.get("done_reason") == "length" else "stop"


def usage_of(data: dict[str, Any]) -> dict[str, int] | None:
    """Counts from Ollama's final object (a count of 0 is left out of Ollama's JSON)."""
    if "prompt_eval_count" not in data and "eval_count" not in data:
        return None
    return token_usage(int(data.get("prompt_eval_count") or 0), int(data.get("eval_count") or 0))


def float32_base64(vector: list[float]) -> str:
    """An embedding as OpenAI's ``encoding_format: base64``: little-endian float32."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


class OllamaBase(Adapter):
    """What ``/api/generate`` and ``/api/chat`` share: URL, headers, params, embeddings, streams."""

    kinds: ClassVar[frozenset[str]] = frozenset({"chat", "embedding"})
    default_api_base: ClassVar[str | None] = "http://localhost:11434"
    api_base_env: ClassVar[str | None] = "OLLAMA_API_BASE"
    api_key_env: ClassVar[str | None] = "OLLAMA_API_KEY"
    path: ClassVar[str] = ""

    def base_url(self, deployment: Deployment) -> str:
        base = (deployment.api_base or os.environ.get("OLLAMA_API_BASE") or self.default_api_base or "").rstrip("/")
        for suffix in SUFFIXES:
            base = base.removesuffix(suffix)
        return base

    def headers(self, deployment: Deployment, body: dict[str, Any]) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = deployment.api_key or (os.environ.get(self.api_key_env) if self.api_key_env else None)
        if key:  # Ollama itself has no auth; hosted Ollama and proxies in front of it use a bearer token
            headers["Authorization"] = f"Bearer {key}"
        headers.update(deployment.headers)
        extra = body.get("extra_headers")
        if isinstance(extra, dict):
            headers.update({str(k): str(v) for k, v in extra.items()})
        return headers

    def build_request(self, ctx: RequestContext, deployment: Deployment) -> UpstreamCall:
        body = merged_body(ctx, deployment)
        top, options = split_params(body, deployment.upstream_model)
        payload: dict[str, Any] = {"model": deployment.upstream_model}
        if ctx.kind == "embedding":
            path = "/api/embed"
            payload["input"] = self.embed_input(body.get("input"))
        else:
            path = self.path
            payload.update(self.chat_payload(ctx, body))
            payload["stream"] = ctx.stream  # Ollama streams unless told not to
        payload.update(top)
        if options:
            payload["options"] = options
        return UpstreamCall("POST", self.base_url(deployment) + path, self.headers(deployment, body),
                            orjson.dumps(payload), stream=ctx.stream and ctx.kind != "embedding")

    @staticmethod
    def embed_input(given: Any) -> str | list[str]:
        if isinstance(given, str) or (isinstance(given, list) and all(isinstance(x, str) for x in given)):
            return given
        raise BadRequest("Ollama embeddings take text input (a string or a list of strings)", param="input")

    def chat_payload(self, ctx: RequestContext, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def answer(self, data: dict[str, Any]) -> dict[str, Any]:
        """The assistant message (content, reasoning, tool calls) of a complete answer."""
        raise NotImplementedError

    def delta(self, data: dict[str, Any], tool_index: int) -> dict[str, Any]:
        """The OpenAI delta of one streamed line."""
        raise NotImplementedError

    def parse_response(
        self, ctx: RequestContext, deployment: Deployment, status: int, body: bytes
    ) -> dict[str, Any]:
        data = load_json(body, self.provider)
        if not isinstance(data, dict):
            raise UpstreamError(f"upstream {self.provider} returned an unexpected body")
        model = data.get("model") or deployment.upstream_model
        if ctx.kind == "embedding":
            return self.embeddings(ctx, model, data)
        message = self.answer(data)
        return chat_response(model, message, finish_reason(data, bool(message.get("tool_calls"))),
                             usage_of(data))

    @staticmethod
    def embeddings(ctx: RequestContext, model: str, data: dict[str, Any]) -> dict[str, Any]:
        b64 = ctx.body.get("encoding_format") == "base64"
        vectors = data.get("embeddings") or []
        tokens = int(data.get("prompt_eval_count") or 0)
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": float32_base64(v) if b64 else v}
                     for i, v in enumerate(vectors)],
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def parse_stream(
        self, ctx: RequestContext, deployment: Deployment, lines: Iterable[bytes]
    ) -> Iterator[dict[str, Any]]:
        chunks: ChatChunks | None = None
        tool_index = 0
        for line in lines:
            line = line.strip()
            if not line:
                continue
            data = load_json(line, self.provider)
            if not isinstance(data, dict):
                raise UpstreamError(f"upstream {self.provider} sent an unexpected stream line")
            if "error" in data:
                raise UpstreamError(f"upstream {self.provider} stream error: {data['error']}")
            if chunks is None:  # the role chunk waits for the first real line, so early failures retry
                chunks = ChatChunks(ctx, data.get("model") or deployment.upstream_model)
                yield chunks.role()
            delta = self.delta(data, tool_index)
            if delta:
                tool_index += len(delta.get("tool_calls", ()))
                yield chunks.chunk(delta)
            if data.get("done"):
                yield from chunks.finish(finish_reason(data, tool_index > 0), usage_of(data))
                return
        raise UpstreamError(f"upstream {self.provider} stream ended before its final line")


def render_generate(messages: list[dict[str, Any]]) -> tuple[str | None, str, list[str]]:
    """(system, prompt, images) for /api/generate from chat messages, without a template."""
    system: list[str] = []
    turns: list[tuple[str, str]] = []
    images: list[str] = []
    for m in messages:
        role, content = m.get("role", "user"), m.get("content")
        images.extend(images_of(content))
        if role in ("system", "developer"):
            system.append(text_of(content))
        else:
            turns.append((role, text_of(content)))
    if len(turns) == 1 and turns[0][0] == "user":
        prompt = turns[0][1]
    else:
        prompt = "".join(f"### {ROLE_HEADINGS.get(role, 'User')}:\n{text}\n\n" for role, text in turns)
    return ("\n\n".join(system) if system else None), prompt, images


class OllamaAdapter(OllamaBase):
    """``ollama/<model>``: chat through ``/api/generate`` with one prompt."""

    provider: ClassVar[str] = "ollama"
    supported_params: ClassVar[frozenset[str]] = COMMON_PARAMS
    path: ClassVar[str] = "/api/generate"

    def chat_payload(self, ctx: RequestContext, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("tools") and body.get("tool_choice") != "none":
            raise BadRequest("ollama/ models take no tools here; use an ollama_chat/ model", param="tools")
        prompt = ctx.extra.get("prompt")
        if isinstance(prompt, str):  # rendered by the prompt_template stage
            return {"prompt": prompt}
        system, prompt, images = render_generate(body.get("messages") or [])
        out: dict[str, Any] = {"prompt": prompt}
        if system is not None:
            out["system"] = system
        if images:
            out["images"] = images
        return out

    def answer(self, data: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {"content": data.get("response") or ""}
        if data.get("thinking"):
            message["reasoning_content"] = data["thinking"]
        return message

    def delta(self, data: dict[str, Any], tool_index: int) -> dict[str, Any]:
        delta = {}
        if data.get("thinking"):
            delta["reasoning_content"] = data["thinking"]
        if data.get("response"):
            delta["content"] = data["response"]
        return delta


class OllamaChatAdapter(OllamaBase):
    """``ollama_chat/<model>``: chat through ``/api/chat`` with messages and tools."""

    provider: ClassVar[str] = "ollama_chat"
    supported_params: ClassVar[frozenset[str]] = COMMON_PARAMS | {"tools", "tool_choice"}
    path: ClassVar[str] = "/api/chat"

    def chat_payload(self, ctx: RequestContext, body: dict[str, Any]) -> dict[str, Any]:
        names: dict[str, str] = {}  # tool call id -> function name, for tool results
        messages = []
        for m in body.get("messages") or []:
            role = "system" if m.get("role") == "developer" else m.get("role", "user")
            msg: dict[str, Any] = {"role": role, "content": text_of(m.get("content"))}
            images = images_of(m.get("content"))
            if images:
                msg["images"] = images
            if m.get("reasoning_content"):
                msg["thinking"] = m["reasoning_content"]
            if m.get("tool_calls"):
                msg["tool_calls"] = [ollama_tool_call(c, names) for c in m["tool_calls"]]
            if role == "tool":
                name = m.get("name") or names.get(m.get("tool_call_id", ""))
                if name:
                    msg["tool_name"] = name
            messages.append(msg)
        out: dict[str, Any] = {"messages": messages}
        # Ollama has no tool_choice; "none" is kept by not offering the tools at all
        if body.get("tools") and body.get("tool_choice") != "none":
            out["tools"] = body["tools"]
        return out

    def answer(self, data: dict[str, Any]) -> dict[str, Any]:
        msg = data.get("message") or {}
        calls = msg.get("tool_calls")
        message: dict[str, Any] = {"content": msg.get("content") or ("" if not calls else None)}
        if msg.get("thinking"):
            message["reasoning_content"] = msg["thinking"]
        if calls:
            message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in openai_tool_calls(calls)]
        return message

    def delta(self, data: dict[str, Any], tool_index: int) -> dict[str, Any]:
        msg = data.get("message") or {}
        delta: dict[str, Any] = {}
        if msg.get("thinking"):
            delta["reasoning_content"] = msg["thinking"]
        if msg.get("content"):
            delta["content"] = msg["content"]
        if msg.get("tool_calls"):
            delta["tool_calls"] = openai_tool_calls(msg["tool_calls"], tool_index)
        return delta
