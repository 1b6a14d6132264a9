"""Google AI Studio's Gemini API (``gemini/gemini-2.0-flash``, and bare ``gemini-...`` names).

Chat goes to ``POST {api_base}/models/{model}:generateContent`` and, for streams,
``:streamGenerateContent?alt=sse`` (server-sent events, one GenerateContentResponse each); the
translation both ways is in ``gemini_format``. Embeddings go to ``:batchEmbedContents``, one
request per input. The key (``api_key``, else ``GEMINI_API_KEY``) is sent in ``x-goog-api-key``,
so it never appears in a URL. ``api_base`` defaults to
``https://generativelanguage.googleapis.com/v1beta``; a base without a version gets ``/v1beta``.

Errors arrive in Google's shape, ``{"error": {"code", "message", "status"}}``; a prompt over the
model's input limit ("input token count ... exceeds the maximum number of tokens") is a
context-window error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import orjson

from proxy.errors import BadRequest, ContentPolicyViolation, ContextWindowExceeded, ProxyError, UpstreamError
from proxy.providers.base import Adapter, UpstreamCall, load_json, merged_body
from proxy.providers.gemini_format import NATIVE, TRANSLATED, translate_request
from proxy.providers.gemini_response import StreamTranslator, to_chat_completion
from proxy.providers.ollama import float32_base64
from proxy.providers.openai import iter_sse_data
from proxy.providers.shapes import include_usage

if TYPE_CHECKING:
    from proxy.context import RequestContext
    from proxy.deployment import Deployment

DEFAULT_BASE = "https://generativelanguage.googleapis.com/v1beta"
VERSIONED = re.compile(r"/v1(alpha|beta\d*)?$|/v1beta1$")
CONTEXT_MARKERS = ("exceeds the maximum number of tokens", "input token count", "context window",
                   "too many tokens", "prompt is too long")
#: Google's status names -> the HTTP status they come with (for errors inside a 200 stream).
STATUS_CODES = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
                "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
                "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499, "INTERNAL": 500, "UNAVAILABLE": 503,
                "DEADLINE_EXCEEDED": 504}


def google_error(body: bytes) -> tuple[str, str | None, int | None]:
    """(message, status name, code) from Google's error body (also one given as a JSON list)."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, list) and data:
        data = data[0]
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        code = err.get("code")
        return str(err.get("message") or err.get("status") or "error"), err.get("status"), \
            code if isinstance(code, int) else None
    text = body.decode("utf-8", "replace").strip() if body else ""
    return text or "upstream returned no error details", None, None


def map_google_error(adapter: Adapter, status: int, headers: dict[str, str], body: bytes) -> ProxyError:
    """A Google API error -> the ProxyError the client sees (context-window errors recognisable)."""
    message, kind, _ = google_error(body)
    lowered = message.lower()
    if status in (400, 413) and any(m in lowered for m in CONTEXT_MARKERS):
        return ContextWindowExceeded(message)
    if status == 400 and ("safety" in lowered and "block" in lowered):
        return ContentPolicyViolation(message)
    err = Adapter.map_error(adapter, status, headers, body)
    err.message = f"upstream {adapter.provider} error {status}: {message}"
    if kind:
        err.code = kind
    return err


def stream_error(adapter: Adapter, event: dict[str, Any], raw: bytes) -> ProxyError:
    err = event.get("error") or {}
    code = err.get("code") if isinstance(err.get("code"), int) else STATUS_CODES.get(err.get("status"), 500)
    return map_google_error(adapter, code, {}, raw)


def embedding_texts(request: dict[str, Any]) -> list[str]:
    inputs = request.get("input")
    if isinstance(inputs, str):
        return [inputs]
    if isinstance(inputs, list) and inputs and all(isinstance(i, str) for i in inputs):
        return inputs
    raise BadRequest("input must be a string or a list of strings for gemini embeddings", param="input")


def embedding_list(ctx: RequestContext, model: str, vectors: list[list[float]],
                   prompt_tokens: int | None) -> dict[str, Any]:
    b64 = ctx.body.get("encoding_format") == "base64"
    out: dict[str, Any] = {
        "object": "list", "model": model,
        "data": [{"object": "embedding", "index": i, "embedding": float32_base64(v) if b64 else v}
                 for i, v in enumerate(vectors)],
    }
    if prompt_tokens is not None:
        out["usage"] = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return out


