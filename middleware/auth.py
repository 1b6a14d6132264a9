"""``auth``: only callers holding a valid key get past this stage.

Keys are read from ``Authorization: Bearer``, Azure's ``api-key`` or Anthropic's ``x-api-key``
header and compared in constant time (proxy/keys.py). Without a master key the proxy is open and
the stage leaves itself out of the chain.
"""

from __future__ import annotations

import logging
from typing import Any

from marshmallow import fields

from proxy.context import RequestContext
from proxy.keys import KeyChecker
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
        self.keys = KeyChecker(key)

    def __call__(self, ctx: RequestContext, call_next: Handler) -> Any:
        ctx.caller = self.keys.caller(ctx.headers)
        ctx.api_key = ctx.caller.get("api_key")
        return call_next(ctx)

    def describe(self) -> dict[str, Any]:
        return {"master_key": "***"}
