"""OpenAI ``chat.completion.chunk``s -> Anthropic Messages stream events, for /v1/messages.

The reverse of ``proxy/providers/anthropic_stream.py``: whatever deployment served the call, the
client of the Anthropic surface receives the event sequence Anthropic documents::

    message_start          the message shell: id, model, empty content, usage
    content_block_start    a text block, or a tool_use block with id, name and input {}
    ping                   once, after the first block opens (where Anthropic sends it)
    content_block_delta    text_delta | input_json_delta (partial_json)
    content_block_stop
    ...                    more blocks, each opened, filled and stopped in turn
    message_delta          stop_reason, stop_sequence, usage (cumulative output_tokens)
    message_stop

each written as ``event: <type>\\ndata: <json>\\n\\n``. An error after the first byte is an
``event: error`` with Anthropic's error body, and the stream ends.

OpenAI sends the usage last (the request asks for it with ``stream_options.include_usage``) and
has no count before the answer, so ``message_start`` carries ``input_tokens: 0`` unless the
first chunk says otherwise, and ``message_delta`` carries the final input and output counts —
the SDKs take both from there (the counts in a ``message_delta`` are cumulative totals).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

from proxy.context import RequestContext
from proxy.errors import ProxyError
from proxy.providers.anthropic_stream import ERROR_STATUS

log = logging.getLogger(__name__)

#: OpenAI finish_reason -> Anthropic stop_reason (the reverse of the outbound adapter's map).
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
#: HTTP status -> Anthropic error type (the outbound adapter's ERROR_STATUS, read backwards).
ERROR_TYPES = {status: kind for kind, status in ERROR_STATUS.items()} | {503: "overloaded_error"}


def error_type(status: int) -> str:
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "api_error" if status >= 500 or status == 408 else "invalid_request_error"


def error_body(err: ProxyError) -> dict[str, Any]:
    """A ProxyError in Anthropic's error shape (the status stays the ProxyError's own)."""
    return {"type": "error", "error": {"type": error_type(err.status), "message": err.message}}


def message_id(upstream_id: Any) -> str:
    if isinstance(upstream_id, str) and upstream_id:
        return upstream_id if upstream_id.startswith("msg_") else "msg_" + upstream_id.removeprefix("chatcmpl-")
    return f"msg_{random.getrandbits(96):024x}"


def stop_reason(finish: str | None, has_tools: bool, matched: Any = None,
                stop_sequences: Iterable[str] | None = None) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for an OpenAI finish_reason.

    OpenAI says ``stop`` both for a natural end and for a stop sequence; it is reported as
    ``stop_sequence`` only when the upstream named the sequence it matched (vLLM and others put
    it in the choice's ``stop_reason``). A ``stop`` that ends in tool calls is ``tool_use``
    (some servers say ``stop`` there), so the client knows to run them.
    """
    reason = STOP_REASONS.get(finish or "stop", "end_turn")
    if reason == "end_turn" and has_tools:
        return "tool_use", None
    if reason == "end_turn" and isinstance(matched, str) and matched in (stop_sequences or ()):
        return "stop_sequence", matched
    return reason, None


def anthropic_usage(usage: dict[str, Any] | None) -> dict[str, int]:
    """OpenAI usage -> Anthropic's, where ``input_tokens`` excludes cache reads and writes."""
    if not isinstance(usage, dict):
        usage = {}
    prompt = int(usage.get("prompt_tokens") or 0)
    cached = usage.get("cache_read_input_tokens")
    if cached is None:
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    cached, written = int(cached or 0), int(usage.get("cache_creation_input_tokens") or 0)
    return {"input_tokens": max(0, prompt - cached - written),
            "output_tokens": int(usage.get("completion_tokens") or 0),
            "cache_creation_input_tokens": written, "cache_read_input_tokens": cached}


