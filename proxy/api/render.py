"""Turning results into HTTP responses: JSON, server-sent events and errors, in one place."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import orjson
from flask import Response

from proxy.context import RequestContext
from proxy.errors import ProxyError

log = logging.getLogger(__name__)

JSON = "application/json"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status=status, mimetype=JSON, headers=headers)


def error_response(err: ProxyError, headers: dict[str, str] | None = None) -> Response:
    """The only place an error becomes a response: OpenAI's error shape, the error's status."""
    out = err.response_headers()
    if headers:
        out.update(headers)
    return Response(orjson.dumps(err.body()), status=err.status, mimetype=JSON, headers=out)


def context_headers(ctx: RequestContext) -> dict[str, str]:
    headers = {"Server-Timing": ctx.server_timing(), "x-litellm-call-id": ctx.request_id}
    dep = ctx.deployment
    if dep is not None:
        headers["x-litellm-model-id"] = dep.id
        headers["x-litellm-model-group"] = dep.model_name
    headers.update(ctx.response_headers)
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


def stream_response(ctx: RequestContext, chunks: Iterator[dict[str, Any]]) -> Response:
    headers = {**SSE_HEADERS, **context_headers(ctx)}
    return Response(sse_events(ctx, chunks), status=200, mimetype="text/event-stream", headers=headers)
