"""API docs: ``GET /openapi.json`` (built with apispec from the routes the app really serves and
the marshmallow schemas that validate them) and a Swagger UI at ``/`` and ``/docs``.

The UI's scripts and styles come from the ``swagger-ui-bundle`` package, served by the proxy
under ``/docs/assets/``: the page works with no internet access (air-gapped deployments).
``NO_DOCS=True`` turns all of it off, as in LiteLLM.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, Response, abort, send_from_directory

from proxy import __version__
from proxy.api import schemas
from proxy.api.render import json_response
from proxy.config_schema import ConfigFile

if TYPE_CHECKING:
    from proxy.gateway import Gateway

#: The LLM endpoints answered in front of Flask (proxy/api/openai.py, anthropic.py):
#: path -> (summary, request schema name or None for a free-form body)
LLM_ENDPOINTS: dict[str, tuple[str, str | None]] = {
    "/v1/chat/completions": ("Chat completion (OpenAI format; stream with \"stream\": true)", "ChatRequest"),
    "/chat/completions": ("Chat completion (OpenAI format)", "ChatRequest"),
    "/v1/completions": ("Legacy completion", "CompletionRequest"),
    "/v1/embeddings": ("Embeddings", "EmbeddingRequest"),
    "/v1/moderations": ("Moderations", "ModerationRequest"),
    "/openai/deployments/{deployment}/chat/completions": ("Azure OpenAI-style chat completion", "ChatRequest"),
    "/v1/messages": ("Anthropic Messages API, served by any configured model", None),
    "/v1/messages/count_tokens": ("Anthropic token count", None),
    "/anthropic/v1/messages": ("Anthropic Messages API (for base_url=<proxy>/anthropic)", None),
    "/anthropic/v1/messages/count_tokens": ("Anthropic token count (for base_url=<proxy>/anthropic)", None),
}

#: Views whose 200 is not a JSON object: path -> (media type, schema). Every other view answers
#: an object; a document that claimed so for these would be wrong (schemathesis checks it).
NON_OBJECT_ANSWERS: dict[str, tuple[str, dict[str, Any]]] = {
    "/": ("text/html", {"type": "string"}),
    "/docs": ("text/html", {"type": "string"}),
    "/health/liveliness": ("application/json", {"type": "string"}),  # "I'm alive!", as LiteLLM answers
    "/health/liveness": ("application/json", {"type": "string"}),
    "/metrics": ("text/plain", {"type": "string"}),  # Prometheus' text format
    "/metrics/": ("text/plain", {"type": "string"}),
    "/spend/logs": ("application/json", {"type": "array", "items": {"type": "object"}}),
    "/team/list": ("application/json", {"type": "array", "items": {"type": "object"}}),
}

ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "object", "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "param": {"type": "string", "nullable": True}, "code": {"type": "string", "nullable": True}}}},
}

SWAGGER_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>llmrelay API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});</script>
</body></html>"""

ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js",
                    "favicon-32x32.png", "favicon-16x16.png"})


def assets_dir() -> Path:
    """Where the installed swagger-ui-bundle package keeps the UI's files."""
    import swagger_ui_bundle

    return Path(swagger_ui_bundle.swagger_ui_path)


def docs_disabled() -> bool:
    return os.environ.get("NO_DOCS", "").strip().lower() in ("1", "true", "yes")


def path_parameters(path: str) -> dict[str, Any]:
    """The ``parameters`` of an operation: one required string per ``{name}`` in its path."""
    names = re.findall(r"{([^}]+)}", path)
    if not names:
        return {}
    return {"parameters": [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                           for name in names]}


def openapi(app: Flask) -> dict[str, Any]:
    """An OpenAPI 3 document of every route: the LLM endpoints and the Flask views, with the
    request schemas that validate them and the config.yaml schema as a component."""
    spec = APISpec(title="llmrelay", version=__version__, openapi_version="3.0.3",
                   info={"description": "OpenAI-compatible LLM gateway configured by LiteLLM's config.yaml"},
                   plugins=[MarshmallowPlugin()])
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema("Error", ERROR_SCHEMA)
    for name in ("ChatRequest", "CompletionRequest", "EmbeddingRequest", "ModerationRequest"):
        spec.components.schema(name, schema=getattr(schemas, name))
    spec.components.schema("ConfigFile", schema=ConfigFile)  # config.yaml itself (and ModelEntry, nested)
    security = [{"bearer": []}]
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    errors = {str(code): {"description": text, "content": error}
              for code, text in ((400, "Bad request (the field is named in param)"), (401, "Missing or wrong key"),
                                 (429, "Rate limited"), (500, "Upstream or proxy error"))}
    for path, (summary, schema) in LLM_ENDPOINTS.items():
        body = {"$ref": f"#/components/schemas/{schema}"} if schema else {"type": "object"}
        answer: dict[str, Any] = {"type": "object"}
        if schema == "ChatRequest":  # "model": "a,b" answers a list, one answer per model
            answer = {"anyOf": [answer, {"type": "array", "items": {"type": "object"}}]}
        content: dict[str, Any] = {"application/json": {"schema": answer}}
        if not path.endswith(("/embeddings", "/moderations", "/count_tokens")):
            # "stream": true; the schema is of one event (``data:`` holds a JSON chunk, or [DONE])
            content["text/event-stream"] = {"schema": {"type": "object", "properties": {"data": {"type": "string"}}}}
        spec.path(path=path, operations={"post": {
            "summary": summary, "security": security, **path_parameters(path),
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {"200": {"description": "OpenAI- (or Anthropic-) format answer; text/event-stream "
                                                  "when streaming", "content": content}, **errors}}})
    paths: dict[str, dict[str, Any]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule.startswith("/docs/assets"):
            continue
        path = rule.rule.replace("<path:", "{").replace("<", "{").replace(">", "}")
        view = app.view_functions[rule.endpoint]
        summary = (view.__doc__ or rule.endpoint).strip().splitlines()[0]
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            media, answer = NON_OBJECT_ANSWERS.get(path, ("application/json", {"type": "object"}))
            op: dict[str, Any] = {"summary": summary, "security": security, **path_parameters(path),
                                  "responses": {"200": {"description": "OK", "content": {media: {
                                      "schema": answer}}}, **errors}}
            if method in ("POST", "PUT", "PATCH"):
                op["requestBody"] = {"content": {"application/json": {"schema": {"type": "object"}}}}
            paths.setdefault(path, {})[method.lower()] = op
    if "post" in paths.get("/model/new", {}):  # a runtime model is validated as a model_list entry
        paths["/model/new"]["post"]["requestBody"] = {"content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/ModelEntry"}}}}
    for path, operations in sorted(paths.items()):
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    document["paths"] = dict(sorted(document["paths"].items()))
    return document


def make_blueprint(gateway: Gateway, app: Flask) -> Blueprint | None:
    if docs_disabled():
        return None
    bp = Blueprint("docs", __name__)
    folder = assets_dir()

    @bp.get("/openapi.json")
    def openapi_json() -> Response:
        """The OpenAPI document of this proxy."""
        return json_response(openapi(app))

    @bp.get("/")
    @bp.get("/docs")
    def swagger() -> Response:
        """Swagger UI for the API (served offline)."""
        return Response(SWAGGER_PAGE, mimetype="text/html")

    @bp.get("/docs/assets/<name>")
    def asset(name: str) -> Response:
        """The Swagger UI's scripts and styles, from the swagger-ui-bundle package."""
        if name not in ASSETS:
            abort(404)
        return send_from_directory(folder, name, max_age=86400)

    return bp
