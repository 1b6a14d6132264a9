"""Who is calling: the master key or a virtual key, and what that caller may do.

Shared by the ``auth`` stage (LLM calls) and the views outside the pipeline (/models, admin
endpoints), so there is one place that knows how keys are read, compared and looked up.
``records`` defines keys and teams, ``cache`` keeps them in each worker, ``limits`` checks
budgets and rate limits; the SQL is in ``proxy/store/keys.py``.

Refusals (OpenAI's error shape; type, then code):

- no key, unknown or deleted key: 401 ``authentication_error`` / ``invalid_api_key``
- expired key: 401 ``authentication_error`` / ``expired_key``
- blocked key or team: 401 ``authentication_error`` / ``key_blocked``
- a virtual key on an admin route without ``management_routes``: 403 ``permission_error`` /
  ``admin_only``; a ``management``/``read_only`` key on an LLM route: 403 ... / ``route_not_allowed``
- a model outside the key's ``models`` (or its team's): 403 ``permission_error`` / ``model_access_denied``
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from proxy.errors import AuthenticationError, PermissionDenied
from proxy.keys.cache import KeyCache
from proxy.keys.records import ALL_TEAM_MODELS, INFO_ROUTES, LLM_API_ROUTES, KeyRecord, TeamRecord, hash_key, iso

__all__ = ["KeyCache", "KeyChecker", "may_use", "presented_key"]

#: LLM routes a key's ``allowed_routes`` may name one by one, per endpoint kind.
_LLM_ROUTES = {"chat": "/chat/completions", "completion": "/completions", "embedding": "/embeddings",
               "moderation": "/moderations"}
#: Admin routes a ``read_only`` (``info_routes``) key may call.
_INFO_ROUTES = frozenset({"/key/info", "/team/info", "/key/list", "/team/list", "/spend/logs"})


def presented_key(headers: Any) -> str | None:
    """The key a client sent, in any header style the supported SDKs use."""
    auth = headers.get("Authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return auth.strip()
    return headers.get("api-key") or headers.get("x-api-key")


def effective_models(key: KeyRecord, team: TeamRecord | None) -> list[str]:
    """The models a key may call: its own list, else (or with ``all-team-models``) its team's."""
    if team is not None and (not key.models or ALL_TEAM_MODELS in key.models):
        return [*team.models, *(m for m in key.models if m != ALL_TEAM_MODELS)]
    return key.models


class KeyChecker:
    """Checks presented keys; with no master key configured everyone is let in."""

    def __init__(self, master_key: str | None, cache: KeyCache | None = None) -> None:
        self._master = master_key.encode() if master_key else None
        self.cache = cache

    @property
    def enabled(self) -> bool:
        return self._master is not None

    def caller(self, headers: Any) -> dict[str, Any]:
        """Identity of the caller; raises AuthenticationError (401) when the key is not accepted."""
        if self._master is None:
            return {"role": "anonymous"}
        key = presented_key(headers)
        if not key:
            raise AuthenticationError(
                "No API key provided: send 'Authorization: Bearer <key>' (or an 'api-key' header)"
            )
        if hmac.compare_digest(key.encode(), self._master):
            return {"role": "admin", "key_alias": "master_key", "api_key": key}
        record = self.cache.key(hash_key(key)) if self.cache is not None else None
        if record is None:
            raise AuthenticationError("Invalid API key")
        now = time.time()
        if record.expired(now):
            raise AuthenticationError(
                f"Authentication Error - Expired Key. Key Expiry time {iso(record.expires)} and current time "
                f"{iso(now)}", code="expired_key")
        team = self.cache.team(record.team_id)
        if record.blocked or (team is not None and team.blocked):
            raise AuthenticationError("Authentication Error - this key (or its team) is blocked", code="key_blocked")
        return {"role": "key", "api_key": key, "token": record.token, "key_alias": record.key_alias,
                "team_id": record.team_id, "user_id": record.user_id, "models": effective_models(record, team),
                "key": record, "team": team}

    def require_admin(self, headers: Any, route: str | None = None) -> dict[str, Any]:
        """Admin endpoints need the master key, or a virtual key allowed ``management_routes``
        (or this ``route`` by name, or ``info_routes`` for a read-only route)."""
        caller = self.caller(headers)
        key: KeyRecord | None = caller.get("key")
        if key is None or key.is_admin:
            return caller
        routes = key.allowed_routes
        if route is not None and (route in routes or (INFO_ROUTES in routes and route in _INFO_ROUTES)):
            return caller
        raise PermissionDenied(
            "Only the master key, or a key generated with allowed_routes ['management_routes'] "
            "(key_type 'management'), may call admin routes", code="admin_only")

    @staticmethod
    def may_call_llm(key: KeyRecord, kind: str) -> bool:
        """A key limited by ``allowed_routes`` (LiteLLM's presets or paths) calls LLM routes only if listed."""
        routes = key.allowed_routes
        if not routes or LLM_API_ROUTES in routes or "openai_routes" in routes:
            return True
        path = _LLM_ROUTES.get(kind, "")
        return any(r in (path, "/v1" + path) for r in routes)


def may_use(caller: dict[str, Any], model_name: str, access_groups: list[str] | None) -> bool:
    """Whether ``caller`` may call a deployment of ``model_name`` in ``access_groups``.

    The master key (and an open proxy) may call everything. A key listing models may call those
    and the members of the access groups it lists. A model in an access group is served only to
    keys allowed that group; other models are open to keys without a model list.
    """
    if caller.get("role") in ("admin", "anonymous") or not caller:
        return True
    allowed = set(caller.get("models") or ())
    if access_groups:
        return model_name in allowed or bool(allowed.intersection(access_groups))
    return not allowed or model_name in allowed or "*" in allowed
