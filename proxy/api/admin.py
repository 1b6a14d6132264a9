"""Admin surface (master key): routing dry-run, and model management.

Everything here needs the master key when one is configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, Response, request

from proxy.api.openai import build_context, parse_body
from proxy.api.render import json_response
from proxy.errors import BadRequest, ConfigError, ServiceUnavailable
from proxy.live import reload_deadline

if TYPE_CHECKING:
    from proxy.gateway import Gateway
    from proxy.live import LiveUpdates


def make_blueprint(gateway: Gateway, live: LiveUpdates) -> Blueprint:
    bp = Blueprint("admin", __name__)

    @bp.post("/route/explain")
    def route_explain() -> Response:
        """Which deployments could serve this chat request, which are excluded and why, which wins."""
        gateway.keys.require_admin(request.headers)
        body = parse_body("chat", request.get_data(cache=False))
        ctx = build_context("chat", body, request.headers)
        return json_response(gateway.services.router.explain(ctx))

    @bp.get("/spend/logs")
    def spend_logs() -> Response:
        """Recent spend records, newest first (``?request_id=``, ``?limit=``); master key."""
        gateway.keys.require_admin(request.headers)
        if gateway.spend is None:
            raise BadRequest("no database: set general_settings.database_path to keep spend logs")
        gateway.spend.flush()
        limit = min(max(request.args.get("limit", 100, type=int) or 100, 1), 10_000)
        return json_response(gateway.spend.spend_logs(limit=limit, request_id=request.args.get("request_id")))

    @bp.get("/global/spend")
    def global_spend() -> Response:
        """Total spend in USD, for every model or one (``?model=``); master key."""
        gateway.keys.require_admin(request.headers)
        if gateway.spend is None:
            raise BadRequest("no database: set general_settings.database_path to keep spend logs")
        gateway.spend.flush()
        model = request.args.get("model")
        return json_response({"spend": gateway.spend.total_spend(model=model), "model": model})

    @bp.post("/config/reload")
    def config_reload() -> Response:
        """Re-read the config file and have every worker serve it; answers when all do.

        A file that does not validate is refused (400) and every worker keeps its config. A
        worker still behind after the deadline makes the answer 503, naming it.
        """
        gateway.keys.require_admin(request.headers)
        try:
            generation, behind = live.request_reload()
        except ConfigError as exc:
            raise BadRequest("config not reloaded: " + "; ".join(exc.errors)) from None
        if behind:
            raise ServiceUnavailable(
                f"config generation {generation} was published, but worker(s) {', '.join(map(str, behind))} "
                f"did not apply it within {reload_deadline():g}s; see the proxy log")
        return json_response({"message": "config reloaded", "config": str(gateway.config.path),
                              "generation": generation,
                              "models": gateway.services.visible_model_names()})

    return bp
