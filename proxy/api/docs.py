"""API docs: ``GET /openapi.json`` (built from the routes the app really serves) and a Swagger UI
at ``/`` (assets from the swagger-ui-dist CDN). ``NO_DOCS=True`` turns both off, as in LiteLLM."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response

from proxy import __version__
from proxy.api.render import json_response

if TYPE_CHECKING:
    from proxy.gateway import Gateway

#: The LLM endpoints answered in front of Flask (proxy/api/openai.py, anthropic.py).
LLM_ENDPOINTS = {
    "/v1/chat/completions": "Chat completion (OpenAI format; stream with \"stream\": true)",
    "/chat/completions": "Chat completion (OpenAI format)",
    "/v1/completions": "Legacy completion",
    "/v1/embeddings": "Embeddings",
    "/v1/moderations": "Moderations",
    "/openai/deployments/{deployment}/chat/completions": "Azure OpenAI-style chat completion",
    "/v1/messages": "Anthropic Messages API, served by any configured model",
    "/v1/messages/count_tokens": "Anthropic token count",
    "/anthropic/v1/messages": "Anthropic Messages API (for base_url=<proxy>/anthropic)",
    "/anthropic/v1/messages/count_tokens": "Anthropic token count (for base_url=<proxy>/anthropic)",
}

SWAGGER_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>llmrelay API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script>
</body></html>"""


def docs_disabled() -> bool:
    return os.environ.get("NO_DOCS", "").strip().lower() in ("1", "true", "yes")


def openapi(app: Flask) -> dict[str, Any]:
    """An OpenAPI 3 document of every route: the LLM endpoints and the Flask views."""
    paths: dict[str, Any] = {}
    security = [{"bearer": []}]
    for path, summary in LLM_ENDPOINTS.items():
        paths[path] = {"post": {"summary": summary, "security": security,
                                "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                                "responses": {"200": {"description": "OpenAI- (or Anthropic-) format answer"}}}}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule in ("/", "/openapi.json"):
            continue
        path = rule.rule.replace("<path:", "{").replace("<", "{").replace(">", "}")
        view = app.view_functions[rule.endpoint]
        summary = (view.__doc__ or rule.endpoint).strip().splitlines()[0]
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = {
                "summary": summary, "security": security, "responses": {"200": {"description": "OK"}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "llmrelay", "version": __version__,
                 "description": "OpenAI-compatible LLM gateway configured by LiteLLM's config.yaml"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": dict(sorted(paths.items())),
    }


def make_blueprint(gateway: Gateway, app: Flask) -> Blueprint | None:
    if docs_disabled():
        return None
    bp = Blueprint("docs", __name__)

    @bp.get("/openapi.json")
    def openapi_json() -> Response:
        """The OpenAPI document of this proxy."""
        return json_response(openapi(app))

    @bp.get("/")
    def swagger() -> Response:
        """Swagger UI for the API."""
        return Response(SWAGGER_PAGE, mimetype="text/html")

    return bp
