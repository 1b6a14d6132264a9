"""``drop_params``: remove OpenAI params the chosen provider does not accept.

On with ``litellm_settings.drop_params: true`` (or per request with ``"drop_params": true``).
Only known OpenAI params the adapter does not support are dropped; unknown params are provider
params and always pass through. ``additional_drop_params`` (per deployment) drops named ones too.
"""

from __future__ import annotations

from typing import Any

from marshmallow import fields

from proxy.context import RequestContext
from proxy.pipeline import Handler, Stage, StageOptions
from proxy.providers.openai import CHAT_PARAMS
from proxy.services import Services


class DropParamsOptions(StageOptions):
    enabled = fields.Bool(load_default=None, allow_none=True)


class DropParams(Stage):
    name = "drop_params"
    Options = DropParamsOptions
    needs = frozenset({"request", "deployment"})

    def __init__(self, options: dict[str, Any], services: Services) -> None:
        super().__init__(options, services)
        enabled = options.get("enabled")
        if enabled is None:
            enabled = bool(services.config.litellm_settings.get("drop_params"))
        self.enabled = enabled

    def __call__(self, ctx: RequestContext, call_next: Handler) -> Any:
        dep = ctx.deployment
        assert dep is not None
        extra_drop = dep.params.get("additional_drop_params")
        if (self.enabled or ctx.extra.get("drop_params")) and ctx.kind == "chat":
            unsupported = CHAT_PARAMS - dep.adapter.supported_params
            drop = [k for k in ctx.body if k in unsupported]
            if extra_drop:
                drop.extend(k for k in extra_drop if k in ctx.body)
            if drop:
                ctx.body = {k: v for k, v in ctx.body.items() if k not in drop}
                ctx.extra["dropped_params"] = drop
        elif extra_drop:
            ctx.body = {k: v for k, v in ctx.body.items() if k not in extra_drop}
        return call_next(ctx)

    def describe(self) -> dict[str, Any]:
        return {"enabled": self.enabled}
