"""Budget and rate-limit checks for one virtual-key call, and the accounting when it ends.

Counters live in the shared state (``proxy.state``), under names that cannot clash with
deployment ids: ``key:<token>`` / ``team:<id>`` for rpm, tpm and in-flight counts, and
``<entity>@<period>`` for spend. With Redis, an rpm limit is one Lua check-and-increment (the
router's ``reserve``), so it holds exactly across workers and instances; spend is added with
HINCRBYFLOAT and read with one HMGET; a ``max_parallel_requests`` slot is one Lua
check-and-take, given back when the call ends. With the memory state each worker counts for itself, and
budgets also count what the store says every worker has spent (``KeyCache.durable``).

Refusals, as LiteLLM sends them: over budget is 400 ``budget_exceeded``; over ``rpm_limit``,
``tpm_limit`` or ``max_parallel_requests`` is 429 with ``Retry-After`` (seconds to the next minute
window; 1 for parallel requests).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from proxy.errors import BudgetExceeded, RateLimited
from proxy.keys.records import KeyRecord, Limits, TeamRecord, user_entity

if TYPE_CHECKING:
    from proxy.context import RequestContext
    from proxy.costmap import CostMap
    from proxy.keys.cache import KeyCache
    from proxy.state import State


def call_cost(ctx: RequestContext, costmap: CostMap | None) -> float:
    """USD cost of a finished call: the deployment's own prices, else the cost map; 0 for failures."""
    dep = ctx.deployment
    if dep is None or ctx.status != 200 or costmap is None:
        return 0.0
    usage = ctx.usage or {}
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return costmap.cost(dep.params["model"], dep.provider, prompt, completion, dep.model_info)


@dataclass(slots=True)
class Admission:
    """What ``admit`` counted for one call, so ``finish`` can settle exactly that."""

    key: KeyRecord
    team: TeamRecord | None
    user_id: str | None
    now: float
    key_spend: float = 0.0
    inflight: list[str] = field(default_factory=list)
    tokens_to: list[str] = field(default_factory=list)
    #: the key's own limits and this minute's use when admitted (this call included), for the
    #: x-ratelimit-* response headers; None where the key has no such limit
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    requests_used: int = 0
    tokens_used: int = 0

    def rate_limit_headers(self, call_tokens: int = 0) -> dict[str, str] | None:
        """LiteLLM's x-ratelimit-* headers from the key's limits; None when it has none."""
        if self.rpm_limit is None and self.tpm_limit is None:
            return None
        out = {}
        if self.rpm_limit is not None:
            out["x-ratelimit-limit-requests"] = str(self.rpm_limit)
            out["x-ratelimit-remaining-requests"] = str(max(0, self.rpm_limit - self.requests_used))
        if self.tpm_limit is not None:
            out["x-ratelimit-limit-tokens"] = str(self.tpm_limit)
            out["x-ratelimit-remaining-tokens"] = str(max(0, self.tpm_limit - self.tokens_used - call_tokens))
        return out

    def totals(self, cost: float) -> list[tuple[str, int, float]]:
        """(entity, period, cost) for the key, its team and the user: what ``spend_totals`` adds up."""
        out = [(self.key.entity, self.key.period(self.now), cost)]
        if self.team is not None:
            out.append((self.team.entity, self.team.period(self.now), cost))
        if self.user_id:
            out.append((user_entity(self.user_id), 0, cost))
        return out


class Guard:
    """Admits or refuses virtual-key calls against budgets and limits held in ``state``."""

    def __init__(self, cache: KeyCache, state: State, clock: Any = time.time) -> None:
        self.cache = cache
        self.state = state
        self.clock = clock

    def spend(self, names: list[str]) -> dict[str, float]:
        """Running spend: the shared counter or, when larger, what the store already holds."""
        live = self.state.spend(names)
        durable = self.cache.durable
        return {n: max(live[n], durable.get(n, 0.0)) for n in names}

    def admit(self, key: KeyRecord, team: TeamRecord | None, user_id: str | None = None) -> Admission:
        """Check budgets and limits and count this call; raises BudgetExceeded or RateLimited."""
        now = self.clock()
        adm = Admission(key, team, user_id or key.user_id, now)
        key_name = f"{key.entity}@{key.period(now)}"
        names = [key_name]
        team_name = None
        if team is not None and team.max_budget is not None:
            team_name = f"{team.entity}@{team.period(now)}"
            names.append(team_name)
        spent = self.spend(names)
        adm.key_spend = spent[key_name]
        if key.max_budget is not None and spent[key_name] >= key.max_budget:
            raise BudgetExceeded(
                f"Budget has been exceeded! Current cost: {spent[key_name]}, Max budget: {key.max_budget}")
        if team_name is not None and spent[team_name] >= team.max_budget:
            raise BudgetExceeded(f"Budget has been exceeded! Team={team.team_id} Current cost: "
                                 f"{spent[team_name]}, Max budget: {team.max_budget}")
        try:
            for scope, kind, ident in (("key", key, key.entity), ("team", team, team.entity if team else "")):
                if kind is not None:
                    self._limit(adm, scope, kind, ident)
        except RateLimited:
            for ident in adm.inflight:  # a refused call holds no slot
                self.state.release_slot(ident)
            raise
        return adm

    def _limit(self, adm: Admission, scope: str, limits: Limits, ident: str) -> None:
        state = self.state
        requests = 0
        if limits.tpm_limit is not None or (scope == "key" and limits.rpm_limit is not None):
            requests, used = state.usage((ident,))[ident]
            if scope == "key":
                adm.rpm_limit, adm.tpm_limit = limits.rpm_limit, limits.tpm_limit
                adm.requests_used, adm.tokens_used = requests + 1, used
            if limits.tpm_limit is not None and used >= limits.tpm_limit:
                raise self._refusal(scope, ident, "tokens", limits.tpm_limit, state.seconds_to_next_window())
        if limits.tpm_limit is not None:
            adm.tokens_to.append(ident)
        if limits.max_parallel_requests is not None:
            if not state.take_slot(ident, limits.max_parallel_requests):
                raise self._refusal(scope, ident, "parallel_requests", limits.max_parallel_requests, 1.0)
            adm.inflight.append(ident)
        if limits.rpm_limit is not None and not state.reserve(ident, limits.rpm_limit):
            raise self._refusal(scope, ident, "requests", limits.rpm_limit, state.seconds_to_next_window())

    @staticmethod
    def _refusal(scope: str, ident: str, kind: str, limit: int, retry_after: float) -> RateLimited:
        name = ident.split(":", 1)[1]
        shown = f"{name[:8]}..." if scope == "key" else name  # a token is a secret's hash: show a prefix
        return RateLimited(
            f"Rate limit exceeded for {scope}: {shown}. Limit type: {kind}. Current limit: {limit}, "
            f"Remaining: 0. Retry after {max(1, round(retry_after))} seconds.",
            retry_after=retry_after, headers={"rate_limit_type": kind})

    def finish(self, adm: Admission, cost: float, tokens: int) -> list[tuple[str, int, float]]:
        """The call ended: release in-flight slots, count tokens and spend; returns the spend totals."""
        state = self.state
        for ident in adm.inflight:
            state.release_slot(ident)
        if tokens:
            for ident in adm.tokens_to:
                state.add_tokens(ident, tokens)
        totals = adm.totals(cost)
        if cost:
            for entity, period, amount in totals:
                state.add_spend(f"{entity}@{period}", amount)
        return totals
