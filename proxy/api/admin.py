"""Admin surface (master key): routing dry-run, and model management.

Everything here needs the master key when one is configured.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from flask import Blueprint, Response, request

from proxy.api.openai import build_context, parse_body
from proxy.api.render import json_response
from proxy.errors import BadRequest, ConfigError, ServiceUnavailable
from proxy.keys.records import token_of
from proxy.live import reload_deadline

if TYPE_CHECKING:
    from proxy.gateway import Gateway
    from proxy.live import LiveUpdates


def parse_date(value: str | None, name: str, end_of_day: bool = False) -> float | None:
    """LiteLLM's ``YYYY-MM-DD`` (or ``YYYY-MM-DD HH:MM:SS``, ISO 8601, UTC) -> epoch seconds.

    A date alone as ``end_date`` includes that whole day."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name}: {value!r} is not a date; use YYYY-MM-DD or YYYY-MM-DD HH:MM:SS",
                         param=name) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if end_of_day and len(value.strip()) == 10:
        parsed += timedelta(days=1)
    return parsed.timestamp()


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
        """Spend records, newest first; master key. LiteLLM's filters: ``api_key`` (the key or its
        hash), ``user_id``, ``request_id``, ``start_date``/``end_date``; also ``team_id``, ``model``,
        ``limit``."""
        gateway.keys.require_admin(request.headers, request.path)
        if gateway.spend is None:
            raise BadRequest("no database: set general_settings.database_path to keep spend logs")
        gateway.spend.flush()
        args = request.args
        limit = min(max(args.get("limit", 100, type=int) or 100, 1), 10_000)
        api_key = args.get("api_key")
        return json_response(gateway.spend.spend_logs(
            limit=limit, request_id=args.get("request_id"), api_key=token_of(api_key) if api_key else None,
            user_id=args.get("user_id"), team_id=args.get("team_id"), model=args.get("model"),
            start=parse_date(args.get("start_date"), "start_date"),
            end=parse_date(args.get("end_date"), "end_date", end_of_day=True)))

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
