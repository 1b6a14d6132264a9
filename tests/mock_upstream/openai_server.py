"""A local OpenAI-compatible upstream for end-to-end and load tests.

It speaks OpenAI's wire format (chat, legacy completions, embeddings, moderations, models; JSON
and SSE), answers deterministically by echoing the caller, fails on demand per request, and
records what it received so a test can assert what the proxy forwarded. It runs in its own
process on gevent's WSGI server (`python tests/mock_upstream/openai_server.py --port 8900`), so
the test process needs no monkey-patching; `tests.mock_upstream.MockOpenAI` starts and drives
that process. Controls and reply rules are described in README.md.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import math
import os
import random
import re
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import Any, NamedTuple

import gevent
import orjson
from gevent.pywsgi import WSGIHandler, WSGIServer

DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo-instruct", "text-embedding-3-small",
                  "omni-moderation-latest")
FINGERPRINT = "fp_mock"
MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)
# kind -> (status, type, param, code, message): OpenAI's own bodies for these failures.
ERRORS: dict[str, tuple[int, str, str | None, str | None, str]] = {
    "context_length_exceeded": (
        400, "invalid_request_error", "messages", "context_length_exceeded",
        ("This model's maximum context length is 4097 tokens. However, your messages resulted in "
         "5000 tokens. Please reduce the length of the messages.")),
    "content_policy_violation": (
        400, "invalid_request_error", None, "content_policy_violation",
        ("Your request was rejected as a result of our safety system. Your prompt may contain text "
         "that is not allowed by our safety system.")),
    "rate_limit_exceeded": (
        429, "requests", None, "rate_limit_exceeded",
        ("Rate limit reached for {model} in organization org-mock on requests per min (RPM): "
         "Limit 3, Used 3, Requested 1. Please try again in 20s. Visit "
         "https://platform.openai.com/account/rate-limits to learn more.")),
    "insufficient_quota": (
        429, "insufficient_quota", None, "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details."),
    "invalid_api_key": (
        401, "invalid_request_error", None, "invalid_api_key",
        ("Incorrect API key provided: {key}. You can find your API key at "
         "https://platform.openai.com/account/api-keys.")),
    "model_not_found": (
        404, "invalid_request_error", None, "model_not_found",
        "The model `{model}` does not exist or you do not have access to it."),
    "server_error": (
        500, "server_error", None, None,
        "The server had an error while processing your request. Sorry about that!"),
    "overloaded": (
        503, "server_error", None, None,
        ("That model is currently overloaded with other requests. You can retry your request, or "
         "contact us through our help center at help.openai.com if the error persists.")),
}
STATUS_KINDS = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded",
                500: "server_error", 503: "overloaded"}
HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
CONTROL_TYPES: dict[str, Callable[[Any], Any]] = {
    "status": int, "retry_after": str, "delay": float, "chunk_delay": float, "error": str,
    "disconnect": lambda v: str(v).lower() in ("1", "true", "yes"), "fail_times": int,
    "fail_key": str, "disconnect_after": int, "stream_error_after": int,
}
FAILURES = ("status", "error", "disconnect", "disconnect_after", "stream_error_after")
ROUTES = (("/chat/completions", "chat"), ("/completions", "completion"),
          ("/embeddings", "embedding"), ("/moderations", "moderation"), ("/models", "models"))
WORD_PIECES = re.compile(r"\s*\S+(?:\s+$)?")
PLACEHOLDERS = {"string": "mock", "integer": 1, "number": 1.0, "boolean": True, "array": [],
                "object": {}, "null": None}
Response = tuple[int, list[tuple[str, str]], Iterable[bytes]]


class Incoming(NamedTuple):
    """A received request, parsed: what a mock's routes look at."""

    method: str
    path: str
    body: Any
    headers: dict[str, str]
    controls: dict[str, Any]


class Disconnect(Exception):
    """Raised by the app to drop the connection without a (complete) response."""


