"""``callbacks``: the access-log line, the spend record and the standard log record of each call.

Placed outermost so it sees every outcome, errors from inner stages included. Everything is
recorded when the response has been fully sent, so streams are logged with their real duration
and token counts. The access log (proxy/accesslog.py) and the exporters named in
``litellm_settings.success_callback`` / ``failure_callback`` / ``callbacks`` (proxy/observe/)
write off the request path; Slack alerts (``general_settings.alerting``) watch the same calls.
A non-streamed answer is priced here (unless ``auth`` priced it for a virtual key) and carries
``x-litellm-response-cost``.

Neither the access line nor the spend record holds a message; exporters drop messages when
``litellm_settings.turn_off_message_logging`` is set or the call asked for it with
``x-litellm-enable-message-redaction`` (``ctx.redact_messages``). The spend record's
``metadata`` holds the client's metadata, its ``tags`` (with ``x-litellm-tags``) and its
``spend_logs_metadata`` (with ``x-litellm-spend-logs-metadata``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from marshmallow import fields

from proxy.accesslog import AccessLog
from proxy.context import RequestContext
from proxy.errors import ConfigError
from proxy.keys.limits import Guard, call_cost
from proxy.keys.records import hash_key, user_entity
from proxy.observe import Telemetry
from proxy.observe.hub import Observer, plan, validate_alerting
from proxy.pipeline import Handler, Stage, StageOptions
from proxy.services import Services

log = logging.getLogger(__name__)


class CallbacksOptions(StageOptions):
    access_log = fields.Bool(load_default=True)
    spend_logs = fields.Bool(load_default=True)
    success_callback = fields.List(fields.Str(), load_default=None, allow_none=True)
    failure_callback = fields.List(fields.Str(), load_default=None, allow_none=True)
    callbacks = fields.List(fields.Raw(), load_default=None, allow_none=True)


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
        lists: dict[str, tuple[str, list[Any] | None]] = {}
        for kind in ("success_callback", "failure_callback", "callbacks"):
            given = options.get(kind)
            if given is not None:
                lists[kind] = (f"callbacks.{kind}", given)
            else:
                value = settings.get(kind)
                if value is not None and not isinstance(value, list):
                    value = [value]
                lists[kind] = (f"litellm_settings.{kind}", value)
        self.success = list(lists["success_callback"][1] or [])
        self.failure = list(lists["failure_callback"][1] or [])
        self.callbacks = list(lists["callbacks"][1] or [])
        general = services.config.general_settings
        resolved = plan(lists, str(services.config.base_dir), os.environ)
        errors = resolved.errors + validate_alerting(general, os.environ)
        if errors:
            raise ConfigError(errors)
        self.redact = bool(settings.get("turn_off_message_logging"))
        telemetry: Telemetry = services.telemetry or Telemetry(active=False)
        self.telemetry = telemetry
        self.observer: Observer | None = None
        if telemetry.active and (resolved.wanted or "slack" in (general.get("alerting") or [])):
            guard = Guard(services.key_cache, services.state) if services.key_cache is not None else None
            self.observer = Observer(resolved.wanted, general, telemetry, redact=self.redact, guard=guard)
            if self.observer.records:
                services.extra.setdefault("on_cooldown", []).append(self.observer.on_cooldown)
                services.extra.setdefault("on_unhealthy", []).append(self.observer.on_unhealthy)
            else:
                self.observer = None

    def __call__(self, ctx: RequestContext, call_next: Handler) -> Any:
        observer = self.observer
        if observer is not None:
            observer.start(ctx)
            ctx.on_finish(self.observe)  # first in, so it runs last: after spend has priced the call
        if self.sink.enabled:
            ctx.on_finish(self.write_access_log)
        if self.spend is not None:
            ctx.on_finish(self.record_spend)
        result = call_next(ctx)
        if isinstance(result, dict) and ctx.extra.get("response_cost") is None:
            # priced once, here, for the x-litellm-response-cost header and the spend record alike
            cost = ctx.extra["response_cost"] = call_cost(ctx, self.costmap)
            ctx.response_headers["x-litellm-response-cost"] = str(cost)
        return result

    def observe(self, ctx: RequestContext) -> None:
        cost = ctx.extra.get("response_cost")
        if cost is None:
            cost = ctx.extra["response_cost"] = call_cost(ctx, self.costmap)
        assert self.observer is not None
        self.observer.finish(ctx, cost)

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
            cost = ctx.extra["response_cost"] = call_cost(ctx, self.costmap)
        caller = ctx.caller
        user = caller.get("user_id") or ctx.end_user
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
        if self.observer is not None:
            self.telemetry.retire(self.observer.close)  # flushed in the background; shutdown waits

    def describe(self) -> dict[str, Any]:
        return {"access_log": self.access_log, "spend_logs": self.spend is not None,
                "success_callback": self.success,
                "failure_callback": self.failure,
                "callbacks": self.callbacks,
                "turn_off_message_logging": self.redact}
