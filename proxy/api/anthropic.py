"""The Anthropic-compatible surface: ``POST /v1/messages`` and ``/v1/messages/count_tokens``
(also under ``/anthropic``, e.g. ``/anthropic/v1/messages``).

Clients of Anthropic's Messages API (the ``anthropic`` SDKs, tools built on them) point their
base URL at the proxy and name a ``model_name`` from the config. The request is translated into
an OpenAI chat request at this edge, runs through the same pipeline as /chat/completions — so
any deployment serves it, OpenAI, Azure, Anthropic, Ollama alike — and the answer (JSON or
stream, see ``anthropic_stream``) and any error are translated back into Anthropic's shapes.

Request translation (the reverse of ``proxy/providers/anthropic.py``):

- ``system`` (a string or text blocks) becomes a leading system message;
- user turns: text and image blocks become content parts (a base64 image a ``data:`` URL, a url
  image its URL), a base64 PDF document a ``file`` part; each ``tool_result`` block becomes a
  ``tool`` message (placed first, as OpenAI wants them right after the assistant's calls), its
  images a user message after it;
- assistant turns: text blocks become ``content``, ``tool_use`` blocks ``tool_calls`` (arguments
  the JSON of ``input``); thinking blocks are dropped (no OpenAI form);
- ``max_tokens``, ``temperature``, ``top_p``, ``top_k`` as they are; ``stop_sequences`` ->
  ``stop``; ``tools`` -> function tools; ``tool_choice`` auto/any/none/tool -> auto/required/
  none/named function, ``disable_parallel_tool_use`` -> ``parallel_tool_calls: false``;
  ``metadata.user_id`` -> ``user`` (other metadata keys reach the proxy's own ``metadata``);
- any other key is passed on as it is, as on the OpenAI surface.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson
from marshmallow import ValidationError
from werkzeug.datastructures import EnvironHeaders

from proxy.api.anthropic_stream import (
    EventStream,
    StreamTranslator,
    anthropic_usage,
    as_chunks,
    error_body,
    message_id,
    stop_reason,
)
from proxy.api.openai import build_context, invalid, read_body, run_pipeline
from proxy.api.render import SSE_HEADERS, Reply, context_headers, error_reply, json_reply
from proxy.api.schemas import SCHEMAS, parse_json
from proxy.context import RequestContext
from proxy.errors import BadRequest, ProxyError

if TYPE_CHECKING:
    from proxy.gateway import Gateway

log = logging.getLogger(__name__)

#: Messages API fields translated here; any other key is passed on unchanged.
TRANSLATED = frozenset({"model", "messages", "system", "max_tokens", "temperature", "top_p", "top_k",
                        "stop_sequences", "stream", "tools", "tool_choice", "metadata"})
TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


# -- errors ---------------------------------------------------------------------------------------


def anthropic_error_reply(err: ProxyError, headers: list[tuple[str, str]] | None = None) -> Reply:
    """Anthropic's error shape with the ProxyError's status and headers (Retry-After, ...)."""
    return json_reply(error_body(err), err.status, [*err.response_headers().items(), *(headers or ())])


# -- request ---------------------------------------------------------------------------------------


def anthropic_to_openai(body: Any, *, count_only: bool = False) -> dict[str, Any]:
    """A Messages API request -> an OpenAI chat request; a bad request is a 400 naming the field.

    ``count_only`` (for count_tokens) does not require ``max_tokens``.
    """
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: Field required", param="model")
    max_tokens = body.get("max_tokens")
    if not count_only and (type(max_tokens) is not int or max_tokens < 1):
        raise BadRequest("max_tokens: Field required (an integer of at least 1)", param="max_tokens")
    turns = body.get("messages")
    if not isinstance(turns, list) or not turns:
        raise BadRequest("messages: Field required (a non-empty list)", param="messages")
    messages = system_messages(body.get("system"))
    for i, turn in enumerate(turns):
        messages.extend(convert_turn(turn, f"messages.{i}"))
    out: dict[str, Any] = {"model": model, "messages": messages}
    if max_tokens is not None:
        out["max_tokens"] = max_tokens
    for key in ("temperature", "top_p", "top_k"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop_sequences")
    if stop:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise BadRequest("stop_sequences: must be a list of strings", param="stop_sequences")
        out["stop"] = stop
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}  # usage arrives last; message_delta needs it
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise BadRequest("tools: must be a list", param="tools")
        out["tools"] = [openai_tool(t, f"tools.{i}") for i, t in enumerate(tools)]
    if body.get("tool_choice") is not None:
        out.update(openai_tool_choice(body["tool_choice"]))
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        extra = {k: v for k, v in metadata.items() if k != "user_id"}
        if metadata.get("user_id") is not None:
            out["user"] = str(metadata["user_id"])
        if extra:
            out["metadata"] = extra  # the proxy's own metadata (tags, trace ids, ...)
    for key, value in body.items():
        if key not in TRANSLATED and value is not None:
            out[key] = value
    return out


def system_messages(system: Any) -> list[dict[str, Any]]:
    if system is None or system == "" or system == []:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if not isinstance(system, list) or not all(isinstance(b, dict) and b.get("type") == "text" for b in system):
        raise BadRequest("system: must be a string or a list of text blocks", param="system")
    return [{"role": "system", "content": simplify([text_part(b) for b in system])}]


def convert_turn(turn: Any, where: str) -> list[dict[str, Any]]:
    """One Messages API turn -> the OpenAI messages it becomes (a user turn may make several)."""
    if not isinstance(turn, dict):
        raise BadRequest(f"{where}: must be an object", param="messages")
    role, content = turn.get("role"), turn.get("content")
    if role not in ("user", "assistant"):
        raise BadRequest(f"{where}.role: must be 'user' or 'assistant' (system goes in 'system')",
                         param="messages")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
        raise BadRequest(f"{where}.content: must be a string or a list of content blocks", param="messages")
    if role == "assistant":
        return [assistant_message(content, where)]
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        if block.get("type") == "tool_result":
            text, images = tool_result(block, f"{where}.content.{j}")
            tool_messages.append({"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text})
            parts.extend(images)
        else:
            parts.append(content_part(block, f"{where}.content.{j}"))
    if parts or not tool_messages:
        tool_messages.append({"role": "user", "content": simplify(parts)})
    return tool_messages


def assistant_message(blocks: list[dict[str, Any]], where: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        kind = block.get("type")
        if kind == "text":
            parts.append(text_part(block))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"), "arguments": arguments}})
        elif kind not in ("thinking", "redacted_thinking"):
            raise BadRequest(f"{where}.content.{j}: assistant blocks of type {kind!r} are not supported",
                             param="messages")
    message: dict[str, Any] = {"role": "assistant", "content": simplify(parts) if parts else (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    return message


def text_part(block: dict[str, Any]) -> dict[str, Any]:
    text = block.get("text")
    part = {"type": "text", "text": text if isinstance(text, str) else ""}
    if block.get("cache_control"):
        part["cache_control"] = block["cache_control"]
    return part


def content_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    """A user content block -> an OpenAI content part."""
    kind = block.get("type")
    if kind == "text":
        return text_part(block)
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    if kind == "image":
        if source.get("type") == "base64":
            url = f"data:{source.get('media_type')};base64,{source.get('data')}"
        elif source.get("type") == "url":
            url = source.get("url")
        else:
            raise BadRequest(f"{where}.source: images must have a base64 or url source", param="messages")
        part: dict[str, Any] = {"type": "image_url", "image_url": {"url": url}}
    elif kind == "document" and source.get("type") == "base64":
        part = {"type": "file", "file": {"file_data": f"data:{source.get('media_type')};base64,{source.get('data')}"}}
    elif kind == "document" and source.get("type") == "text":
        part = {"type": "text", "text": str(source.get("data") or "")}
    else:
        raise BadRequest(f"{where}: content blocks of type {kind!r} are not supported here", param="messages")
    if block.get("cache_control"):
        part["cache_control"] = block["cache_control"]
    return part


def tool_result(block: dict[str, Any], where: str) -> tuple[str, list[dict[str, Any]]]:
    """A tool_result's content as text, and any images it holds (a tool message cannot)."""
    content = block.get("content")
    if content is None or isinstance(content, str):
        return content or "", []
    if not isinstance(content, list):
        raise BadRequest(f"{where}.content: must be a string or a list of blocks", param="messages")
    texts, images = [], []
    for k, item in enumerate(content):
        part = content_part(item, f"{where}.content.{k}") if isinstance(item, dict) else None
        if part is None:
            raise BadRequest(f"{where}.content.{k}: must be a content block", param="messages")
        if part["type"] == "text":
            texts.append(part["text"])
        else:
            images.append(part)
    return "\n".join(texts), images


