"""Answers for ``mock_response`` deployments (and requests): no upstream, real OpenAI shapes.

A deployment with ``litellm_params.mock_response: "text"`` answers every call with that text,
streaming or not, with usage counted by the same token counter the rest of the proxy uses. It
lets the default config run with no keys and no network, and tests pipelines without a provider.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

from proxy.errors import BadRequest
from proxy.providers.shapes import token_usage


def _ids(kind: str) -> tuple[str, int]:
    prefix = {"chat": "chatcmpl", "completion": "cmpl"}.get(kind, "mock")
    return f"{prefix}-mock-{uuid.uuid4().hex[:24]}", int(time.time())


usage = token_usage


def mock_response(
    kind: str, model: str, text: str, prompt_tokens: int, completion_tokens: int, inputs: int = 1
) -> dict[str, Any]:
    """A complete (non-streaming) answer of the endpoint kind."""
    rid, created = _ids(kind)
    if kind == "chat":
        return {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage(prompt_tokens, completion_tokens),
        }
    if kind == "completion":
        return {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
            "usage": usage(prompt_tokens, completion_tokens),
        }
    if kind == "embedding":
        return {
            "object": "list",
            "model": model,
            "data": [
                {"object": "embedding", "index": i, "embedding": pseudo_embedding(f"{text}:{i}")}
                for i in range(inputs)
            ],
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
    raise BadRequest(f"mock_response cannot answer a {kind} request")


def pseudo_embedding(seed: str, dims: int = 8) -> list[float]:
    """Deterministic unit-ish vector so repeated mock calls compare equal."""
    digest = hashlib.sha256(seed.encode()).digest()
    return [round((b - 128) / 128, 6) for b in digest[:dims]]


def mock_stream(
    kind: str,
    model: str,
    text: str,
    prompt_tokens: int,
    completion_tokens: int,
    include_usage: bool,
) -> Iterator[dict[str, Any]]:
    """The answer as OpenAI stream chunks: role first, one chunk per word, finish, usage."""
    rid, created = _ids(kind)
    words = text.split(" ")
    if kind == "completion":
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            yield {
                "id": rid,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "text": piece, "logprobs": None, "finish_reason": None}],
            }
        yield {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"}],
        }
    elif kind == "chat":
        base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": None}
        yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "logprobs": None, "finish_reason": None}]}
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            yield {**base, "choices": [{"index": 0, "delta": {"content": piece}, "logprobs": None,
                                        "finish_reason": None}]}
        yield {**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]}
        if include_usage:
            yield {**base, "choices": [], "usage": usage(prompt_tokens, completion_tokens)}
        return
    else:
        raise BadRequest(f"streaming is not available for {kind} requests")
    if include_usage:
        yield {"id": rid, "object": "text_completion", "created": created, "model": model,
               "choices": [], "usage": usage(prompt_tokens, completion_tokens)}
