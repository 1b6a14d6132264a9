"""The router: which deployments of a group may serve now, which one will, and what happened.

Filters, in order: visibility (environment), earlier failed attempts, cooldowns, a failed
background health check (proxy/health.py), rpm/tpm limits of this minute, ``order`` (lowest
first), context window. The strategy then ranks what is left, and an rpm-limited pick is
confirmed with an atomic reservation, so limits hold across workers and instances sharing the
state. Outcomes feed back: in-flight counts, latency, tokens, failures (which may cool a
deployment down).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from proxy.errors import ContextWindowExceeded, ProxyError, RateLimited, ServiceUnavailable

if TYPE_CHECKING:
    from proxy.config import Config
    from proxy.context import RequestContext
    from proxy.costmap import CostMap
    from proxy.deployment import Deployment
    from proxy.router.models import ModelRegistry
    from proxy.router.strategies import Strategy
    from proxy.tokens import TokenCounter

log = logging.getLogger(__name__)

#: Upstream statuses that say the deployment (not the request) is unwell.
FAILURE_STATUSES = frozenset({401, 403, 404, 408, 429})
DEFAULT_ALLOWED_FAILS = 3
DEFAULT_COOLDOWN_TIME = 5.0
MESSAGE_OVERHEAD = 4  # tokens OpenAI adds per chat message (an upper bound)


class RouterServices(Protocol):
    """What the router reads from the gateway's services (proxy.services.Services fits).

    Declared here so the router names no layer above it. Read on each use, not copied:
    ``models`` is swapped whole when runtime models change, and stages add ``listing_filters``
    while the pipeline is built.
    """

    config: Config
    models: ModelRegistry
    tokens: TokenCounter
    costmap: CostMap | None
    listing_filters: list[Callable[[Deployment], str | None]]


class Router:
    """Routing decisions and their bookkeeping, shared by the route stage and /route/explain."""

    def __init__(self, services: RouterServices, state: Any, strategy: Strategy) -> None:
        config = services.config
        self.services = services
        self.state = state
        self.strategy = strategy
        self.allowed_fails = int(config.setting("allowed_fails", DEFAULT_ALLOWED_FAILS))
        self.cooldown_time = float(config.setting("cooldown_time", DEFAULT_COOLDOWN_TIME))
        self.cooldowns_enabled = not config.router_settings.get("disable_cooldowns", False)
        self._max_input: dict[str, int | None] = {}

    # -- choosing -----------------------------------------------------------------------------

    def group(self, model: str) -> list[Deployment]:
        """Deployments of a group that are visible here (environment filters applied)."""
        group = self.services.models.group(model)
        filters = self.services.listing_filters
        if filters and group:
            group = [d for d in group if all(f(d) is None for f in filters)]
        return group

    def candidates(self, ctx: RequestContext, group: list[Deployment]) -> list[Deployment]:
        """Who may serve now; every exclusion is recorded in ctx.excluded with its reason."""
        excluded = ctx.excluded
        state = self.state
        ids = [d.id for d in group]
        cooling = state.cooldowns(ids) if self.cooldowns_enabled else {}
        limited = any(d.rpm or d.tpm for d in group)
        usage = state.usage(ids) if limited else {}
        health = self.services.health
        unhealthy = health.unhealthy if health is not None else {}
        out = []
        for dep in group:
            if dep.id in excluded:
                continue
            until = cooling.get(dep.id)
            if until:
                excluded[dep.id] = f"cooldown: back in {max(0.0, until - time.time()):.1f}s"
                continue
            if unhealthy and dep.id in unhealthy:
                excluded[dep.id] = f"unhealthy: background health check failed: {unhealthy[dep.id]}"
                continue
            if limited:
                requests, tokens = usage.get(dep.id, (0, 0))
                if dep.rpm is not None and requests >= dep.rpm:
                    excluded[dep.id] = f"rpm limit: {requests}/{dep.rpm} this minute"
                    continue
                if dep.tpm is not None and tokens >= dep.tpm:
                    excluded[dep.id] = f"tpm limit: {tokens}/{dep.tpm} this minute"
                    continue
            out.append(dep)
        if len(out) > 1:
            orders = [d.params.get("order") for d in out]
            if any(o is not None for o in orders):
                best = min(o for o in orders if o is not None)
                for dep in out:
                    if dep.params.get("order") != best:
                        excluded.setdefault(dep.id, f"order: {dep.params.get('order')} > {best}")
                out = [d for d in out if d.params.get("order") == best]
        if out and ctx.kind == "chat":
            out = self.fitting(ctx, out)
        return out

    def fitting(self, ctx: RequestContext, deployments: list[Deployment]) -> list[Deployment]:
        """Drop deployments whose context window the prompt already exceeds.

        A prompt's token count never exceeds its UTF-8 size (plus per-message overhead), so the
        exact count is only taken when that bound is over some deployment's window.
        """
        limits = [(d, self.max_input_tokens(d)) for d in deployments]
        known = [m for _, m in limits if m]
        if not known:
            return deployments
        messages = ctx.body.get("messages") or []
        bound = 3 + sum(_size_bound(m.get("content")) + MESSAGE_OVERHEAD for m in messages)
        if bound <= min(known):
            return deployments
        dep0 = deployments[0]
        # past the largest window every known limit is exceeded: no need to count further
        tokens = self.services.tokens.count(dep0.upstream_model, messages=messages, limit=max(known)).total_tokens
        ctx.extra["prompt_tokens"] = tokens  # exact up to max(known), "more than that" beyond
        out = []
        for dep, limit in limits:
            if limit and tokens > limit:
                ctx.excluded[dep.id] = f"context window: prompt has {tokens} tokens, limit {limit}"
            else:
                out.append(dep)
        return out

    def max_input_tokens(self, dep: Deployment) -> int | None:
        if dep.id not in self._max_input:
            value = dep.model_info.get("max_input_tokens")
            if value is None and self.services.costmap is not None:
                value = self.services.costmap.lookup(dep.params["model"], dep.provider).get("max_input_tokens")
            self._max_input[dep.id] = int(value) if value else None
        return self._max_input[dep.id]

    def choose(self, ctx: RequestContext, group: list[Deployment]) -> Deployment:
        """Pick and reserve; raise the error that explains why nothing can serve."""
        allowed = self.candidates(ctx, group)
        while allowed:
            dep = self.strategy.pick(allowed, ctx)
            if self.state.reserve(dep.id, dep.rpm):
                return dep
            requests, _ = self.state.usage([dep.id]).get(dep.id, (0, 0))
            ctx.excluded[dep.id] = f"rpm limit: {requests}/{dep.rpm} this minute"
            allowed = [d for d in allowed if d is not dep]
        raise self.unavailable(ctx, group)

    def unavailable(self, ctx: RequestContext, group: list[Deployment]) -> ProxyError:
        reasons = [ctx.excluded.get(d.id, "") for d in group]
        summary = "; ".join(sorted(set(reasons)))
        if any(r.startswith("context window") for r in reasons):
            return ContextWindowExceeded(
                f"The prompt is longer than the context window of every deployment of {ctx.model!r} "
                f"({summary})", param="messages")
        waits = []
        if any(r.startswith(("rpm limit", "tpm limit")) for r in reasons):
            waits.append(self.state.seconds_to_next_window())
        cooling = self.state.cooldowns([d.id for d in group]) if self.cooldowns_enabled else {}
        if cooling:
            waits.append(max(0.0, min(cooling.values()) - time.time()))
        if waits:
            return RateLimited(
                f"No deployments available for model {ctx.model!r}: {summary}. "
                f"Try again in {max(1, round(min(waits)))} seconds.",
                retry_after=max(1.0, min(waits)))
        return ServiceUnavailable(f"No deployment of model {ctx.model!r} can take the request now ({summary})")

    def explain(self, ctx: RequestContext) -> dict[str, Any]:
        """What choose() would do, without reserving anything (for POST /route/explain)."""
        every = self.services.models.group(ctx.model)
        for dep in every:
            for f in self.services.listing_filters:
                reason = f(dep)
                if reason:
                    ctx.excluded[dep.id] = reason
        group = [d for d in every if d.id not in ctx.excluded]
        allowed = self.candidates(ctx, group) if group else []
        chosen = self.strategy.pick(allowed, ctx) if allowed else None
        usage = self.state.usage([d.id for d in every]) if every else {}

        def row(dep: Deployment) -> dict[str, Any]:
            requests, tokens = usage.get(dep.id, (0, 0))
            return {"id": dep.id, "model_name": dep.model_name, "model": f"{dep.provider}/{dep.upstream_model}",
                    "rpm": dep.rpm, "tpm": dep.tpm, "requests_this_minute": requests,
                    "tokens_this_minute": tokens}

        return {
            "model": ctx.model,
            "resolved_model": self.services.models.resolve_name(ctx.model),
            "strategy": self.strategy.name,
            "candidates": [row(d) for d in allowed],
            "excluded": [{**row(d), "reason": ctx.excluded[d.id]} for d in every if d.id in ctx.excluded],
            "chosen": row(chosen) if chosen else None,
            "error": None if chosen else (self.unavailable(ctx, every).body()["error"] if every else
                                          {"message": f"unknown model {ctx.model!r}", "code": "model_not_found"}),
        }

    # -- outcomes -----------------------------------------------------------------------------

    def started(self, dep: Deployment) -> None:
        self.state.inflight_incr(dep.id)

    def finished(
        self,
        ctx: RequestContext,
        dep: Deployment,
        error: ProxyError | None,
        latency: float,
        ttft: float | None = None,
    ) -> None:
        """Account one attempt: in-flight, tokens, latency or failure (and maybe a cooldown)."""
        state = self.state
        state.inflight_decr(dep.id)
        usage = ctx.usage
        if usage and not error:
            total = usage.get("total_tokens") or (usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0))
            if total:
                state.add_tokens(dep.id, int(total))
        if "client_credentials" in ctx.extra:
            return  # the client's own key or base: its outcome says nothing of this deployment
        if error is None:
            state.record_latency(dep.id, latency, ttft)
            return
        if not self.cooldowns_enabled or not (error.status in FAILURE_STATUSES or error.status >= 500):
            return
        if len(self.services.models.group(dep.model_name)) < 2:
            return  # cooling the only deployment would turn passing trouble into certain failure
        if state.record_failure(dep.id, self.allowed_fails, self.cooldown_time):
            log.warning("deployment %s (%s) cooled down for %gs after more than %d failures this minute; "
                        "last: %s", dep.id, dep.label, self.cooldown_time, self.allowed_fails, error.message)
            for hook in self.services.extra.get("on_cooldown", ()):  # metrics and alerts (proxy/observe)
                try:
                    hook(dep, error)
                except Exception:
                    log.exception("cooldown hook failed")

    def cooldowns(self) -> list[dict[str, Any]]:
        now = time.time()
        out = []
        for dep_id, until in sorted(self.state.cooldowns().items(), key=lambda kv: kv[1]):
            dep = self.services.models.by_id.get(dep_id)
            out.append({"id": dep_id, "model_name": dep.model_name if dep else None,
                        "model": f"{dep.provider}/{dep.upstream_model}" if dep else None,
                        "until": until, "seconds_left": round(max(0.0, until - now), 3)})
        return out


def _size_bound(content: Any) -> int:
    """At least the tokens of a message content: its UTF-8 size, without encoding a long text
    (an ASCII text's size is its length; no character is more than 4 bytes)."""
    if isinstance(content, str):
        return len(content) if content.isascii() else 4 * len(content)
    return len(str(content or "").encode())