class _Handler(WSGIHandler):
    """pywsgi handler with TCP_NODELAY, and `Disconnect` turned into a closed socket, not a 500."""

    def handle(self) -> None:
        # pywsgi sends headers and body in two writes; with Nagle's algorithm on, the body then
        # waits ~40 ms for the client's delayed ACK, and SSE chunks would be held back too.
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().handle()

    def run_application(self) -> None:
        try:
            super().run_application()
        except Disconnect:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.socket.shutdown(socket.SHUT_RDWR)


def words(text: str) -> int:
    """The mock's token count: whitespace-separated words, so tests can predict usage."""
    return len(text.split())


def text_of(content: Any) -> str:
    """Text of a message content: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and "text" in p)
    return ""


def error_body(kind: str, model: str = "", key: str = "") -> bytes:
    _, etype, param, code, message = ERRORS[kind]
    message = message.format(model=model, key=f"{key[:3]}****{key[-4:]}")
    return orjson.dumps({"error": {"message": message, "type": etype, "param": param, "code": code}})


def reply(payload: Any, status: int = 200) -> Response:
    """A JSON response; `payload` may already be encoded."""
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return status, [("Content-Type", "application/json")], [body]


def invalid(message: str, param: str | None = None, code: str | None = None, status: int = 400) -> Response:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return reply({"error": error}, status)


def usage(prompt: int, completion: int | None = None, details: bool = False) -> dict[str, Any]:
    """Usage object; chat adds the `*_tokens_details` that current OpenAI models always send."""
    if completion is None:  # embeddings report no completion side
        return {"prompt_tokens": prompt, "total_tokens": prompt}
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": prompt + completion}
    if details:
        out["prompt_tokens_details"] = {"cached_tokens": 0, "audio_tokens": 0}
        out["completion_tokens_details"] = {"reasoning_tokens": 0, "audio_tokens": 0,
                                            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    return out


def sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def placeholder(schema: dict[str, Any]) -> Any:
    """A value that satisfies a JSON-schema property well enough for a tool-call test."""
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    return PLACEHOLDERS.get(kind[0] if isinstance(kind, list) else kind, "mock")


def vector(key: str, dims: int) -> list[float]:
    """A deterministic unit vector per input, like OpenAI's normalised embeddings."""
    rng = random.Random(key)
    raw = [rng.uniform(-1.0, 1.0) for _ in range(dims)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [round(x / norm, 6) for x in raw]


class MockApp:
    """The WSGI application; one instance per server process holds its log and counters."""

    #: sent with every successful answer, as the real API does (fixed figures a test can check)
    RATE_LIMIT_HEADERS = (
        ("x-ratelimit-limit-requests", "10000"), ("x-ratelimit-remaining-requests", "9999"),
        ("x-ratelimit-limit-tokens", "2000000"), ("x-ratelimit-remaining-tokens", "1999990"),
        ("x-ratelimit-reset-requests", "6ms"), ("x-ratelimit-reset-tokens", "0s"),
    )

    def __init__(self, api_key: str | None = None, fail_status: int | None = None, delay: float = 0.0,
                 chunk_delay: float = 0.0, record: bool = True,
                 models: Iterable[str] = DEFAULT_MODELS) -> None:
        self.config: dict[str, Any] = {"fail_status": fail_status, "delay": delay, "chunk_delay": chunk_delay}
        self.api_key, self.record, self.models = api_key, record, tuple(models)
        self.received: deque[dict[str, Any]] = deque(maxlen=10_000)
        self.fail_counts: dict[str, int] = {}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        status, headers, body = self.handle(environ)
        headers.append(("x-request-id", "req_" + os.urandom(12).hex()))
        if status == 200 and not environ.get("PATH_INFO", "").startswith("/__mock__/"):
            headers.extend(self.RATE_LIMIT_HEADERS)
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Mock Status"
        start_response(f"{status} {phrase}", headers)
        return body

    def receive(self, environ: dict[str, Any]) -> Incoming | Response:
        """Read, record and delay one request (the part every mock's handle starts with);
        ``/__mock__/`` admin calls are answered here."""
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else environ["wsgi.input"].read()
        if path.startswith("/__mock__/"):
            return self.admin(method, path, raw)
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            body = None
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        if self.record:
            self.received.append({"method": method, "path": path, "query": environ.get("QUERY_STRING", ""),
                                  "headers": headers, "body": body, "time": time.time()})
        controls = self.controls(headers, body)
        delay = controls.get("delay", self.config["delay"])
        if delay:
            gevent.sleep(delay)
        return Incoming(method, path, body, headers, controls)

    def handle(self, environ: dict[str, Any]) -> Response:
        """Record, wait, then check in the order a real upstream would: down, URL, key, failure, body."""
        incoming = self.receive(environ)
        if not isinstance(incoming, Incoming):
            return incoming  # an admin call answered
        method, path, body, headers, controls = incoming
        model = body.get("model", "") if isinstance(body, dict) else ""
        if self.config["fail_status"]:
            return self.failure(self.config["fail_status"], None, model, controls)
        route, arg = self.route(method, path)
        if route is None:
            return invalid(f"Invalid URL ({method} {path})", status=404)
        auth = headers.get("authorization", "")
        key = auth[7:] if auth.startswith("Bearer ") else headers.get("api-key", "")  # api-key: Azure
        if self.api_key is not None and key != self.api_key:
            if not key:
                return invalid("You didn't provide an API key. You need to provide your API key in an "
                               "Authorization header using Bearer auth (i.e. Authorization: Bearer "
                               "YOUR_KEY).", status=401)
            return reply(error_body("invalid_api_key", key=key), 401)
        fail = self.active_failure(controls)
        if fail.get("disconnect"):
            raise Disconnect
        if "status" in fail or "error" in fail:
            return self.failure(fail.get("status"), fail.get("error"), model, controls)
        if not isinstance(body, dict):
            return invalid("We could not parse the JSON body of your request. (HINT: This likely means "
                           "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                           "payload.)")
        if route == "models":
            return self.list_models(arg)
        if not model and route == "moderation":
            model = "omni-moderation-latest"
        if not model:
            match = re.search(r"/deployments/([^/]+)/", path)  # Azure paths name the deployment instead
            if not match:
                return invalid("you must provide a model parameter")
            model = match.group(1)
        stream = bool(body.get("stream")) and route in ("chat", "completion")
        status, headers_out, payload = getattr(self, route)(body, model)
        if not stream or status != 200:
            return status, headers_out, payload
        chunk_delay = float(controls.get("chunk_delay", self.config["chunk_delay"]))
        headers_out = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache")]
        return 200, headers_out, self.stream(list(payload), fail, chunk_delay)

    def admin(self, method: str, path: str, raw: bytes) -> Response:
        """Test-only endpoints: the request log, and runtime settings (e.g. take the upstream down)."""
        if path == "/__mock__/requests" and method == "DELETE":
            self.received.clear()
            self.fail_counts.clear()
            return 204, [], []
        if path == "/__mock__/requests":
            return reply(list(self.received))
        if path == "/__mock__/config" and method == "POST":
            self.config.update({k: v for k, v in orjson.loads(raw or b"{}").items() if k in self.config})
        return reply(self.config)

    @staticmethod
    def controls(headers: dict[str, str], body: Any) -> dict[str, Any]:
        """Failure controls from `x-mock-*` headers, overridden by the body's `mock_controls`."""
        found: dict[str, Any] = {k[7:].replace("-", "_"): v for k, v in headers.items()
                                 if k.startswith("x-mock-")}
        if isinstance(body, dict) and isinstance(body.get("mock_controls"), dict):
            found.update(body["mock_controls"])
        return {k: CONTROL_TYPES[k](v) for k, v in found.items() if k in CONTROL_TYPES and v is not None}

    def active_failure(self, controls: dict[str, Any]) -> dict[str, Any]:
        """The failure controls that apply to this request, after counting `fail_times`."""
        fail = {k: v for k, v in controls.items()
                if k in FAILURES and v is not False and not (k == "status" and v == 200)}
        if "fail_times" in controls:
            key = str(controls.get("fail_key", ""))
            self.fail_counts[key] = self.fail_counts.get(key, 0) + 1
            if self.fail_counts[key] > controls["fail_times"]:
                return {}
            fail = fail or {"status": 500}
        return fail

    def failure(self, status: int | None, kind: str | None, model: str, controls: dict[str, Any]) -> Response:
        """An error reply: the named kind's body, else the usual body for the status."""
        if kind == "html":
            headers, body = [("Content-Type", "text/html")], HTML_502
            status = status or 502
        elif kind == "not_json":  # a 200 whose body is not JSON (a captive portal, a broken gateway)
            headers, body = [("Content-Type", "text/html")], b"<html><body>OK</body></html>"
            status = status or 200
        else:
            kind = kind if kind in ERRORS else STATUS_KINDS.get(status or 500)
            status = status or (ERRORS[kind][0] if kind else 500)
            headers = [("Content-Type", "application/json")]
            if kind:
                body = error_body(kind, model=model, key="sk-mock-key")
            else:
                etype = "server_error" if status >= 500 else "invalid_request_error"
                body = orjson.dumps({"error": {"message": f"Mock failure (HTTP {status}).", "type": etype,
                                               "param": None, "code": None}})
        if "retry_after" in controls:
            headers.append(("Retry-After", controls["retry_after"]))
        return status, headers, [body]

    def route(self, method: str, path: str) -> tuple[str | None, str | None]:
        """Match by path suffix, so `/v1/...`, bare `/...` and Azure deployment paths all work."""
        trimmed = path.rstrip("/")
        for suffix, name in ROUTES:
            if trimmed.endswith(suffix):
                return (name, None) if method == ("GET" if name == "models" else "POST") else (None, None)
        match = re.search(r"/models/(.+)$", trimmed)
        return ("models", match.group(1)) if match and method == "GET" else (None, None)

    def stream(self, frames: list[bytes], fail: dict[str, Any], chunk_delay: float) -> Iterator[bytes]:
        """Send SSE frames one by one (each is flushed as its own HTTP chunk), failing mid-way on demand."""
        for i, frame in enumerate(frames):
            if i and chunk_delay:
                gevent.sleep(chunk_delay)
            if i == fail.get("disconnect_after"):
                raise Disconnect
            if i == fail.get("stream_error_after"):
                yield b"data: " + error_body("server_error") + b"\n\n"
                return
            yield frame

    def list_models(self, model_id: str | None) -> Response:
        def card(m: str) -> dict[str, Any]:
            return {"id": m, "object": "model", "created": 1700000000, "owned_by": "openai"}
        if model_id is None:
            payload = {"object": "list", "data": [card(m) for m in self.models]}
        elif model_id in self.models:
            payload = card(model_id)
        else:
            return reply(error_body("model_not_found", model=model_id), 404)
        return reply(payload)

    def chat(self, body: dict[str, Any], model: str) -> Response:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return invalid("Missing required parameter: 'messages'.", "messages",
                           "missing_required_parameter")
        n, prompt = int(body.get("n") or 1), sum(words(text_of(m.get("content"))) for m in messages)
        tool = self.pick_tool(body, messages)
        if tool:
            fn = tool.get("function", {})
            params = fn.get("parameters") or {}
            args = orjson.dumps({p: placeholder(params.get("properties", {}).get(p, {}))
                                 for p in params.get("required", [])}).decode()
            call = {"id": "call_" + os.urandom(12).hex(), "type": "function",
                    "function": {"name": fn.get("name", ""), "arguments": args}}
            pieces = [args[i:i + 8] for i in range(0, len(args), 8)]  # arguments arrive in fragments
            finish, completion = "tool_calls", max(1, words(args))
            message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None,
                                       "tool_calls": [call]}
        else:
            last = next((m for m in reversed(messages) if m.get("role") in ("user", "tool")), {})
            pieces, finish = self.reply_pieces("echo: " + text_of(last.get("content")), body)
            completion = len(pieces)
            message = {"role": "assistant", "content": "".join(pieces), "refusal": None}
        base = {"id": "chatcmpl-" + os.urandom(12).hex(), "object": "chat.completion",
                "created": int(time.time()), "model": model, "system_fingerprint": FINGERPRINT}
        if not body.get("stream"):
            choices = [{"index": i, "message": message, "logprobs": None, "finish_reason": finish}
                       for i in range(n)]
            return reply({**base, "choices": choices, "usage": usage(prompt, completion, True),
                          "service_tier": "default"})
        base["object"] = "chat.completion.chunk"
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if with_usage:
            base["usage"] = None  # OpenAI sends `usage: null` on every chunk but the last

        def frame(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            return sse({**base, "choices": [{"index": index, "delta": delta, "logprobs": None,
                                             "finish_reason": finish_reason}]})
        if tool:
            opening = {"index": 0, "id": call["id"], "type": "function",
                       "function": {"name": call["function"]["name"], "arguments": ""}}
            first = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [opening]}
            deltas = [{"tool_calls": [{"index": 0, "function": {"arguments": p}}]} for p in pieces]
        else:
            first = {"role": "assistant", "content": "", "refusal": None}
            deltas = [{"content": p} for p in pieces]
        frames = [frame(i, first) for i in range(n)]
        frames += [frame(i, d) for d in deltas for i in range(n)]
        frames += [frame(i, {}, finish) for i in range(n)]
        if with_usage:
            frames.append(sse({**base, "choices": [], "usage": usage(prompt, completion, True)}))
        frames.append(b"data: [DONE]\n\n")
        return 200, [], frames

    @staticmethod
    def pick_tool(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any] | None:
        """First tool (or the named one); after a tool result, `auto` answers in text like a model would."""
        tools, choice = body.get("tools") or [], body.get("tool_choice") or "auto"
        if not tools or choice == "none" or (choice == "auto" and messages[-1].get("role") == "tool"):
            return None
        if isinstance(choice, dict):
            name = (choice.get("function") or {}).get("name")
            return next((t for t in tools if (t.get("function") or {}).get("name") == name), tools[0])
        return tools[0]

    @staticmethod
    def reply_pieces(text: str, body: dict[str, Any]) -> tuple[list[str], str]:
        """Split a reply into one piece per word (whitespace kept), cut at max tokens like a model."""
        pieces = WORD_PIECES.findall(text) or [text]
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if limit and len(pieces) > int(limit):
            return pieces[:int(limit)], "length"
        return pieces, "stop"

    def completion(self, body: dict[str, Any], model: str) -> Response:
        prompt = body.get("prompt")
        if prompt is None:
            return invalid("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
        if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
            prompt = [prompt]
        texts = [p if isinstance(p, str) else " ".join(map(str, p)) for p in prompt]
        n = int(body.get("n") or 1)
        replies = [self.reply_pieces("echo: " + t, body) for t in texts for _ in range(n)]
        prompt_tokens, completion = sum(map(words, texts)), sum(len(p) for p, _ in replies)
        base = {"id": "cmpl-" + os.urandom(12).hex(), "object": "text_completion",
                "created": int(time.time()), "model": model, "system_fingerprint": FINGERPRINT}
        if not body.get("stream"):
            choices = [{"text": "".join(p), "index": i, "logprobs": None, "finish_reason": f}
                       for i, (p, f) in enumerate(replies)]
            return reply({**base, "choices": choices, "usage": usage(prompt_tokens, completion)})
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if with_usage:
            base["usage"] = None

        def frame(index: int, text: str, finish_reason: str | None = None) -> bytes:
            return sse({**base, "choices": [{"text": text, "index": index, "logprobs": None,
                                             "finish_reason": finish_reason}]})
        frames = [frame(i, piece) for i, (pieces, _) in enumerate(replies) for piece in pieces]
        frames += [frame(i, "", f) for i, (_, f) in enumerate(replies)]
        if with_usage:
            frames.append(sse({**base, "choices": [], "usage": usage(prompt_tokens, completion)}))
        return 200, [], [*frames, b"data: [DONE]\n\n"]

    def embedding(self, body: dict[str, Any], model: str) -> Response:
        given = body.get("input")
        if given in (None, "", []):
            return invalid("'$.input' is invalid. Please check the API reference: "
                           "https://platform.openai.com/docs/api-reference.")
        inputs = [given] if isinstance(given, str) or isinstance(given[0], int) else given
        dims, b64 = int(body.get("dimensions") or 8), body.get("encoding_format") == "base64"
        data = []
        for i, item in enumerate(inputs):
            vec: Any = vector(item if isinstance(item, str) else repr(item), dims)
            if b64:  # little-endian float32, which the SDKs decode with numpy/array
                vec = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vec})
        tokens = sum(words(x) if isinstance(x, str) else len(x) for x in inputs)
        return reply({"object": "list", "data": data, "model": model, "usage": usage(tokens)})

    def moderation(self, body: dict[str, Any], model: str) -> Response:
        given = body.get("input", "")
        texts = ([given] if isinstance(given, str) else given if all(isinstance(x, str) for x in given)
                 else [text_of(given)])  # one result for a whole multimodal part list
        results = []
        for text in texts:
            flagged = "mock:flag" in text.lower()  # the one phrase the mock treats as harmful
            results.append({
                "flagged": flagged,
                "categories": {c: flagged and c == "violence" for c in MODERATION_CATEGORIES},
                "category_scores": {c: 0.99 if flagged and c == "violence" else 0.0001
                                    for c in MODERATION_CATEGORIES},
                "category_applied_input_types": {c: ["text"] for c in MODERATION_CATEGORIES},
            })
        return reply({"id": "modr-" + os.urandom(12).hex(), "model": model, "results": results})


