"""A local Anthropic Messages API upstream for end-to-end tests.

It serves ``POST /v1/messages`` (also ``/messages``) in Anthropic's wire format, JSON and SSE,
answers deterministically, fails on demand per request, and records what it received. It runs
in its own process (``python tests/mock_upstream/anthropic_server.py --port 8901``);
``tests.mock_upstream.anthropic.MockAnthropic`` starts and drives that process. The request log,
``/__mock__/*`` admin endpoints, the ``--fail-status``/``--delay`` options and the per-request
failure controls work exactly as in the OpenAI mock (see README.md); what differs:

- **Replies.** Text answers ``"echo: <text of the last user turn>"`` (its text blocks, and the
  content of its ``tool_result`` blocks). Tokens are words: ``input_tokens`` counts the words of
  ``system`` and every text and tool_result, ``output_tokens`` the words of the reply.
  ``max_tokens`` cuts the reply to that many words (``stop_reason: max_tokens``); a reply
  containing one of ``stop_sequences`` ends before it (``stop_reason: stop_sequence``).
- **Tool use.** With ``tools`` and a ``tool_choice`` other than ``none``, the reply is one
  ``tool_use`` block for the first tool (or the one ``tool_choice`` names), its input holding
  every required property filled with a placeholder; ``stop_reason: tool_use``. After a
  ``tool_result`` with ``tool_choice`` ``auto`` (or none given), the reply is text.
- **Streaming** sends the real event sequence: ``message_start``, ``content_block_start``,
  ``ping``, one ``content_block_delta`` per word (``text_delta``) or per 8 characters of tool
  input (``input_json_delta``, the first one empty as Anthropic sends it),
  ``content_block_stop``, ``message_delta`` (stop reason, output tokens), ``message_stop``.
- **Checks** as Anthropic does them: the key in ``x-api-key`` or ``Authorization: Bearer`` (when
  the server has a key; 401 ``authentication_error``), the ``anthropic-version`` header, ``model``, ``max_tokens`` and
  ``messages`` present, no ``system`` role inside ``messages``, and every ``tool_result`` answers
  a ``tool_use`` of the turn before.
- **Failures.** ``x-mock-status`` replies with Anthropic's error body for that status (400
  ``invalid_request_error``, 401, 403, 404, 413, 429 ``rate_limit_error``, 500 ``api_error``, 529
  ``overloaded_error`` ...). ``x-mock-error`` names a body: one of those error types,
  ``prompt_too_long`` (400 "prompt is too long: ...") or ``html`` (a 502 page).
  ``x-mock-stream-error-after: N`` sends N events, then ``event: error`` with an
  ``overloaded_error``, as Anthropic does when it sheds load mid-stream.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import gevent
import orjson

try:  # imported as part of the test package
    from .openai_server import (
        HTML_502,
        Disconnect,
        Incoming,
        MockApp,
        Response,
        _Handler,
        mock_parser,
        placeholder,
        run_server,
        words,
    )
except ImportError:  # run as a script: the sibling module is importable by name
    from openai_server import (
        HTML_502,
        Disconnect,
        Incoming,
        MockApp,
        Response,
        _Handler,
        mock_parser,
        placeholder,
        run_server,
        words,
    )

DEFAULT_MODELS = ("claude-3-5-sonnet-20241022", "claude-3-5-haiku-20241022", "claude-sonnet-4-20250514")
# kind -> (status, message): Anthropic's own bodies for these failures.
ERRORS: dict[str, tuple[int, str]] = {
    "invalid_request_error": (400, "Your request was malformed."),
    "prompt_too_long": (400, "prompt is too long: 208310 tokens > 200000 maximum"),
    "authentication_error": (401, "invalid x-api-key"),
    "permission_error": (403, "Your API key does not have permission to use the specified resource."),
    "not_found_error": (404, "model: {model}"),
    "request_too_large": (413, "Request exceeds the maximum allowed number of bytes."),
    "rate_limit_error": (429, ("Number of request tokens has exceeded your per-minute rate limit "
                               "(https://docs.anthropic.com/en/api/rate-limits); see the response "
                               "headers for current usage. Please reduce the prompt length or the "
                               "maximum tokens requested, or try again later.")),
    "api_error": (500, "Internal server error"),
    "overloaded_error": (529, "Overloaded"),
}
STATUS_KINDS = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                500: "api_error", 529: "overloaded_error"}
WORD_PIECES = re.compile(r"\s*\S+(?:\s+$)?")


def new_id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


def error_body(kind: str, model: str = "") -> bytes:
    etype = "invalid_request_error" if kind == "prompt_too_long" else kind
    message = ERRORS[kind][1].format(model=model)
    return orjson.dumps({"type": "error", "error": {"type": etype, "message": message},
                         "request_id": new_id("req_")})


def reply(payload: Any, status: int = 200) -> Response:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return status, [("Content-Type", "application/json"), ("request-id", new_id("req_"))], [body]


def invalid(message: str, status: int = 400) -> Response:
    kind = STATUS_KINDS.get(status, "invalid_request_error")
    return reply({"type": "error", "error": {"type": kind, "message": message}, "request_id": new_id("req_")},
                 status)


def event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **data}) + b"\n\n"


def text_of(content: Any) -> str:
    """The words of a message content: text blocks and tool_result contents."""
    if isinstance(content, str):
        return content
    parts = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            parts.append(text_of(block.get("content", "")))
    return " ".join(p for p in parts if p)


class AnthropicMockApp(MockApp):
    """The OpenAI mock's log, admin endpoints and failure controls, with Anthropic's API."""

    RATE_LIMIT_HEADERS = (
        ("anthropic-ratelimit-requests-limit", "4000"), ("anthropic-ratelimit-requests-remaining", "3999"),
        ("anthropic-ratelimit-requests-reset", "2026-01-01T00:00:01Z"),
        ("anthropic-ratelimit-tokens-limit", "400000"), ("anthropic-ratelimit-tokens-remaining", "399990"),
        ("anthropic-ratelimit-tokens-reset", "2026-01-01T00:00:01Z"),
    )

    def handle(self, environ: dict[str, Any]) -> Response:
        incoming = self.receive(environ)
        if not isinstance(incoming, Incoming):
            return incoming  # an admin call answered
        method, path, body, headers, controls = incoming
        model = body.get("model", "") if isinstance(body, dict) else ""
        if self.config["fail_status"]:
            return self.failure(self.config["fail_status"], None, model, controls)
        if path.rstrip("/") not in ("/v1/messages", "/messages"):
            return invalid(f"Not Found ({method} {path})", 404)
        if method != "POST":
            return invalid(f"Method Not Allowed ({method} {path})", 405)
        auth = headers.get("authorization", "")
        key = headers.get("x-api-key") or (auth[7:] if auth.startswith("Bearer ") else "")
        if self.api_key is not None and key != self.api_key:
            return reply(error_body("authentication_error"), 401)
        fail = self.active_failure(controls)
        if fail.get("disconnect"):
            raise Disconnect
        if "status" in fail or "error" in fail:
            return self.failure(fail.get("status"), fail.get("error"), model, controls)
        if not headers.get("anthropic-version"):
            return invalid("anthropic-version: header is required")
        if not isinstance(body, dict):
            return invalid("There was an issue with your request body: it is not valid JSON.")
        problem = self.validate(body)
        if problem:
            return invalid(problem)
        payload = self.message(body)
        if not body.get("stream"):
            return reply(payload)
        chunk_delay = float(controls.get("chunk_delay", self.config["chunk_delay"]))
        headers_out = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache"),
                       ("request-id", new_id("req_"))]
        return 200, headers_out, self.stream(self.events(payload), fail, chunk_delay)

    def failure(self, status: int | None, kind: str | None, model: str, controls: dict[str, Any]) -> Response:
        """An error reply: the named kind's body, else Anthropic's body for the status."""
        if kind == "html":
            status, headers, body = status or 502, [("Content-Type", "text/html")], HTML_502
        else:
            kind = kind if kind in ERRORS else STATUS_KINDS.get(status or 500)
            if kind is None:  # a status Anthropic gives no type of its own
                kind = "api_error" if (status or 500) >= 500 else "invalid_request_error"
            status = status or ERRORS[kind][0]
            headers = [("Content-Type", "application/json"), ("request-id", new_id("req_"))]
            body = error_body(kind, model)
        if "retry_after" in controls:
            headers.append(("retry-after", controls["retry_after"]))
        return status, headers, [body]

    @staticmethod
    def validate(body: dict[str, Any]) -> str | None:
        """The first problem Anthropic would report, in its words."""
        for field in ("model", "max_tokens", "messages"):
            if field not in body:
                return f"{field}: Field required"
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            return "messages: at least one message is required"
        previous: list[Any] = []
        for i, message in enumerate(messages):
            role = message.get("role")
            if role not in ("user", "assistant"):
                return (f"messages.{i}.role: Input should be 'user' or 'assistant'" if role != "system" else
                        'messages: Unexpected role "system". The Messages API accepts a top-level `system` '
                        'parameter, not "system" as an input message role.')
            content = message.get("content")
            blocks = content if isinstance(content, list) else []
            used = {b.get("id") for b in previous if isinstance(b, dict) and b.get("type") == "tool_use"}
            for block in (b for b in blocks if isinstance(b, dict)):
                if block.get("type") == "tool_result" and block.get("tool_use_id") not in used:
                    return (f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks: "
                            f"{block.get('tool_use_id')}. Each `tool_result` block must have a corresponding "
                            "`tool_use` block in the previous message.")
                if block.get("type") == "text" and not block.get("text"):
                    return f"messages.{i}.content: text content blocks must be non-empty"
            previous = blocks
        return None

    def message(self, body: dict[str, Any]) -> dict[str, Any]:
        """The complete Message this request gets."""
        messages = body["messages"]
        system = body.get("system")
        system_text = system if isinstance(system, str) else text_of(system)
        prompt = words(system_text) + sum(words(text_of(m.get("content"))) for m in messages)
        tool = self.pick_tool(body, messages)
        stop_sequence = None
        if tool:
            schema = tool.get("input_schema") or {}
            args = {p: placeholder(schema.get("properties", {}).get(p, {})) for p in schema.get("required", [])}
            content = [{"type": "tool_use", "id": new_id("toolu_"), "name": tool.get("name"), "input": args}]
            stop_reason, output = "tool_use", max(1, words(orjson.dumps(args).decode()))
        else:
            last = next((m for m in reversed(messages) if m.get("role") == "user"), {})
            text = "echo: " + text_of(last.get("content"))
            stop_reason = "end_turn"
            for seq in body.get("stop_sequences") or ():
                if seq and seq in text:
                    text, stop_reason, stop_sequence = text[:text.index(seq)], "stop_sequence", seq
                    break
            pieces = WORD_PIECES.findall(text)
            if len(pieces) > int(body["max_tokens"]):
                pieces, stop_reason, stop_sequence = pieces[:int(body["max_tokens"])], "max_tokens", None
            content = [{"type": "text", "text": "".join(pieces)}]
            output = len(pieces)
        return {"id": new_id("msg_"), "type": "message", "role": "assistant", "model": body["model"],
                "content": content, "stop_reason": stop_reason, "stop_sequence": stop_sequence,
                "usage": {"input_tokens": prompt, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 0, "output_tokens": output}}

    @staticmethod
    def pick_tool(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | None:
        """First tool (or the named one); after a tool result, ``auto`` answers in text like a model."""
        tools, choice = body.get("tools") or [], body.get("tool_choice") or {"type": "auto"}
        after_result = "tool_result" in {b.get("type") for b in messages[-1].get("content") or ()
                                         if isinstance(b, dict)}
        if not tools or choice.get("type") == "none" or (choice.get("type") == "auto" and after_result):
            return None
        if choice.get("type") == "tool":
            return next((t for t in tools if t.get("name") == choice.get("name")), tools[0])
        return tools[0]

    @staticmethod
    def events(message: dict[str, Any]) -> list[bytes]:
        """The Message as the event sequence Anthropic streams."""
        usage = message["usage"]
        start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
                 "usage": {**usage, "output_tokens": 1}}
        frames = [event("message_start", {"message": start})]
        for index, block in enumerate(message["content"]):
            if block["type"] == "tool_use":
                args = orjson.dumps(block["input"]).decode()
                frames.append(event("content_block_start", {"index": index, "content_block": {**block, "input": {}}}))
                deltas = [{"type": "input_json_delta", "partial_json": p}
                          for p in ["", *(args[i:i + 8] for i in range(0, len(args), 8))]]
            else:
                opening = {"type": "text", "text": ""}
                frames.append(event("content_block_start", {"index": index, "content_block": opening}))
                deltas = [{"type": "text_delta", "text": p} for p in WORD_PIECES.findall(block["text"])]
            if index == 0:
                frames.append(event("ping", {}))
            frames += [event("content_block_delta", {"index": index, "delta": d}) for d in deltas]
            frames.append(event("content_block_stop", {"index": index}))
        frames.append(event("message_delta", {
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]},
            "usage": {"output_tokens": usage["output_tokens"]}}))
        frames.append(event("message_stop", {}))
        return frames

    def stream(self, frames: list[bytes], fail: dict[str, Any], chunk_delay: float) -> Iterator[bytes]:
        """Send events one by one, failing mid-way on demand (Anthropic's mid-stream error event)."""
        for i, frame in enumerate(frames):
            if i and chunk_delay:
                gevent.sleep(chunk_delay)
            if i == fail.get("disconnect_after"):
                raise Disconnect
            if i == fail.get("stream_error_after"):
                yield b"event: error\ndata: " + error_body("overloaded_error") + b"\n\n"
                return
            yield frame


def serve(argv: list[str] | None = None) -> None:
    """Command line: run the server in this process until killed."""
    parser = mock_parser(__doc__)
    args = parser.parse_args(argv)
    app = AnthropicMockApp(args.api_key, args.fail_status, args.delay, args.chunk_delay, not args.no_record,
                           DEFAULT_MODELS)
    run_server(app, args, _Handler)


if __name__ == "__main__":
    serve()
