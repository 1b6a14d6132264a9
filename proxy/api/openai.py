"""The OpenAI-compatible surface: /chat/completions, /completions, /embeddings, /moderations, /models.

Each call parses and validates the body, builds a RequestContext, runs the pipeline and renders
the result. Proxy-only body fields (``metadata``, ``mock_response``, ...) are taken out here so
they never reach a provider.

The LLM endpoints are answered by ``OpenAIEndpoints``, a WSGI layer in front of the Flask app:
Flask's per-request machinery (request context, URL adapter, Response and header objects)
measured more than the whole stage pipeline on the benchmark, and these endpoints need none of
it. Everything else — /models, admin, health — is ordinary Flask.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import gevent
from flask import Blueprint, Response, request
from marshmallow import ValidationError
from werkzeug.datastructures import EnvironHeaders

from proxy import client_credentials, request_headers
from proxy.api.render import Reply, context_headers, error_reply, json_reply, json_response, stream_reply
from proxy.api.schemas import SCHEMAS, parse_json
from proxy.config import flatten_errors
from proxy.context import RequestContext
from proxy.errors import BadRequest, NotFound, ProxyError

if TYPE_CHECKING:
    from proxy.gateway import Gateway

log = logging.getLogger(__name__)

#: Body fields that steer the proxy and are never forwarded (LiteLLM accepts the same).
PROXY_FIELDS = ("metadata", "mock_response", "drop_params", "additional_drop_params", "num_retries",
                "timeout", "request_timeout", "litellm_metadata")

#: Exact paths of the LLM endpoints -> endpoint kind.
PATHS = {
    "/chat/completions": "chat", "/v1/chat/completions": "chat",
    "/completions": "completion", "/v1/completions": "completion",
    "/embeddings": "embedding", "/v1/embeddings": "embedding",
    "/moderations": "moderation", "/v1/moderations": "moderation",
}
#: Azure- and engine-style paths, where the deployment name in the path is the model.
ENGINE_PATH = re.compile(
    r"^/(?:v1/)?(?:engines|openai/deployments)/(?P<engine>[^/]+(?:/[^/]+)*?)/"
    r"(?P<tail>chat/completions|completions|embeddings)$"
)
ENGINE_KINDS = {"chat/completions": "chat", "completions": "completion", "embeddings": "embedding"}


def parse_body(kind: str, raw: bytes, engine: str | None = None) -> dict[str, Any]:
    """JSON -> validated dict; any problem is a 400 in OpenAI's shape naming the field.

    Parsed on the hub: orjson holds the GIL, so a thread would not free the hub. Measured on
    the development machine, a body that is one long prompt parses in 18 ms at 20 MB and 46 ms
    at 32 MB (the default ``max_request_size_mb``); a body made of hundreds of thousands of tiny
    objects costs ~14 ms per MB.
    """
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    if engine and not body.get("model"):
        body["model"] = engine  # Azure-style path: the deployment name is the model
    try:
        return SCHEMAS[kind].load(body)
    except ValidationError as exc:
        raise invalid(exc) from None


def invalid(exc: ValidationError) -> BadRequest:
    """A schema's complaint as a 400 whose ``param`` names the (first) field."""
    errors = flatten_errors(exc.messages)
    param = errors[0].split(":", 1)[0].split("[")[0].split(".")[0] if errors else None
    return BadRequest("; ".join(errors), param=param)


def build_context(kind: str, body: dict[str, Any], headers: Any) -> RequestContext:
    """The request's context: proxy-only body fields and LiteLLM's steering headers taken out once."""
    ctx = RequestContext(kind, body, headers)
    environ = getattr(headers, "environ", None)
    if environ is not None:
        ctx.extra["client_ip"] = environ.get("REMOTE_ADDR")  # proxy/forwarded.py: behind nginx, the client
    credentials = client_credentials.take(body)  # checked against the chosen deployment later
    if credentials:
        ctx.extra["client_credentials"] = credentials
    for name in PROXY_FIELDS:
        if name in body:
            value = body.pop(name)
            if name in ("metadata", "litellm_metadata"):
                if isinstance(value, dict):
                    ctx.metadata.update(value)
            elif name == "mock_response":
                ctx.mock_response = value
            elif name in ("timeout", "request_timeout"):
                if isinstance(value, (int, float)) and value > 0:
                    ctx.extra["timeout"] = float(value)
            else:
                ctx.extra[name] = value
    if ctx.metadata:
        tags = ctx.metadata.get("tags")
        if isinstance(tags, list):
            ctx.tags = [str(t) for t in tags]
    steering = request_headers.parse(headers)
    if steering is not None:
        request_headers.apply(ctx, steering)
    return ctx


