"""Detailed debug: each stage's decision and each upstream request and response, redacted.

On with ``--detailed_debug``, ``LITELLM_LOG=DEBUG`` or ``litellm_settings.set_verbose: true``
(the level is read when the pipeline is built, so a request pays nothing when it is off).
Nothing secret reaches the log: header values whose name says auth/key/token/secret are
replaced, JSON fields named like a secret (``api_key``, ``*_token``, ...) are replaced, bearer
tokens are replaced, and every value that came from ``os.environ/`` or a secret manager (and
each deployment's own key and header values) is masked wherever it appears.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from proxy.redact import SECRET_HEADER

log = logging.getLogger("llmrelay.debug")

MASK = "***"
BODY_LIMIT = 4000
JSON_SECRET = re.compile(
    r'("(?:[^"]*(?:api[-_]?key|secret|password|token|authorization|credential|private[-_]key)[^"]*)"\s*:\s*)"[^"]*"',
    re.IGNORECASE)
BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)


def enabled() -> bool:
    return log.isEnabledFor(logging.DEBUG)


class Redactor:
    """Masks the given secret values and anything shaped like a credential."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self.secrets = sorted({s for s in secrets if isinstance(s, str) and len(s) > 3}, key=len, reverse=True)

    def with_secrets(self, more: Iterable[str | None]) -> Redactor:
        return Redactor([*self.secrets, *more])

    def text(self, value: str | bytes | None) -> str:
        if value is None:
            return ""
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        if len(text) > BODY_LIMIT:
            text = text[:BODY_LIMIT] + f"... ({len(text)} chars)"
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        text = JSON_SECRET.sub(rf'\1"{MASK}"', text)
        return BEARER.sub(rf"\1{MASK}", text)

    def headers(self, headers: dict[str, Any]) -> dict[str, str]:
        return {k: MASK if SECRET_HEADER.search(str(k)) else self.text(str(v)) for k, v in headers.items()}


def stage_decision(name: str, ctx: Any, error: BaseException | None) -> None:
    """One line per stage: what it left in the context (the deployment chosen, exclusions, status)."""
    dep = getattr(ctx, "deployment", None)
    outcome = f"raised {type(error).__name__}: {str(getattr(error, 'message', error))[:300]}" if error else "passed"
    parts = [f"stage {name}: {outcome}", f"model={ctx.model!r}"]
    if dep is not None:
        parts.append(f"deployment={dep.id} ({dep.label})")
    if ctx.excluded:
        parts.append(f"excluded={dict(ctx.excluded)}")
    if ctx.attempts:
        parts.append(f"attempts={len(ctx.attempts)}")
    log.debug("%s [%s]", " ".join(parts), ctx.request_id)
