"""Routing strategies: choose one deployment among the candidates that may serve right now.

Candidates reaching a strategy already passed every filter (limits, cooldowns, environment), so a
strategy only ranks. Ties are broken at random so equal deployments share the load.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.context import RequestContext
    from proxy.deployment import Deployment


class Strategy:
    """Base: ``pick`` returns one of ``candidates`` (never empty)."""

    name = ""

    def __init__(self, state: Any = None, rng: random.Random | None = None) -> None:
        self.state = state
        self.rng = rng or random.Random()

    def pick(self, candidates: Sequence[Deployment], ctx: RequestContext) -> Deployment:
        raise NotImplementedError

    def lowest(self, candidates: Sequence[Deployment], score: Callable[[Deployment], float]) -> Deployment:
        """The candidate with the lowest score; a random one among equals."""
        if len(candidates) == 1:
            return candidates[0]
        scored = [(score(d), d) for d in candidates]
        best = min(s for s, _ in scored)
        return self.rng.choice([d for s, d in scored if s == best])


class SimpleShuffle(Strategy):
    """Random pick, weighted by ``weight``, else ``rpm``, else ``tpm`` when those are set."""

    name = "simple-shuffle"

    def pick(self, candidates: Sequence[Deployment], ctx: RequestContext) -> Deployment:
        if len(candidates) == 1:
            return candidates[0]
        for attr in ("weight", "rpm", "tpm"):
            weights = [getattr(d, attr) for d in candidates]
            if any(w for w in weights):
                return self.rng.choices(candidates, weights=[w or 0 for w in weights])[0]
        return self.rng.choice(candidates)


class LeastBusy(Strategy):
    """Fewest requests in flight (across every worker and instance sharing state)."""

    name = "least-busy"

    def pick(self, candidates: Sequence[Deployment], ctx: RequestContext) -> Deployment:
        busy = self.state.inflight([d.id for d in candidates])
        return self.lowest(candidates, lambda d: busy.get(d.id, 0))


class UsageBased(Strategy):
    """Lowest share of its tpm (else rpm) limit used this minute; raw tokens when no limit is set."""

    name = "usage-based-routing"

    def pick(self, candidates: Sequence[Deployment], ctx: RequestContext) -> Deployment:
        usage = self.state.usage([d.id for d in candidates])

        def score(d: Deployment) -> float:
            requests, tokens = usage.get(d.id, (0, 0))
            if d.tpm:
                return tokens / d.tpm
            if d.rpm:
                return requests / d.rpm
            return float(tokens)

        return self.lowest(candidates, score)


class LatencyBased(Strategy):
    """Lowest recent latency (time to first token for streams); unmeasured ones are tried first."""

    name = "latency-based-routing"

    def pick(self, candidates: Sequence[Deployment], ctx: RequestContext) -> Deployment:
        latency = self.state.latencies([d.id for d in candidates])
        return self.lowest(candidates, lambda d: latency.get(d.id, 0.0))


class CostBased(Strategy):
    """Cheapest input + output price per token (model_info overrides, else the cost map)."""

    name = "cost-based-routing"

    def __init__(self, state: Any = None, rng: random.Random | None = None, costmap: Any = None) -> None:
        super().__init__(state, rng)
        self.costmap = costmap

    def price(self, d: Deployment) -> float:
        info = self.costmap.lookup(d.params["model"], d.provider) if self.costmap is not None else {}
        inp = d.model_info.get("input_cost_per_token", info.get("input_cost_per_token"))
        out = d.model_info.get("output_cost_per_token", info.get("output_cost_per_token"))
        if inp is None and out is None:
            return float("inf")  # unknown price: only when nothing cheaper is known
        return float(inp or 0) + float(out or 0)

    def pick(self, candidates: Sequence[Deployment], ctx: RequestContext) -> Deployment:
        return self.lowest(candidates, self.price)


STRATEGIES: dict[str, type[Strategy]] = {
    "simple-shuffle": SimpleShuffle,
    "least-busy": LeastBusy,
    "usage-based-routing": UsageBased,
    "usage-based-routing-v2": UsageBased,
    "latency-based-routing": LatencyBased,
    "cost-based-routing": CostBased,
}


def make_strategy(name: str, state: Any, costmap: Any = None) -> Strategy:
    if name == "cost-based-routing":
        return CostBased(state, costmap=costmap)
    return STRATEGIES[name](state)
