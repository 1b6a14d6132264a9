"""Gateway: everything built from one config — services, the stage pipeline, key checks.

Views hold the Gateway and read ``gateway.pipeline`` per request, so a config reload swaps one
attribute and the next request sees the new chain whole.
"""

from __future__ import annotations

import logging
from typing import Any

from proxy.config import Config
from proxy.costmap import CostMap
from proxy.dispatch import Dispatcher
from proxy.keys import KeyChecker
from proxy.pipeline import Pipeline
from proxy.providers.registry import ProviderRegistry
from proxy.router.models import ModelRegistry
from proxy.router.router import Router
from proxy.router.strategies import make_strategy
from proxy.services import Services
from proxy.state import make_state
from proxy.tokens import TokenCounter
from proxy.transport import DEFAULT_TIMEOUT, Transport

log = logging.getLogger(__name__)


def build_models(config: Config, providers: ProviderRegistry) -> ModelRegistry:
    aliases = config.router_settings.get("model_group_alias") or {}
    return ModelRegistry.from_entries(config.model_list, providers, aliases)


def redis_settings(config: Config) -> dict[str, Any]:
    """Redis connection settings from router_settings (LiteLLM's keys); the env is read by make_state."""
    rs = config.router_settings
    keys = ("redis_url", "redis_host", "redis_port", "redis_password")
    return {k: rs[k] for k in keys if rs.get(k) is not None}


class Gateway:
    """The live proxy state of one worker."""

    def __init__(self, config: Config, transport: Transport | None = None, *, preload: bool = True) -> None:
        self.config = config
        providers = ProviderRegistry()
        tokens = TokenCounter()
        if preload:
            tokens.preload()  # tokenizer files are read at boot, never on a request
        costmap = CostMap.load(config.litellm_settings.get("model_cost_map_path"))
        self.transport = transport or Transport()
        state = make_state(redis_settings(config))
        strategy = make_strategy(config.router_settings.get("routing_strategy") or "simple-shuffle",
                                 state, costmap)
        self.services = Services(
            config=config,
            providers=providers,
            models=build_models(config, providers),
            strategy=strategy,
            transport=self.transport,
            tokens=tokens,
            costmap=costmap,
            state=state,
        )
        self.services.router = Router(self.services, state, strategy)
        timeout = config.setting("timeout") or config.litellm_settings.get("request_timeout") or DEFAULT_TIMEOUT
        self.dispatcher = Dispatcher(self.transport, tokens, float(timeout),
                                     config.router_settings.get("stream_timeout"))
        self.pipeline = Pipeline.build(config.pipeline, self.services, self.dispatcher)
        self.keys = KeyChecker(config.general_settings.get("master_key"))

    def describe(self) -> list[dict[str, Any]]:
        return self.pipeline.describe()

    def close(self) -> None:
        """Flush what is buffered (usage counters) and release connections."""
        self.services.state.close()
        self.transport.close()
