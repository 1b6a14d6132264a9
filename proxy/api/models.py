"""Model management: /model/info, /model_group/info, /model/new|update|delete, /utils/token_counter.

Runtime models are validated exactly like config entries, stored in SQLite (their
``os.environ/`` references unresolved), and served by every worker within a second. Nothing shown
here ever carries a secret (proxy/redact.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, request
from marshmallow import ValidationError

from proxy.api.render import json_response
from proxy.api.schemas import json_body, text_or_tokens
from proxy.deployment import Deployment
from proxy.errors import BadRequest, ConfigError, NotFound, ServiceUnavailable
from proxy.redact import public_params

if TYPE_CHECKING:
    from proxy.gateway import Gateway
    from proxy.live import LiveUpdates

#: Cost-map fields /model/info shows (model_info from the config wins over them).
COST_FIELDS = (
    "max_tokens", "max_input_tokens", "max_output_tokens", "input_cost_per_token",
    "output_cost_per_token", "litellm_provider", "mode", "supports_function_calling",
    "supports_vision", "supports_parallel_function_calling", "supports_response_schema",
    "supports_tool_choice", "supports_system_messages", "output_vector_size",
)


def config_error(exc: ConfigError) -> BadRequest:
    first = exc.errors[0].split(":", 1)[0] if exc.errors else None
    return BadRequest("; ".join(exc.errors), param=first)


def describe(gateway: Gateway, dep: Deployment) -> dict[str, Any]:
    """One deployment as /model/info shows it."""
    services = gateway.services
    known = services.costmap.lookup(dep.params["model"], dep.provider) if services.costmap else {}
    info: dict[str, Any] = {k: known.get(k) for k in COST_FIELDS}
    info["litellm_provider"] = info["litellm_provider"] or dep.provider
    info["mode"] = info["mode"] or "chat"
    info.update(public_params(dep.model_info, dep.supplied))
    info["id"] = dep.id
    info["db_model"] = dep.source == "db"
    info["supported_openai_params"] = sorted(dep.adapter.supported_params)
    credential_keys = gateway.config.credential_keys(dep.params.get("litellm_credential_name"))
    return {"model_name": dep.model_name,
            "litellm_params": public_params(dep.params, dep.supplied, credential_keys),
            "model_info": info}


def group_info(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The deployments of one model group summarised (the most permissive figures win)."""
    infos = [r["model_info"] for r in rows]

    def most(field: str) -> Any:
        values = [i.get(field) for i in infos if i.get(field) is not None]
        return max(values) if values else None

    def least(field: str) -> Any:
        values = [i.get(field) for i in infos if i.get(field) is not None]
        return min(values) if values else None

    params = sorted({p for i in infos for p in i.get("supported_openai_params") or []})
    return {
        "model_group": name,
        "providers": sorted({i["litellm_provider"] for i in infos if i.get("litellm_provider")}),
        "deployments": len(rows),
        "max_input_tokens": most("max_input_tokens"),
        "max_output_tokens": most("max_output_tokens"),
        "input_cost_per_token": least("input_cost_per_token"),
        "output_cost_per_token": least("output_cost_per_token"),
        "mode": infos[0].get("mode") if infos else None,
        "supports_function_calling": any(i.get("supports_function_calling") for i in infos),
        "supports_vision": any(i.get("supports_vision") for i in infos),
        "supported_openai_params": params,
        "access_groups": sorted({g for i in infos for g in i.get("access_groups") or []}),
        "configurable_clientside_auth_params": clientside_params(rows),
    }


def clientside_params(rows: list[dict[str, Any]]) -> list[Any] | None:
    """What callers may bring themselves to this group (LiteLLM shows it in its group info)."""
    out: list[Any] = []
    for row in rows:
        for entry in row["litellm_params"].get("configurable_clientside_auth_params") or ():
            if entry not in out:
                out.append(entry)
    return out or None


