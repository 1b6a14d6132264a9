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

Auth: a Bedrock API key (``api_key`` or ``AWS_BEARER_TOKEN_BEDROCK``) is sent as a bearer token;
otherwise requests are signed with SigV4 (service ``bedrock``) using static credentials from the
deployment, the environment or a shared credentials/config profile, resolved once per deployment.
Nothing here touches the network: credentials that would need STS or instance metadata are
refused with a clear message.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.configloader import load_config
from botocore.credentials import ConfigProvider, Credentials, EnvProvider, SharedCredentialProvider
from botocore.exceptions import BotoCoreError

from proxy.errors import (
    AuthenticationError,
    BadRequest,
    ContextWindowExceeded,
    ProxyError,
    UpstreamError,
    error_for_status,
)
from proxy.providers.base import Adapter, UpstreamCall, load_json, merged_body, parse_retry_after
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
DEFAULT_REGION = "us-east-1"


class BedrockAdapter(Adapter):
    provider: ClassVar[str] = "bedrock"
    supported_params: ClassVar[frozenset[str]] = TRANSLATED | NATIVE
    deployment_params: ClassVar[frozenset[str]] = frozenset(
        {
            "aws_region_name", "region_name", "aws_access_key_id", "aws_secret_access_key",
            "aws_session_token", "aws_profile_name", "aws_role_name", "aws_session_name",
            "aws_web_identity_token", "aws_sts_endpoint", "aws_bedrock_runtime_endpoint",
        }
    )
    kinds: ClassVar[frozenset[str]] = frozenset({"chat"})
    api_key_env: ClassVar[str | None] = "AWS_BEARER_TOKEN_BEDROCK"

    def __init__(self) -> None:
        # deployment -> (region, credentials or None when a bearer key is used, bearer key)
        self._auth: weakref.WeakKeyDictionary[Deployment, tuple[str, Credentials | None, str | None]] = \
            weakref.WeakKeyDictionary()

    def region(self, deployment: Deployment) -> str:
        params = deployment.params
        return str(params.get("aws_region_name") or params.get("region_name") or os.environ.get("AWS_REGION")
                   or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION)

    def url(self, deployment: Deployment, stream: bool) -> str:
        base = (deployment.params.get("aws_bedrock_runtime_endpoint") or deployment.api_base
                or os.environ.get("AWS_BEDROCK_RUNTIME_ENDPOINT")
                or f"https://bedrock-runtime.{self.region(deployment)}.amazonaws.com")
        model = deployment.upstream_model
        model = model.removeprefix("converse/")
        return f"{str(base).rstrip('/')}/model/{quote(model, safe='')}/{'converse-stream' if stream else 'converse'}"

    def build_request(self, ctx: RequestContext, deployment: Deployment) -> UpstreamCall:
        request = merged_body(ctx, deployment)
        body = translate_request(request)
        headers = {"Content-Type": "application/json",
                   "Accept": "application/vnd.amazon.eventstream" if ctx.stream else "application/json"}
        headers.update(deployment.headers)
        extra = request.get("extra_headers")
        if isinstance(extra, dict):
            headers.update({str(k): str(v) for k, v in extra.items()})
        return UpstreamCall("POST", self.url(deployment, ctx.stream), headers, orjson.dumps(body),
                            stream=ctx.stream, extra={"binary": ctx.stream})  # event-stream frames, not lines

    def sign(self, call: UpstreamCall, deployment: Deployment) -> UpstreamCall:
        auth = self._auth.get(deployment)
        if auth is None:
            auth = self._auth[deployment] = resolve_auth(deployment, self.region(deployment))
        region, credentials, bearer = auth
        headers = {k: v for k, v in call.headers.items() if k.lower() != "authorization"}
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
            call.headers = headers
            return call
        request = AWSRequest(method=call.method, url=call.url, data=call.body or b"", headers=headers)
        SigV4Auth(credentials, "bedrock", region).add_auth(request)
        call.headers = dict(request.headers.items())
        return call

    def parse_response(
        self, ctx: RequestContext, deployment: Deployment, status: int, body: bytes
    ) -> dict[str, Any]:
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


def resolve_auth(deployment: Deployment, region: str) -> tuple[str, Credentials | None, str | None]:
    """(region, credentials, bearer key) for a deployment; local lookups only, never the network."""
    params = deployment.params
    if deployment.api_key:
        return region, None, str(deployment.api_key)
    if params.get("aws_role_name") or params.get("aws_web_identity_token"):
        raise AuthenticationError("bedrock: aws_role_name / aws_web_identity_token (STS) are not supported; "
                                  "give aws_access_key_id and aws_secret_access_key, or an api_key")
    key_id, secret = params.get("aws_access_key_id"), params.get("aws_secret_access_key")
    if key_id and secret:
        return region, Credentials(str(key_id), str(secret), params.get("aws_session_token")), None
    if os.environ.get("AWS_BEARER_TOKEN_BEDROCK"):
        return region, None, os.environ["AWS_BEARER_TOKEN_BEDROCK"]
    profile = params.get("aws_profile_name") or os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE")
    credentials = local_credentials(profile, explicit=bool(params.get("aws_profile_name")))
    if credentials is None:
        raise AuthenticationError(
            "bedrock: no AWS credentials found: set aws_access_key_id/aws_secret_access_key (or api_key) "
            "on the deployment, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_BEARER_TOKEN_BEDROCK in the "
            "environment, or a profile with static keys (aws_profile_name)"
        )
    return region, credentials, None


def local_credentials(profile: str | None, explicit: bool) -> Credentials | None:
    """botocore's static providers: environment, then shared credentials and config files."""
    providers: list[Any] = [] if explicit else [EnvProvider()]
    name = profile or "default"
    creds_file = os.path.expanduser(os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"))
    config_file = os.path.expanduser(os.environ.get("AWS_CONFIG_FILE", "~/.aws/config"))
    providers.append(SharedCredentialProvider(creds_file, name))
    providers.append(ConfigProvider(config_file, name, config_parser=load_config))
    for provider in providers:
        try:
            found = provider.load()
        except BotoCoreError:
            continue
        if found is not None:
            frozen = found.get_frozen_credentials()
            return Credentials(frozen.access_key, frozen.secret_key, frozen.token)
    return None



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