def parse_gemini_stream(adapter: Adapter, ctx: RequestContext, model: str,
                        lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """SSE lines of ``streamGenerateContent?alt=sse`` -> OpenAI chunks."""
    wants_usage = include_usage(ctx.body)
    translator = StreamTranslator(model, wants_usage)
    for data in iter_sse_data(lines):
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"upstream {adapter.provider} sent an invalid stream event") from exc
        # a list: a non-SSE (JSON array) answer replayed as a stream
        for one in event if isinstance(event, list) else [event]:
            if not isinstance(one, dict):
                continue
            if "error" in one:
                raise stream_error(adapter, one, data)
            yield from translator.feed(one)
    yield from translator.close()
    if not wants_usage and translator.usage is not None:
        ctx.usage = translator.usage


class GeminiAdapter(Adapter):
    provider: ClassVar[str] = "gemini"
    supported_params: ClassVar[frozenset[str]] = TRANSLATED | frozenset(NATIVE)
    kinds: ClassVar[frozenset[str]] = frozenset({"chat", "embedding"})
    default_api_base: ClassVar[str | None] = DEFAULT_BASE
    api_key_env: ClassVar[str | None] = "GEMINI_API_KEY"

    def base(self, deployment: Deployment) -> str:
        base = (deployment.api_base or os.environ.get("GEMINI_API_BASE") or DEFAULT_BASE).rstrip("/")
        return base if VERSIONED.search(base) else base + "/v1beta"

    @staticmethod
    def model(deployment: Deployment) -> str:
        return deployment.upstream_model.removeprefix("models/")

    def headers(self, deployment: Deployment, request: dict[str, Any]) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = deployment.api_key or os.environ.get("GEMINI_API_KEY")
        if key:
            headers["x-goog-api-key"] = key
        headers.update(deployment.headers)
        extra = request.get("extra_headers")
        if isinstance(extra, dict):
            headers.update({str(k): str(v) for k, v in extra.items()})
        return headers

    def build_request(self, ctx: RequestContext, deployment: Deployment) -> UpstreamCall:
        request = merged_body(ctx, deployment)
        model = self.model(deployment)
        url = f"{self.base(deployment)}/models/{quote(model, safe='@.-_')}"
        headers = self.headers(deployment, request)
        if ctx.kind == "embedding":
            body = {"requests": [embed_request(model, text, request) for text in embedding_texts(request)]}
            return UpstreamCall("POST", url + ":batchEmbedContents", headers, orjson.dumps(body))
        body = translate_request(request, self.provider, model)
        if ctx.stream:
            headers["Accept"] = "text/event-stream"
            return UpstreamCall("POST", url + ":streamGenerateContent?alt=sse", headers, orjson.dumps(body),
                                stream=True)
        return UpstreamCall("POST", url + ":generateContent", headers, orjson.dumps(body))

    def parse_response(
        self, ctx: RequestContext, deployment: Deployment, status: int, body: bytes
    ) -> dict[str, Any]:
        data = load_json(body, self.provider)
        if ctx.kind == "embedding":
            vectors = [e.get("values") or [] for e in (data.get("embeddings") or ())] if isinstance(data, dict) else []
            return embedding_list(ctx, self.model(deployment), vectors, None)
        return to_chat_completion(data, self.model(deployment))

    def parse_stream(
        self, ctx: RequestContext, deployment: Deployment, lines: Iterable[bytes]
    ) -> Iterator[dict[str, Any]]:
        return parse_gemini_stream(self, ctx, self.model(deployment), lines)

    def map_error(self, status: int, headers: dict[str, str], body: bytes) -> ProxyError:
        return map_google_error(self, status, headers, body)


def embed_request(model: str, text: str, request: dict[str, Any]) -> dict[str, Any]:
    """One ``EmbedContentRequest`` of a ``batchEmbedContents`` call."""
    one: dict[str, Any] = {"model": f"models/{model}", "content": {"parts": [{"text": text}]}}
    if request.get("dimensions"):
        one["outputDimensionality"] = request["dimensions"]
    task = request.get("task_type") or request.get("taskType")
    if task:
        one["taskType"] = task
    return one
