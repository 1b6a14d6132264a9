"""The provider adapter contract.

An adapter translates between the proxy's internal OpenAI format and one provider's wire format.
It does no I/O: ``transport`` sends what ``build_request`` returns and hands the bytes back to
``parse_response`` / ``parse_stream`` / ``map_error``. That keeps every adapter testable with
recorded payloads.

Some surfaces (``/vertex_ai``, ``/bedrock``) forward a client's request in its provider's own wire
format: the adapter aims a ``PassThroughCall`` at a deployment (``pass_through``) and reads the
usage from the untranslated answer on the way back (``pass_through_meter``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import orjson

from proxy.errors import (
    BadRequest,
    ContentPolicyViolation,
    ContextWindowExceeded,
    ProxyError,
    UpstreamError,
    error_for_status,
)

if TYPE_CHECKING:
    from proxy.context import RequestContext
    from proxy.deployment import Deployment


@dataclass(slots=True)
class UpstreamCall:
    """One HTTP request to a provider, fully built."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None
    stream: bool = False
    timeout: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"binary": True}: stream bytes, not lines


@dataclass(slots=True)
class PassThroughCall:
    """A client's request in a provider's own wire format, forwarded to a deployment untranslated."""

    provider: str  # the provider whose deployments may serve it ("bedrock", "vertex_ai")
    operation: str  # the provider's name for the call: "converse-stream", a Vertex model path
    body: bytes
    headers: dict[str, str]  # the client's headers that the upstream should see
    query: str = ""  # the client's query string, for providers whose methods take one


class UsageMeter(Protocol):
    """Reads the usage of a pass-through answer as it passes; never alters the bytes."""

    #: OpenAI-format usage found so far; None when the answer reported none
    usage: dict[str, Any] | None

    def answer(self, headers: dict[str, str], body: bytes) -> None:
        """A whole (non-streamed) answer."""

    def feed(self, piece: bytes) -> None:
        """The next piece of a streamed answer, as the upstream sent it (a line, or byte chunk)."""


CONTEXT_WINDOW_MARKERS = (
    "context_length_exceeded",
    "context length",
    "maximum context",
    "context window",
    "too many tokens",
    "prompt is too long",
    "input is too long",
)

#: Error codes that mean the provider's safety system refused the prompt (OpenAI sends
#: ``content_policy_violation``; OpenAI-compatible servers copy it).
CONTENT_POLICY_CODES = frozenset({"content_policy_violation"})


def error_message(body: bytes) -> tuple[str, str | None, str | None]:
    """(message, code, param) from an error body in OpenAI's shape or close to it."""
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or orjson.dumps(err).decode()
            code = err.get("code") or err.get("type")
            return str(msg), str(code) if code is not None else None, err.get("param")
        if isinstance(err, str):
            return err, None, None
    text = body.decode("utf-8", "replace").strip() if body else ""
    return text or "upstream returned no error details", None, None


def load_json(body: bytes, provider: str) -> Any:
    """An upstream body parsed; bytes that are not JSON are the upstream's fault (502)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(f"upstream {provider} returned invalid JSON") from exc


def merged_body(ctx: RequestContext, deployment: Deployment) -> dict[str, Any]:
    """The request with the deployment's provider params as defaults (the client's values win)."""
    return {**deployment.defaults, **ctx.body} if deployment.defaults else dict(ctx.body)


class Adapter:
    """Base adapter; subclasses set ``provider`` and override what differs."""

    provider: ClassVar[str] = ""
    #: OpenAI request params the provider accepts (drop_params removes the others).
    supported_params: ClassVar[frozenset[str]] = frozenset()
    #: litellm_params the adapter consumes itself (never forwarded as request defaults).
    deployment_params: ClassVar[frozenset[str]] = frozenset()
    #: endpoint kinds this adapter can serve.
    kinds: ClassVar[frozenset[str]] = frozenset({"chat"})
    #: where the provider lives when the config gives no api_base.
    default_api_base: ClassVar[str | None] = None
    #: environment variable holding the key when the config gives none.
    api_key_env: ClassVar[str | None] = None
    #: environment variable holding the api base when the config gives none.
    api_base_env: ClassVar[str | None] = None
    #: the provider's rate-limit response headers -> OpenAI's names, as clients read them.
    rate_limit_names: ClassVar[tuple[tuple[str, str], ...]] = tuple(
        (name, name) for name in (
            "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
            "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
        )
    )

    def shown_api_base(self, deployment: Deployment) -> str | None:
        """Where this deployment's calls go, for the ``x-litellm-model-api-base`` header."""
        env = self.api_base_env
        return deployment.api_base or (os.environ.get(env) if env else None) or self.default_api_base

    def rate_limits(self, headers: dict[str, str]) -> dict[str, str] | None:
        """The upstream's rate-limit headers under OpenAI's names; None when it sent none."""
        found = None
        for source, name in self.rate_limit_names:
            value = headers.get(source)
            if value is not None:
                if found is None:
                    found = {}
                found[name] = value
        return found

    def build_request(self, ctx: RequestContext, deployment: Deployment) -> UpstreamCall:
        raise NotImplementedError

    def parse_response(
        self, ctx: RequestContext, deployment: Deployment, status: int, body: bytes
    ) -> dict[str, Any]:
        raise NotImplementedError

    def parse_stream(
        self, ctx: RequestContext, deployment: Deployment, lines: Iterable[bytes]
    ) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    def sign(self, call: UpstreamCall, deployment: Deployment) -> UpstreamCall:
        """Providers that sign requests (Bedrock SigV4) override this."""
        return call

    def pass_through(self, call: PassThroughCall, deployment: Deployment) -> UpstreamCall:
        """The client's own request aimed at ``deployment`` (``sign`` runs after). A streamed answer
        is relayed as lines, or as byte chunks when ``extra["binary"]`` is set."""
        raise BadRequest(f"{self.provider} deployments do not take {call.provider} requests", param="model")

    def pass_through_meter(self, call: PassThroughCall) -> UsageMeter:
        """A fresh meter for the answer to ``call``."""
        raise NotImplementedError

    def map_error(self, status: int, headers: dict[str, str], body: bytes) -> ProxyError:
        """An upstream error status and body -> the ProxyError the client sees."""
        message, code, param = error_message(body)
        lowered = message.lower()
        if status in (400, 413, 422) and (
            code == "context_length_exceeded" or any(m in lowered for m in CONTEXT_WINDOW_MARKERS)
        ):
            return ContextWindowExceeded(message, param=param)
        if status == 400 and code in CONTENT_POLICY_CODES:
            return ContentPolicyViolation(message, param=param)  # drives content_policy_fallbacks
        cls = error_for_status(status)
        retry_after = parse_retry_after(headers.get("retry-after"))
        status_out = status if status >= 500 else None
        return cls(
            f"upstream {self.provider} error {status}: {message}",
            param=param,
            code=code,
            status=status_out,
            retry_after=retry_after,
            # an exhausted quota is a 429 that no amount of waiting fixes
            retryable=False if code == "insufficient_quota" else None,
        )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form; dates are rare upstream)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
