"""``callbacks``: one structured access-log line and one spend record per request.

Placed outermost so it sees every outcome, errors from inner stages included. The line is
recorded when the response has been fully sent, so streams are logged with their real duration
and token counts; proxy/accesslog.py writes it off the request path.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from marshmallow import fields

from proxy.accesslog import AccessLog
from proxy.context import RequestContext
from proxy.keys.limits import call_cost
from proxy.keys.records import hash_key, user_entity
from proxy.pipeline import Handler, Stage, StageOptions
from proxy.services import Services

log = logging.getLogger(__name__)

#: Observability integrations that are recognised; those without an exporter here are reported
#: once at boot and skipped, so LiteLLM configs naming them still load.
KNOWN_CALLBACKS = frozenset(
    {"langfuse", "langsmith", "datadog", "prometheus", "otel", "s3", "slack", "lunary", "helicone",
     "athina", "braintrust", "openmeter", "logfire", "arize", "gcs_bucket", "sentry", "traceloop"}
)


class CallbacksOptions(StageOptions):
    access_log = fields.Bool(load_default=True)
    spend_logs = fields.Bool(load_default=True)
    success_callback = fields.List(fields.Str(), load_default=None, allow_none=True)
    failure_callback = fields.List(fields.Str(), load_default=None, allow_none=True)


def access_record(ctx: RequestContext) -> dict[str, Any]:
    """The fields of one access-log line."""
    dep = ctx.deployment
    usage = ctx.usage or {}
    record: dict[str, Any] = {
        "ts": round(ctx.wall_started, 3),
        "pid": os.getpid(),
        "request_id": ctx.request_id,
        "endpoint": ctx.kind,
        "model": ctx.model,
        "deployment": dep.id if dep else None,
        "upstream_model": f"{dep.provider}/{dep.upstream_model}" if dep else None,
        "status": ctx.status,
        "latency_ms": round(ctx.elapsed * 1000, 3),
        "stream": ctx.stream,
        "client_ip": ctx.extra.get("client_ip"),
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "total_tokens": usage.get("total_tokens"),
    }
    if len(ctx.attempts) > 1:
        record["attempts"] = len(ctx.attempts)
    if ctx.error is not None:
        record["error"] = ctx.error.message[:500]
    if ctx.metadata:
        record["metadata"] = ctx.metadata
    return record


class Callbacks(Stage):
    name = "callbacks"
    Options = CallbacksOptions

    def __init__(self, options: dict[str, Any], services: Services) -> None:
        super().__init__(options, services)
        settings = services.config.litellm_settings
        self.access_log = options["access_log"]
        self.sink = AccessLog.from_env() if self.access_log else AccessLog(None)
        self.spend = services.spend if options["spend_logs"] else None
        self.costmap = services.costmap
        self.success = options.get("success_callback") or list(settings.get("success_callback") or [])
        self.failure = options.get("failure_callback") or list(settings.get("failure_callback") or [])
        for name in sorted(set(self.success) | set(self.failure)):
            if name in KNOWN_CALLBACKS:
                log.warning("callback %r has no exporter in this version; it is skipped", name)
            else:
                log.warning("unknown callback %r; it is skipped", name)

    def __call__(self, ctx: RequestContext, call_next: Handler) -> Any:
        if self.sink.enabled:
            ctx.on_finish(self.write_access_log)
        if self.spend is not None:
            ctx.on_finish(self.record_spend)
        return call_next(ctx)

    def record_spend(self, ctx: RequestContext) -> None:
        """One spend row, attributed to the key, its team and its user; queued, written in batches.

        The cost and the running totals it adds to come from the ``auth`` stage when a virtual key
        called (it has counted them against the key's budget already); else they are worked out here.
        """
        dep = ctx.deployment
        usage = ctx.usage or {}
        prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        cost = ctx.extra.get("response_cost")
        if cost is None:
            cost = call_cost(ctx, self.costmap)
        caller = ctx.caller
        body_user = ctx.body.get("user")
        user = caller.get("user_id") or (body_user if isinstance(body_user, str) else None)
        totals = ctx.extra.get("spend_totals")
        if totals is None:
            totals = [(user_entity(user), 0, cost)] if user and cost else []
        self.spend.record({
            "request_id": ctx.request_id,
            "created_at": ctx.wall_started,
            "model": ctx.model,
            "deployment_id": dep.id if dep else None,
            "provider": dep.provider if dep else None,
            "api_key_hash": caller.get("token") or (hash_key(ctx.api_key) if ctx.api_key else None),
            "user": user,
            "team_id": caller.get("team_id"),
            "key_alias": caller.get("key_alias"),
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": int(usage.get("total_tokens") or prompt + completion),
            "spend": cost,
            "status": ctx.status,
            "latency_ms": round(ctx.elapsed * 1000, 3),
            "metadata": {**ctx.metadata, "requester_ip_address": ctx.extra.get("client_ip")}
            if ctx.extra.get("client_ip") else ctx.metadata,
        }, totals)

    def write_access_log(self, ctx: RequestContext) -> None:
        self.sink.write(access_record(ctx))

    def close(self) -> None:
        self.sink.close()

    def describe(self) -> dict[str, Any]:
        return {"access_log": self.access_log, "spend_logs": self.spend is not None,
                "success_callback": self.success,
                "failure_callback": self.failure}
