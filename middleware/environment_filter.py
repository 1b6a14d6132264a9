"""``environment_filter``: hide deployments not meant for this environment.

With ``LITELLM_ENVIRONMENT`` set (production, staging or development), a deployment whose
``model_info.supported_environments`` does not list it is invisible: not routed, not listed in
/models or /model/info. Deployments without the key are available everywhere.
"""

from __future__ import annotations

import os
from typing import Any

from marshmallow import fields, validate

from proxy.deployment import Deployment
from proxy.errors import ConfigError
from proxy.pipeline import Stage, StageNotUsed, StageOptions
from proxy.services import Services

ENVIRONMENTS = ("production", "staging", "development")


class EnvironmentOptions(StageOptions):
    environment = fields.Str(load_default=None, allow_none=True, validate=validate.OneOf(ENVIRONMENTS))


class EnvironmentFilter(Stage):
    name = "environment_filter"
    Options = EnvironmentOptions

    def __init__(self, options: dict[str, Any], services: Services) -> None:
        super().__init__(options, services)
        env = options.get("environment") or os.environ.get("LITELLM_ENVIRONMENT")
        if not env:
            raise StageNotUsed("LITELLM_ENVIRONMENT is not set: every deployment is visible")
        if env not in ENVIRONMENTS:
            raise ConfigError([f"LITELLM_ENVIRONMENT={env!r} must be one of {', '.join(ENVIRONMENTS)}"])
        self.environment = env
        # Hidden deployments are hidden everywhere (routing, /models, /model/info), so the work is
        # done once here: the filter joins the services every surface consults.
        services.listing_filters.append(self.reason)

    def reason(self, dep: Deployment) -> str | None:
        """Why ``dep`` is hidden here, or None when it may serve."""
        allowed = dep.model_info.get("supported_environments")
        if allowed is None or self.environment in allowed:
            return None
        return f"environment: not available in {self.environment}"

    def describe(self) -> dict[str, Any]:
        return {"environment": self.environment}
