"""Hugging Face: Text Generation Inference (TGI) servers and Inference Endpoints, or the router.

- With an ``api_base`` (a TGI server or Inference Endpoint; ``huggingface/https://host`` names
  one too):

  - if the deployment has LiteLLM prompt-template params (the ``prompt_template`` stage rendered
    ``ctx.extra["prompt"]``), TGI's native ``/generate`` and ``/generate_stream`` with that
    prompt, ``{"inputs": prompt, "parameters": {...}}``;
  - otherwise TGI's OpenAI-compatible Messages API at ``{api_base}/v1/chat/completions``, where
    TGI applies the model's own chat template.

- Without one, Hugging Face's Inference Providers router,
  ``https://router.huggingface.co/v1/chat/completions`` with ``model=<repo-id>``. LiteLLM's
  ``huggingface/<provider>/<org>/<model>`` (a chosen inference provider) is sent as
  ``<org>/<model>:<provider>``, the router's way of naming one.

The key is ``api_key``, else ``HUGGINGFACE_API_KEY`` or ``HF_TOKEN``, sent as a bearer token.
TGI's errors are ``{"error": "...", "error_type": "..."}``, as a JSON body or, on a stream that
already started, as an SSE event; a prompt that does not fit the model
(`` `inputs` tokens + `max_new_tokens` must be <= N``) is a context-window error either way.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from proxy.errors import ContextWindowExceeded, ProxyError, UpstreamError, error_for_status
from proxy.providers.base import CONTEXT_WINDOW_MARKERS, UpstreamCall, load_json, merged_body, parse_retry_after
from proxy.providers.openai import OpenAIAdapter, iter_sse_data
from proxy.providers.shapes import ChatChunks, chat_response, token_usage

if TYPE_CHECKING:
    from proxy.context import RequestContext
    from proxy.deployment import Deployment

ROUTER_BASE = "https://router.huggingface.co/v1"
#: TGI generation parameters a deployment may set directly (``top_k: 10`` in litellm_params).
TGI_PARAMS = frozenset({"adapter_id", "best_of", "decoder_input_details", "do_sample", "grammar",
                        "repetition_penalty", "top_k", "top_n_tokens", "truncate", "typical_p", "watermark"})
#: TGI's ``error_type`` -> the HTTP status it comes with (for errors sent inside a stream).
ERROR_TYPE_STATUS = {"validation": 422, "overloaded": 429, "generation": 424, "incomplete_generation": 500}
#: TGI's own words for a prompt that does not fit.
TGI_CONTEXT_MARKERS = ("`inputs` tokens + `max_new_tokens` must be", "`inputs` must have less than")


def tgi_parameters(body: dict[str, Any]) -> dict[str, Any]:
    """TGI ``parameters`` from the merged OpenAI request params."""
    params = {k: body[k] for k in TGI_PARAMS if body.get(k) is not None}
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or body.get("max_new_tokens")
    if max_tokens:
        params["max_new_tokens"] = max_tokens
    temperature = body.get("temperature")
    if temperature is not None and temperature > 0:  # TGI rejects 0: leaving it out means greedy
        params["temperature"] = temperature
    top_p = body.get("top_p")
    if top_p is not None and 0 < top_p < 1:  # TGI wants 0 < top_p < 1; 1 means no nucleus cut
        params["top_p"] = top_p
    stop = body.get("stop")
    if stop:
        params["stop"] = [stop] if isinstance(stop, str) else list(stop)
    for key in ("seed", "frequency_penalty"):
        if body.get(key) is not None:
            params[key] = body[key]
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and "grammar" not in params:
        if fmt.get("type") == "json_schema" and (fmt.get("json_schema") or {}).get("schema"):
            params["grammar"] = {"type": "json", "value": fmt["json_schema"]["schema"]}
        elif fmt.get("type") == "json_object":
            params["grammar"] = {"type": "json", "value": {"type": "object"}}
    # only the new text, and the details that carry the finish reason and token counts
    params["return_full_text"] = False
    params["details"] = True
    return params


def finish_reason(details: dict[str, Any]) -> str:
    """TGI's length / eos_token / stop_sequence -> OpenAI's."""
    return "length" if details.get("finish_reason") == "length" else "stop"


def sse_payload(body: bytes) -> bytes:
    """The JSON of an error TGI sent as an SSE event (``data:{...}``), or the body as it is."""
    stripped = body.strip()
    return stripped[5:].strip() if stripped.startswith(b"data:") else body


class HuggingFaceAdapter(OpenAIAdapter):
    provider: ClassVar[str] = "huggingface"
    supported_params: ClassVar[frozenset[str]] = frozenset(
        {"messages", "model", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "max_tokens",
         "max_completion_tokens", "n", "presence_penalty", "response_format", "seed", "stop", "stream",
         "stream_options", "temperature", "top_p", "tools", "tool_choice", "extra_headers"}
    )
    kinds: ClassVar[frozenset[str]] = frozenset({"chat"})
    default_api_base: ClassVar[str | None] = ROUTER_BASE
    api_key_env: ClassVar[str | None] = "HUGGINGFACE_API_KEY"

    # -- where the request goes -----------------------------------------------------------------

    @staticmethod
    def endpoint(deployment: Deployment) -> str | None:
        """The TGI server / Inference Endpoint, if the deployment names one."""
        if deployment.upstream_model.startswith(("http://", "https://")):
            return deployment.upstream_model.rstrip("/")
        return deployment.api_base.rstrip("/") if deployment.api_base else None

    def uses_generate(self, ctx: RequestContext, deployment: Deployment) -> bool:
        """TGI's native /generate: a dedicated endpoint and a prompt rendered from a template."""
        return isinstance(ctx.extra.get("prompt"), str) and self.endpoint(deployment) is not None

    def chat_url(self, deployment: Deployment) -> str:
        base = self.endpoint(deployment)
        if base is None:
            return ROUTER_BASE + "/chat/completions"
        if base.endswith("/chat/completions"):
            return base
        return base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")

    def generate_url(self, deployment: Deployment, stream: bool) -> str:
        base = self.endpoint(deployment) or ""
        for suffix in ("/chat/completions", "/v1", "/generate_stream", "/generate"):
            base = base.removesuffix(suffix)
        return base + ("/generate_stream" if stream else "/generate")

    def model_name(self, deployment: Deployment) -> str:
        model = deployment.upstream_model
        if model.startswith(("http://", "https://")):
            return "tgi"  # TGI serves one model and ignores the name
        parts = model.split("/")
        if self.endpoint(deployment) is None and len(parts) >= 3:  # <provider>/<org>/<model>
            return f"{'/'.join(parts[1:])}:{parts[0]}"
        return model

    def headers(self, deployment: Deployment) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = deployment.api_key or os.environ.get("HUGGINGFACE_API_KEY") or os.environ.get("HF_TOKEN")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        headers.update(deployment.headers)
        return headers

    def build_request(self, ctx: RequestContext, deployment: Deployment) -> UpstreamCall:
        body = merged_body(ctx, deployment)
        headers = self.headers(deployment)
        extra = body.pop("extra_headers", None)
        if isinstance(extra, dict):
            headers.update({str(k): str(v) for k, v in extra.items()})
        if ctx.stream:
            headers["Accept"] = "text/event-stream"
        if self.uses_generate(ctx, deployment):
            payload = {"inputs": ctx.extra["prompt"], "parameters": tgi_parameters(body)}
            return UpstreamCall("POST", self.generate_url(deployment, ctx.stream), headers,
                                orjson.dumps(payload), stream=ctx.stream)
        body["model"] = self.model_name(deployment)
        return UpstreamCall("POST", self.chat_url(deployment), headers, orjson.dumps(body), stream=ctx.stream)

    # -- answers ----------------------------------------------------------------------------------

    def parse_response(
        self, ctx: RequestContext, deployment: Deployment, status: int, body: bytes
    ) -> dict[str, Any]:
        if not self.uses_generate(ctx, deployment):
            return super().parse_response(ctx, deployment, status, body)
        data = load_json(body, self.provider)
        item = data[0] if isinstance(data, list) and data else data  # the serverless API wraps it in a list
        if not isinstance(item, dict) or not isinstance(item.get("generated_text"), str):
            raise UpstreamError(f"upstream {self.provider} answer has no generated_text")
        text, details = item["generated_text"], item.get("details") or {}
        if details.get("finish_reason") == "stop_sequence":  # TGI keeps the stop text; OpenAI does not
            stop = ctx.body.get("stop") or deployment.defaults.get("stop") or ()
            for s in [stop] if isinstance(stop, str) else stop:
                if s and text.endswith(s):
                    text = text[: -len(s)]
                    break
        usage = None
        if details.get("prefill") and details.get("generated_tokens") is not None:
            usage = token_usage(len(details["prefill"]), int(details["generated_tokens"]))
        return chat_response(deployment.upstream_model, {"content": text}, finish_reason(details), usage)

    def parse_stream(
        self, ctx: RequestContext, deployment: Deployment, lines: Iterable[bytes]
    ) -> Iterator[dict[str, Any]]:
        generate = self.uses_generate(ctx, deployment)
        chunks: ChatChunks | None = None
        for raw in iter_sse_data(lines):
            event = load_json(raw, self.provider)
            if not isinstance(event, dict):
                raise UpstreamError(f"upstream {self.provider} sent an unexpected stream event")
            if "error" in event and "choices" not in event:
                raise self.stream_error(event)
            if not generate:  # the Messages API already speaks OpenAI
                yield event
                continue
            if chunks is None:  # the role chunk waits for the first real event, so early failures retry
                chunks = ChatChunks(ctx, deployment.upstream_model)
                yield chunks.role()
            token = event.get("token") or {}
            if token.get("text") and not token.get("special"):
                yield chunks.chunk({"content": token["text"]})
            details = event.get("details")
            if isinstance(details, dict):
                usage = None
                if details.get("input_length") is not None and details.get("generated_tokens") is not None:
                    usage = token_usage(int(details["input_length"]), int(details["generated_tokens"]))
                yield from chunks.finish(finish_reason(details), usage)
                return
        if generate:
            raise UpstreamError(f"upstream {self.provider} stream ended before its final event")

    # -- errors -----------------------------------------------------------------------------------

    def map_error(self, status: int, headers: dict[str, str], body: bytes) -> ProxyError:
        payload = sse_payload(body)  # /generate_stream sends its errors as an SSE event
        try:
            data = orjson.loads(payload) if payload else None
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            return self.tgi_error(status, headers, data)
        return super().map_error(status, headers, payload)

    def stream_error(self, event: dict[str, Any]) -> ProxyError:
        """An error event inside a stream, mapped as if it had come with its own status."""
        if isinstance(event.get("error"), str):
            status = ERROR_TYPE_STATUS.get(str(event.get("error_type")), 502)
            return self.tgi_error(status, {}, event)
        return super().map_error(502, {}, orjson.dumps(event))

    def tgi_error(self, status: int, headers: dict[str, str], data: dict[str, Any]) -> ProxyError:
        message, error_type = data["error"], data.get("error_type")
        lowered = message.lower()
        if 400 <= status < 500 and (any(m in message for m in TGI_CONTEXT_MARKERS)
                                    or any(m in lowered for m in CONTEXT_WINDOW_MARKERS)):
            return ContextWindowExceeded(message)
        # 424: the model failed while generating (often out of memory); another try may succeed
        cls = UpstreamError if status == 424 else error_for_status(status)
        retry_after = parse_retry_after(headers.get("retry-after"))
        if retry_after is None and isinstance(data.get("estimated_time"), (int, float)):
            retry_after = float(data["estimated_time"])  # a serverless model that is still loading
        return cls(
            f"upstream {self.provider} error {status}: {message}",
            code=str(error_type) if error_type and cls.code is None else None,
            status=status if status >= 500 else None,
            retry_after=retry_after,
        )
