"""``drop_params``: remove OpenAI params the chosen provider does not accept.

On with ``litellm_settings.drop_params: true``, with ``drop_params: true`` in one deployment's
``litellm_params`` (for that deployment only), or per request with ``"drop_params": true``. Only
known OpenAI params the adapter does not support are dropped; unknown params are provider params
and always pass through. ``additional_drop_params`` (in a deployment's ``litellm_params`` or in
the request) drops the named ones too, whether or not drop_params is on; a name may reach into
the body as LiteLLM writes it: ``tools[*].input_examples``, ``response_format.json_schema.strict``,
``tools[0].metadata``.
"""

from __future__ import annotations

import re
from typing import Any

from marshmallow import fields

from proxy.context import RequestContext
from proxy.errors import BadRequest
from proxy.pipeline import Handler, Stage, StageOptions
from proxy.providers.openai import CHAT_PARAMS
from proxy.services import Services

PATH_PART = re.compile(r"([^.\[\]]+)|\[(\*|\d+)\]")


def parse_path(path: str) -> list[str | int | None]:
    """``tools[*].input_examples`` -> ``["tools", None, "input_examples"]`` (None: every item)."""
    parts: list[str | int | None] = []
    for name, index in PATH_PART.findall(path):
        if name:
            parts.append(name)
        else:
            parts.append(None if index == "*" else int(index))
    return parts


def drop_path(value: Any, parts: list[str | int | None]) -> Any:
    """``value`` without what ``parts`` names; containers on the way are copied, never mutated."""
    if not parts:
        return value
    head, rest = parts[0], parts[1:]
    if isinstance(head, str) and isinstance(value, dict) and head in value:
        if not rest:
            return {k: v for k, v in value.items() if k != head}
        return {**value, head: drop_path(value[head], rest)}
    if isinstance(value, list) and not isinstance(head, str):
        if not rest:
            return [v for i, v in enumerate(value) if head is not None and i != head]
        return [drop_path(v, rest) if head is None or i == head else v for i, v in enumerate(value)]
    return value


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
        asked = ctx.extra.get("additional_drop_params")
        if asked is not None and not (isinstance(asked, list) and all(isinstance(n, str) for n in asked)):
            raise BadRequest("additional_drop_params: must be a list of param names",
                             param="additional_drop_params")
        extra_drop = [*(dep.params.get("additional_drop_params") or ()), *(asked or ())]
        on = self.enabled or ctx.extra.get("drop_params") is True or dep.params.get("drop_params") is True
        drop: list[str] = []
        if on and ctx.kind == "chat":
            unsupported = CHAT_PARAMS - dep.adapter.supported_params
            drop = [k for k in ctx.body if k in unsupported]
        body = {k: v for k, v in ctx.body.items() if k not in drop} if drop else ctx.body
        for name in extra_drop:
            if name in body:
                drop.append(name)
                body = {k: v for k, v in body.items() if k != name}
            elif "." in name or "[" in name:
                trimmed = drop_path(body, parse_path(name))
                if trimmed != body:
                    drop.append(name)
                    body = trimmed
        if drop:
            ctx.body = body
            ctx.extra["dropped_params"] = drop
        return call_next(ctx)

    def describe(self) -> dict[str, Any]:
        return {"enabled": self.enabled}