def make_blueprint(gateway: Gateway, live: LiveUpdates) -> Blueprint:
    bp = Blueprint("models", __name__)

    def store() -> Any:
        if gateway.model_store is None:
            raise ServiceUnavailable("no database: set general_settings.database_path to manage models at runtime")
        return gateway.model_store

    def runtime_id(body: dict[str, Any]) -> str:
        model_id = body.get("id") or (body.get("model_info") or {}).get("id")
        if not isinstance(model_id, str) or not model_id:
            raise BadRequest("id: the model's id is required", param="id")
        dep = gateway.services.models.by_id.get(model_id)
        if dep is not None and dep.source == "config":
            raise BadRequest(f"model {model_id} comes from the config file: change the file and reload",
                             param="id")
        return model_id

    @bp.get("/model/info")
    @bp.get("/v1/model/info")
    def model_info() -> Response:
        gateway.keys.caller(request.headers)
        wanted = request.args.get("litellm_model_id")
        deps = [d for d in gateway.services.visible_deployments() if wanted in (None, d.id)]
        if wanted and not deps:
            raise NotFound(f"no model with id {wanted}", param="litellm_model_id")
        return json_response({"data": [describe(gateway, d) for d in deps]})

    @bp.get("/model_group/info")  # LiteLLM's path
    @bp.get("/model/group/info")
    @bp.get("/v1/model/group/info")
    def model_group_info() -> Response:
        """Model groups: what the deployments sharing a model name offer together."""
        gateway.keys.caller(request.headers)
        groups: dict[str, list[dict[str, Any]]] = {}
        for dep in gateway.services.visible_deployments():
            groups.setdefault(dep.model_name, []).append(describe(gateway, dep))
        wanted = request.args.get("model_group")
        data = [group_info(name, rows) for name, rows in groups.items() if wanted in (None, name)]
        return json_response({"data": data})

    @bp.post("/model/new")
    def model_new() -> Response:
        gateway.keys.require_admin(request.headers)
        body = json_body()
        try:
            gateway.check_model(body)
        except ConfigError as exc:
            raise config_error(exc) from None
        info = dict(body.get("model_info") or {})
        if info.get("id") in gateway.services.models.by_id:
            raise BadRequest(f"a model with id {info['id']} already exists", param="model_info.id")
        try:
            row = store().add(body["model_name"], body["litellm_params"], info or None)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        live.changed(row)
        return json_response({"message": "model added", "model_id": row["id"], "model_name": row["model_name"]})

    @bp.post("/model/update")
    def model_update() -> Response:
        gateway.keys.require_admin(request.headers)
        body = json_body()
        model_id = runtime_id(body)
        current = store().get(model_id)
        if current is None:
            raise NotFound(f"no runtime model with id {model_id}", param="id")
        merged = {
            "model_name": body.get("model_name") or current["model_name"],
            "litellm_params": {**current["litellm_params"], **(body.get("litellm_params") or {})},
            "model_info": {**current["model_info"], **(body.get("model_info") or {})},
        }
        try:
            gateway.check_model(merged)
        except ConfigError as exc:
            raise config_error(exc) from None
        info = {k: v for k, v in (body.get("model_info") or {}).items() if k != "id"}
        row = store().update(model_id, model_name=body.get("model_name"),
                             litellm_params=body.get("litellm_params"), model_info=info or None)
        live.changed(row)
        return json_response({"message": "model updated", "model_id": model_id})

    @bp.post("/model/delete")
    def model_delete() -> Response:
        gateway.keys.require_admin(request.headers)
        model_id = runtime_id(json_body())
        if not store().delete(model_id):
            raise NotFound(f"no runtime model with id {model_id}", param="id")
        row = store().get(model_id, include_deleted=True)
        live.changed(row)
        return json_response({"message": "model deleted", "model_id": model_id})

    @bp.post("/utils/token_counter")
    def token_counter() -> Response:
        gateway.keys.caller(request.headers)
        body = json_body()
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("model: a model name is required", param="model")
        messages, prompt = body.get("messages"), body.get("prompt")
        if messages is None and prompt is None:
            raise BadRequest("messages or prompt is required", param="messages")
        if messages is not None and not (isinstance(messages, list) and all(isinstance(m, dict) for m in messages)):
            raise BadRequest("messages: must be a list of message objects", param="messages")
        if prompt is not None:
            try:
                text_or_tokens(prompt)
            except ValidationError as exc:
                raise BadRequest(f"prompt: {exc.messages[0]}", param="prompt") from None
        group = gateway.services.router.group(model)
        dep = group[0] if group else None
        counted = gateway.tokens.count(
            dep.params["model"] if dep else model, messages=messages, prompt=prompt,
            custom_tokenizer=dep.model_info.get("custom_tokenizer") if dep else None)
        return json_response({"total_tokens": counted.total_tokens, "request_model": model,
                              "model_used": counted.model_used, "tokenizer_type": counted.tokenizer_type})

    return bp
