"""Client-side credentials: ``api_key``, ``api_base`` or ``base_url`` sent in a request body.

A caller who may pick the upstream base could have the deployment's key sent to a host of their
choosing, so these fields are refused with a 400 naming the field, never silently ignored,
unless the operator allows them, as in LiteLLM:

- ``general_settings.allow_client_side_credentials: true`` allows all of them for every model;
- ``litellm_params.configurable_clientside_auth_params`` allows them for one deployment: a list
  whose entries are param names (``"api_key"``, ``"api_base"``; ``base_url`` is the same thing as
  ``api_base``) or ``{"api_base": "<regex>"}``, which allows a base that the regex matches from
  its start (``re.match``) or that equals it.

When allowed, that call goes to the client's base with the client's key (the deployment's own
key stays for a call that brings none). Rules are compiled once, when the deployment is loaded.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

from proxy.errors import BadRequest

if TYPE_CHECKING:
    from proxy.context import RequestContext
    from proxy.deployment import Deployment

#: Request body fields that carry credentials or choose the upstream.
FIELDS = ("api_key", "api_base", "base_url")
#: Names meaning the upstream base; an allowance for one covers the other.
BASE_NAMES = frozenset({"api_base", "base_url"})


@dataclasses.dataclass(frozen=True, slots=True)
class ClientAuthRules:
    """A deployment's ``configurable_clientside_auth_params``, compiled."""

    names: frozenset[str] = frozenset()
    base_patterns: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def parse(cls, entries: Any) -> ClientAuthRules | None:
        """Compile the config list; ValueError says what is wrong with it."""
        if entries is None:
            return None
        if not isinstance(entries, list):
            raise ValueError('must be a list like ["api_key", {"api_base": "^https://.*\\\\.example\\\\.com/"}]')
        names: set[str] = set()
        patterns: list[re.Pattern[str]] = []
        for i, entry in enumerate(entries):
            if isinstance(entry, str):
                names |= BASE_NAMES if entry in BASE_NAMES else {entry}
                continue
            if not (isinstance(entry, dict) and len(entry) == 1):
                raise ValueError(f"[{i}]: must be a param name or {{\"api_base\": \"<regex>\"}}")
            key, regex = next(iter(entry.items()))
            if key not in BASE_NAMES or not isinstance(regex, str):
                raise ValueError(f"[{i}]: a pattern entry is {{\"api_base\": \"<regex>\"}}")
            try:
                patterns.append(re.compile(regex))
            except re.error as exc:
                raise ValueError(f"[{i}]: invalid regex {regex!r}: {exc}") from None
        return cls(frozenset(names), tuple(patterns))

    def allows(self, field: str, value: str) -> bool:
        if field in self.names:
            return True
        if field in BASE_NAMES:
            return any(p.match(value) or p.pattern == value for p in self.base_patterns)
        return False


def take(body: dict[str, Any]) -> dict[str, str]:
    """Pop the credential fields out of a request body (they are never forwarded as params)."""
    found: dict[str, str] = {}
    for name in FIELDS:
        if name in body:
            value = body.pop(name)
            if value is None:
                continue
            if not isinstance(value, str) or not value:
                raise BadRequest(f"{name}: must be a non-empty string", param=name)
            found[name] = value
    return found


def apply(ctx: RequestContext, dep: Deployment, allow_all: bool) -> Deployment:
    """The deployment this call uses: ``dep`` itself, or a copy with the client's credentials.

    Raises BadRequest naming the first field the operator has not allowed.
    """
    given: dict[str, str] = ctx.extra.get("client_credentials") or {}
    if not given:
        return dep
    if not allow_all:
        rules = dep.client_auth
        for name, value in given.items():
            if rules is None or not rules.allows(name, value):
                raise BadRequest(
                    f"{name} is not allowed in the request body for model {ctx.model!r}: set "
                    "general_settings.allow_client_side_credentials, or list it in the deployment's "
                    "litellm_params.configurable_clientside_auth_params",
                    param=name,
                )
    base = given.get("api_base") or given.get("base_url")
    return dataclasses.replace(dep, api_key=given.get("api_key", dep.api_key), api_base=base or dep.api_base)
