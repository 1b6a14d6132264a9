"""The standard log record: one dict per call, built once and given to every exporter.

Field names follow LiteLLM's ``StandardLoggingPayload`` (``id``, ``call_type``, ``model_group``,
``response_cost``, ``startTime`` ...), so a receiver written for LiteLLM's generic logger reads it
unchanged. Built when the response has been fully sent: streams carry the usage they reported
and the text they streamed.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.context import RequestContext

#: What stands in for messages and answers when message logging is off (LiteLLM's placeholder).
REDACTED = "redacted-by-litellm"
#: Request metadata keys exporters read (as LiteLLM documents them for Langfuse).
TRACE_KEYS = ("generation_name", "generation_id", "trace_id", "trace_user_id", "session_id", "tags")
#: Body fields that are the call's input or steering, not model parameters.
NOT_PARAMS = frozenset({"model", "messages", "prompt", "input", "stream", "user", "metadata"})
CALL_TYPES = {"chat": "completion", "completion": "text_completion", "embedding": "embedding",
              "moderation": "moderation"}


def messages_of(ctx: RequestContext) -> Any:
    body = ctx.body
    if ctx.kind == "chat":
        return body.get("messages")
    if ctx.kind == "completion":
        return body.get("prompt")
    return body.get("input")


def response_of(ctx: RequestContext) -> Any:
    """The answer as the client got it; a stream as one assembled chat completion (a text
    completion for ``/completions``), as LiteLLM logs streams."""
    if isinstance(ctx.response, dict):
        return ctx.response
    if ctx.stream and ctx.error is None:
        text = ctx.extra.get("stream_text", "")
        if ctx.kind == "completion":
            return {"object": "text_completion", "model": ctx.model,
                    "choices": [{"index": 0, "text": text}], "usage": ctx.usage}
        return {"object": "chat.completion", "model": ctx.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
                "usage": ctx.usage}
    return None


def build_record(ctx: RequestContext, *, redact: bool = False, cost: float | None = None,
                 pid: int | None = None) -> dict[str, Any]:
    """Everything an exporter needs about one finished call (``pid``: the worker's, if known)."""
    dep = ctx.deployment
    usage = ctx.usage or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    end = ctx.wall_started + ctx.elapsed
    first = ctx.extra.get("first_token_at")  # perf_counter when a stream's first chunk arrived
    ttft = (first - ctx.started) if first is not None else None
    meta = ctx.metadata
    caller = ctx.caller
    failed = ctx.error is not None or ctx.status >= 400
    redact = redact or bool(getattr(ctx, "redact_messages", False))
    end_user = ctx.body.get("user")
    tags = meta.get("tags")
    record: dict[str, Any] = {
        "id": ctx.request_id,
        "trace_id": str(meta.get("trace_id") or ctx.request_id),
        "call_type": CALL_TYPES.get(ctx.kind, ctx.kind),
        "stream": ctx.stream,
        "status": "failure" if failed else "success",
        "status_code": ctx.status,
        "model": dep.upstream_model if dep else ctx.model,
        "model_group": dep.model_name if dep else ctx.model,
        "model_id": dep.id if dep else None,
        "custom_llm_provider": dep.provider if dep else None,
        "api_base": getattr(dep, "api_base", None) if dep else None,
        "startTime": ctx.wall_started,
        "endTime": end,
        "completionStartTime": ctx.wall_started + ttft if ttft is not None else end,
        "response_time": end - ctx.wall_started,
        "time_to_first_token": ttft,
        "upstream_latency": ctx.timings.get("upstream"),
        "timings": dict(ctx.timings),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
        "response_cost": cost if cost is not None else ctx.extra.get("response_cost"),
        "messages": REDACTED if redact else messages_of(ctx),
        "response": REDACTED if redact else response_of(ctx),
        "model_parameters": {k: v for k, v in ctx.body.items() if k not in NOT_PARAMS},
        "end_user": end_user if isinstance(end_user, str) else None,
        "request_tags": tags if isinstance(tags, list) else [],
        "metadata": {
            "user_api_key_hash": caller.get("token"),
            "user_api_key_alias": caller.get("key_alias"),
            "user_api_key_team_id": caller.get("team_id"),
            "user_api_key_user_id": caller.get("user_id"),
            "requester_metadata": meta,
        },
        "attempts": len(ctx.attempts),
        "error_str": None,
        "error_information": None,
        "pid": pid if pid is not None else os.getpid(),
    }
    if meta:
        record_meta = record["metadata"]
        for k in TRACE_KEYS:
            if k in meta:
                record_meta[k] = meta[k]
    if ctx.error is not None:
        err = ctx.error
        record["error_str"] = err.message[:2000]
        record["error_information"] = {"error_code": str(err.status), "error_class": type(err).__name__,
                                       "error_message": err.message[:2000]}
    elif failed:
        record["error_information"] = {"error_code": str(ctx.status), "error_class": "ProxyError",
                                       "error_message": f"status {ctx.status}"}
    return record