class StreamTranslator:
    """Feed OpenAI chunks one at a time; get back the Anthropic events each one makes."""

    def __init__(self, model: str, stop_sequences: Iterable[str] | None = None) -> None:
        self.model = model
        self.stop_sequences = list(stop_sequences or ())
        self.id: str | None = None
        self.started = False
        self.pinged = False
        self.blocks = 0  # content blocks opened so far
        self.open: tuple[str, Any] | None = None  # ("text", None) | ("tool", openai index)
        self.tools: dict[int, int] = {}  # OpenAI tool_calls index -> content block index
        self.finish: str | None = None
        self.matched: Any = None
        self.usage: dict[str, Any] | None = None
        self.done = False

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if not self.started:
            events.append(self.message_start(chunk))
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # n > 1 has no Anthropic form; the first answer is the message
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("refusal")
            if isinstance(text, str) and text:
                if self.open is None or self.open[0] != "text":
                    self.open_block(events, ("text", None), {"type": "text", "text": ""})
                events.append(self.delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or ():
                self.tool_delta(events, call)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
                self.matched = choice.get("stop_reason", self.matched)
        return events

    def close(self, usage: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The end of the stream: stop the open block, then message_delta and message_stop.

        ``usage`` (the proxy's own count) is used when no chunk carried the upstream's.
        """
        events: list[dict[str, Any]] = []
        if not self.started:
            events.append(self.message_start({}))
        self.stop_block(events)
        if not self.pinged:
            events.append({"type": "ping"})
        reason, sequence = stop_reason(self.finish, bool(self.tools), self.matched, self.stop_sequences)
        counts = anthropic_usage(self.usage or usage)
        events.append({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence},
                       "usage": counts})
        events.append({"type": "message_stop"})
        self.done = True
        return events

    def message_start(self, chunk: dict[str, Any]) -> dict[str, Any]:
        self.started = True
        self.id = message_id(chunk.get("id"))
        usage = anthropic_usage(chunk.get("usage"))
        usage["output_tokens"] = 0
        return {"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": usage}}

    def open_block(self, events: list[dict[str, Any]], kind: tuple[str, Any], block: dict[str, Any]) -> None:
        self.stop_block(events)
        self.open = kind
        events.append({"type": "content_block_start", "index": self.blocks, "content_block": block})
        if not self.pinged:
            self.pinged = True
            events.append({"type": "ping"})

    def stop_block(self, events: list[dict[str, Any]]) -> None:
        if self.open is not None:
            events.append({"type": "content_block_stop", "index": self.blocks})
            self.open = None
            self.blocks += 1

    def delta(self, delta: dict[str, Any], index: int | None = None) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": self.blocks if index is None else index, "delta": delta}

    def tool_delta(self, events: list[dict[str, Any]], call: dict[str, Any]) -> None:
        position = call.get("index", 0)
        fn = call.get("function") or {}
        if position not in self.tools:
            block = {"type": "tool_use", "id": call.get("id") or f"toolu_{random.getrandbits(96):024x}",
                     "name": fn.get("name") or "", "input": {}}
            self.open_block(events, ("tool", position), block)
            self.tools[position] = self.blocks
        arguments = fn.get("arguments")
        if arguments:
            index = self.tools[position]
            events.append(self.delta({"type": "input_json_delta", "partial_json": arguments}, index))


def as_chunks(response: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A whole chat.completion as the chunks a stream of it would have been (for ``stream``
    requests that a deployment answered in one piece)."""
    base = {"id": response.get("id"), "object": "chat.completion.chunk", "model": response.get("model")}
    for choice in response.get("choices") or ():
        message = choice.get("message") or {}
        delta: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        yield {**base, "choices": [{"index": choice.get("index", 0), "delta": delta,
                                    "finish_reason": choice.get("finish_reason")}]}
    if response.get("usage"):
        yield {**base, "choices": [], "usage": response["usage"]}


def encode(events: list[dict[str, Any]]) -> bytes:
    dumps = orjson.dumps
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + dumps(e) + b"\n\n" for e in events)


class EventStream:
    """The WSGI body of an Anthropic stream: events leave as their chunks arrive.

    ``ctx.finish()`` runs exactly once: when the stream ends, fails, or the server closes the
    body because the client went away — also if that happens before the first event.
    """

    def __init__(self, ctx: RequestContext, chunks: Iterator[dict[str, Any]], translator: StreamTranslator) -> None:
        self.ctx = ctx
        self.chunks = chunks
        self.translator = translator
        self._events = self._generate()
        self._started = False
        self._finished = False

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> bytes:
        self._started = True
        return next(self._events)

    def close(self) -> None:
        if self._started:
            self._events.close()  # GeneratorExit at the paused yield; its finally finishes
        else:
            self._gone()
        self._finish()

    def _generate(self) -> Iterator[bytes]:
        ctx, translator = self.ctx, self.translator
        try:
            for chunk in self.chunks:
                events = translator.feed(chunk)
                if events:
                    yield encode(events)
            yield encode(translator.close(ctx.usage))
        except ProxyError as err:
            ctx.status, ctx.error = err.status, err
            yield encode([error_body(err)])
        except GeneratorExit:
            if not translator.done:
                self._gone()
            raise
        except Exception:
            log.exception("stream %s failed", ctx.request_id)
            err = ProxyError("internal error while streaming")
            ctx.status, ctx.error = err.status, err
            yield encode([error_body(err)])
        finally:
            self._finish()

    def _gone(self) -> None:
        self.ctx.status = 499  # the client went away; closing the chunks closes the upstream
        close: Callable[[], None] | None = getattr(self.chunks, "close", None)
        if close:
            close()

    def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            self.ctx.finish()
