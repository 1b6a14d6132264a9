"""Health: probes for load balancers and orchestrators (no key, as in LiteLLM), and ``/health``,
which calls the deployments themselves (master key; proxy/health.py)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, request

from proxy import __version__
from proxy.api.render import json_response
from proxy.errors import BadRequest
from proxy.health import HealthChecker, answer

if TYPE_CHECKING:
    from proxy.gateway import Gateway

log = logging.getLogger(__name__)


def store_status(gateway: Gateway) -> str:
    """``connected`` when the store answers a query now, else why not (never its password)."""
    if gateway.store is None:
        return "Not connected"
    try:
        gateway.store.query_value("SELECT 1")
    except Exception as exc:
        log.warning("readiness: store check failed: %s", type(exc).__name__)
        return f"unreachable ({type(exc).__name__})"
    return "connected"


def redis_status(gateway: Gateway) -> str | None:
    """None without Redis; ``connected`` while the shared state reaches it."""
    state = gateway.state
    if state.name != "redis":
        return None
    return "connected" if state.shared else "unreachable (serving on local state)"


def callbacks(gateway: Gateway) -> dict[str, list[str]]:
    """Callbacks and exporters named in the config, as the callbacks stage resolved them."""
    for stage in gateway.pipeline.stages:
        if stage.name == "callbacks":
            described = stage.describe()
            return {"success_callbacks": list(described.get("success_callback") or []),
                    "failure_callbacks": list(described.get("failure_callback") or [])}
    return {"success_callbacks": [], "failure_callbacks": []}


def make_blueprint(gateway: Gateway) -> Blueprint:
    bp = Blueprint("health", __name__)
    checker = HealthChecker(gateway)

    @bp.get("/health/liveliness")
    @bp.get("/health/liveness")
    def liveliness() -> Response:
        """Liveness probe: the process answers (no dependency is checked)."""
        return json_response("I'm alive!")

    @bp.get("/health/readiness")
    def readiness() -> Response:
        """Readiness probe: version, store and Redis status, callbacks in use (no key needed)."""
        db = store_status(gateway)
        redis = redis_status(gateway)
        ready = db in ("connected", "Not connected")
        body: dict[str, Any] = {
            "status": "healthy" if ready else "unhealthy",
            "db": db,
            "cache": "redis" if redis else None,
            "redis": redis,
            "litellm_version": __version__,
            **callbacks(gateway),
            "background_health_checks": bool(gateway.config.general_settings.get("background_health_checks")),
            "models": len(gateway.services.models.deployments),
            "pipeline": [s.name for s in gateway.pipeline.stages],
        }
        return json_response(body, status=200 if ready else 503)

    @bp.get("/health")
    def health() -> Response:
        """Model health: calls every visible deployment (or serves the latest background checks)."""
        gateway.keys.require_admin(request.headers, route="/health")
        services = gateway.services
        model = request.args.get("model")
        deployments = services.visible_deployments()
        if model:
            group = {d.id for d in services.router.group(model)} if services.router else set()
            deployments = [d for d in deployments if d.id in group]
            if not deployments:
                raise BadRequest(f"model={model!r} is not a model this proxy serves", param="model",
                                 code="model_not_found")
        if gateway.config.general_settings.get("background_health_checks"):
            gateway.health.refresh()
            wanted = {d.id for d in deployments}
            results = [r for dep_id, r in gateway.health.results.items() if dep_id in wanted]
        else:
            results = list(checker.run(deployments).values())
        body = answer(results)
        if gateway.config.general_settings.get("health_check_details") is False:
            body["healthy_endpoints"] = [{"model": e.get("model")} for e in body["healthy_endpoints"]]
            body["unhealthy_endpoints"] = [{"model": e.get("model")} for e in body["unhealthy_endpoints"]]
        return json_response(body)

    @bp.get("/health/cooldowns")
    def cooldowns() -> Response:
        """Deployments cooling down after repeated failures, and when each returns (master key)."""
        gateway.keys.require_admin(request.headers)
        return json_response({"cooldowns": gateway.services.router.cooldowns()})

    return bp
