"""What of a deployment may be shown: its params and model info with every secret removed.

A value is withheld when its name says it is a secret (api_key, aws_secret_access_key, any
``*token``/``*secret``/``*password``...), when a credential supplied that param, or when the value
itself came from outside the file: an ``os.environ/`` reference or a credential's values
(``Deployment.supplied``). The last rule goes by value, not by field, so it holds however the
value travelled: an organization list expanded into deployments, a credential merged into an
entry, a wildcard made concrete, a runtime model read back from the store. Header maps are
filtered the same way, plus by header name.
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


def is_supplied(value: Any, supplied: frozenset[str] | set[str]) -> bool:
    """Whether ``value`` came from outside the file (or is an unresolved ``os.environ/``)."""
    if isinstance(value, str):
        return value in supplied or value.startswith(ENV_PREFIX)
    if isinstance(value, (bool, int, float)):
        # the schema turned "100" or "true" from the environment into 100 or True
        text = str(value)
        return text in supplied or text.lower() in supplied
    return False


def public_value(value: Any, supplied: frozenset[str] | set[str]) -> Any:
    """``value`` with every supplied value taken out, at any depth."""
    if isinstance(value, dict):
        return public_params(value, supplied)
    if isinstance(value, list):
        return [public_value(v, supplied) for v in value if not is_supplied(v, supplied)]
    return value


def public_params(
    params: dict[str, Any],
    supplied: frozenset[str] | set[str] = frozenset(),
    credential_keys: set[str] | frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """``params`` (litellm_params or model_info, resolved) without any secret."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        secret_name = SECRET_NAME.search(key) and not NOT_SECRET.search(key)
        if key in credential_keys or secret_name or is_supplied(value, supplied):
            continue
        if key in ("extra_headers", "headers") and isinstance(value, dict):
            value = {h: v for h, v in value.items()
                     if not SECRET_HEADER.search(str(h)) and not is_supplied(v, supplied)}
        else:
            value = public_value(value, supplied)
        out[key] = value
    return out
