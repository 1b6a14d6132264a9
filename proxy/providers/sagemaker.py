"""Amazon SageMaker embedding endpoints (``sagemaker/<endpoint-name>``) serving the Hugging Face
embedding containers (Text Embeddings Inference, or the HF inference toolkit).

``InvokeEndpoint``: ``POST https://runtime.sagemaker.{region}.amazonaws.com/endpoints/{name}/invocations``,
SigV4-signed for service ``sagemaker``. ``sagemaker_base_url`` (LiteLLM's name) replaces the whole
URL; ``api_base`` replaces only the host part (``{api_base}/endpoints/{name}/invocations``).

The body is the containers' input, ``{"inputs": [str, ...]}`` (provider params from the deployment
or request, e.g. ``normalize``/``truncate`` for TEI, are added beside it). The answer is TEI's bare
array of vectors, ``[[float, ...], ...]``, or ``{"embedding": [[...]]}``. Neither counts tokens, so
usage is estimated by the proxy's tokenizer.

Credentials are resolved as for Bedrock (proxy/providers/aws_auth.py): static keys, profile,
environment, or an STS role.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import orjson

from proxy.errors import BadRequest, ProxyError, UpstreamError, error_for_status
from proxy.providers.aws_auth import AWS_PARAMS, AssumedRoles, AwsSigner, region_of
from proxy.providers.base import Adapter, UpstreamCall, load_json, merged_body, parse_retry_after
from proxy.providers.shapes import embedding_response, text_inputs

if TYPE_CHECKING:
    from proxy.context import RequestContext
    from proxy.deployment import Deployment

#: OpenAI embedding fields that are not container params.
OPENAI_EMBEDDING_FIELDS = frozenset({"input", "model", "encoding_format", "user", "dimensions", "extra_headers"})


class SageMakerAdapter(Adapter):
    provider: ClassVar[str] = "sagemaker"
    supported_params: ClassVar[frozenset[str]] = frozenset({"input", "model", "encoding_format", "user"})
    deployment_params: ClassVar[frozenset[str]] = AWS_PARAMS | {"sagemaker_base_url"}
    kinds: ClassVar[frozenset[str]] = frozenset({"embedding"})

    def __init__(self, roles: AssumedRoles | None = None) -> None:
        self.signer = AwsSigner("sagemaker", roles or AssumedRoles())

    def url(self, deployment: Deployment) -> str:
        full = deployment.params.get("sagemaker_base_url")
        if full:
            return str(full)
        base = deployment.api_base or f"https://runtime.sagemaker.{region_of(deployment)}.amazonaws.com"
        return f"{str(base).rstrip('/')}/endpoints/{quote(deployment.upstream_model, safe='')}/invocations"

    def build_request(self, ctx: RequestContext, deployment: Deployment) -> UpstreamCall:
        request = merged_body(ctx, deployment)
        if request.get("dimensions") is not None:
            raise BadRequest("dimensions: a SageMaker embedding endpoint has a fixed size", param="dimensions")
        body: dict[str, Any] = {"inputs": text_inputs(request.get("input"), "sagemaker")}
        body.update({k: v for k, v in request.items() if k not in OPENAI_EMBEDDING_FIELDS and v is not None})
        headers = {"Content-Type": "application/json", "Accept": "application/json", **deployment.headers}
        return UpstreamCall("POST", self.url(deployment), headers, orjson.dumps(body))

    def sign(self, call: UpstreamCall, deployment: Deployment) -> UpstreamCall:
        return self.signer.sign(call, deployment)

    def parse_response(
        self, ctx: RequestContext, deployment: Deployment, status: int, body: bytes
    ) -> dict[str, Any]:
        data = load_json(body, self.provider)
        vectors = data.get("embedding") if isinstance(data, dict) else data
        if not (isinstance(vectors, list) and vectors and all(isinstance(v, list) for v in vectors)):
            raise UpstreamError("upstream sagemaker returned an unexpected body (expected a list of vectors)")
        return embedding_response(ctx, deployment.upstream_model, vectors, None)

    def map_error(self, status: int, headers: dict[str, str], body: bytes) -> ProxyError:
        """SageMaker's own errors (``{"message"}`` with ``x-amzn-errortype``) and a container's error
        relayed as ``ModelError`` (424 with ``OriginalStatusCode`` in the message)."""
        try:
            data = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            data = {}
        data = data if isinstance(data, dict) else {}
        message = str(data.get("message") or data.get("Message") or data.get("error")
                      or body.decode("utf-8", "replace").strip() or "upstream returned no error details")
        error_type = str(headers.get("x-amzn-errortype") or data.get("__type") or "").split(":", 1)[0]
        error_type = error_type.rsplit("#", 1)[-1]
        if error_type in ("UnrecognizedClientException", "InvalidSignatureException",
                          "ExpiredTokenException", "IncompleteSignature", "MissingAuthenticationToken"):
            status = 401
        elif error_type == "ThrottlingException":
            status = 429
        elif error_type == "ModelError" or status == 424:
            status = 502  # the container failed: an upstream fault, not the client's
        cls = error_for_status(status)
        return cls(f"upstream sagemaker error {status}: {error_type + ': ' if error_type else ''}{message}",
                   code=error_type or None, status=status if status >= 500 else None,
                   retry_after=parse_retry_after(headers.get("retry-after")))
