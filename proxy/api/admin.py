"""Admin surface (master key): routing dry-run, and model management.

Everything here needs the master key when one is configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, Response, request

from proxy.api.openai import build_context, parse_body
from proxy.api.render import json_response

if TYPE_CHECKING:
    from proxy.gateway import Gateway


def make_blueprint(gateway: Gateway) -> Blueprint:
    bp = Blueprint("admin", __name__)

    @bp.post("/route/explain")
    def route_explain() -> Response:
        """Which deployments could serve this chat request, which are excluded and why, which wins."""
        gateway.keys.require_admin(request.headers)
        body = parse_body("chat", request.get_data(cache=False))
        ctx = build_context("chat", body, request.headers)
        return json_response(gateway.services.router.explain(ctx))

    return bp
