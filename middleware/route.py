"""``route``: choose the deployment that will serve the request.

Candidates are the deployments of the requested model group (after ``model_group_alias`` and
wildcards), less those an earlier stage excluded (environment, failed attempts, ...). The routing
strategy picks among the rest.
"""

from __future__ import annotations

from typing import Any

from proxy.context import RequestContext
from proxy.errors import BadRequest, ServiceUnavailable
from proxy.pipeline import Handler, Stage


class Route(Stage):
    name = "route"
    provides = frozenset({"deployment"})

    def __call__(self, ctx: RequestContext, call_next: Handler) -> Any:
        models = self.services.models
        group = models.group(ctx.model)
        if not group:
            raise BadRequest(
                f"Invalid model name passed in model={ctx.model}. Call `/v1/models` to view "
                f"available models. Available models: {', '.join(self.services.visible_model_names()) or 'none'}",
                param="model",
                code="model_not_found",
            )
        excluded = ctx.excluded
        filters = ctx.extra.get("deployment_filters")
        candidates = []
        for dep in group:
            if dep.id in excluded:
                continue
            if filters:
                reason = next((r for f in filters if (r := f(dep))), None)
                if reason:
                    excluded[dep.id] = reason
                    continue
            candidates.append(dep)
        if not candidates:
            reasons = sorted({excluded.get(d.id, "") for d in group})
            raise ServiceUnavailable(
                f"No deployment of model {ctx.model!r} can take the request now ({'; '.join(reasons)})"
            )
        ctx.candidates = candidates
        ctx.deployment = self.services.strategy.pick(candidates, ctx)
        return call_next(ctx)
