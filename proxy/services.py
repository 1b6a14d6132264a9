"""Services: the long-lived parts a stage or view may use, built once per worker by create_app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.config import Config
    from proxy.costmap import CostMap
    from proxy.deployment import Deployment
    from proxy.providers.registry import ProviderRegistry
    from proxy.router.models import ModelRegistry
    from proxy.router.router import Router
    from proxy.tokens import TokenCounter
    from proxy.transport import Transport


@dataclass
class Services:
    """What stages receive as ``services``; no module globals anywhere else."""

    config: Config
    providers: ProviderRegistry
    models: ModelRegistry
    transport: Transport
    tokens: TokenCounter
    costmap: CostMap | None = None
    state: Any = None
    spend: Any = None  # SpendWriter when a store is configured
    key_cache: Any = None  # proxy.keys.KeyCache: virtual keys and teams of this worker
    health: Any = None  # proxy.health.HealthBoard: deployments the background checks found unhealthy
    router: Router | None = None  # set once the services exist (the router reads them)
    telemetry: Any = None  # proxy.observe.Telemetry: metrics and flushing exporters of this worker
    #: predicates contributed by stages (e.g. environment_filter): a reason string hides a deployment
    listing_filters: list[Callable[[Deployment], str | None]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def is_visible(self, dep: Deployment) -> bool:
        return all(f(dep) is None for f in self.listing_filters)

    def visible_deployments(self) -> list[Deployment]:
        return [d for d in self.models.deployments if self.is_visible(d)]

    def visible_model_names(self) -> list[str]:
        """Model names a client may call, in config order (aliases included)."""
        names: list[str] = []
        for dep in self.visible_deployments():
            if dep.model_name not in names:
                names.append(dep.model_name)
        names.extend(a for a in self.models.aliases if a not in names)
        return names
