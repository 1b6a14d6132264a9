"""Checks of our own for the schemathesis run (loaded through ``SCHEMATHESIS_HOOKS``).

schemathesis' own checks see statuses and schemas; these see what a client must never get from
the proxy: a Python traceback in the body, or an error that is not in its surface's shape.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis

ANTHROPIC = ("/v1/messages", "/anthropic/")


def header(response: schemathesis.Response, name: str) -> str:
    for key, values in response.headers.items():
        if key.lower() == name and values:
            return values[0]
    return ""


@schemathesis.check
def no_traceback(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> bool | None:
    """No answer carries a Python traceback or a source file line."""
    text = response.content.decode("utf-8", "replace")
    if "Traceback (most recent call last)" in text or 'File "/' in text:
        raise AssertionError(f"traceback in the answer: {text[:300]}")
    return None


@schemathesis.check
def errors_in_their_shape(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> bool | None:
    """Every 4xx/5xx JSON answer is an error in OpenAI's shape (Anthropic's on /v1/messages)."""
    if response.status_code < 400 or not header(response, "content-type").startswith("application/json"):
        return None
    body = json.loads(response.content)
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        ok = False
    elif case.operation.path.startswith(ANTHROPIC):
        ok = body.get("type") == "error" and {"type", "message"} <= set(error)
    else:
        ok = set(body) == {"error"} and set(error) == {"message", "type", "param", "code"}
    if not ok:
        raise AssertionError(f"{response.status_code} answer not in the error shape: {response.content[:300]!r}")
    return None