def simplify(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """One plain text part is sent as a string (what every OpenAI-style server accepts)."""
    if len(parts) == 1 and parts[0]["type"] == "text" and len(parts[0]) == 2:
        return parts[0]["text"]
    return parts


def openai_tool(tool: Any, where: str) -> dict[str, Any]:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise BadRequest(f"{where}.name: Field required", param="tools")
    if tool.get("type") not in (None, "custom"):
        raise BadRequest(f"{where}: server tools ({tool['type']}) are not supported here; "
                         "define the tool with name, description and input_schema", param="tools")
    fn: dict[str, Any] = {"name": tool["name"]}
    if tool.get("description"):
        fn["description"] = tool["description"]
    fn["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
    out: dict[str, Any] = {"type": "function", "function": fn}
    if tool.get("cache_control"):
        out["cache_control"] = tool["cache_control"]
    return out


def openai_tool_choice(choice: Any) -> dict[str, Any]:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "tool" and isinstance(choice.get("name"), str):
        out: dict[str, Any] = {"tool_choice": {"type": "function", "function": {"name": choice["name"]}}}
    elif kind in TOOL_CHOICES:
        out = {"tool_choice": TOOL_CHOICES[kind]}
    else:
        raise BadRequest("tool_choice: must be {\"type\": \"auto\" | \"any\" | \"none\"} or "
                         "{\"type\": \"tool\", \"name\": ...}", param="tool_choice")
    if choice.get("disable_parallel_tool_use") and kind != "none":
        out["parallel_tool_calls"] = False
    return out


# -- response --------------------------------------------------------------------------------------


def openai_to_anthropic(response: dict[str, Any], requested_model: str,
                        stop_sequences: Iterable[str] | None = None) -> dict[str, Any]:
    """A chat.completion -> a Messages API response (the first choice is the message)."""
    choices = response.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text") or "" for p in text if isinstance(p, dict))
    text = text or message.get("refusal")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"),
                        "input": tool_input(fn.get("arguments"))})
    reason, sequence = stop_reason(choice.get("finish_reason"), bool(message.get("tool_calls")),
                                   choice.get("stop_reason"), stop_sequences)
    return {"id": message_id(response.get("id")), "type": "message", "role": "assistant",
            "model": requested_model, "content": content, "stop_reason": reason, "stop_sequence": sequence,
            "usage": anthropic_usage(response.get("usage"))}


