"""``GET /metrics``: Prometheus text format, every worker's values added up (proxy/observe/prometheus.py).

Served when ``prometheus`` is among the callbacks. Open like LiteLLM's, unless
``litellm_settings.require_auth_for_metrics_endpoint`` is true: then it needs a valid key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, Response, request

from proxy.errors import NotFound

if TYPE_CHECKING:
    from proxy.gateway import Gateway


def make_blueprint(gateway: Gateway) -> Blueprint:
    bp = Blueprint("metrics", __name__)

    @bp.get("/metrics")
    @bp.get("/metrics/")
    def metrics() -> Response:
        services = gateway.services
        if services.config.litellm_settings.get("require_auth_for_metrics_endpoint"):
            gateway.keys.caller(request.headers)
        found = services.telemetry.metrics if services.telemetry is not None else None
        if found is None:
            raise NotFound("Prometheus metrics are off: add 'prometheus' to litellm_settings.callbacks")
        found.refresh(services)
        body, content_type = found.render()
        return Response(body, status=200, content_type=content_type)

    return bp
