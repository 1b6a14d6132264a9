"""Health probes for load balancers and orchestrators (no key needed, as in LiteLLM)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, Response, request

from proxy.api.render import json_response

if TYPE_CHECKING:
    from proxy.gateway import Gateway


def make_blueprint(gateway: Gateway) -> Blueprint:
    bp = Blueprint("health", __name__)

    @bp.get("/health/liveliness")
    @bp.get("/health/liveness")
    def liveliness() -> Response:
        return json_response("I'm alive!")

    @bp.get("/health/readiness")
    def readiness() -> Response:
        return json_response({
            "status": "healthy",
            "models": len(gateway.services.models.deployments),
            "pipeline": [s.name for s in gateway.pipeline.stages],
        })

    @bp.get("/health/cooldowns")
    def cooldowns() -> Response:
        """Deployments cooling down after repeated failures, and when each returns (master key)."""
        gateway.keys.require_admin(request.headers)
        return json_response({"cooldowns": gateway.services.router.cooldowns()})

    return bp
