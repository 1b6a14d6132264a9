"""Azure OpenAI (``azure/<deployment>``) and Azure AI Foundry models (``azure_ai/<model>``).

Both speak OpenAI's wire format, so these adapters reuse ``OpenAIAdapter`` and change only what
Azure does differently:

- the URL names the deployment and carries ``api-version``
  (``{api_base}/openai/deployments/{deployment}/chat/completions?api-version=...``);
- the key travels in an ``api-key`` header, or an Entra ID token as ``Authorization: Bearer``;
- a prompt or answer blocked by Azure's content filter is a 400 with code ``content_filter``
  (inner code ``ResponsibleAIPolicyViolation``): the client gets a content-policy violation;
- a 429 says how long to wait in ``retry-after-ms``, ``retry-after`` or only in its message;
- a stream may open with a chunk that has no choices, only ``prompt_filter_results``, and may
  carry choices with filter annotations but no ``delta``; both reach the client as valid chunks.

The body keeps ``model`` (set to the deployment name), as the official SDKs send it; Azure routes
by the deployment in the path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, urlsplit, urlunsplit

import orjson

from proxy.errors import ContentPolicyViolation, ProxyError, UpstreamError
from proxy.providers.base import UpstreamCall, error_message, parse_retry_after
from proxy.providers.openai import OpenAIAdapter

if TYPE_CHECKING:
    from proxy.context import RequestContext
    from proxy.deployment import Deployment

#: Used when neither litellm_params.api_version nor AZURE_API_VERSION is set: the latest GA
#: (non-preview) version of Azure OpenAI's data-plane inference API.
DEFAULT_API_VERSION = "2024-10-21"

AZURE_PATHS = {"chat": "/chat/completions", "completion": "/completions", "embedding": "/embeddings"}
#: Foundry hosts that take the key in ``api-key``; serverless endpoints want a Bearer token.
API_KEY_HOSTS = (".services.ai.azure.com", ".openai.azure.com")
RETRY_IN_MESSAGE = re.compile(r"retry after (\d+(?:\.\d+)?) seconds?", re.IGNORECASE)


class AzureBase(OpenAIAdapter):
    """What every Azure flavour shares: error mapping and tolerant stream parsing."""

    def url(self, ctx: RequestContext, deployment: Deployment) -> str:
        raise NotImplementedError

    def build_request(self, ctx: RequestContext, deployment: Deployment) -> UpstreamCall:
        call = super().build_request(ctx, deployment)
        call.url = self.url(ctx, deployment)
        return call

    def parse_stream(
        self, ctx: RequestContext, deployment: Deployment, lines: Iterable[bytes]
    ) -> Iterator[dict[str, Any]]:
        # Content-filter annotation chunks carry choices without a delta (or text); give them
        # an empty one so clients that index choice["delta"] keep working.
        filler = ("delta", {}) if ctx.kind == "chat" else ("text", "")
        for chunk in super().parse_stream(ctx, deployment, lines):
            for choice in chunk.get("choices") or ():
                if isinstance(choice, dict) and filler[0] not in choice:
                    choice[filler[0]] = filler[1]
            yield chunk

    def map_error(self, status: int, headers: dict[str, str], body: bytes) -> ProxyError:
        if status == 400 and is_content_filter(body):
            message, _, param = error_message(body)
            return ContentPolicyViolation(message, param=param)
        err = super().map_error(status, headers, body)
        if status in (429, 503):
            err.retry_after = azure_retry_after(headers, err.message)
        if isinstance(err.code, str) and err.code.isdigit():
            err.code = type(err).code  # Azure repeats the HTTP status as the code: say what it means
        return err


class AzureAdapter(AzureBase):
    """``azure/<deployment-name>`` on an Azure OpenAI resource."""

    provider: ClassVar[str] = "azure"
    kinds: ClassVar[frozenset[str]] = frozenset(AZURE_PATHS)
    deployment_params: ClassVar[frozenset[str]] = frozenset({"api_version", "azure_ad_token"})
    default_api_base: ClassVar[str | None] = None
    api_key_env: ClassVar[str | None] = "AZURE_API_KEY"

    def api_base(self, deployment: Deployment) -> str:
        base = deployment.api_base or os.environ.get("AZURE_API_BASE")
        if not base:
            raise UpstreamError(
                f"deployment {deployment.label} has no api_base (set api_base or AZURE_API_BASE)", status=500
            )
        base = base.rstrip("/")
        return base.removesuffix("/openai")  # the resource endpoint, whichever way it was written

    def headers(self, deployment: Deployment) -> dict[str, str]:
        """An explicit config credential beats the environment; a key beats a token."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        token = deployment.params.get("azure_ad_token")
        if deployment.api_key:
            headers["api-key"] = deployment.api_key
        elif isinstance(token, str) and token:
            headers["Authorization"] = f"Bearer {token}"
        elif key := os.environ.get("AZURE_API_KEY"):
            headers["api-key"] = key
        elif token := os.environ.get("AZURE_AD_TOKEN"):
            headers["Authorization"] = f"Bearer {token}"
        headers.update(deployment.headers)
        return headers

    def url(self, ctx: RequestContext, deployment: Deployment) -> str:
        version = deployment.params.get("api_version") or os.environ.get("AZURE_API_VERSION") or DEFAULT_API_VERSION
        name = quote(deployment.upstream_model, safe="")
        return (f"{self.api_base(deployment)}/openai/deployments/{name}{AZURE_PATHS[ctx.kind]}"
                f"?api-version={quote(str(version), safe='')}")


