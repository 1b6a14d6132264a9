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


def messages_of(kind: str, body: dict[str, Any]) -> Any:
    if kind == "chat":
        return body.get("messages")
    if kind == "completion":
        return body.get("prompt")
    return body.get("input")


def response_of(kind: str, model: str, stream: bool, failed: bool, response: Any, usage: Any,
                extra: dict[str, Any]) -> Any:
    """The answer as the client got it; a stream as one assembled chat completion (a text
    completion for ``/completions``), as LiteLLM logs streams."""
    if isinstance(response, dict):
        return response
    if stream and not failed:
        text = extra.get("stream_text", "")
        if kind == "completion":
            return {"object": "text_completion", "model": model,
                    "choices": [{"index": 0, "text": text}], "usage": usage}
        return {"object": "chat.completion", "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
                "usage": usage}
    return None


#: what ``capture`` takes from a finished call, in order
Call = tuple[Any, ...]


def capture(ctx: RequestContext) -> Call:
    """What a record is made of, taken as the call ends: references, not copies (the call is
    over, nothing changes them), and its duration, which must be read now.

    The record itself is built later by ``record_of``, in the observer's batch: built there,
    one after another, the records cost half the CPU they cost built one per call between
    requests, where none of the code or data they touch is in the CPU's caches (measured in the
    benchmark's worker: 8.5 µs a call). A tuple of references is what the call end can afford.
    """
    return (ctx.request_id, ctx.kind, ctx.stream, ctx.status, ctx.error, ctx.deployment, ctx.model,
            ctx.wall_started, ctx.elapsed, ctx.started, ctx.extra, ctx.usage, ctx.timings, ctx.body,
            ctx.metadata, ctx.caller, ctx.redact_messages, ctx.response, len(ctx.attempts))


def build_record(ctx: RequestContext, *, redact: bool = False, cost: float | None = None,
                 pid: int | None = None) -> dict[str, Any]:
    """Everything an exporter needs about one finished call (``pid``: the worker's, if known)."""
    return record_of(capture(ctx), redact=redact, cost=cost, pid=pid)


def record_of(call: Call, *, redact: bool = False, cost: float | None = None,
              pid: int | None = None) -> dict[str, Any]:
    """The standard log record of a call ``capture`` took.

    Written for the observer's batch loop, where it runs for every call: each branch reads what
    it needs once.
    """
    (request_id, kind, stream, status, error, dep, model, wall_started, elapsed, started, extra, usage,
     timings, body, meta, caller, redact_messages, response, attempts) = call
    if usage:
        prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
        if prompt.__class__ is not int or completion.__class__ is not int:
            prompt, completion = int(prompt), int(completion)
        total = usage.get("total_tokens")
        total = (total if total.__class__ is int else int(total)) if total else prompt + completion
    else:
        prompt = completion = total = 0
    if dep is not None:
        upstream_model, group, model_id, provider = dep.upstream_model, dep.model_name, dep.id, dep.provider
        api_base = getattr(dep, "api_base", None)
    else:
        upstream_model = group = model
        model_id = provider = api_base = None
    end = wall_started + elapsed
    first = extra.get("first_token_at")  # perf_counter when a stream's first chunk arrived
    ttft = (first - started) if first is not None else None
    failed = error is not None or status >= 400
    if redact or redact_messages:
        messages = answer = REDACTED
    else:
        messages = messages_of(kind, body)
        answer = response_of(kind, model, stream, error is not None, response, usage, extra)
    end_user = body.get("user")
    if meta:
        tags, trace_id = meta.get("tags"), meta.get("trace_id")
        trace_id = str(trace_id) if trace_id else request_id
    else:
        tags, trace_id = None, request_id
    record: dict[str, Any] = {
        "id": request_id,
        "trace_id": trace_id,
        "call_type": CALL_TYPES.get(kind, kind),
        "stream": stream,
        "status": "failure" if failed else "success",
        "status_code": status,
        "model": upstream_model,
        "model_group": group,
        "model_id": model_id,
        "custom_llm_provider": provider,
        "api_base": api_base,
        "startTime": wall_started,
        "endTime": end,
        "completionStartTime": wall_started + ttft if ttft is not None else end,
        "response_time": elapsed,
        "time_to_first_token": ttft,
        "upstream_latency": timings.get("upstream"),
        "timings": timings,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
        "response_cost": cost if cost is not None else extra.get("response_cost"),
        "messages": messages,
        "response": answer,
        "model_parameters": {k: v for k, v in body.items() if k not in NOT_PARAMS},
        "end_user": end_user if end_user.__class__ is str else None,
        "request_tags": tags if tags.__class__ is list else [],
        "metadata": {
            "user_api_key_hash": caller.get("token"),
            "user_api_key_alias": caller.get("key_alias"),
            "user_api_key_team_id": caller.get("team_id"),
            "user_api_key_user_id": caller.get("user_id"),
            "requester_metadata": meta,
        },
        "attempts": attempts,
        "error_str": None,
        "error_information": None,
        "pid": pid if pid is not None else os.getpid(),
    }
    if meta:
        record_meta = record["metadata"]
        for k in TRACE_KEYS:
            if k in meta:
                record_meta[k] = meta[k]
    if error is not None:
        record["error_str"] = error.message[:2000]
        record["error_information"] = {"error_code": str(error.status), "error_class": type(error).__name__,
                                       "error_message": error.message[:2000]}
    elif failed:
        record["error_information"] = {"error_code": str(status), "error_class": "ProxyError",
                                       "error_message": f"status {status}"}
    return record
