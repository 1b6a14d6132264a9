"""Gateway: everything built from one config — services, the stage pipeline, key checks.

Virtual keys and teams are cached per worker (``key_cache``) and kept across config reloads.

Long-lived parts (transport pools, shared state, the store, tokenizers) are made once per
worker; what depends on the config (models, strategy, pipeline) is rebuilt by ``apply``. Views
hold the Gateway and read ``gateway.pipeline`` / ``gateway.services`` per request, so a reload
or a model change swaps one attribute and the next request sees the new world whole.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from proxy import bucket
from proxy.config import Config, load_config, read_text, resolve_model_entry
from proxy.costmap import CostMap
from proxy.deployment import Deployment, expand_organizations
from proxy.dispatch import Dispatcher
from proxy.errors import ConfigError
from proxy.health import HealthBoard
from proxy.keys import KeyCache, KeyChecker
from proxy.observe import Telemetry
from proxy.pipeline import Pipeline
from proxy.providers.registry import ProviderRegistry, UnsupportedProvider
from proxy.router.models import ModelRegistry
from proxy.router.router import Router
from proxy.router.strategies import make_strategy
from proxy.secrets import Secrets
from proxy.services import Services
from proxy.state import make_state
from proxy.statedir import DB_FILE, state_dir
from proxy.store import ModelStore, SpendWriter, StoreAPI, connect, database_url
from proxy.store.keys import KeyStore
from proxy.tokens import TokenCounter
from proxy.transport import DEFAULT_TIMEOUT, Transport

log = logging.getLogger(__name__)


def redis_settings(config: Config) -> dict[str, Any]:
    """Redis connection settings from router_settings (LiteLLM's keys); the env is read by make_state."""
    rs = config.router_settings
    keys = ("redis_url", "redis_host", "redis_port", "redis_password")
    return {k: rs[k] for k in keys if rs.get(k) is not None}


def database_path(config: Config, environ: Mapping[str, str] | None = None) -> tuple[Path, str] | None:
    """The SQLite file and the setting that chose it: ``general_settings.database_path``, else
    ``llmrelay.db`` in the state directory (proxy/statedir.py), never beside the config. A config
    given as a mapping (tests, embedding) keeps no file unless it names one."""
    given = config.general_settings.get("database_path")
    if given:
        path = Path(given).expanduser()
        return (path if path.is_absolute() else config.base_dir / path), "general_settings.database_path"
    if config.path is None:
        return None
    folder, setting = state_dir(environ)
    return folder / DB_FILE, setting


def store_target(config: Config) -> tuple[str | Path, str] | None:
    """Where the store is, and the setting that says so: a PostgreSQL URL when
    ``general_settings.database_url`` or ``DATABASE_URL`` is set, else the SQLite file."""
    url = database_url(config.general_settings)
    if url:
        setting = "general_settings.database_url" if config.general_settings.get("database_url") else "DATABASE_URL"
        return url, setting
    return database_path(config)


def open_store(config: Config, target: str | Path | None = None) -> StoreAPI | None:
    """The store the config asks for (or the one at ``target``), with its pool settings."""
    if target is None:
        located = store_target(config)
        if located is None:
            return None
        target = located[0]
    gs = config.general_settings
    return connect(target, pool_limit=int(gs.get("database_connection_pool_limit") or 10),
                   timeout=float(gs.get("database_connection_timeout") or 5.0))


def flush_timeout(environ: Mapping[str, str] | None = None) -> float:
    """Seconds the exporters get to send what they hold at shutdown (``LLMRELAY_CALLBACK_FLUSH_TIMEOUT``,
    default 10; gunicorn's graceful timeout, 60 s by default, must leave room for it)."""
    env = os.environ if environ is None else environ
    try:
        return max(0.0, float(env.get("LLMRELAY_CALLBACK_FLUSH_TIMEOUT", "10")))
    except ValueError:
        return 10.0


def check_config(path: str | os.PathLike[str]) -> tuple[Config, str]:
    """Read, load and build a config file as a worker would, without connecting anywhere.

    Returns the config and the exact text validated (what a snapshot stores); raises
    ConfigError listing every problem. A config kept in a bucket is fetched anew first.
    """
    path = Path(path).resolve()
    bucket.refresh(path)
    text = read_text(path)
    config = load_config(path, text=text)
    Gateway(config, preload=False, store=False, shared_state=False, exporters=False).close()
    return config, text


class Gateway:
    """The live proxy of one worker."""

    def __init__(
        self,
        config: Config,
        transport: Transport | None = None,
        *,
        preload: bool = True,
        store: StoreAPI | bool | None = True,
        shared_state: bool = True,
        exporters: bool = True,
    ) -> None:
        self.providers = ProviderRegistry()
        # exporters=False: a config check; callbacks are validated but nothing is started or sent
        self.telemetry = Telemetry(active=exporters)
        self.tokens = TokenCounter()
        if preload:
            self.tokens.preload()  # tokenizer files are read at boot, never on a request
        self.transport = transport or Transport()
        # a validation-only gateway (shared_state=False) must not connect anywhere
        self.state = make_state(redis_settings(config)) if shared_state else make_state({}, environ={})
        self.store: StoreAPI | None = open_store(config) if store is True else (store or None)
        self.model_store = ModelStore(self.store) if self.store is not None else None
        self.spend = SpendWriter(self.store) if self.store is not None else None
        self.key_store = KeyStore(self.store) if self.store is not None else None
        self.key_cache = KeyCache(self.key_store)
        self.key_cache.refresh()
        self.key_cache.refresh_spend()
        self.secrets = Secrets()  # secret-manager values read so far (create_app hands in the boot's)
        self.health = HealthBoard(self.state)  # latest background health checks (proxy/health.py)
        self.models_version = -1
        self.apply(config)

    # -- building ------------------------------------------------------------------------------

    def apply(self, config: Config) -> None:
        """Build everything that depends on the config and swap it in; raise ConfigError if it can't."""
        costmap = CostMap.load(config.litellm_settings.get("model_cost_map_path"))
        strategy = make_strategy(config.router_settings.get("routing_strategy") or "simple-shuffle",
                                 self.state, costmap)
        services = Services(
            config=config,
            providers=self.providers,
            models=self.build_models(config),
            transport=self.transport,
            tokens=self.tokens,
            costmap=costmap,
            state=self.state,
            spend=self.spend,
            key_cache=self.key_cache,
            telemetry=self.telemetry,
            health=self.health,
        )
        services.router = Router(services, self.state, strategy)
        timeout = config.setting("timeout") or config.litellm_settings.get("request_timeout") or DEFAULT_TIMEOUT
        dispatcher = Dispatcher(self.transport, self.tokens, float(timeout),
                                config.router_settings.get("stream_timeout"),
                                bool(config.general_settings.get("allow_client_side_credentials")),
                                secrets=config.env_values)
        pipeline = Pipeline.build(config.pipeline, services, dispatcher)
        keys = KeyChecker(config.general_settings.get("master_key"), self.key_cache)
        # one assignment each; a request in flight keeps the objects it already holds
        old = getattr(self, "pipeline", None)
        self.config, self.services, self.dispatcher, self.keys = config, services, dispatcher, keys
        self.pipeline = pipeline
        if old is not None:
            old.close()  # its buffers are written; late lines from requests still in it go straight out

    def build_models(self, config: Config) -> ModelRegistry:
        aliases = config.router_settings.get("model_group_alias") or {}
        return ModelRegistry.from_entries(config.model_list, self.providers, aliases,
                                          supplied=config.supplied_values, extra=self.runtime_models(config))

    def runtime_models(self, config: Config) -> list[Deployment]:
        """Deployments added at runtime (the store); one that no longer loads is skipped, loudly."""
        if self.model_store is None:
            return []
        self.models_version = self.model_store.models_version()
        out: list[Deployment] = []
        for row in self.model_store.list():
            entry = {"model_name": row["model_name"], "litellm_params": row["litellm_params"],
                     "model_info": {**row["model_info"], "id": row["id"]}}
            try:
                from_env: set[str] = set()
                resolved = resolve_model_entry(entry, config, from_env)
                supplied = config.supplied_values(resolved["litellm_params"].get("litellm_credential_name"))
                supplied = supplied | from_env
                for j, one in enumerate(expand_organizations(resolved)):
                    if j:
                        one["model_info"] = {**one["model_info"], "id": f"{row['id']}-{j}"}
                    out.append(Deployment.from_entry(one, self.providers, source="db", supplied=supplied))
            except (ConfigError, UnsupportedProvider) as exc:
                log.error("runtime model %s (%s) cannot be served: %s", row["id"], row["model_name"], exc)
        return out

    def check_model(self, entry: Any) -> dict[str, Any]:
        """Validate a runtime model body exactly like a config entry; ConfigError names the field."""
        resolved = resolve_model_entry(entry, self.config)
        try:
            for one in expand_organizations(resolved):
                Deployment.from_entry(one, self.providers, source="db")
        except UnsupportedProvider as exc:
            raise ConfigError([f"litellm_params.model: {exc}"]) from None
        return resolved

    # -- live changes --------------------------------------------------------------------------

    def refresh_models(self, force: bool = False) -> bool:
        """Re-read runtime models when the store says they changed; True when it swapped."""
        if self.model_store is None:
            return False
        version = self.model_store.models_version()
        if version == self.models_version and not force:
            return False
        self.services.models = self.build_models(self.config)
        return True

    def describe(self) -> list[dict[str, Any]]:
        return self.pipeline.describe()

    def close(self) -> None:
        """Flush what is buffered (access log, usage counters) and release connections and files."""
        self.pipeline.close()
        self.telemetry.close(flush_timeout())  # exporters send what they hold, within the deadline
        if self.spend is not None:
            self.spend.close()  # every spend record reaches the file before the worker exits
        self.state.close()
        self.providers.close()
        self.transport.close()
        if self.store is not None:
            self.store.close()