class AzureAIAdapter(AzureBase):
    """``azure_ai/<model>``: Azure AI Foundry models and serverless endpoints (OpenAI-compatible).

    ``api_base`` is the endpoint as the portal shows it: ``https://<name>.services.ai.azure.com``
    (``/models`` is added), or a serverless ``https://<name>.<region>.models.ai.azure.com``.
    """

    provider: ClassVar[str] = "azure_ai"
    kinds: ClassVar[frozenset[str]] = frozenset({"chat", "embedding"})
    deployment_params: ClassVar[frozenset[str]] = frozenset({"api_version"})
    default_api_base: ClassVar[str | None] = None
    api_key_env: ClassVar[str | None] = "AZURE_AI_API_KEY"

    def api_base(self, deployment: Deployment) -> str:
        base = deployment.api_base or os.environ.get("AZURE_AI_API_BASE")
        if not base:
            raise UpstreamError(
                f"deployment {deployment.label} has no api_base (set api_base or AZURE_AI_API_BASE)", status=500
            )
        return base

    def headers(self, deployment: Deployment) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = deployment.api_key or os.environ.get("AZURE_AI_API_KEY")
        if key:
            host = urlsplit(self.api_base(deployment)).hostname or ""
            if host.endswith(API_KEY_HOSTS):
                headers["api-key"] = key
            else:
                headers["Authorization"] = f"Bearer {key}"
        headers.update(deployment.headers)
        return headers

    def url(self, ctx: RequestContext, deployment: Deployment) -> str:
        parts = urlsplit(self.api_base(deployment))
        suffix = AZURE_PATHS[ctx.kind]
        path = parts.path.rstrip("/")
        if not path.endswith(suffix):
            if (parts.hostname or "").endswith(".services.ai.azure.com") and not path.endswith("/models"):
                path += "/models"
            path += suffix
        query = parts.query
        version = deployment.params.get("api_version")
        if version and "api-version=" not in query:
            query = "&".join(q for q in (query, f"api-version={quote(str(version), safe='')}") if q)
        return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def is_content_filter(body: bytes) -> bool:
    """Azure's content-filter rejection: code ``content_filter`` or a ResponsibleAI inner error."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return False
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return False
    inner = err.get("innererror") or err.get("inner_error")
    return err.get("code") == "content_filter" or (
        isinstance(inner, dict) and inner.get("code") == "ResponsibleAIPolicyViolation"
    )


def azure_retry_after(headers: dict[str, str], message: str) -> float | None:
    """Seconds to wait: ``retry-after-ms`` is the precise one; older APIs only say it in words."""
    millis = parse_retry_after(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    seconds = parse_retry_after(headers.get("retry-after"))
    if seconds is not None:
        return seconds
    match = RETRY_IN_MESSAGE.search(message)
    return float(match.group(1)) if match else None
