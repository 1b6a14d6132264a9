"""Anthropic's streaming events -> OpenAI ``chat.completion.chunk``s, and the mappings both share.

A Messages stream is a sequence of server-sent events::

    message_start          message id, model, input usage
    content_block_start    a text, tool_use or thinking block opens (index = block position)
    content_block_delta    text_delta | input_json_delta | thinking_delta | signature_delta
    content_block_stop
    message_delta          stop_reason, final (cumulative) usage
    message_stop
    ping                   any time; ignored
    error                  mid-stream failure (handled by the adapter)

They become: a first chunk with ``delta.role``; content and reasoning chunks; for each tool_use
block, a chunk with the call's ``index``, ``id`` and ``name`` then ``arguments`` fragments; a
chunk with ``finish_reason``; and, only when the client asked ``stream_options.include_usage``, a
last chunk with empty ``choices`` and the usage, as OpenAI sends it.
"""

from __future__ import annotations

from typing import Any

from proxy.errors import UpstreamError
from proxy.providers.shapes import ChunkTranslator, usage_with_cache

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
#: Anthropic error type -> the HTTP status it comes with (errors inside a 200 stream have none).
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


def finish_reason(stop_reason: str | None) -> str | None:
    if stop_reason is None:
        return None
    return FINISH_REASONS.get(stop_reason, "stop")


def error_status(event: dict[str, Any]) -> int:
    err = event.get("error")
    kind = err.get("type") if isinstance(err, dict) else None
    return ERROR_STATUS.get(kind or "", 500)


def openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic usage -> OpenAI's."""
    return usage_with_cache(usage.get("input_tokens"), usage.get("output_tokens"),
                            usage.get("cache_read_input_tokens"), usage.get("cache_creation_input_tokens"))


class StreamTranslator(ChunkTranslator):
    """Feed Anthropic events one at a time; get back the OpenAI chunks each one makes."""

    def __init__(self, model: str, include_usage: bool) -> None:
        super().__init__(model, include_usage)  # the id comes with message_start
        self.tools: dict[int, int] = {}  # content block index -> tool_calls index
        self.raw_usage: dict[str, Any] = {}  # usage is set once message_delta gives the final counts

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.id = message.get("id")
            self.model = message.get("model") or self.model
            self.raw_usage.update(message.get("usage") or {})
            return [self.chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self.block_start(event.get("index", 0), event.get("content_block") or {})
        if kind == "content_block_delta":
            return self.block_delta(event.get("index", 0), event.get("delta") or {})
        if kind == "message_delta":
            delta = event.get("delta") or {}
            self.raw_usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            self.usage = openai_usage(self.raw_usage)
            return [self.chunk({}, finish_reason(delta.get("stop_reason")) or "stop")]
        if kind == "message_stop":
            return self.usage_chunk()
        return []  # ping, content_block_stop, and event types added later

    def close(self) -> list[dict[str, Any]]:
        """At the end of the byte stream: a stream cut before message_delta is an error."""
        if self.usage is None:
            raise UpstreamError("upstream anthropic stream ended before the message was complete")
        return self.usage_chunk()

    def block_start(self, index: int, block: dict[str, Any]) -> list[dict[str, Any]]:
        kind = block.get("type")
        if kind == "tool_use":
            position = self.tools[index] = len(self.tools)
            call = {"index": position, "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""}}
            return [self.chunk({"tool_calls": [call]})]
        if kind == "text" and block.get("text"):
            return [self.chunk({"content": block["text"]})]
        return []

    def block_delta(self, index: int, delta: dict[str, Any]) -> list[dict[str, Any]]:
        kind = delta.get("type")
        if kind == "text_delta":
            return [self.chunk({"content": delta.get("text", "")})]
        if kind == "input_json_delta" and index in self.tools and delta.get("partial_json"):
            fragment = {"index": self.tools[index], "function": {"arguments": delta["partial_json"]}}
            return [self.chunk({"tool_calls": [fragment]})]
        if kind == "thinking_delta":
            return [self.chunk({"reasoning_content": delta.get("thinking", "")})]
        return []  # signature_delta, citations_delta: nothing OpenAI-shaped to say


