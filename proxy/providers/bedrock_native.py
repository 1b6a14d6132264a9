"""Usage of Bedrock Runtime answers that pass through untranslated (the /bedrock surface).

Where each operation says how many tokens it used:

- ``converse``: the JSON body's ``usage`` (``inputTokens``, ``outputTokens``, cache counts);
- ``converse-stream``: the ``usage`` of the ``metadata`` event;
- ``invoke``: the ``X-Amzn-Bedrock-Input-Token-Count`` / ``-Output-Token-Count`` headers, else
  the model's own body (Anthropic ``usage.input_tokens``/``output_tokens``, Titan
  ``inputTextTokenCount``);
- ``invoke-with-response-stream``: ``chunk`` events carry ``{"bytes": <base64 model JSON>}``; the
  last one's JSON holds ``amazon-bedrock-invocationMetrics`` (``inputTokenCount``,
  ``outputTokenCount``).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from botocore.eventstream import EventStreamBuffer, ParserError

from proxy.providers.bedrock_stream import header, openai_usage
from proxy.providers.shapes import token_usage, usage_with_cache


def invoke_usage(headers: dict[str, str], body: bytes) -> dict[str, Any] | None:
    """Usage of an ``invoke`` answer: Bedrock's token-count headers, else the model's own counts."""
    prompt, completion = headers.get("x-amzn-bedrock-input-token-count"), \
        headers.get("x-amzn-bedrock-output-token-count")
    if prompt is not None or completion is not None:
        try:
            return token_usage(int(prompt or 0), int(completion or 0))
        except ValueError:
            pass
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    return model_usage(data) if isinstance(data, dict) else None


def model_usage(data: dict[str, Any]) -> dict[str, Any] | None:
    """Counts in a model's own JSON (invoke answers and invoke stream chunks)."""
    metrics = data.get("amazon-bedrock-invocationMetrics")
    if isinstance(metrics, dict):
        return usage_with_cache(metrics.get("inputTokenCount"), metrics.get("outputTokenCount"),
                                metrics.get("cacheReadInputTokenCount"), metrics.get("cacheWriteInputTokenCount"))
    usage = data.get("usage")
    if isinstance(usage, dict) and ("input_tokens" in usage or "output_tokens" in usage):  # Anthropic
        return usage_with_cache(usage.get("input_tokens"), usage.get("output_tokens"),
                                usage.get("cache_read_input_tokens"), usage.get("cache_creation_input_tokens"))
    if "inputTextTokenCount" in data:  # Titan
        return token_usage(int(data.get("inputTextTokenCount") or 0), 0)
    return None


def converse_usage(body: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None
    usage = data.get("usage") if isinstance(data, dict) else None
    return openai_usage(usage) if isinstance(usage, dict) else None


def native_usage(operation: str, headers: dict[str, str], body: bytes) -> dict[str, Any] | None:
    if operation == "converse":
        return converse_usage(body)
    return invoke_usage(headers, body)


class PassThroughMeter:
    """Reads a Runtime answer (JSON, or event-stream bytes as they pass) and keeps the usage it
    reports; never alters it.

    A stream frame it cannot decode stops the reading (the client, who gets the same bytes, will
    notice); the bytes still pass.
    """

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.buffer: EventStreamBuffer | None = EventStreamBuffer()
        self.usage: dict[str, Any] | None = None

    def answer(self, headers: dict[str, str], body: bytes) -> None:
        self.usage = native_usage(self.operation, headers, body)

    def feed(self, piece: bytes) -> None:
        if self.buffer is None or not piece:
            return
        try:
            self.buffer.add_data(piece)
            for frame in self.buffer:
                if header(frame, ":message-type") == "event":
                    self.event(header(frame, ":event-type"), frame.payload)
        except ParserError:
            self.buffer = None

    def event(self, kind: str, payload: bytes) -> None:
        try:
            data = orjson.loads(payload) if payload else None
        except orjson.JSONDecodeError:
            return
        if not isinstance(data, dict):
            return
        if kind == "metadata" and isinstance(data.get("usage"), dict):  # converse-stream
            self.usage = openai_usage(data["usage"])
        elif kind == "chunk" and isinstance(data.get("bytes"), str):  # invoke-with-response-stream
            try:
                inner = orjson.loads(base64.b64decode(data["bytes"]))
            except (binascii.Error, ValueError):
                return
            found = model_usage(inner) if isinstance(inner, dict) else None
            if found is not None and (inner.get("amazon-bedrock-invocationMetrics") or self.usage is None):
                self.usage = found
