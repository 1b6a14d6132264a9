"""Amazon Bedrock through the Runtime Converse API (``bedrock/anthropic.claude-...``, ...).

One request shape serves every Bedrock chat model: ``POST {endpoint}/model/{modelId}/converse``
(``/converse-stream`` for streams, answered as a binary event stream: ``bedrock_stream``). The
endpoint is ``https://bedrock-runtime.{region}.amazonaws.com`` unless ``aws_bedrock_runtime_endpoint``
(or ``api_base``) says otherwise.

Request translation: ``system``/``developer`` messages become ``system`` text blocks; consecutive
same-role messages merge into one turn; content becomes ``text`` / ``image`` (base64 ``data:``
URLs) / ``document`` (PDF) blocks; assistant ``tool_calls`` become ``toolUse`` blocks and ``tool``
messages ``toolResult`` blocks of a user turn; ``max_tokens``/``temperature``/``top_p``/``stop``
become ``inferenceConfig``; function ``tools`` become ``toolConfig.tools[].toolSpec`` and
``tool_choice`` auto/required/named maps to auto/any/tool (``none`` leaves the tools out).
Converse's own top-level fields (``guardrailConfig``, ...) pass through; any other non-OpenAI key
(``top_k``, ``thinking``, ...) goes into ``additionalModelRequestFields``.

A history holding toolUse/toolResult blocks always gets the ``toolConfig`` Converse requires (the
request's tools, else LiteLLM's ``dummy_tool``). Embeddings (Titan, Cohere) go through
``InvokeModel``: ``bedrock_embed``. The /bedrock pass-through (proxy/api/bedrock.py) sends the
client's own Runtime requests through ``pass_through`` (its ``operation`` the Runtime operation);
``bedrock_native`` reads their usage.

Auth (``aws_auth``): a Bedrock API key (``api_key`` or ``AWS_BEARER_TOKEN_BEDROCK``) is sent as a
bearer token; otherwise requests are signed with SigV4 (service ``bedrock``) using static
credentials from the deployment, the environment or a profile, or temporary ones from STS
(``aws_role_name`` + ``aws_session_name``), held and refreshed off the request path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import orjson

from proxy.errors import (
    BadRequest,
    ContextWindowExceeded,
    ProxyError,
    UpstreamError,
    error_for_status,
)
from proxy.providers import bedrock_embed, bedrock_native
from proxy.providers.aws_auth import AWS_PARAMS, AssumedRoles, AwsSigner, region_of
from proxy.providers.base import (
    Adapter,
    PassThroughCall,
    UpstreamCall,
    load_json,
    merged_body,
    parse_retry_after,
)
from proxy.providers.bedrock_stream import (
    EXCEPTION_STATUS,
    StreamTranslator,
    completion_id,
    finish_reason,
    header,
    iter_frames,
    openai_usage,
)
from proxy.providers.openai import CHAT_PARAMS
from proxy.providers.shapes import alternating_turns, include_usage

if TYPE_CHECKING:
    from proxy.context import RequestContext
    from proxy.deployment import Deployment

TRANSLATED = frozenset(
    {
        "messages", "model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop",
        "stream", "stream_options", "tools", "tool_choice", "parallel_tool_calls", "user",
        "extra_headers",
    }
)
#: Converse's own top-level request fields, sent as they are.
NATIVE = frozenset(
    {
        "guardrailConfig", "additionalModelRequestFields", "additionalModelResponseFieldPaths",
        "performanceConfig", "requestMetadata", "promptVariables", "top_k", "thinking",
    }
)
UNSUPPORTED = CHAT_PARAMS - TRANSLATED
IMAGE_FORMATS = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "gif": "gif", "webp": "webp"}
CONTEXT_MARKERS = ("input is too long", "too many input tokens", "too many total text bytes",
                   "prompt is too long", "context window", "maximum context length")
AUTH_ERRORS = ("unrecognizedclientexception", "invalidsignatureexception", "expiredtokenexception",
               "missingauthenticationtokenexception", "incompletesignatureexception")
#: What LiteLLM offers when a history holds tool blocks but the request has no tools.
DUMMY_TOOL = {"toolSpec": {"name": "dummy_tool", "description": "This is a dummy tool call",
                           "inputSchema": {"json": {"type": "object", "properties": {}}}}}
#: Bedrock Runtime operations the /bedrock pass-through forwards; the last two answer event streams.
OPERATIONS = ("converse", "invoke", "converse-stream", "invoke-with-response-stream")
STREAM_OPERATIONS = frozenset(OPERATIONS[2:])


class BedrockAdapter(Adapter):
    provider: ClassVar[str] = "bedrock"
    supported_params: ClassVar[frozenset[str]] = TRANSLATED | NATIVE
    deployment_params: ClassVar[frozenset[str]] = AWS_PARAMS | {"aws_bedrock_runtime_endpoint"}
    kinds: ClassVar[frozenset[str]] = frozenset({"chat", "embedding"})
    api_key_env: ClassVar[str | None] = "AWS_BEARER_TOKEN_BEDROCK"

    def __init__(self, roles: AssumedRoles | None = None) -> None:
        self.signer = AwsSigner("bedrock", roles or AssumedRoles(), bearer_env="AWS_BEARER_TOKEN_BEDROCK")

    def region(self, deployment: Deployment) -> str:
        return region_of(deployment)

    def endpoint(self, deployment: Deployment) -> str:
        base = (deployment.params.get("aws_bedrock_runtime_endpoint") or deployment.api_base
                or os.environ.get("AWS_BEDROCK_RUNTIME_ENDPOINT")
                or f"https://bedrock-runtime.{self.region(deployment)}.amazonaws.com")
        return str(base).rstrip("/")

    def model_url(self, deployment: Deployment, operation: str) -> str:
        """``{endpoint}/model/{modelId}/{operation}``, the model id escaped whole (``:`` and ``/`` too)."""
        model = deployment.upstream_model.removeprefix("converse/")
        return f"{self.endpoint(deployment)}/model/{quote(model, safe='')}/{operation}"

    def url(self, deployment: Deployment, stream: bool) -> str:
        return self.model_url(deployment, "converse-stream" if stream else "converse")

    def build_request(self, ctx: RequestContext, deployment: Deployment) -> UpstreamCall:
        request = merged_body(ctx, deployment)
        if ctx.kind == "embedding":
            return self.embedding_request(request, deployment)
        body = translate_request(request)
        headers = {"Content-Type": "application/json",
                   "Accept": "application/vnd.amazon.eventstream" if ctx.stream else "application/json"}
        headers.update(deployment.headers)
        extra = request.get("extra_headers")
        if isinstance(extra, dict):
            headers.update({str(k): str(v) for k, v in extra.items()})
        return UpstreamCall("POST", self.url(deployment, ctx.stream), headers, orjson.dumps(body),
                            stream=ctx.stream, extra={"binary": ctx.stream})  # event-stream frames, not lines

    def embedding_request(self, request: dict[str, Any], deployment: Deployment) -> UpstreamCall:
        """InvokeModel for an embedding model; Titan's one-text-per-call bodies go as a batch."""
        headers = {"Content-Type": "application/json", "Accept": "application/json", **deployment.headers}
        url = self.model_url(deployment, "invoke")
        calls = [UpstreamCall("POST", url, dict(headers), bedrock_embed.dumps(body))
                 for body in bedrock_embed.request_bodies(request, deployment.upstream_model)]
        if len(calls) == 1:
            return calls[0]
        return UpstreamCall("POST", url, headers, None, extra={"batch": calls})

    def pass_through(self, call: PassThroughCall, deployment: Deployment) -> UpstreamCall:
        """A client's own Bedrock Runtime request (the /bedrock pass-through), aimed at the deployment's
        model and endpoint; ``sign`` then signs it with the deployment's credentials."""
        stream = call.operation in STREAM_OPERATIONS
        return UpstreamCall("POST", self.model_url(deployment, call.operation), {**call.headers, **deployment.headers},
                            call.body, stream=stream, extra={"binary": stream})

    def pass_through_meter(self, call: PassThroughCall) -> bedrock_native.PassThroughMeter:
        return bedrock_native.PassThroughMeter(call.operation)

    def sign(self, call: UpstreamCall, deployment: Deployment) -> UpstreamCall:
        for one in call.extra.get("batch") or ():
            self.signer.sign(one, deployment)
        return self.signer.sign(call, deployment)

    def parse_batch(self, ctx: RequestContext, deployment: Deployment, bodies: list[bytes]) -> dict[str, Any]:
        return bedrock_embed.to_embeddings(ctx, deployment.upstream_model, bodies)

    def parse_response(
        self, ctx: RequestContext, deployment: Deployment, status: int, body: bytes
    ) -> dict[str, Any]:
        if ctx.kind == "embedding":
            return bedrock_embed.to_embeddings(ctx, deployment.upstream_model, [body])
        data = load_json(body, self.provider)
        if not isinstance(data, dict) or not isinstance(data.get("output"), dict):
            raise UpstreamError("upstream bedrock returned an unexpected body")
        return to_chat_completion(data, deployment.upstream_model)

    def parse_stream(
        self, ctx: RequestContext, deployment: Deployment, lines: Iterable[bytes]
    ) -> Iterator[dict[str, Any]]:
        wants_usage = include_usage(ctx.body)
        translator = StreamTranslator(deployment.upstream_model, wants_usage)
        for frame in iter_frames(lines):
            kind = header(frame, ":message-type") or "event"
            if kind == "exception":
                error_type = header(frame, ":exception-type")
                status = EXCEPTION_STATUS.get(error_type.lower(), 500)
                raise self.map_error(status, {"x-amzn-errortype": error_type}, frame.payload)
            if kind == "error":
                code, message = header(frame, ":error-code"), header(frame, ":error-message")
                status = EXCEPTION_STATUS.get(code.lower(), 500)
                raise self.map_error(status, {"x-amzn-errortype": code}, orjson.dumps({"message": message}))
            try:
                event = orjson.loads(frame.payload) if frame.payload else {}
            except orjson.JSONDecodeError as exc:
                raise UpstreamError("upstream bedrock sent an invalid stream event") from exc
            if isinstance(event, dict):
                yield from translator.feed(header(frame, ":event-type"), event)
        yield from translator.close()
        if not wants_usage and translator.usage is not None:
            ctx.usage = translator.usage

    def map_error(self, status: int, headers: dict[str, str], body: bytes) -> ProxyError:
        try:
            data = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            data = {}
        data = data if isinstance(data, dict) else {}
        message = str(data.get("message") or data.get("Message")
                      or body.decode("utf-8", "replace").strip() or "upstream returned no error details")
        error_type = str(headers.get("x-amzn-errortype") or data.get("__type") or "")
        error_type = error_type.split(":", 1)[0].rsplit("#", 1)[-1]
        lowered = error_type.lower()
        status = EXCEPTION_STATUS.get(lowered, status)
        if lowered in AUTH_ERRORS:
            status = 401
        if status in (400, 413) and any(m in message.lower() for m in CONTEXT_MARKERS):
            return ContextWindowExceeded(message)
        cls = error_for_status(status)
        return cls(
            f"upstream bedrock error {status}: {error_type + ': ' if error_type else ''}{message}",
            code=error_type or None,
            status=status if status >= 500 else None,
            retry_after=parse_retry_after(headers.get("retry-after")),
        )


