"""Deployments: one ``model_list`` entry made ready to serve.

Everything a request needs from a deployment (adapter, upstream model name, limits, request
defaults) is worked out here, once, when the entry is loaded, so the hot path only reads fields.

A deployment is configuration data that every layer reads, so this module imports neither the
providers nor the router: the layer that builds the world passes in the provider registry (an
``AdapterResolver``) and the deployment keeps the adapter it resolved.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import orjson

from proxy.client_credentials import ClientAuthRules

#: litellm_params that steer the proxy itself; everything else is a provider param that is sent
#: as a request default (the client's own value wins), as LiteLLM does.
CONTROL_PARAMS = frozenset(
    {
        "model",
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "organization",
        "rpm",
        "tpm",
        "weight",
        "order",
        "timeout",
        "stream_timeout",
        "max_retries",
        "mock_response",
        "extra_headers",
        "headers",
        "litellm_credential_name",
        "custom_llm_provider",
        "input_cost_per_token",
        "output_cost_per_token",
        "model_info",
        "tags",
        "use_in_pass_through",
        # prompt template (prompt_template stage)
        "roles",
        "initial_prompt_value",
        "final_prompt_value",
        "bos_token",
        "eos_token",
        "drop_params",
        "additional_drop_params",
        "configurable_clientside_auth_params",
        # cloud credentials and placement, used by the adapters that sign or route by them
        "region_name",
        "aws_region_name",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "aws_profile_name",
        "aws_role_name",
        "aws_bedrock_runtime_endpoint",
        "aws_session_name",
        "aws_web_identity_token",
        "aws_sts_endpoint",
        "azure_ad_token",
        "azure_ad_token_provider",
        "tenant_id",
        "client_id",
        "client_secret",
        "vertex_project",
        "vertex_location",
        "vertex_credentials",
        "max_budget",
        "budget_duration",
    }
)


class UnsupportedProvider(ValueError):
    """A model string whose provider this proxy cannot serve."""


class AdapterResolver(Protocol):
    """What a deployment needs from the provider registry: model string -> (adapter, upstream model).

    Raises UnsupportedProvider with a readable reason.
    """

    def resolve(self, model: str, custom_llm_provider: str | None = None) -> tuple[Any, str]: ...


def deployment_id(model_name: str, params: dict[str, Any], index: int) -> str:
    """Stable across workers and restarts, so shared counters and cooldowns line up."""
    blob = orjson.dumps({"n": model_name, "p": params, "i": index}, default=str,
                        option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(eq=False)
class Deployment:
    """One servable deployment of a model group (``model_name``)."""

    id: str
    model_name: str
    params: dict[str, Any]  # resolved litellm_params (may hold secrets; never shown as is)
    model_info: dict[str, Any]
    provider: str
    upstream_model: str
    adapter: Any  # the provider's Adapter (proxy.providers.base), bound once when the entry is loaded
    api_base: str | None = None
    api_key: str | None = None
    rpm: int | None = None
    tpm: int | None = None
    weight: float | None = None
    timeout: float | None = None
    stream_timeout: float | None = None
    mock_response: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)  # provider params sent as request defaults
    source: str = "config"  # config | db
    #: values that came from outside the file (environment, credential): never shown anywhere
    supplied: frozenset[str] = frozenset()
    #: which client-side credentials a request may bring (configurable_clientside_auth_params)
    client_auth: ClientAuthRules | None = None

    @cached_property
    def shown_api_base(self) -> str | None:
        """``x-litellm-model-api-base``: where calls go, without query or credentials; worked out once."""
        if self.mock_response is not None:
            return None
        base = self.adapter.shown_api_base(self)
        if not base:
            return None
        parts = urlsplit(base)
        return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", "")) or None

    @property
    def label(self) -> str:
        """Short name for logs: model group and upstream model."""
        return f"{self.model_name}:{self.provider}/{self.upstream_model}"

    @classmethod
    def from_entry(
        cls,
        entry: dict[str, Any],
        providers: AdapterResolver,
        *,
        index: int = 0,
        source: str = "config",
        supplied: frozenset[str] = frozenset(),
    ) -> Deployment:
        """Build from a validated model_list entry, bound to the adapter ``providers`` resolves.

        Raises UnsupportedProvider (a ValueError) with a readable reason.
        """
        params = dict(entry["litellm_params"])
        model_info = dict(entry.get("model_info") or {})
        model_name = entry["model_name"]
        adapter, upstream_model = providers.resolve(params["model"], params.get("custom_llm_provider"))
        dep_id = str(model_info.get("id") or deployment_id(model_name, params, index))
        model_info["id"] = dep_id
        consumed = CONTROL_PARAMS | adapter.deployment_params
        headers = {str(k): str(v) for k, v in (params.get("extra_headers") or params.get("headers") or {}).items()}
        return cls(
            id=dep_id,
            model_name=model_name,
            params=params,
            model_info=model_info,
            provider=adapter.provider,
            upstream_model=upstream_model,
            adapter=adapter,
            api_base=params.get("api_base") or params.get("base_url"),
            api_key=params.get("api_key"),
            rpm=params.get("rpm"),
            tpm=params.get("tpm"),
            weight=params.get("weight"),
            timeout=params.get("timeout"),
            stream_timeout=params.get("stream_timeout"),
            mock_response=params.get("mock_response"),
            headers=headers,
            defaults={k: v for k, v in params.items() if k not in consumed},
            source=source,
            supplied=supplied,
            client_auth=ClientAuthRules.parse(params.get("configurable_clientside_auth_params")),
        )


def expand_organizations(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """``organization: [org-1, org-2]`` -> one entry per organization (LiteLLM's behaviour)."""
    org = entry["litellm_params"].get("organization")
    if not isinstance(org, list):
        return [entry]
    out = []
    for one in org:
        params = {**entry["litellm_params"], "organization": one}
        out.append({**entry, "litellm_params": params, "model_info": dict(entry.get("model_info") or {})})
    return out
