"""``retry_fallback``: retry failed calls, then fall back to other model groups.

Placed before ``route``, so each attempt re-enters routing: a retry goes to another deployment of
the group when there is one (the failed one is excluded), else waits (exponential backoff, or the
upstream's ``Retry-After``) and tries the same one again. When the retries are spent it walks the
fallback list for the error's kind: ``context_window_fallbacks`` for context-window errors,
``content_policy_fallbacks`` for content-policy errors, ``fallbacks`` (then ``default_fallbacks``)
for the rest. Client errors (a bad parameter) are neither retried nor sent elsewhere. Streams are
retried only before their first byte, which is all the pipeline ever sees of them.

What happened is left on the context (``retries``, ``max_retries``, ``fallbacks``), which the
response carries as LiteLLM's ``x-litellm-attempted-retries``, ``x-litellm-max-retries`` and
``x-litellm-attempted-fallbacks``.
"""

from __future__ import annotations

import logging
from typing import Any

import gevent
from marshmallow import fields, validate

from proxy.config_schema import FallbackList
from proxy.context import RequestContext
from proxy.errors import BadRequest, ContentPolicyViolation, ContextWindowExceeded, ProxyError
from proxy.pipeline import Handler, Stage, StageOptions
from proxy.services import Services

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0


class RetryFallbackOptions(StageOptions):
    num_retries = fields.Int(load_default=None, allow_none=True, validate=validate.Range(min=0))
    retry_after = fields.Float(load_default=None, allow_none=True, validate=validate.Range(min=0))
    fallbacks = FallbackList(load_default=None, allow_none=True)
    context_window_fallbacks = FallbackList(load_default=None, allow_none=True)
    content_policy_fallbacks = FallbackList(load_default=None, allow_none=True)
    default_fallbacks = fields.List(fields.Str(), load_default=None, allow_none=True)


def as_map(entries: list[dict[str, list[str]]] | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for entry in entries or []:
        for model, targets in entry.items():
            out.setdefault(model, []).extend(targets)
    return out


class RetryFallback(Stage):
    name = "retry_fallback"
    Options = RetryFallbackOptions

    def __init__(self, options: dict[str, Any], services: Services) -> None:
        super().__init__(options, services)
        cfg = services.config

        def pick(key: str, default: Any) -> Any:
            value = options.get(key)
            return value if value is not None else cfg.setting(key, default)

        self.num_retries: int = pick("num_retries", 0)
        self.retry_after: float = pick("retry_after", 0.0)
        self.fallbacks = as_map(pick("fallbacks", None))
        self.context_window_fallbacks = as_map(pick("context_window_fallbacks", None))
        self.content_policy_fallbacks = as_map(pick("content_policy_fallbacks", None))
        self.default_fallbacks: list[str] = pick("default_fallbacks", None) or []

    def __call__(self, ctx: RequestContext, call_next: Handler) -> Any:
        original = ctx.model
        try:
            return self.with_retries(ctx, call_next)
        except ProxyError as first_error:
            error = first_error
            tried = {original}
            fallbacks = [m for m in self.fallbacks_for(original, error) if m not in tried]
            for model in fallbacks:
                tried.add(model)
                log.info("%s: falling back from %s to %s after: %s", ctx.request_id, ctx.model,
                         model, error.message)
                ctx.model = model
                ctx.excluded = {}
                ctx.deployment = None
                ctx.fallbacks = len(tried) - 1
                try:
                    return self.with_retries(ctx, call_next)
                except ProxyError as exc:
                    error = exc
            raise error from None

    def with_retries(self, ctx: RequestContext, call_next: Handler) -> Any:
        retries = self.num_retries
        if isinstance(ctx.extra.get("num_retries"), int):
            retries = ctx.extra["num_retries"]
        ctx.max_retries = retries
        ctx.retries = attempt = 0  # counted per model group, as LiteLLM reports them
        while True:
            try:
                result = call_next(ctx)
                self.note(ctx, None)
                return result
            except ProxyError as exc:
                self.note(ctx, exc)
                if not exc.retryable or attempt >= retries or ctx.deployment is None:
                    raise
                ctx.retries = attempt = attempt + 1
                others = [d for d in ctx.candidates or () if d.id != ctx.deployment.id]
                if others:
                    ctx.excluded[ctx.deployment.id] = f"failed with {exc.status}"
                else:
                    gevent.sleep(self.backoff(attempt, exc.retry_after))

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Upstream's Retry-After when given, else exponential from 0.5 s; never over 30 s."""
        if retry_after is not None:
            return min(max(retry_after, self.retry_after), MAX_BACKOFF)
        return min(max(0.5 * 2 ** (attempt - 1), self.retry_after), MAX_BACKOFF)

    def fallbacks_for(self, model: str, error: ProxyError) -> list[str]:
        if isinstance(error, ContextWindowExceeded):
            specific = self.context_window_fallbacks.get(model)
            if specific:
                return specific
        elif isinstance(error, ContentPolicyViolation):
            specific = self.content_policy_fallbacks.get(model)
            if specific:
                return specific
        elif isinstance(error, BadRequest):
            return []  # the request itself is wrong; another model will not fix it
        return self.fallbacks.get(model) or self.fallbacks.get("*") or self.default_fallbacks

    @staticmethod
    def note(ctx: RequestContext, error: ProxyError | None) -> None:
        dep = ctx.deployment
        ctx.attempts.append({
            "model": ctx.model,
            "deployment": dep.id if dep else None,
            "status": error.status if error else 200,
            "error": error.message if error else None,
        })

    def describe(self) -> dict[str, Any]:
        return {
            "num_retries": self.num_retries,
            "fallbacks": self.fallbacks,
            "context_window_fallbacks": self.context_window_fallbacks,
            "content_policy_fallbacks": self.content_policy_fallbacks,
            "default_fallbacks": self.default_fallbacks,
        }
