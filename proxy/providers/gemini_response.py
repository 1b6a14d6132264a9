"""Gemini ``generateContent`` answers as OpenAI chat completions, whole or streamed; shared by
the ``gemini/`` and ``vertex_ai/`` adapters (requests: proxy/providers/gemini_format.py).

Response: each candidate becomes a choice (``thought`` parts -> ``reasoning_content``,
``functionCall`` parts -> ``tool_calls``); ``finishReason`` is mapped as LiteLLM maps it
(``FINISH_REASONS``; any tool call makes it ``tool_calls``); ``usageMetadata`` becomes usage, with
``cachedContentTokenCount`` as ``prompt_tokens_details.cached_tokens`` and ``thoughtsTokenCount``
counted as completion (reasoning) tokens. A prompt blocked by ``promptFeedback.blockReason``, or a
candidate stopped for safety before it produced anything, is a ContentPolicyViolation, so
``content_policy_fallbacks`` apply.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from proxy.errors import ContentPolicyViolation, UpstreamError
from proxy.providers.shapes import ChunkTranslator, chat_id

#: Gemini finishReason -> OpenAI finish_reason, as LiteLLM's map_finish_reason has it.
FINISH_REASONS = {
    "STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
    "FINISH_REASON_UNSPECIFIED": "stop", "MALFORMED_FUNCTION_CALL": "stop", "LANGUAGE": "content_filter",
    "OTHER": "content_filter", "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter", "IMAGE_SAFETY": "content_filter", "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "TOO_MANY_TOOL_CALLS": "stop", "MALFORMED_RESPONSE": "stop", "NO_IMAGE": "content_filter",
    "IMAGE_RECITATION": "content_filter", "IMAGE_OTHER": "content_filter", "UNEXPECTED_TOOL_CALL": "stop",
}
#: finishReasons that mean the safety system stopped the answer.
SAFETY_REASONS = frozenset({"SAFETY", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
                            "IMAGE_PROHIBITED_CONTENT"})


def openai_usage(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """``usageMetadata`` -> OpenAI usage (``promptTokenCount`` already includes cached tokens)."""
    if not meta:
        return None
    prompt = int(meta.get("promptTokenCount") or 0) + int(meta.get("toolUsePromptTokenCount") or 0)
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    completion = int(meta.get("candidatesTokenCount") or 0) + thoughts
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": int(meta.get("totalTokenCount") or prompt + completion)}
    cached = int(meta.get("cachedContentTokenCount") or 0)
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
        usage["cache_read_input_tokens"] = cached
    if thoughts:
        usage["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return usage


def finish_reason(reason: str | None, has_calls: bool) -> str | None:
    if reason is None:
        return None
    if has_calls:
        return "tool_calls"
    return FINISH_REASONS.get(reason, "stop")


def check_blocked(data: dict[str, Any], produced: bool = False) -> None:
    """Raise ContentPolicyViolation when the prompt or the (empty) answer was blocked for safety."""
    feedback = data.get("promptFeedback") or {}
    if feedback.get("blockReason") and not data.get("candidates"):
        message = feedback.get("blockReasonMessage") or f"the prompt was blocked: {feedback['blockReason']}"
        raise ContentPolicyViolation(f"gemini safety filter: {message}")
    for cand in data.get("candidates") or ():
        has_parts = bool((cand.get("content") or {}).get("parts"))
        if cand.get("finishReason") in SAFETY_REASONS and not has_parts and not produced:
            raise ContentPolicyViolation(
                f"gemini safety filter: the answer was blocked ({cand['finishReason']})")


def tool_call(call: dict[str, Any], index: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": call.get("id") or f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                           "function": {"name": call.get("name"),
                                        "arguments": orjson.dumps(call.get("args") or {}).decode()}}
    if index is not None:
        out = {"index": index, **out}
    return out


def split_parts(parts: list[dict[str, Any]]) -> tuple[str, str, list[dict[str, Any]]]:
    """(text, reasoning text, function calls) of a candidate's parts."""
    texts, thoughts, calls = [], [], []
    for part in parts:
        if "functionCall" in part:
            calls.append(part["functionCall"])
        elif "text" in part:
            (thoughts if part.get("thought") else texts).append(part["text"])
    return "".join(texts), "".join(thoughts), calls


def to_chat_completion(data: dict[str, Any], model: str) -> dict[str, Any]:
    """A GenerateContentResponse -> an OpenAI chat.completion."""
    if not isinstance(data, dict):
        raise UpstreamError("upstream gemini returned an unexpected body")
    check_blocked(data)
    choices = []
    for i, cand in enumerate(data.get("candidates") or ()):
        text, thoughts, calls = split_parts((cand.get("content") or {}).get("parts") or [])
        message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
        if calls:
            message["tool_calls"] = [tool_call(c) for c in calls]
        if thoughts:
            message["reasoning_content"] = thoughts
        choices.append({"index": cand.get("index", i), "message": message, "logprobs": None,
                        "finish_reason": finish_reason(cand.get("finishReason") or "STOP", bool(calls))})
    out: dict[str, Any] = {"id": data.get("responseId") or chat_id(), "object": "chat.completion",
                           "created": int(time.time()), "model": data.get("modelVersion") or model,
                           "system_fingerprint": None, "choices": choices}
    usage = openai_usage(data.get("usageMetadata"))
    if usage is not None:
        out["usage"] = usage
    return out


class StreamTranslator(ChunkTranslator):
    """``streamGenerateContent?alt=sse`` events -> OpenAI chunks.

    Each event is a whole GenerateContentResponse holding the new parts; function calls arrive
    whole, so each becomes one tool_calls chunk with its complete arguments. ``usageMetadata`` is
    cumulative: the last one seen is the usage.
    """

    def __init__(self, model: str, include_usage: bool) -> None:
        super().__init__(model, include_usage, chat_id())
        self.started = False
        self.calls = 0
        self.finished = False

    def feed(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        check_blocked(data, produced=self.started)
        if data.get("responseId"):
            self.id = self.id if self.started else data["responseId"]
        if data.get("modelVersion") and not self.started:
            self.model = data["modelVersion"]
        usage = openai_usage(data.get("usageMetadata"))
        if usage is not None:
            self.usage = usage
        out: list[dict[str, Any]] = []
        for cand in (data.get("candidates") or ())[:1]:
            text, thoughts, calls = split_parts((cand.get("content") or {}).get("parts") or [])
            if not self.started and (text or thoughts or calls or cand.get("finishReason")):
                self.started = True
                out.append(self.chunk({"role": "assistant", "content": ""}))
            if thoughts:
                out.append(self.chunk({"reasoning_content": thoughts}))
            if text:
                out.append(self.chunk({"content": text}))
            if calls:
                out.append(self.chunk({"tool_calls": [tool_call(c, self.calls + j) for j, c in enumerate(calls)]}))
                self.calls += len(calls)
            if cand.get("finishReason") and not self.finished:
                self.finished = True
                out.append(self.chunk({}, finish_reason(cand["finishReason"], self.calls > 0)))
        return out

    def close(self) -> list[dict[str, Any]]:
        if not self.finished:
            if not self.started:
                raise UpstreamError("upstream gemini stream ended before any answer")
            self.finished = True
            return [self.chunk({}, "tool_calls" if self.calls else "stop"), *self.usage_chunk()]
        return self.usage_chunk()