def mock_parser(doc: str | None) -> argparse.ArgumentParser:
    """The command-line options every mock upstream takes (a server adds its own)."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key")
    parser.add_argument("--fail-status", type=int)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--exit-with-parent", action="store_true")
    return parser


def run_server(app: Any, args: argparse.Namespace, handler_class: type) -> None:
    """Serve ``app`` on ``args.host:args.port`` until killed; say where on stdout (the handle in
    tests/mock_upstream waits for that line), and stop with the parent when asked to, so a
    crashed test run leaves no server behind."""
    server = WSGIServer((args.host, args.port), app, handler_class=handler_class, log=None, backlog=2048)
    server.start()
    print(f"listening on {args.host}:{server.server_port}", flush=True)
    if args.exit_with_parent:
        parent = os.getppid()

        def watch() -> None:
            while os.getppid() == parent:
                gevent.sleep(0.5)
            server.stop(timeout=0)
        gevent.spawn(watch)
    server.serve_forever()


def serve(argv: list[str] | None = None) -> None:
    """Command line: run the server in this process until killed."""
    parser = mock_parser(__doc__)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    args = parser.parse_args(argv)
    app = MockApp(args.api_key, args.fail_status, args.delay, args.chunk_delay, not args.no_record,
                  args.models.split(","))
    run_server(app, args, _Handler)


if __name__ == "__main__":
    serve()
