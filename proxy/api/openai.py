"""The OpenAI-compatible surface: /chat/completions, /completions, /embeddings, /moderations, /models.

Each view parses and validates the body, builds a RequestContext, runs the pipeline and renders
the result. Proxy-only body fields (``metadata``, ``mock_response``, ...) are taken out here so
they never reach a provider.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
import orjson
from flask import Blueprint, Response, request
from marshmallow import ValidationError

from proxy.api.render import context_headers, error_response, json_response, stream_response
from proxy.api.schemas import SCHEMAS
from proxy.config import flatten_errors
from proxy.context import RequestContext
from proxy.errors import BadRequest, NotFound, ProxyError

if TYPE_CHECKING:
    from proxy.gateway import Gateway

#: Body fields that steer the proxy and are never forwarded (LiteLLM accepts the same).
PROXY_FIELDS = ("metadata", "mock_response", "drop_params", "num_retries", "timeout",
                "request_timeout", "litellm_metadata")

ROUTES = {
    "chat": ("/chat/completions", "/v1/chat/completions", "/engines/<path:engine>/chat/completions",
             "/openai/deployments/<path:engine>/chat/completions"),
    "completion": ("/completions", "/v1/completions", "/engines/<path:engine>/completions",
                   "/openai/deployments/<path:engine>/completions"),
    "embedding": ("/embeddings", "/v1/embeddings", "/engines/<path:engine>/embeddings",
                  "/openai/deployments/<path:engine>/embeddings"),
    "moderation": ("/moderations", "/v1/moderations"),
}


def parse_body(kind: str, raw: bytes, engine: str | None = None) -> dict[str, Any]:
    """JSON -> validated dict; any problem is a 400 in OpenAI's shape naming the field."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    if engine and not body.get("model"):
        body["model"] = engine  # Azure-style path: the deployment name is the model
    try:
        return SCHEMAS[kind].load(body)
    except ValidationError as exc:
        errors = flatten_errors(exc.messages)
        param = errors[0].split(":", 1)[0].split("[")[0].split(".")[0] if errors else None
        raise BadRequest("; ".join(errors), param=param) from None


def build_context(kind: str, body: dict[str, Any], headers: Any) -> RequestContext:
    ctx = RequestContext(kind, body, headers)
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
    return ctx


def run(gateway: Gateway, ctx: RequestContext) -> Response:
    """Run the pipeline and render; the context is finished exactly once on every path."""
    try:
        result = gateway.pipeline(ctx)
    except ProxyError as err:
        ctx.status, ctx.error = err.status, err
        headers = context_headers(ctx)
        ctx.finish()
        return error_response(err, headers)
    except BaseException:
        ctx.status = 500
        ctx.finish()
        raise
    if ctx.stream and not isinstance(result, dict):
        return stream_response(ctx, result)
    response = json_response(result, 200, context_headers(ctx))
    response.call_on_close(ctx.finish)
    return response


def run_batch(gateway: Gateway, body: dict[str, Any], headers: Any) -> Response:
    """``"model": "a,b"``: the same request to every named group at once; a list of answers.

    Each answer is what that model alone would have returned (an error object where it failed);
    streaming is not offered for batches.
    """
    if body.get("stream"):
        raise BadRequest("streaming is not available when several models are named", param="stream")
    models = [m.strip() for m in body["model"].split(",") if m.strip()]

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
    return json_response([job.value if job.successful() else ProxyError("internal error").body()
                          for job in jobs])


def make_blueprint(gateway: Gateway) -> Blueprint:
    bp = Blueprint("openai", __name__)
    created = int(time.time())

    def view_for(kind: str) -> Callable[..., Response]:
        def view(engine: str | None = None) -> Response:
            body = parse_body(kind, request.get_data(cache=False), engine)
            if kind == "chat" and "," in body["model"]:
                return run_batch(gateway, body, request.headers)
            return run(gateway, build_context(kind, body, request.headers))

        view.__name__ = f"{kind}_view"
        return view

    for kind, rules in ROUTES.items():
        view = view_for(kind)
        for rule in rules:
            bp.add_url_rule(rule, view_func=view, methods=["POST"])

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
