"""The Vertex AI-compatible surface: ``/vertex_ai/{path}`` (also ``/vertex-ai/{path}``).

Clients of Vertex AI's REST API (the ``google-genai`` SDK with ``vertexai=True``, the Vertex SDKs,
curl) replace ``https://{location}-aiplatform.googleapis.com`` with ``{proxy}/vertex_ai``. The
publisher-model methods are forwarded in Vertex's own format, unchanged::

    POST /vertex_ai/v1/projects/{p}/locations/{l}/publishers/{pub}/models/{model}:{method}

for ``generateContent``, ``streamGenerateContent``, ``countTokens``, ``predict``, ``rawPredict`` and
``streamRawPredict``. ``{model}`` names a ``model_name`` of the config (or the model of a
``vertex_ai/`` deployment); the call goes to that deployment's ``vertex_project`` and
``vertex_location`` with the proxy's own Google credentials, whatever project the client named.

- The client authenticates with its proxy key: ``x-litellm-api-key``, or ``Authorization`` (the
  Vertex SDKs put their "Google token" there; hand them the proxy key as that token).
- The request runs through the pipeline as endpoint kind ``passthrough``, carrying a
  ``PassThroughCall`` that the deployment's adapter aims at its project and model: the key's model
  permissions, budgets and rate limits, routing, retries and cooldowns apply; spend and the access
  log are recorded from the answer's ``usageMetadata`` (or Anthropic usage, or embedding token
  counts).
- Streams are relayed line by line as they arrive. Upstream errors come back as the upstream sent
  them; the proxy's own refusals in Google's error shape (``{"error": {"code", "message",
  "status"}}``).
- ``anthropic-beta`` is forwarded, as is any ``x-pass-{name}`` header (as ``{name}``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.datastructures import EnvironHeaders

from proxy.api.openai import read_body, run_pipeline
from proxy.api.render import Reply, context_headers, json_reply, relayed_bytes
from proxy.context import RequestContext
from proxy.dispatch import PassThroughReply, upstream_error
from proxy.errors import BadRequest, NotFound, ProxyError
from proxy.providers.base import PassThroughCall
from proxy.providers.vertex import MODEL_PATH, PASS_METHODS, STREAM_METHODS

if TYPE_CHECKING:
    from proxy.gateway import Gateway

log = logging.getLogger(__name__)

PREFIXES = ("/vertex_ai/", "/vertex-ai/")
#: HTTP status -> Google's canonical status name, for the proxy's own errors.
STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                405: "UNIMPLEMENTED", 408: "DEADLINE_EXCEEDED", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED",
                499: "CANCELLED", 500: "INTERNAL", 501: "UNIMPLEMENTED", 502: "UNAVAILABLE",
                503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
FORWARDED = ("anthropic-beta",)


def google_error(err: ProxyError, headers: list[tuple[str, str]] | None = None) -> Reply:
    """A ProxyError in Google's error shape (what the Google SDKs parse)."""
    body = {"error": {"code": err.status, "message": err.message,
                      "status": STATUS_NAMES.get(err.status, "UNKNOWN")}}
    return json_reply(body, err.status, [*err.response_headers().items(), *(headers or ())])


def proxy_key_headers(headers: Any) -> dict[str, str]:
    """The proxy key the client sent, where the ``auth`` stage reads it."""
    key = headers.get("x-litellm-api-key") or headers.get("Authorization")
    return {"Authorization": key} if key else {}


def forwarded_headers(headers: Any) -> dict[str, str]:
    out = {name: headers[name] for name in FORWARDED if headers.get(name)}
    for name, value in headers.items():
        if name.lower().startswith("x-pass-") and len(name) > 7:
            out[name[7:]] = value
    return out


def model_group(gateway: Gateway, model: str) -> str | None:
    """The model group a path's model names: a ``model_name``, or a vertex_ai deployment's model."""
    services = gateway.services
    if services.router is not None and services.router.group(model):
        return model
    for dep in services.models.deployments:
        if dep.provider == "vertex_ai" and dep.upstream_model == model and services.is_visible(dep):
            return dep.model_name
    return None


def serve(gateway: Gateway, path: str, query: str, raw: bytes, headers: Any) -> Reply:
    match = MODEL_PATH.match(path)
    if match is None or match["method"] not in PASS_METHODS:
        return google_error(NotFound(
            f"/vertex_ai/{path} is not forwarded: use .../publishers/{{publisher}}/models/{{model}}:{{method}} "
            f"with a method of {', '.join(sorted(PASS_METHODS))}"))
    model = match["model"]
    group = model_group(gateway, model)
    if group is None:
        return google_error(NotFound(f"model {model!r} is not served here: name a model_name of the proxy",
                                     param="model", code="model_not_found"))
    stream = match["method"] in STREAM_METHODS
    ctx = RequestContext("passthrough", {"model": group, "stream": stream}, proxy_key_headers(headers))
    sent = {"Content-Type": headers.get("Content-Type") or "application/json", **forwarded_headers(headers)}
    ctx.extra["pass_through"] = PassThroughCall("vertex_ai", path, raw, sent, query)
    tags = headers.get("tags")
    if tags:
        ctx.metadata["tags"] = [t.strip() for t in tags.split(",") if t.strip()]

    def render(result: Any) -> Reply:
        if not isinstance(result, PassThroughReply):
            raise ProxyError("the pass-through call returned no upstream answer")
        own = context_headers(ctx)
        if isinstance(result.body, bytes):
            content_type = result.headers.get("content-type", "application/json")
            return Reply(result.status, [("Content-Type", content_type),
                                         ("Content-Length", str(len(result.body))), *own], result.body)
        content_type = result.headers.get("content-type", "text/event-stream")
        return Reply(result.status, [("Content-Type", content_type), ("Cache-Control", "no-cache"),
                                     ("X-Accel-Buffering", "no"), *own], relayed_bytes(ctx, result.body))

    def render_error(err: ProxyError, extra: list[tuple[str, str]]) -> Reply:
        upstream = upstream_error(ctx, err)
        if upstream is not None and isinstance(upstream.body, bytes):  # the upstream's own answer, as it came
            content_type = upstream.headers.get("content-type", "application/json")
            return Reply(upstream.status, [("Content-Type", content_type), ("Content-Length", str(len(upstream.body))),
                                           *err.response_headers().items(), *extra], upstream.body)
        return google_error(err, extra)

    return run_pipeline(gateway, ctx, render, render_error)


class VertexEndpoints:
    """WSGI layer answering ``/vertex_ai/...``; any other request goes on to ``app``."""

    def __init__(self, gateway: Gateway, app: Callable[..., Iterable[bytes]]) -> None:
        self.gateway = gateway
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        prefix = next((p for p in PREFIXES if path.startswith(p)), None)
        if prefix is None:
            return self.app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "POST":
            err = BadRequest(f"{path} takes POST", status=405)
            return google_error(err, [("Allow", "POST")]).wsgi(start_response)
        try:
            reply = serve(self.gateway, path[len(prefix):], environ.get("QUERY_STRING", ""),
                          read_body(environ), EnvironHeaders(environ))
        except ProxyError as err:
            reply = google_error(err)
        except Exception:
            log.exception("unhandled error in %s", path)
            reply = google_error(ProxyError("Internal server error; see the proxy log for details"))
        return reply.wsgi(start_response)
