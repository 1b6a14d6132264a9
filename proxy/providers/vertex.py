"""Vertex AI (``vertex_ai/gemini-2.0-flash``, ``vertex_ai/claude-3-5-sonnet@20240620``, embeddings).

Every call goes to
``{host}/v1/projects/{vertex_project}/locations/{vertex_location}/publishers/{publisher}/models/{model}:{method}``,
where ``host`` is ``https://{location}-aiplatform.googleapis.com`` (``https://aiplatform.googleapis.com``
for ``global``) unless ``api_base`` overrides it (private endpoints, tests):

- Gemini models (publisher ``google``): ``:generateContent`` / ``:streamGenerateContent?alt=sse``,
  the same body as the Gemini API (``gemini_format``);
- Anthropic models (``claude-*``, publisher ``anthropic``): ``:rawPredict`` / ``:streamRawPredict``
  with a Messages API body from the Anthropic translation, without ``model`` (it is in the URL)
  and with ``anthropic_version: vertex-2023-10-16``; answers are parsed as Anthropic's;
- embeddings: ``:predict`` with ``{"instances": [{"content": ...}], "parameters": {...}}``, answered
  as ``predictions[].embeddings.values`` with ``statistics.token_count``.

Settings (LiteLLM's names): ``vertex_project`` (else ``VERTEXAI_PROJECT``, else the credentials'
project), ``vertex_location`` (else ``VERTEXAI_LOCATION``, else ``us-central1``),
``vertex_credentials`` (a service-account file path or its JSON; else application default
credentials). The bearer token is read in ``sign`` from the gateway's ``GoogleTokens``
(proxy/google_auth.py), which fetches it once and refreshes it in the background.

The ``/vertex_ai/{path}`` surface (proxy/api/vertex.py) also runs through this adapter
(``pass_through``): the client's Vertex request, its ``operation`` the model path, is forwarded
byte for byte to the deployment's project, location and model, with the proxy's token;
``PassThroughMeter`` reads usage from the answer.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from proxy.errors import BadRequest, ProxyError, UpstreamError
from proxy.google_auth import GoogleTokens
from proxy.providers import anthropic
from proxy.providers.anthropic_stream import openai_usage as anthropic_usage
from proxy.providers.base import Adapter, PassThroughCall, UpstreamCall, load_json, merged_body
from proxy.providers.gemini import embedding_list, embedding_texts, map_google_error, parse_gemini_stream
from proxy.providers.gemini_format import NATIVE, TRANSLATED, translate_request
from proxy.providers.gemini_response import openai_usage, to_chat_completion

if TYPE_CHECKING:
    from proxy.context import RequestContext
    from proxy.deployment import Deployment

ANTHROPIC_VERSION = "vertex-2023-10-16"
DEFAULT_LOCATION = "us-central1"
EMBEDDING_PREFIXES = ("text-embedding", "textembedding", "text-multilingual-embedding", "gemini-embedding",
                      "multimodalembedding")
#: A Vertex publisher-model path, as the Vertex SDKs build it.
MODEL_PATH = re.compile(
    r"^/?(?P<version>v1[a-z0-9]*)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/"
    r"publishers/(?P<publisher>[^/]+)/models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$"
)
STREAM_METHODS = frozenset({"streamGenerateContent", "streamRawPredict"})
PASS_METHODS = frozenset({"generateContent", "streamGenerateContent", "countTokens", "predict", "rawPredict",
                          "streamRawPredict", "computeTokens", "embedContent"})


def publisher(model: str) -> str:
    return "anthropic" if model.startswith("claude") else "google"


class VertexAdapter(Adapter):
    provider: ClassVar[str] = "vertex_ai"
    supported_params: ClassVar[frozenset[str]] = TRANSLATED | frozenset(NATIVE) | anthropic.NATIVE
    deployment_params: ClassVar[frozenset[str]] = frozenset(
        {"vertex_project", "vertex_location", "vertex_credentials", "vertex_ai_project", "vertex_ai_location"})
    kinds: ClassVar[frozenset[str]] = frozenset({"chat", "embedding"})

    def __init__(self, tokens: GoogleTokens | None = None) -> None:
        self.tokens = tokens or GoogleTokens()
        self.claude = anthropic.AnthropicAdapter()  # Claude on Vertex speaks the Messages API

    # -- placement --------------------------------------------------------------------------------

    def location(self, deployment: Deployment) -> str:
        params = deployment.params
        return str(params.get("vertex_location") or params.get("vertex_ai_location")
                   or os.environ.get("VERTEXAI_LOCATION") or DEFAULT_LOCATION)

    def project(self, deployment: Deployment) -> str:
        params = deployment.params
        project = (params.get("vertex_project") or params.get("vertex_ai_project")
                   or os.environ.get("VERTEXAI_PROJECT") or self.tokens.project(params.get("vertex_credentials")))
        if not project:
            raise BadRequest(f"vertex_ai deployment {deployment.model_name!r} has no vertex_project "
                             "(set it, VERTEXAI_PROJECT, or use credentials that name a project)")
        return str(project)

    def host(self, deployment: Deployment, location: str) -> str:
        base = deployment.api_base or os.environ.get("VERTEXAI_API_BASE")
        if base:
            return str(base).rstrip("/").removesuffix("/v1")
        if location == "global":
            return "https://aiplatform.googleapis.com"
        return f"https://{location}-aiplatform.googleapis.com"

    def model_url(self, deployment: Deployment, model: str, method: str, version: str = "v1",
                  pub: str | None = None) -> str:
        location = self.location(deployment)
        return (f"{self.host(deployment, location)}/{version}/projects/{self.project(deployment)}/locations/"
                f"{location}/publishers/{pub or publisher(model)}/models/{model}:{method}")

    # -- requests ---------------------------------------------------------------------------------

    def build_request(self, ctx: RequestContext, deployment: Deployment) -> UpstreamCall:
        request = merged_body(ctx, deployment)
        model = deployment.upstream_model
        headers = {"Content-Type": "application/json"}
        headers.update(deployment.headers)
        extra = request.get("extra_headers")
        if isinstance(extra, dict):
            headers.update({str(k): str(v) for k, v in extra.items()})
        if ctx.kind == "embedding":
            body = predict_body(request)
            return UpstreamCall("POST", self.model_url(deployment, model, "predict"), headers, orjson.dumps(body))
        if publisher(model) == "anthropic":
            body = anthropic.translate_request(request, model)
            body.pop("model", None)
            body["anthropic_version"] = ANTHROPIC_VERSION
            if ctx.stream:
                body["stream"] = True
                headers["Accept"] = "text/event-stream"
            method = "streamRawPredict" if ctx.stream else "rawPredict"
            return UpstreamCall("POST", self.model_url(deployment, model, method), headers, orjson.dumps(body),
                                stream=ctx.stream)
        body = translate_request(request, self.provider, model)
        if ctx.stream:
            headers["Accept"] = "text/event-stream"
            url = self.model_url(deployment, model, "streamGenerateContent") + "?alt=sse"
            return UpstreamCall("POST", url, headers, orjson.dumps(body), stream=True)
        return UpstreamCall("POST", self.model_url(deployment, model, "generateContent"), headers,
                            orjson.dumps(body))

    def pass_through(self, call: PassThroughCall, deployment: Deployment) -> UpstreamCall:
        """The client's Vertex call, re-aimed at the deployment's project, location and model."""
        match = MODEL_PATH.match(call.operation)
        if match is None or match["method"] not in PASS_METHODS:
            raise BadRequest(f"/vertex_ai/{call.operation} is not a Vertex model method this proxy forwards")
        url = self.model_url(deployment, deployment.upstream_model, match["method"], match["version"],
                             match["publisher"])
        if call.query:
            url += "?" + call.query
        headers = {"Content-Type": "application/json"}
        headers.update(deployment.headers)
        headers.update(call.headers)
        return UpstreamCall("POST", url, headers, call.body, stream=match["method"] in STREAM_METHODS)

    def sign(self, call: UpstreamCall, deployment: Deployment) -> UpstreamCall:
        token = self.tokens.token(deployment.params.get("vertex_credentials"))
        call.headers = {**{k: v for k, v in call.headers.items() if k.lower() != "authorization"},
                        "Authorization": f"Bearer {token}"}
        return call

    # -- answers ----------------------------------------------------------------------------------

    def parse_response(
        self, ctx: RequestContext, deployment: Deployment, status: int, body: bytes
    ) -> dict[str, Any]:
        data = load_json(body, self.provider)
        model = deployment.upstream_model
        if ctx.kind == "embedding":
            return predict_embeddings(ctx, model, data)
        if publisher(model) == "anthropic":
            if not isinstance(data, dict):
                raise UpstreamError("upstream vertex_ai returned an unexpected body")
            if data.get("type") == "error":
                raise self.map_error(anthropic.error_status(data), {}, body)
            return anthropic.to_chat_completion(data, model)
        return to_chat_completion(data, model)

    def parse_stream(
        self, ctx: RequestContext, deployment: Deployment, lines: Iterable[bytes]
    ) -> Iterator[dict[str, Any]]:
        model = deployment.upstream_model
        if publisher(model) == "anthropic":
            return self.claude.parse_stream(ctx, deployment, lines)
        return parse_gemini_stream(self, ctx, model, lines)

    def map_error(self, status: int, headers: dict[str, str], body: bytes) -> ProxyError:
        if b'"type":"error"' in body.replace(b" ", b"")[:64]:  # Anthropic's shape, from rawPredict
            return self.claude.map_error(status, headers, body)
        return map_google_error(self, status, headers, body)

    def pass_through_meter(self, call: PassThroughCall) -> PassThroughMeter:
        return PassThroughMeter()


def predict_body(request: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI embedding request -> a Vertex ``:predict`` body."""
    task = request.get("task_type")
    instances = [{"content": text, **({"task_type": task} if task else {})} for text in embedding_texts(request)]
    body: dict[str, Any] = {"instances": instances}
    parameters: dict[str, Any] = {}
    if request.get("dimensions"):
        parameters["outputDimensionality"] = request["dimensions"]
    if request.get("auto_truncate") is not None:
        parameters["autoTruncate"] = request["auto_truncate"]
    if parameters:
        body["parameters"] = parameters
    return body