def run_pipeline(
    gateway: Gateway,
    ctx: RequestContext,
    render: Callable[[Any], Reply],
    render_error: Callable[[ProxyError, list[tuple[str, str]]], Reply] = error_reply,
) -> Reply:
    """Run the pipeline and render the result; ``ctx.finish`` runs exactly once on every path.

    A rendered body of bytes finishes the context when the server closes it; a streamed body
    (a generator) does so itself when it ends or the client leaves.
    """
    try:
        result = gateway.pipeline(ctx)
    except ProxyError as err:
        ctx.status, ctx.error = err.status, err
        headers = context_headers(ctx)
        ctx.finish()
        return render_error(err, headers)
    except BaseException:
        ctx.status = 500
        ctx.finish()
        raise
    try:
        reply = render(result)
    except BaseException:
        ctx.status = 500
        ctx.finish()
        raise
    if isinstance(reply.body, bytes):
        reply.on_close = ctx.finish
    return reply


def run(gateway: Gateway, ctx: RequestContext) -> Reply:
    """One OpenAI-format call: JSON, or SSE when the client asked for a stream."""

    def render(result: Any) -> Reply:
        if ctx.stream and not isinstance(result, dict):
            return stream_reply(ctx, result)
        return json_reply(result, 200, context_headers(ctx))

    return run_pipeline(gateway, ctx, render)


def run_batch(gateway: Gateway, body: dict[str, Any], headers: Any) -> Reply:
    """``"model": "a,b"``: the same request to every named group at once; a list of answers.

    Each answer is what that model alone would have returned (an error object where it failed);
    streaming is not offered for batches.
    """
    if body.get("stream"):
        raise BadRequest("streaming is not available when several models are named", param="stream")
    models = [m.strip() for m in body["model"].split(",") if m.strip()]
    client_credentials.take(dict(body))  # a malformed credential field is one 400, not one per model
    request_headers.parse(headers)  # and so is a bad steering header

    def one(model: str) -> dict[str, Any]:
        ctx = build_context("chat", {**body, "model": model}, headers)
        try:
            result = gateway.pipeline(ctx)
        except ProxyError as err:
            ctx.status, ctx.error = err.status, err
            return err.body()
        finally:
            ctx.finish()
        return result

    jobs = [gevent.spawn(one, m) for m in models]
    gevent.joinall(jobs)
    return json_reply([job.value if job.successful() else ProxyError("internal error").body() for job in jobs])


def serve(gateway: Gateway, kind: str, raw: bytes, headers: Any, engine: str | None = None) -> Reply:
    """One LLM call, from raw body to Reply; bad input becomes an OpenAI-shaped error reply."""
    try:
        body = parse_body(kind, raw, engine)
        if kind == "chat" and "," in body["model"]:
            return run_batch(gateway, body, headers)
        return run(gateway, build_context(kind, body, headers))
    except ProxyError as err:
        return error_reply(err)


class OpenAIEndpoints:
    """WSGI layer answering the LLM endpoints; any other request goes on to the Flask app."""

    def __init__(self, gateway: Gateway, app: Callable[..., Iterable[bytes]]) -> None:
        self.gateway = gateway
        self.app = app

    def route(self, path: str) -> tuple[str, str | None] | None:
        kind = PATHS.get(path)
        if kind is not None:
            return kind, None
        match = ENGINE_PATH.match(path)
        if match is None:
            return None
        return ENGINE_KINDS[match["tail"]], match["engine"]

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        target = self.route(environ.get("PATH_INFO", ""))
        if target is None:
            return self.app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "POST":
            err = BadRequest(f"{environ.get('PATH_INFO')} takes POST", status=405)
            return error_reply(err, [("Allow", "POST")]).wsgi(start_response)
        kind, engine = target
        try:
            raw = read_body(environ)
            reply = serve(self.gateway, kind, raw, EnvironHeaders(environ), engine)
        except ProxyError as err:
            reply = error_reply(err)
        except Exception:
            log.exception("unhandled error in %s", environ.get("PATH_INFO"))
            reply = error_reply(ProxyError("Internal server error; see the proxy log for details"))
        return reply.wsgi(start_response)


def read_body(environ: dict[str, Any]) -> bytes:
    """The whole body; the body limit (proxy/api/body_limit.py) stops it at its size."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    try:
        size = int(length) if length else -1
    except ValueError:
        raise BadRequest("invalid Content-Length header") from None
    try:
        return stream.read(size)
    except ProxyError:
        raise
    except Exception as exc:  # the server's own parse errors (a malformed chunk, a cut body)
        raise BadRequest(f"could not read the request body: {exc}") from None


def make_blueprint(gateway: Gateway) -> Blueprint:
    bp = Blueprint("openai", __name__)
    created = int(time.time())


    @bp.get("/models")
    @bp.get("/v1/models")
    def list_models() -> Response:
        gateway.keys.caller(request.headers)
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "openai"}
            for name in gateway.services.visible_model_names()
        ]
        return json_response({"object": "list", "data": data})

    @bp.get("/models/<path:model_id>")
    @bp.get("/v1/models/<path:model_id>")
    def get_model(model_id: str) -> Response:
        gateway.keys.caller(request.headers)
        if model_id not in gateway.services.visible_model_names():
            raise NotFound(f"The model '{model_id}' does not exist", param="model", code="model_not_found")
        return json_response({"id": model_id, "object": "model", "created": created, "owned_by": "openai"})

    return bp
