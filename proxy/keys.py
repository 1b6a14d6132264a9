"""Who is calling: the API key a request presents, checked against the master key.

Shared by the ``auth`` stage (LLM calls) and the views outside the pipeline (/models, admin
endpoints), so there is one place that knows how keys are read and compared.
"""

from __future__ import annotations

import hmac
from typing import Any

from proxy.errors import AuthenticationError


def presented_key(headers: Any) -> str | None:
    """The key a client sent, in any header style the supported SDKs use."""
    auth = headers.get("Authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return auth.strip()
    return headers.get("api-key") or headers.get("x-api-key")


class KeyChecker:
    """Checks presented keys; with no master key configured everyone is let in."""

    def __init__(self, master_key: str | None) -> None:
        self._master = master_key.encode() if master_key else None

    @property
    def enabled(self) -> bool:
        return self._master is not None

    def caller(self, headers: Any) -> dict[str, Any]:
        """Identity of the caller; raises AuthenticationError (401) when the key is wrong."""
        if self._master is None:
            return {"role": "anonymous"}
        key = presented_key(headers)
        if not key:
            raise AuthenticationError(
                "No API key provided: send 'Authorization: Bearer <key>' (or an 'api-key' header)"
            )
        if not hmac.compare_digest(key.encode(), self._master):
            raise AuthenticationError("Invalid API key")
        return {"role": "admin", "key_alias": "master_key", "api_key": key}

    def require_admin(self, headers: Any) -> dict[str, Any]:
        """Admin endpoints need the master key (when one is set)."""
        return self.caller(headers)


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
