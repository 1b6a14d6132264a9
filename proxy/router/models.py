"""The model registry: model groups (``model_name``) -> deployments, aliases and wildcards.

Built whole from a model list and swapped atomically when models change at runtime, so a request
always sees one consistent snapshot and lookups are plain dict reads.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable
from typing import Any

from proxy.deployment import AdapterResolver, Deployment, UnsupportedProvider, expand_organizations
from proxy.errors import ConfigError

log = logging.getLogger(__name__)


class ModelRegistry:
    """An immutable snapshot of every servable deployment."""

    def __init__(
        self,
        deployments: list[Deployment],
        providers: AdapterResolver,
        aliases: dict[str, Any] | None = None,
    ) -> None:
        self.providers = providers
        self.deployments = deployments
        self.aliases = {k: (v.get("model") if isinstance(v, dict) else v) for k, v in (aliases or {}).items()}
        self.groups: dict[str, list[Deployment]] = {}
        self.wildcards: list[Deployment] = []
        self.by_id: dict[str, Deployment] = {}
        for dep in deployments:
            self.by_id[dep.id] = dep
            if "*" in dep.model_name:
                self.wildcards.append(dep)
            else:
                self.groups.setdefault(dep.model_name, []).append(dep)
        self._concrete: dict[str, list[Deployment]] = {}

    @classmethod
    def from_entries(
        cls,
        entries: list[dict[str, Any]],
        providers: AdapterResolver,
        aliases: dict[str, Any] | None = None,
        *,
        path: str = "model_list",
        supplied: Callable[[str | None], frozenset[str]] | None = None,
        extra: list[Deployment] | None = None,
    ) -> ModelRegistry:
        """Build from validated model_list entries; every bad entry is reported by config path.

        ``supplied(credential_name)`` gives the values that came from outside the file (the
        config's ``supplied_values``), which the deployments keep so nothing shows them;
        ``extra`` are ready deployments (runtime models) served alongside. ``providers`` is the
        provider registry the builder of the world passes in, kept to bind wildcard matches.
        """
        errors: list[str] = []
        deployments: list[Deployment] = []
        for i, entry in enumerate(entries):
            hidden = supplied(entry["litellm_params"].get("litellm_credential_name")) if supplied else frozenset()
            for j, one in enumerate(expand_organizations(entry)):
                try:
                    deployments.append(Deployment.from_entry(
                        one, providers, index=i * 1000 + j, source="config", supplied=hidden))
                except UnsupportedProvider as exc:
                    errors.append(f"{path}[{i}].litellm_params.model: {exc}")
        if errors:
            raise ConfigError(errors)
        return cls(deployments + list(extra or []), providers, aliases)

    def model_names(self) -> list[str]:
        """Public names in config order, each once (wildcards and aliases included)."""
        names: list[str] = []
        for dep in self.deployments:
            if dep.model_name not in names:
                names.append(dep.model_name)
        names.extend(a for a in self.aliases if a not in names)
        return names

    def resolve_name(self, name: str) -> str:
        return self.aliases.get(name) or name

    def group(self, name: str) -> list[Deployment]:
        """Deployments serving ``name`` (after aliasing); [] if none."""
        name = self.resolve_name(name)
        found = self.groups.get(name)
        if found is not None:
            return found
        if not self.wildcards:
            return []
        cached = self._concrete.get(name)
        if cached is None:
            cached = self._from_wildcards(name)
            if len(self._concrete) < 10_000:
                self._concrete[name] = cached
        return cached

    def _from_wildcards(self, requested: str) -> list[Deployment]:
        """Concrete deployments for a requested name that only a wildcard entry matches."""
        out: list[Deployment] = []
        for i, dep in enumerate(self.wildcards):
            if not fnmatch.fnmatchcase(requested, dep.model_name):
                continue
            pattern_model = dep.params["model"]
            if pattern_model == "*":
                model = requested
            else:
                star = dep.model_name.index("*")
                tail = requested[star:] if dep.model_name != "*" else requested
                model = pattern_model.replace("*", tail, 1)
            params = {**dep.params, "model": model}
            entry = {"model_name": requested, "litellm_params": params,
                     "model_info": {k: v for k, v in dep.model_info.items() if k != "id"}}
            try:
                out.append(Deployment.from_entry(entry, self.providers, index=i, source=dep.source,
                                                 supplied=dep.supplied))
            except UnsupportedProvider as exc:
                log.info("wildcard %s cannot serve %s: %s", dep.model_name, requested, exc)
        return out
