"""What of a deployment may be shown: litellm_params with every secret removed.

A value is withheld when its name says it is a secret (api_key, aws_secret_access_key, any
``*token``/``*secret``/``*password``...), when it came from ``os.environ/`` (whatever its name:
an api_base kept in the environment is the operator's business), or when a credential supplied
it. Header maps are filtered the same way by header name.
"""

from __future__ import annotations

import re
from typing import Any

from proxy.config import ENV_PREFIX

SECRET_NAME = re.compile(
    r"(api[-_]?key|secret|password|passwd|credential|(^|[-_])token$|session[-_]token|ad[-_]token"
    r"|^authorization$|cookie|private[-_]key|access[-_]key)",
    re.IGNORECASE,
)
NOT_SECRET = re.compile(r"(cost_per|per_token|^max_|tokens$|tokenizer|credential_name$)", re.IGNORECASE)
SECRET_HEADER = re.compile(r"(auth|key|token|secret|cookie|password|credential)", re.IGNORECASE)


def from_env(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(ENV_PREFIX)


def public_params(raw: dict[str, Any], credential_keys: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """``raw`` litellm_params (as written, env references unresolved) without any secret."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        secret_name = SECRET_NAME.search(key) and not NOT_SECRET.search(key)
        if key in credential_keys or secret_name or from_env(value):
            continue
        if key in ("extra_headers", "headers") and isinstance(value, dict):
            value = {h: v for h, v in value.items() if not SECRET_HEADER.search(str(h)) and not from_env(v)}
        elif isinstance(value, dict):
            value = public_params(value)
        out[key] = value
    return out
