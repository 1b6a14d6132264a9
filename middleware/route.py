"""``route``: choose the deployment that will serve the request, and account for the outcome.

Candidates are the deployments of the requested model group (after ``model_group_alias`` and
wildcards) that are visible here, not cooling down, under their rpm/tpm limits this minute, and
not already tried by this request. The routing strategy picks among them (proxy/router).
"""

from __future__ import annotations

import time
from typing import Any

from proxy.context import RequestContext
from proxy.errors import BadRequest, PermissionDenied, ProxyError
from proxy.keys import may_use
from proxy.pipeline import Handler, Stage


class Route(Stage):
    name = "route"
    provides = frozenset({"deployment"})

    def __call__(self, ctx: RequestContext, call_next: Handler) -> Any:
        router = self.services.router
        group = router.group(ctx.model)
        if not group:
            raise BadRequest(
                f"Invalid model name passed in model={ctx.model}. Call `/v1/models` to view "
                f"available models. Available models: {', '.join(self.services.visible_model_names()) or 'none'}",
                param="model",
                code="model_not_found",
            )
        permitted = [d for d in group if may_use(ctx.caller, d.model_name, d.model_info.get("access_groups"))]
        if not permitted:
            raise PermissionDenied(f"This key is not allowed to call model {ctx.model!r}", param="model",
                                   code="model_access_denied")
        group = permitted
        dep = router.choose(ctx, group)
        ctx.candidates = group
        ctx.deployment = dep
        router.started(dep)
        started = time.perf_counter()
        try:
            result = call_next(ctx)
        except ProxyError as exc:
            router.finished(ctx, dep, exc, time.perf_counter() - started)
            raise
        except BaseException:
            router.finished(ctx, dep, ProxyError("internal error"), time.perf_counter() - started)
            raise
        first_byte = time.perf_counter() - started
        if ctx.stream and not isinstance(result, dict):
            # the stream is still flowing: account for it when the client has it all
            ctx.on_finish(lambda c: router.finished(c, dep, c.error, time.perf_counter() - started, first_byte))
        else:
            router.finished(ctx, dep, None, first_byte)
        return result
