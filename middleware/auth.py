"""``auth``: only callers holding a valid key get past this stage.

Keys are read from ``Authorization: Bearer``, Azure's ``api-key`` or Anthropic's ``x-api-key``
header. The master key is compared in constant time; a virtual key is looked up by its hash in
the worker's key cache (never the store), then checked against its expiry, routes, budgets and
rate limits (proxy/keys). The model is checked by ``route`` against ``ctx.caller["models"]``.
When the call ends, its tokens and cost are counted against the key, its team and its user. The
answer carries LiteLLM's ``x-litellm-key-spend`` (the key's spend, this call's cost included when
known: streams are priced only at their end), ``x-litellm-response-cost`` when not streamed, and
the key's own ``x-ratelimit-*`` figures when it has rpm or tpm limits (they replace the upstream's).
Without a master key the proxy is open and the stage leaves itself out of the chain.
"""

from __future__ import annotations

import logging
from typing import Any

from marshmallow import fields

from proxy.context import RequestContext
from proxy.errors import PermissionDenied
from proxy.keys import KeyChecker
from proxy.keys.limits import Admission, Guard, call_cost
from proxy.pipeline import Handler, Stage, StageNotUsed, StageOptions
from proxy.services import Services

log = logging.getLogger(__name__)


class AuthOptions(StageOptions):
    master_key = fields.Str(load_default=None, allow_none=True)


class Auth(Stage):
    name = "auth"
    Options = AuthOptions
    provides = frozenset({"caller"})

    def __init__(self, options: dict[str, Any], services: Services) -> None:
        super().__init__(options, services)
        key = options.get("master_key") or services.config.general_settings.get("master_key")
        if not key:
            log.warning("auth: no general_settings.master_key set; the proxy accepts every caller")
            raise StageNotUsed("no master_key: every caller is accepted")
        self.keys = KeyChecker(key, services.key_cache)
        self.guard = Guard(services.key_cache, services.state) if services.key_cache is not None else None
        self.costmap = services.costmap

    def __call__(self, ctx: RequestContext, call_next: Handler) -> Any:
        caller = ctx.caller = self.keys.caller(ctx.headers)
        ctx.api_key = caller.get("api_key")
        key = caller.get("key")
        if key is None or self.guard is None:
            return call_next(ctx)
        if not KeyChecker.may_call_llm(key, ctx.kind):
            raise PermissionDenied(f"This key's allowed_routes {key.allowed_routes} do not include LLM routes",
                                   code="route_not_allowed")
        adm = self.guard.admit(key, caller["team"], None if key.user_id else ctx.end_user)
        ctx.on_finish(lambda c: self.settle(c, adm))
        result = call_next(ctx)
        headers = ctx.response_headers
        if isinstance(result, dict):
            cost = ctx.extra["response_cost"] = call_cost(ctx, self.costmap)
            headers["x-litellm-response-cost"] = str(cost)
            headers["x-litellm-key-spend"] = str(adm.key_spend + cost)  # LiteLLM's: this call included
        else:  # a stream: its cost is known only at its end, after the headers went out
            headers["x-litellm-key-spend"] = str(adm.key_spend)
        limits = adm.rate_limit_headers(int((ctx.usage or {}).get("total_tokens") or 0))
        if limits is not None:  # the key's own limits outrank the upstream's
            headers.update(limits)
        return result

    def settle(self, ctx: RequestContext, adm: Admission) -> None:
        """The call is over (streams included): count its tokens and cost; the totals go with its spend row."""
        cost = ctx.extra.get("response_cost")
        if cost is None:
            cost = ctx.extra["response_cost"] = call_cost(ctx, self.costmap)
        tokens = int((ctx.usage or {}).get("total_tokens") or 0)
        ctx.extra["spend_totals"] = self.guard.finish(adm, cost, tokens)

    def describe(self) -> dict[str, Any]:
        return {"master_key": "***", "virtual_keys": self.guard is not None}