def tool_input(arguments: Any) -> dict[str, Any]:
    """Tool-call arguments (a JSON string) as the ``input`` object Anthropic clients expect."""
    if isinstance(arguments, dict):
        return arguments
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        log.warning("tool call arguments are not JSON; sent as {}: %.200s", arguments)
        return {}
    return value if isinstance(value, dict) else {}


# -- serving ---------------------------------------------------------------------------------------


def load_json(raw: bytes) -> Any:
    return parse_json(raw)


def serve_messages(gateway: Gateway, raw: bytes, headers: Any) -> Reply:
    """One Messages API call, from raw body to Reply; every error in Anthropic's shape."""
    try:
        openai_body = anthropic_to_openai(load_json(raw))
        try:
            openai_body = SCHEMAS["chat"].load(openai_body)
        except ValidationError as exc:
            raise invalid(exc) from None
        model, stop = openai_body["model"], openai_body.get("stop")
        ctx = build_context("chat", openai_body, headers)
    except ProxyError as err:
        return anthropic_error_reply(err)
    return run_messages(gateway, ctx, model, stop)


def run_messages(gateway: Gateway, ctx: RequestContext, model: str, stop: list[str] | None = None) -> Reply:
    """Run the pipeline and render in Anthropic's shapes; ``ctx.finish`` runs exactly once."""

    def render(result: Any) -> Reply:
        if ctx.stream:
            chunks = as_chunks(result) if isinstance(result, dict) else result
            body = EventStream(ctx, chunks, StreamTranslator(model, stop))
            return Reply(200, [*SSE_HEADERS, *context_headers(ctx)], body)
        return json_reply(openai_to_anthropic(result, model, stop), 200, context_headers(ctx))

    return run_pipeline(gateway, ctx, render, anthropic_error_reply)


def count_tokens(gateway: Gateway, raw: bytes, headers: Any) -> Reply:
    """``/v1/messages/count_tokens``: ``{"input_tokens": N}`` by the proxy's tokenizers."""
    try:
        gateway.keys.caller(headers)
        body = anthropic_to_openai(load_json(raw), count_only=True)
        model = body["model"]
        group = gateway.services.router.group(model)
        dep = group[0] if group else None
        counted = gateway.tokens.count(dep.params["model"] if dep else model, messages=body["messages"],
                                       tools=body.get("tools"))
    except ProxyError as err:
        return anthropic_error_reply(err)
    return json_reply({"input_tokens": counted.total_tokens})


#: The paths answered here: with and without /v1, and under /anthropic, the base URL Anthropic
#: SDK users give for a LiteLLM proxy (``base_url="http://proxy:4000/anthropic"``).
ROUTES: dict[str, Callable[[Gateway, bytes, Any], Reply]] = {
    "/v1/messages": serve_messages, "/messages": serve_messages, "/anthropic/v1/messages": serve_messages,
    "/v1/messages/count_tokens": count_tokens, "/messages/count_tokens": count_tokens,
    "/anthropic/v1/messages/count_tokens": count_tokens,
}


def error_for_path(path: str, err: ProxyError) -> Reply:
    """An error answered before routing (the body limit): Anthropic's shape on its paths."""
    return anthropic_error_reply(err) if path in ROUTES else error_reply(err)


class AnthropicEndpoints:
    """WSGI layer answering the Messages API paths; any other request goes on to ``app``."""

    def __init__(self, gateway: Gateway, app: Callable[..., Iterable[bytes]]) -> None:
        self.gateway = gateway
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        handler = ROUTES.get(path)
        if handler is None:
            return self.app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "POST":
            err = BadRequest(f"{path} takes POST", status=405)
            return anthropic_error_reply(err, [("Allow", "POST")]).wsgi(start_response)
        try:
            reply = handler(self.gateway, read_body(environ), EnvironHeaders(environ))
        except ProxyError as err:
            reply = anthropic_error_reply(err)
        except Exception:
            log.exception("unhandled error in %s", path)
            reply = anthropic_error_reply(ProxyError("Internal server error; see the proxy log for details"))
        return reply.wsgi(start_response)