def predict_embeddings(ctx: RequestContext, model: str, data: Any) -> dict[str, Any]:
    predictions = data.get("predictions") if isinstance(data, dict) else None
    if not isinstance(predictions, list):
        raise UpstreamError("upstream vertex_ai returned no predictions")
    vectors, tokens = [], 0
    for p in predictions:
        emb = (p or {}).get("embeddings") or {}
        vectors.append(emb.get("values") or [])
        tokens += int((emb.get("statistics") or {}).get("token_count") or 0)
    return embedding_list(ctx, model, vectors, tokens)


class PassThroughMeter:
    """Usage of a forwarded Vertex call: ``usageMetadata`` (Gemini), Anthropic's ``usage``
    (rawPredict), or the embeddings' ``token_count`` (predict), from the body or each SSE event."""

    def __init__(self) -> None:
        self.usage: dict[str, Any] | None = None
        self._anthropic: dict[str, Any] = {}

    def answer(self, headers: dict[str, str], body: bytes) -> None:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        for one in data if isinstance(data, list) else [data]:  # streamGenerateContent without alt=sse
            if isinstance(one, dict):
                self.take(one)

    def feed(self, line: bytes) -> None:
        """One SSE line of a streamed answer."""
        if not line.startswith(b"data:") or (b"sage" not in line and b"token_count" not in line):
            return  # cheap: only events that carry usage are parsed
        try:
            data = orjson.loads(line[5:])
        except orjson.JSONDecodeError:
            return
        if isinstance(data, dict):
            self.take(data)

    def take(self, data: dict[str, Any]) -> None:
        if isinstance(data.get("usageMetadata"), dict):
            self.usage = openai_usage(data["usageMetadata"])  # cumulative: the last one is the total
        elif isinstance(data.get("predictions"), list):
            tokens = sum(int((((p or {}).get("embeddings") or {}).get("statistics") or {}).get("token_count") or 0)
                         for p in data["predictions"])
            self.usage = {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens}
        else:
            usage = data.get("usage") or (data.get("message") or {}).get("usage")
            if isinstance(usage, dict):
                self._anthropic.update({k: v for k, v in usage.items() if v is not None})
                self.usage = anthropic_usage(self._anthropic)
