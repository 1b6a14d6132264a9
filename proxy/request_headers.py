"""LiteLLM's request headers that steer one call, read once where the request context is built.

| header | effect |
|---|---|
| ``x-litellm-timeout`` | seconds for the upstream call (overrides the body's ``timeout``) |
| ``x-litellm-stream-timeout`` | seconds to wait for each streamed chunk, the first one included |
| ``x-litellm-num-retries`` | retries for this call (overrides ``num_retries``) |
| ``x-litellm-tags`` | comma-separated tags: on ``ctx.tags`` for routing, in the spend record's ``metadata.tags`` |
| ``x-litellm-enable-message-redaction`` | ``ctx.redact_messages``: log the call without its messages |
| ``x-litellm-customer-id`` / ``x-litellm-end-user-id`` | the end user (``ctx.end_user``), as the body's ``user`` |
| ``x-litellm-spend-logs-metadata`` | a JSON object merged into the spend record's ``metadata.spend_logs_metadata`` |

A request without any of them pays eight dictionary look-ups. A bad value is a 400 naming the
header, never a silent default.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from proxy.errors import BadRequest

if TYPE_CHECKING:
    from proxy.context import RequestContext

TRUE = frozenset({"true", "1", "yes", "on"})
FALSE = frozenset({"false", "0", "no", "off"})


def bad(name: str, message: str, value: str) -> BadRequest:
    shown = value if len(value) <= 80 else value[:77] + "..."
    return BadRequest(f"Invalid {name} header: {message}, got {shown!r}", param=name)


def seconds(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise bad(name, "must be a number of seconds", value) from None
    if not math.isfinite(number) or number <= 0:
        raise bad(name, "must be a number of seconds above 0", value)
    return number


def count(name: str, value: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise bad(name, "must be a whole number", value) from None
    if number < 0:
        raise bad(name, "must not be negative", value)
    return number


def flag(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise bad(name, "must be true or false", value)


def tag_list(name: str, value: str) -> list[str]:
    tags = [t.strip() for t in value.split(",")]
    if not any(tags):
        raise bad(name, "must be a comma-separated list of tags", value)
    return [t for t in tags if t]


def identifier(name: str, value: str) -> str:
    text = value.strip()
    if not text:
        raise bad(name, "must not be empty", value)
    return text


def json_object(name: str, value: str) -> dict[str, Any]:
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise bad(name, "must be a JSON object", value) from None
    if not isinstance(data, dict):
        raise bad(name, "must be a JSON object", value)
    return data


#: header name -> how its value is read; order matters for the two end-user headers (first wins).
PARSERS: dict[str, Callable[[str, str], Any]] = {
    "x-litellm-timeout": seconds,
    "x-litellm-stream-timeout": seconds,
    "x-litellm-num-retries": count,
    "x-litellm-tags": tag_list,
    "x-litellm-enable-message-redaction": flag,
    "x-litellm-customer-id": identifier,
    "x-litellm-end-user-id": identifier,
    "x-litellm-spend-logs-metadata": json_object,
}
#: (header name, WSGI environ key): the environ is read directly, skipping header-object lookups.
ENVIRON_KEYS = tuple((name, "HTTP_" + name.upper().replace("-", "_")) for name in PARSERS)


def parse(headers: Any) -> dict[str, Any] | None:
    """The steering headers present, parsed; None when there are none. Raises BadRequest."""
    environ = getattr(headers, "environ", None)
    found: dict[str, str] | None = None
    if isinstance(environ, dict):
        for name, key in ENVIRON_KEYS:
            value = environ.get(key)
            if value is not None:
                if found is None:
                    found = {}
                found[name] = value
    elif headers:
        for name, _ in ENVIRON_KEYS:
            value = headers.get(name)
            if value is not None:
                if found is None:
                    found = {}
                found[name] = value
    if found is None:
        return None
    return {name: PARSERS[name](name, value) for name, value in found.items()}


def apply(ctx: RequestContext, parsed: dict[str, Any]) -> None:
    """Put parsed steering headers on the context; a header outranks the same setting in the body."""
    get = parsed.get
    if "x-litellm-timeout" in parsed:
        ctx.extra["timeout"] = parsed["x-litellm-timeout"]
    if "x-litellm-stream-timeout" in parsed:
        ctx.extra["stream_timeout"] = parsed["x-litellm-stream-timeout"]
    if "x-litellm-num-retries" in parsed:
        ctx.extra["num_retries"] = parsed["x-litellm-num-retries"]
    tags = get("x-litellm-tags")
    if tags is not None:
        merged = list(ctx.tags or ())
        for tag in tags:
            if tag not in merged:
                merged.append(tag)
        ctx.tags = ctx.metadata["tags"] = merged
    if get("x-litellm-enable-message-redaction"):
        ctx.redact_messages = True
    user = get("x-litellm-customer-id") or get("x-litellm-end-user-id")
    if user is not None:
        ctx.end_user = user
    extra = get("x-litellm-spend-logs-metadata")
    if extra is not None:
        current = ctx.metadata.get("spend_logs_metadata")
        ctx.metadata["spend_logs_metadata"] = {**current, **extra} if isinstance(current, dict) else extra
