"""Turning results into HTTP responses — JSON, server-sent events and errors — in one place.

A ``Reply`` is the framework-free form (status, headers, body, what to run when sent); the
OpenAI endpoints hand it straight to WSGI, the Flask views wrap it in a Flask Response.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson
from flask import Response

from proxy.context import RequestContext
from proxy.errors import ProxyError

log = logging.getLogger(__name__)

JSON = "application/json"
SSE_HEADERS = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")]
STATUS_LINES = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}


@dataclass(slots=True)
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes | Iterator[bytes]
    on_close: Callable[[], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def wsgi(self, start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Start the response and return the WSGI body (closing it runs ``on_close``)."""
        start_response(STATUS_LINES.get(self.status, str(self.status)), self.headers)
        if isinstance(self.body, bytes):
            return ClosingBody(self.body, self.on_close)
        return self.body  # a generator: its own finally does the closing work

    def flask(self) -> Response:
        response = Response(self.body, status=self.status, headers=self.headers)
        if self.on_close is not None:
            response.call_on_close(self.on_close)
        return response


class ClosingBody(list):
    """A one-chunk WSGI body whose close() (called by the server once sent) runs a hook."""

    __slots__ = ("_on_close",)

    def __init__(self, body: bytes, on_close: Callable[[], None] | None) -> None:
        super().__init__((body,))
        self._on_close = on_close

    def close(self) -> None:
        if self._on_close is not None:
            hook, self._on_close = self._on_close, None
            hook()


def json_reply(data: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Reply:
    body = orjson.dumps(data)
    return Reply(status, [("Content-Type", JSON), ("Content-Length", str(len(body))), *(headers or ())], body)


def error_reply(err: ProxyError, headers: list[tuple[str, str]] | None = None) -> Reply:
    """The only place an error becomes a response: OpenAI's error shape, the error's status."""
    return json_reply(err.body(), err.status, [*err.response_headers().items(), *(headers or ())])


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return json_reply(data, status, list((headers or {}).items())).flask()


def error_response(err: ProxyError, headers: dict[str, str] | None = None) -> Response:
    return error_reply(err, list((headers or {}).items())).flask()


def context_headers(ctx: RequestContext) -> list[tuple[str, str]]:
    """The headers every LLM answer carries (errors and streams too), as LiteLLM names them.

    Each is sent only when it has a value: the deployment's when one was chosen, the retry
    figures when the ``retry_fallback`` stage ran. Stages add theirs to ``ctx.response_headers``
    (cost and key spend from ``auth`` / ``callbacks``, rate limits from the upstream or the key).
    For a stream they are what is known when its first chunk is in.
    """
    total = ctx.elapsed
    upstream = ctx.timings.get("upstream", 0.0)
    headers = [
        ("Server-Timing", ctx.server_timing(total)),
        ("x-litellm-call-id", ctx.request_id),
        ("x-litellm-response-duration-ms", f"{total * 1000:.3f}"),
        ("x-litellm-overhead-duration-ms", f"{max(0.0, total - upstream) * 1000:.3f}"),
    ]
    dep = ctx.deployment
    if dep is not None:
        headers.append(("x-litellm-model-id", dep.id))
        headers.append(("x-litellm-model-group", dep.model_name))
        api_base = dep.shown_api_base
        if api_base:
            headers.append(("x-litellm-model-api-base", api_base))
    if ctx.max_retries is not None:
        headers.append(("x-litellm-attempted-retries", str(ctx.retries)))
        headers.append(("x-litellm-max-retries", str(ctx.max_retries)))
        headers.append(("x-litellm-attempted-fallbacks", str(ctx.fallbacks)))
    if ctx.response_headers:
        headers.extend(ctx.response_headers.items())
    return headers


def sse_events(ctx: RequestContext, chunks: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    """Each chunk as a ``data:`` event the moment it arrives, then ``[DONE]``.

    An error after the first byte cannot change the status line any more; it is sent as an
    error event (the shape OpenAI uses) and the stream ends.
    """
    dumps = orjson.dumps
    try:
        for chunk in chunks:
            yield b"data: " + dumps(chunk) + b"\n\n"
        yield b"data: [DONE]\n\n"
    except ProxyError as err:
        ctx.status, ctx.error = err.status, err
        yield b"data: " + dumps(err.body()) + b"\n\n"
    except GeneratorExit:
        ctx.status = 499  # the client went away; the upstream is closed by the chunk iterator
        close = getattr(chunks, "close", None)
        if close:
            close()
        raise
    except Exception:
        log.exception("stream %s failed", ctx.request_id)
        err = ProxyError("internal error while streaming")
        ctx.status, ctx.error = err.status, err
        yield b"data: " + dumps(err.body()) + b"\n\n"
    finally:
        ctx.finish()


def stream_reply(ctx: RequestContext, chunks: Iterator[dict[str, Any]]) -> Reply:
    return Reply(200, [*SSE_HEADERS, *context_headers(ctx)], sse_events(ctx, chunks))


def relayed_bytes(ctx: RequestContext, pieces: Iterator[bytes]) -> Iterator[bytes]:
    """An upstream's own byte stream (the pass-through surfaces), sent as it arrives; the call is
    accounted for when it is all sent or the client leaves."""
    try:
        yield from pieces
    except GeneratorExit:
        ctx.status = 499  # the client went away; closing the pieces closes the upstream
        raise
    except Exception:
        log.exception("stream %s failed", ctx.request_id)
        ctx.status = 500
    finally:
        close = getattr(pieces, "close", None)
        if close:
            close()
        ctx.finish()
