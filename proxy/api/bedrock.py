"""The Bedrock Runtime surface: ``POST /bedrock/model/{modelId}/{operation}`` for boto3 and the AWS SDKs.

``boto3.client("bedrock-runtime", endpoint_url="http://proxy:4000/bedrock")`` then calls
``converse``, ``converse_stream``, ``invoke_model`` and ``invoke_model_with_response_stream``
through the proxy, in Bedrock's own wire format (LiteLLM's ``/bedrock`` pass-through route):

- ``modelId`` is a configured ``model_name`` (or alias), or the Bedrock model id of a configured
  ``bedrock/`` deployment; the proxy routes among that group's Bedrock deployments (retries,
  cooldowns and limits as for any call) and sends the request to the chosen one's model and region.
- The caller authenticates with its proxy key: ``x-litellm-api-key`` (or LiteLLM's older
  ``litellm_user_api_key``) header, or ``Authorization: Bearer`` when that is not the SDK's own
  ``AWS4-HMAC-SHA256`` signature, which is ignored. The key's model permissions, budgets and rate
  limits apply to the model.
- The proxy signs the request again with the deployment's AWS credentials (SigV4, its region).
- Answers pass through untranslated: JSON as it came, event streams byte for byte as they arrive.
  Usage is read on the way (proxy/providers/bedrock_native.py) and recorded as spend.
- Errors: the upstream's own error passes through (status, body, ``x-amzn-errortype``); the proxy's
  own refusals carry OpenAI's error object plus the ``message`` and ``x-amzn-errortype`` that AWS
  SDKs read, so boto3 raises a ClientError with a meaningful code.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson
from werkzeug.datastructures import EnvironHeaders

from proxy.api.openai import read_body, run_pipeline
from proxy.api.render import Reply, context_headers, relayed_bytes
from proxy.context import RequestContext
from proxy.dispatch import PassThroughReply, upstream_error
from proxy.errors import BadRequest, NotFound, ProxyError
from proxy.providers.base import PassThroughCall
from proxy.providers.bedrock import OPERATIONS, STREAM_OPERATIONS

if TYPE_CHECKING:
    from proxy.deployment import Deployment
    from proxy.gateway import Gateway

log = logging.getLogger(__name__)

PREFIX = "/bedrock/"
PATH = re.compile(r"^/bedrock/model/(?P<model>.+)/(?P<operation>" + "|".join(map(re.escape, OPERATIONS)) + r")$")
#: Client headers the upstream sees (besides these, every x-amzn-bedrock-* header).
FORWARDED = frozenset({"content-type", "accept"})
#: Upstream answer headers the client sees (besides every x-amzn-* header).
RETURNED = frozenset({"content-type"})
#: A proxy refusal's status -> the AWS error code SDKs expect for it.
ERROR_TYPES = {400: "ValidationException", 401: "UnrecognizedClientException", 403: "AccessDeniedException",
               404: "ResourceNotFoundException", 408: "ModelTimeoutException", 429: "ThrottlingException",
               503: "ServiceUnavailableException"}


def proxy_key(headers: Any) -> str | None:
    """The caller's proxy key; the SDK's own SigV4 ``Authorization`` is not a proxy key."""
    key = headers.get("x-litellm-api-key") or headers.get("litellm_user_api_key")
    if key:
        return str(key).removeprefix("Bearer ").strip()
    auth = headers.get("Authorization") or ""
    if auth and not auth.startswith("AWS4-"):
        scheme, _, value = auth.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else auth.strip()
    return headers.get("api-key") or headers.get("x-api-key")


def aws_error_reply(err: ProxyError, headers: list[tuple[str, str]] | None = None) -> Reply:
    """A proxy refusal: OpenAI's error object, plus AWS's ``message`` and error type header."""
    code = ERROR_TYPES.get(err.status, "InternalServerException" if err.status >= 500 else "ValidationException")
    body = orjson.dumps({**err.body(), "message": err.message})
    out = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("x-amzn-ErrorType", code),
           *err.response_headers().items(), *(headers or ())]
    return Reply(err.status, out, body)


def upstream_headers(headers: dict[str, str]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers.items() if k in RETURNED or k.startswith("x-amzn-")]


def resolve_model(gateway: Gateway, model_id: str) -> tuple[str, list[Deployment]]:
    """(model group name, its deployments) for a model_name, alias or configured Bedrock model id."""
    router = gateway.services.router
    group = router.group(model_id)
    if group:
        return model_id, group
    for dep in gateway.services.visible_deployments():
        if dep.provider == "bedrock" and dep.upstream_model.removeprefix("converse/") == model_id:
            return dep.model_name, router.group(dep.model_name)
    raise NotFound(f"model {model_id!r} is not configured on this proxy: name a model_name, or the Bedrock "
                   "model id of a configured bedrock/ deployment", param="model", code="model_not_found")


def serve(gateway: Gateway, environ: dict[str, Any]) -> Reply:
    """One Bedrock Runtime call, from the WSGI environ to a Reply."""
    raw_path = environ.get("RAW_URI", "").split("?", 1)[0] or environ.get("PATH_INFO", "")
    match = PATH.match(raw_path) or PATH.match(environ.get("PATH_INFO", ""))
    if match is None:
        raise NotFound(f"{environ.get('PATH_INFO')}: /bedrock serves /model/{{modelId}}/"
                       f"{{{'|'.join(OPERATIONS)}}}")
    if environ.get("REQUEST_METHOD") != "POST":
        raise BadRequest(f"{environ.get('PATH_INFO')} takes POST", status=405)
    headers = EnvironHeaders(environ)
    key = proxy_key(headers)
    model_name, group = resolve_model(gateway, unquote(match["model"]))
    operation = match["operation"]
    bedrock = [d for d in group if d.provider == "bedrock"]
    if not bedrock:
        raise BadRequest(f"model {model_name!r} has no bedrock/ deployment to pass Bedrock requests to",
                         param="model")
    embedding = operation == "invoke" and "embed" in bedrock[0].upstream_model
    stream = operation in STREAM_OPERATIONS
    body: dict[str, Any] = {"model": model_name, "stream": True} if stream else {"model": model_name}
    ctx = RequestContext("embedding" if embedding else "chat", body,
                         {"Authorization": f"Bearer {key}"} if key else {})
    forwarded = {k: v for k, v in headers.items() if k.lower() in FORWARDED or k.lower().startswith("x-amzn-bedrock-")}
    ctx.extra["pass_through"] = PassThroughCall("bedrock", operation, read_body(environ), forwarded)
    for dep in group:
        if dep.provider != "bedrock":
            ctx.excluded[dep.id] = "not a bedrock/ deployment"

    def render(result: PassThroughReply) -> Reply:
        out = [*upstream_headers(result.headers), *context_headers(ctx)]
        if isinstance(result.body, bytes):
            return Reply(result.status, [*out, ("Content-Length", str(len(result.body)))], result.body)
        return Reply(result.status, out, relayed_bytes(ctx, result.body))

    def render_error(err: ProxyError, extra: list[tuple[str, str]]) -> Reply:
        upstream = upstream_error(ctx, err)
        if upstream is not None and isinstance(upstream.body, bytes):
            return Reply(upstream.status, [*upstream_headers(upstream.headers), *extra], upstream.body)
        return aws_error_reply(err, extra)

    return run_pipeline(gateway, ctx, render, render_error)


class BedrockEndpoints:
    """WSGI layer answering ``/bedrock/...``; any other request goes on to ``app``."""

    def __init__(self, gateway: Gateway, app: Callable[..., Iterable[bytes]]) -> None:
        self.gateway = gateway
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not environ.get("PATH_INFO", "").startswith(PREFIX):
            return self.app(environ, start_response)
        try:
            reply = serve(self.gateway, environ)
        except ProxyError as err:
            reply = aws_error_reply(err)
        except Exception:
            log.exception("unhandled error in %s", environ.get("PATH_INFO"))
            reply = aws_error_reply(ProxyError("Internal server error; see the proxy log for details"))
        return reply.wsgi(start_response)
