"""Routing strategies: choose one deployment among the healthy candidates of a model group."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.context import RequestContext
    from proxy.router.deployment import Deployment


class Strategy:
    """A strategy sees only candidates that are allowed right now (limits, cooldowns, filters)."""

    name = ""

    def pick(self, candidates: Sequence[Deployment], ctx: RequestContext) -> Deployment:
        raise NotImplementedError


class SimpleShuffle(Strategy):
    """Random pick, weighted by ``weight``, else ``rpm``, else ``tpm`` when those are set."""

    name = "simple-shuffle"

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()

    def pick(self, candidates: Sequence[Deployment], ctx: RequestContext) -> Deployment:
        if len(candidates) == 1:
            return candidates[0]
        for attr in ("weight", "rpm", "tpm"):
            weights = [getattr(d, attr) for d in candidates]
            if any(w for w in weights):
                return self.rng.choices(candidates, weights=[w or 0 for w in weights])[0]
        return self.rng.choice(candidates)