def translate_request(request: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request -> a Converse body."""
    refused = sorted(k for k in UNSUPPORTED if k in request and not neutral(k, request[k]))
    if refused:
        raise BadRequest(
            f"bedrock does not support {', '.join(refused)}; remove them or set drop_params: true",
            param=refused[0],
        )
    system, messages = split_system(request.get("messages") or [])
    body: dict[str, Any] = {"messages": messages}
    if system:
        body["system"] = system
    config: dict[str, Any] = {}
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
    if max_tokens:
        config["maxTokens"] = max_tokens
    for key, name in (("temperature", "temperature"), ("top_p", "topP")):
        if request.get(key) is not None:
            config[name] = request[key]
    stop = request.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else [s for s in stop if s]
    if config:
        body["inferenceConfig"] = config
    tools = [tool_spec(t) for t in request.get("tools") or () if t.get("type", "function") == "function"]
    choice = request.get("tool_choice")
    if tools and choice != "none":
        body["toolConfig"] = {"tools": tools}
        mapped = tool_choice(choice)
        if mapped:
            body["toolConfig"]["toolChoice"] = mapped
    elif has_tool_blocks(messages):
        # Converse refuses toolUse/toolResult blocks without a toolConfig: keep the client's tools
        # (Converse has no "none" choice), else offer LiteLLM's placeholder tool.
        body["toolConfig"] = {"tools": tools or [DUMMY_TOOL]}
    extra: dict[str, Any] = dict(request.get("additionalModelRequestFields") or {})
    for key, value in request.items():
        if value is None or key in TRANSLATED or key in UNSUPPORTED or key == "additionalModelRequestFields":
            continue
        if key in NATIVE and key[0].islower() and not key.islower():  # camelCase: Converse's own
            body[key] = value
        else:
            extra[key] = value  # model-specific (top_k, thinking, ...)
    if extra:
        body["additionalModelRequestFields"] = extra
    return body


def has_tool_blocks(messages: list[dict[str, Any]]) -> bool:
    return any("toolUse" in block or "toolResult" in block
               for message in messages for block in message.get("content") or ())


def neutral(key: str, value: Any) -> bool:
    return value is None or value is False or (key == "n" and value == 1)


def split_system(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return alternating_turns(
        messages, "bedrock",
        system_blocks=lambda content: [b for b in content_blocks(content) if "text" in b],
        user_blocks=content_blocks, assistant_blocks=assistant_blocks, tool_result=tool_result)


def content_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content.strip() else []
    blocks = []
    for part in content or ():
        kind = part.get("type")
        if kind == "text":
            if part.get("text", "").strip():  # Bedrock rejects blank text blocks
                blocks.append({"text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            media, data = data_url(image.get("url") if isinstance(image, dict) else image)
            fmt = IMAGE_FORMATS.get(media.removeprefix("image/"))
            if not fmt:
                raise BadRequest(f"bedrock does not accept images of type {media!r}", param="messages")
            blocks.append({"image": {"format": fmt, "source": {"bytes": data}}})
        elif kind == "file" and isinstance(part.get("file"), dict) and part["file"].get("file_data"):
            media, data = data_url(part["file"]["file_data"])
            if media != "application/pdf":
                raise BadRequest(f"bedrock does not accept files of type {media!r}", param="messages")
            name = str(part["file"].get("filename") or "document").rsplit(".", 1)[0] or "document"
            blocks.append({"document": {"format": "pdf", "name": name, "source": {"bytes": data}}})
        else:
            raise BadRequest(f"bedrock does not accept content parts of type {kind!r}", param="messages")
    return blocks


def data_url(url: Any) -> tuple[str, str]:
    """(media type, base64 data) of a ``data:`` URL (fetching http URLs would be I/O)."""
    header_, sep, data = url.partition(",") if isinstance(url, str) else ("", "", "")
    if not (header_.startswith("data:") and sep and header_.endswith(";base64")):
        raise BadRequest("bedrock accepts images and files only as base64 data: URLs", param="messages")
    return header_[5:-7].lower(), data


def assistant_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = content_blocks(message.get("content"))
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        try:
            arguments = orjson.loads(fn.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            raise BadRequest(f"tool call {call.get('id')!r} has arguments that are not JSON",
                             param="messages") from None
        blocks.append({"toolUse": {"toolUseId": call.get("id"), "name": fn.get("name"), "input": arguments}})
    return blocks


def tool_result(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    blocks = [b for b in content_blocks(content) if "text" in b] if isinstance(content, list) else []
    if not blocks:
        blocks = [{"text": content if isinstance(content, str) and content else "(empty)"}]
    return {"toolResult": {"toolUseId": message.get("tool_call_id"), "content": blocks}}


def tool_spec(tool: dict[str, Any]) -> dict[str, Any]:
    fn = tool.get("function") or {}
    spec: dict[str, Any] = {"name": fn.get("name")}
    if fn.get("description"):
        spec["description"] = fn["description"]
    spec["inputSchema"] = {"json": fn.get("parameters") or {"type": "object", "properties": {}}}
    return {"toolSpec": spec}


def tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"auto": {}}
    if choice in ("required", "any"):
        return {"any": {}}
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        if name:
            return {"tool": {"name": name}}
    raise BadRequest(f"tool_choice {choice!r} is not supported", param="tool_choice")


def to_chat_completion(data: dict[str, Any], model: str) -> dict[str, Any]:
    """A Converse response -> an OpenAI chat.completion."""
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in (data["output"].get("message") or {}).get("content") or ():
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            calls.append({"id": use.get("toolUseId"), "type": "function",
                          "function": {"name": use.get("name"),
                                       "arguments": orjson.dumps(use.get("input") or {}).decode()}})
        elif isinstance(block.get("reasoningContent"), dict):
            text = (block["reasoningContent"].get("reasoningText") or {}).get("text")
            if text:
                reasoning.append(text)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish_reason(data.get("stopReason")) or "stop"}],
        "usage": openai_usage(data.get("usage") or {}),
    }
