"""Builders of OpenAI chat shapes (answers, stream chunks, usage) for translating adapters.

Adapters of APIs that are not OpenAI's (Ollama, Hugging Face TGI, custom endpoints) build their
answers with these, so every one of them hands the proxy the same shapes.
"""

from __future__ import annotations

import base64
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from proxy.errors import BadRequest

if TYPE_CHECKING:
    from proxy.context import RequestContext


class ChunkTranslator:
    """Base of the stream translators (Anthropic, Bedrock events -> OpenAI chunks): one id, time
    and model for every chunk, and the usage chunk sent once, only when the client asked."""

    def __init__(self, model: str, include_usage: bool, chunk_id: str | None = None) -> None:
        self.id = chunk_id
        self.model = model
        self.created = int(time.time())
        self.include_usage = include_usage
        self.usage: dict[str, Any] | None = None
        self._usage_sent = False

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def usage_chunk(self) -> list[dict[str, Any]]:
        if not self.include_usage or self._usage_sent or self.usage is None:
            return []
        self._usage_sent = True
        return [{"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                 "model": self.model, "system_fingerprint": None, "choices": [], "usage": self.usage}]


def alternating_turns(
    messages: list[dict[str, Any]],
    provider: str,
    system_blocks: Callable[[Any], list[dict[str, Any]]],
    user_blocks: Callable[[Any], list[dict[str, Any]]],
    assistant_blocks: Callable[[dict[str, Any]], list[dict[str, Any]]],
    tool_result: Callable[[dict[str, Any]], dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """OpenAI messages -> (system blocks, user/assistant turns), as block-based APIs (Anthropic,
    Bedrock Converse) want them: tool results are user turns, and consecutive turns of one role
    are merged, since those APIs require the roles to alternate."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(system_blocks(message.get("content")))
            continue
        if role == "tool":
            role, blocks = "user", [tool_result(message)]
        elif role == "assistant":
            blocks = assistant_blocks(message)
        elif role == "user":
            blocks = user_blocks(message.get("content"))
        else:
            raise BadRequest(f"{provider} does not accept messages with role {role!r}", param="messages")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def chat_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def text_of(content: Any) -> str:
    """The text of a message content: a string, or the text parts of a content-part list."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def include_usage(body: dict[str, Any]) -> bool:
    """Whether the client asked for a usage chunk at the end of its stream."""
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def usage_with_cache(input_tokens: Any, output_tokens: Any, cached: Any = 0, written: Any = 0) -> dict[str, Any]:
    """OpenAI usage from a provider that counts cache reads and writes apart from the input:
    they are prompt tokens too, and are also reported on their own."""
    cached, written = int(cached or 0), int(written or 0)
    prompt = int(input_tokens or 0) + cached + written
    completion = int(output_tokens or 0)
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": prompt + completion}
    if cached or written:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
        out["cache_read_input_tokens"] = cached
        out["cache_creation_input_tokens"] = written
    return out


def token_usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_response(
    model: str, message: dict[str, Any], finish_reason: str, usage: dict[str, int] | None = None
) -> dict[str, Any]:
    """A complete ``chat.completion`` with one choice; ``usage`` is left out when unknown."""
    out: dict[str, Any] = {
        "id": chat_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "logprobs": None,
                     "finish_reason": finish_reason}],
    }
    if usage is not None:
        out["usage"] = usage
    return out


class ChatChunks:
    """Builds the chunks of one streamed chat answer: one id, time and model throughout."""

    def __init__(self, ctx: RequestContext, model: str) -> None:
        self.ctx = ctx
        self.base = {"id": chat_id(), "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": model, "system_fingerprint": None}

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {**self.base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": finish_reason}]}

    def role(self) -> dict[str, Any]:
        """The opening chunk, as OpenAI sends it: the role and empty content."""
        return self.chunk({"role": "assistant", "content": ""})

    def finish(self, finish_reason: str, usage: dict[str, int] | None) -> Iterator[dict[str, Any]]:
        """The closing chunk, then the usage chunk if the client asked for one.

        Usage the client did not ask for still reaches accounting, through ``ctx.usage``.
        """
        yield self.chunk({}, finish_reason)
        if usage is None:
            return
        if include_usage(self.ctx.body):
            yield {**self.base, "choices": [], "usage": usage}
        else:
            self.ctx.usage = usage


def embedding_response(ctx: RequestContext, model: str, vectors: list[Any],
                       prompt_tokens: int | None) -> dict[str, Any]:
    """An OpenAI embedding list; ``encoding_format: base64`` packs each vector as little-endian
    float32, as OpenAI does. ``usage`` is left out when the provider gave no count."""
    b64 = ctx.body.get("encoding_format") == "base64"
    data = [{"object": "embedding", "index": i,
             "embedding": base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() if b64 else v}
            for i, v in enumerate(vectors)]
    out: dict[str, Any] = {"object": "list", "data": data, "model": model}
    if prompt_tokens is not None:
        out["usage"] = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return out


def text_inputs(given: Any, provider: str) -> list[str]:
    """An embedding request's ``input`` as a list of strings (token arrays are refused by name)."""
    if isinstance(given, str):
        return [given]
    if isinstance(given, list) and given and all(isinstance(x, str) for x in given):
        return given
    raise BadRequest(f"{provider} embeddings take text input (a string or a non-empty list of strings)",
                     param="input")
