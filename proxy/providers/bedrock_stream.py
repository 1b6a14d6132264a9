"""Bedrock ConverseStream events -> OpenAI ``chat.completion.chunk``s, and the mappings both share.

ConverseStream answers ``application/vnd.amazon.eventstream``: binary frames (a prelude with the
total and headers lengths and a CRC, typed headers, a JSON payload, a message CRC), decoded here
with botocore's ``EventStreamBuffer``. A frame's ``:message-type`` is ``event`` (its
``:event-type`` names it), ``exception`` (``:exception-type``) or ``error``. Events, in order::

    messageStart        {"role": "assistant"}
    contentBlockStart   {"start": {"toolUse": {"toolUseId", "name"}}, "contentBlockIndex"}
    contentBlockDelta   {"delta": {"text"} | {"toolUse": {"input": <partial JSON>}}
                                   | {"reasoningContent": {"text"}}, "contentBlockIndex"}
    contentBlockStop    {"contentBlockIndex"}
    messageStop         {"stopReason", "additionalModelResponseFields"}
    metadata            {"usage": {"inputTokens", "outputTokens", "totalTokens"}, "metrics"}

They become: a first chunk with ``delta.role``; content (and reasoning) chunks; for each toolUse
block a chunk with the call's ``index``, ``id`` and ``name``, then ``arguments`` fragments; a
chunk with ``finish_reason``; and, only when the client asked ``stream_options.include_usage``,
a last chunk with empty ``choices`` and the usage.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError

from proxy.errors import UpstreamError
from proxy.providers.shapes import ChunkTranslator, usage_with_cache

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
}
#: Exception events inside a 200 stream -> the HTTP status the same error has as a response.
EXCEPTION_STATUS = {
    "validationexception": 400,
    "accessdeniedexception": 403,
    "resourcenotfoundexception": 404,
    "modeltimeoutexception": 408,
    "throttlingexception": 429,
    "modelnotreadyexception": 429,
    "servicequotaexceededexception": 429,
    "internalserverexception": 500,
    "modelstreamerrorexception": 502,
    "modelerrorexception": 502,
    "serviceunavailableexception": 503,
}


def finish_reason(stop_reason: str | None) -> str | None:
    if stop_reason is None:
        return None
    return FINISH_REASONS.get(stop_reason, "stop")


def openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Bedrock TokenUsage -> OpenAI's."""
    return usage_with_cache(usage.get("inputTokens"), usage.get("outputTokens"),
                            usage.get("cacheReadInputTokens"), usage.get("cacheWriteInputTokens"))


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def iter_frames(pieces: Iterable[bytes]) -> Iterator[EventStreamMessage]:
    """Raw byte pieces (lines split on newlines, or whole bodies) -> decoded event-stream frames."""
    buffer = EventStreamBuffer()
    pending = 0
    try:
        for piece in pieces:
            if not piece:
                continue
            buffer.add_data(piece)
            pending += len(piece)
            for message in buffer:
                pending -= message.prelude.total_length
                yield message
    except ParserError as exc:
        raise UpstreamError(f"upstream bedrock sent an invalid event stream: {exc}") from exc
    if pending:
        raise UpstreamError("upstream bedrock event stream ended inside a frame")


def header(message: EventStreamMessage, name: str) -> str:
    value = message.headers.get(name)
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


class StreamTranslator(ChunkTranslator):
    """Feed ConverseStream events one at a time; get back the OpenAI chunks each one makes."""

    def __init__(self, model: str, include_usage: bool) -> None:
        super().__init__(model, include_usage, completion_id())
        self.tools: dict[int, int] = {}  # contentBlockIndex -> tool_calls index
        self.started = False
        self.finished = False

    def feed(self, kind: str, event: dict[str, Any]) -> list[dict[str, Any]]:
        out = [] if self.started or kind == "metadata" else [self.role_chunk()]
        if kind == "contentBlockStart":
            tool = (event.get("start") or {}).get("toolUse")
            if isinstance(tool, dict):
                index = event.get("contentBlockIndex", 0)
                position = self.tools[index] = len(self.tools)
                call = {"index": position, "id": tool.get("toolUseId"), "type": "function",
                        "function": {"name": tool.get("name"), "arguments": ""}}
                out.append(self.chunk({"tool_calls": [call]}))
        elif kind == "contentBlockDelta":
            out.extend(self.block_delta(event.get("contentBlockIndex", 0), event.get("delta") or {}))
        elif kind == "messageStop":
            self.finished = True
            out.append(self.chunk({}, finish_reason(event.get("stopReason")) or "stop"))
        elif kind == "metadata":
            if isinstance(event.get("usage"), dict):
                self.usage = openai_usage(event["usage"])
            out.extend(self.usage_chunk())
        return out  # messageStart (role chunk only), contentBlockStop, later event types

    def role_chunk(self) -> dict[str, Any]:
        self.started = True
        return self.chunk({"role": "assistant", "content": ""})

    def block_delta(self, index: int, delta: dict[str, Any]) -> list[dict[str, Any]]:
        if isinstance(delta.get("text"), str):
            return [self.chunk({"content": delta["text"]})]
        tool = delta.get("toolUse")
        if isinstance(tool, dict):
            if index not in self.tools:  # a delta without its start: open the call here
                self.tools[index] = len(self.tools)
            if tool.get("input"):
                fragment = {"index": self.tools[index], "function": {"arguments": tool["input"]}}
                return [self.chunk({"tool_calls": [fragment]})]
            return []
        reasoning = delta.get("reasoningContent")
        if isinstance(reasoning, dict) and reasoning.get("text"):
            return [self.chunk({"reasoning_content": reasoning["text"]})]
        return []

    def close(self) -> list[dict[str, Any]]:
        """At the end of the byte stream: a stream cut before messageStop is an error."""
        if not self.finished:
            raise UpstreamError("upstream bedrock stream ended before the message was complete")
        return self.usage_chunk()


