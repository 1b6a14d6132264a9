"""``custom/<model>``: LiteLLM's generic "custom LLM API endpoint" format, posted to ``api_base``.

Request (the URL is used exactly as configured)::

    {"model": "<model without custom/>",
     "params": {"prompt": ["<prompt>"], "max_tokens": 32, "temperature": 0.7, "top_p": 1.0, "top_k": 40}}

Answer::

    {"data": [{"prompt": "...", "output": ["<completion>"], "params": {...}}], "message": "ok"}

The prompt is the one the ``prompt_template`` stage rendered, else the message contents joined
with spaces (as LiteLLM does). The API reports no token counts, so answers carry no ``usage``.
It cannot stream either: for a streaming request the adapter still makes a plain call
(``UpstreamCall.stream`` is False) and ``parse_stream`` turns the complete body, handed over line
by line, into a short OpenAI stream.

"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from proxy.errors import UpstreamError
from proxy.providers.base import Adapter, UpstreamCall, load_json, merged_body
from proxy.providers.shapes import ChatChunks, chat_response, text_of

if TYPE_CHECKING:
    from proxy.context import RequestContext
    from proxy.deployment import Deployment


# -- the custom adapter ---------------------------------------------------------------------------

def joined_prompt(messages: list[dict[str, Any]]) -> str:
    """LiteLLM's custom-endpoint prompt: every message's content, joined with spaces."""
    return " ".join(text_of(m.get("content")) for m in messages)


class CustomAdapter(Adapter):
    provider: ClassVar[str] = "custom"
    supported_params: ClassVar[frozenset[str]] = frozenset(
        {"messages", "model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stream",
         "stream_options", "extra_headers"}
    )
    kinds: ClassVar[frozenset[str]] = frozenset({"chat"})

    def build_request(self, ctx: RequestContext, deployment: Deployment) -> UpstreamCall:
        if not deployment.api_base:
            raise UpstreamError(f"deployment {deployment.label} has no api_base", status=500)
        body = merged_body(ctx, deployment)
        prompt = ctx.extra.get("prompt")
        if not isinstance(prompt, str):
            prompt = joined_prompt(body.get("messages") or [])
        payload = {
            "model": deployment.upstream_model,
            "params": {
                "prompt": [prompt],
                "max_tokens": body.get("max_tokens", body.get("max_completion_tokens")),
                "temperature": body.get("temperature"),
                "top_p": body.get("top_p"),
                "top_k": body.get("top_k", 40),  # LiteLLM's default
            },
        }
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if deployment.api_key:  # the format names no auth; a configured key goes as a bearer token
            headers["Authorization"] = f"Bearer {deployment.api_key}"
        headers.update(deployment.headers)
        extra = body.get("extra_headers")
        if isinstance(extra, dict):
            headers.update({str(k): str(v) for k, v in extra.items()})
        # The endpoint cannot stream: even a streaming request is one plain call.
        return UpstreamCall("POST", deployment.api_base, headers, orjson.dumps(payload), stream=False)

    def output(self, body: bytes) -> str:
        data = load_json(body, self.provider)
        try:
            output = data["data"][0]["output"][0]
        except (KeyError, IndexError, TypeError):
            raise UpstreamError(f"upstream {self.provider} answer has no data[0].output[0]") from None
        return text_of(output)

    def parse_response(
        self, ctx: RequestContext, deployment: Deployment, status: int, body: bytes
    ) -> dict[str, Any]:
        return chat_response(deployment.upstream_model, {"content": self.output(body)}, "stop")

    def parse_stream(
        self, ctx: RequestContext, deployment: Deployment, lines: Iterable[bytes]
    ) -> Iterator[dict[str, Any]]:
        """The whole (non-streamed) answer, arriving as lines, replayed as a three-chunk stream."""
        text = self.output(b"".join(lines))
        chunks = ChatChunks(ctx, deployment.upstream_model)
        yield chunks.role()
        if text:
            yield chunks.chunk({"content": text})
        yield from chunks.finish("stop", None)
