"""One local upstream for the prompt-style providers: Ollama, Hugging Face TGI and LiteLLM's
``custom/`` endpoint format, for end-to-end tests.

It runs in its own process (``python tests/mock_upstream/prompt_servers.py --port 8902``);
``tests.mock_upstream.prompt.MockPromptServers`` starts and drives it. The request log
(``GET``/``DELETE /__mock__/requests``), ``POST /__mock__/config``, ``--fail-status``/``--delay``
and the per-request failure controls (``x-mock-*`` headers or a ``mock_controls`` body object)
work as in the OpenAI mock (README.md). Endpoints, all ``POST``:

- Ollama: ``/api/generate`` (``prompt``), ``/api/chat`` (``messages``, ``tools``), ``/api/embed``.
  Streams newline-delimited JSON unless ``"stream": false`` (Ollama's default is to stream); the
  last object has ``done: true``, ``done_reason``, ``prompt_eval_count`` and ``eval_count``.
- TGI: ``/generate`` and ``/generate_stream`` (``{"inputs", "parameters"}``; SSE ``data:`` events
  with ``token``, and ``generated_text`` + ``details`` on the last), and the Messages API
  ``/v1/chat/completions``, answered by the OpenAI mock's chat.
- custom: ``/custom``, ``{"model", "params": {"prompt": [...], ...}}`` ->
  ``{"data": [{"prompt", "output": [...], "params"}], "message": "ok"}``.

Replies echo recognisably: ``"echo: " + <last non-empty line of the prompt>`` (for Ollama chat,
of the last user or tool message). Tokens are words. ``num_predict`` / ``max_new_tokens`` /
``max_tokens`` cut the reply to that many words (``done_reason`` / ``finish_reason``
``length``). A TGI ``stop`` string found in the reply ends it, stop text included
(``stop_sequence``), as TGI does. Ollama chat with ``tools`` answers with a call of the first
tool, its required arguments filled with placeholders, unless the last message is a tool result.

Failures speak each provider's error shape: ``x-mock-status: N`` (Ollama ``{"error": ...}``, TGI
``{"error", "error_type"}``, custom ``{"error": ...}``), ``x-mock-error: context_length_exceeded``
(TGI's 422 `` `inputs` tokens + `max_new_tokens` must be <= ...``, Ollama's 400 context-length
error), ``overloaded`` (TGI 429, Ollama 503) or ``html``; ``x-mock-stream-error-after: N`` sends
N stream items, then the provider's in-stream error.
"""

from __future__ import annotations

import time
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
        text_of,
        vector,
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
        text_of,
        vector,
        words,
    )

#: path -> (provider family, handler method)
ROUTES = {
    "/api/generate": ("ollama", "ollama_generate"),
    "/api/chat": ("ollama", "ollama_chat"),
    "/api/embed": ("ollama", "ollama_embed"),
    "/generate": ("tgi", "tgi_generate"),
    "/generate_stream": ("tgi", "tgi_generate"),
    "/v1/chat/completions": ("tgi", "tgi_messages"),
    "/custom": ("custom", "custom"),
}
TGI_ERROR_TYPES = {422: "validation", 429: "overloaded", 424: "generation", 500: "incomplete_generation"}
# family -> kind -> (status, body)
NAMED_ERRORS: dict[str, dict[str, tuple[int, dict[str, Any]]]] = {
    "ollama": {
        "context_length_exceeded": (400, {"error": "the input length exceeds the context length"}),
        "overloaded": (503, {"error": "server busy, please try again.  maximum pending requests exceeded"}),
    },
    "tgi": {
        "context_length_exceeded": (422, {"error": "Input validation error: `inputs` tokens + `max_new_tokens` "
                                                   "must be <= 2048. Given: 2000 `inputs` tokens and 100 "
                                                   "`max_new_tokens`", "error_type": "validation"}),
        "overloaded": (429, {"error": "Model is overloaded", "error_type": "overloaded"}),
    },
    "custom": {
        "context_length_exceeded": (400, {"error": "prompt is too long for this model"}),
        "overloaded": (503, {"error": "model is overloaded"}),
    },
}
STREAM_ERRORS = {
    "ollama": b'{"error":"an error was encountered while running the model: unexpected EOF"}\n',
    "tgi": b'data:{"error":"Request failed during generation: Server error: CUDA out of memory",'
           b'"error_type":"generation"}\n\n',
}


def echo(prompt: str) -> str:
    lines = [line for line in prompt.splitlines() if line.strip()]
    return "echo: " + (lines[-1].strip() if lines else "")


def cut(text: str, limit: Any) -> tuple[str, bool]:
    """The reply cut to ``limit`` words (whitespace kept); True if it was cut."""
    pieces = pieces_of(text)
    if limit and int(limit) > 0 and len(pieces) > int(limit):
        return "".join(pieces[: int(limit)]), True
    return text, False


def pieces_of(text: str) -> list[str]:
    """One piece per word, each carrying the whitespace before it, like tokens."""
    out: list[str] = []
    for i, word in enumerate(text.split(" ")):
        out.append(word if i == 0 else " " + word)
    return [p for p in out if p] or [text]


def json_reply(payload: Any, status: int = 200) -> Response:
    return status, [("Content-Type", "application/json")], [orjson.dumps(payload)]


class PromptMockApp(MockApp):
    """The OpenAI mock's log, admin endpoints and controls, with Ollama, TGI and custom routes."""

    def handle(self, environ: dict[str, Any]) -> Response:
        incoming = self.receive(environ)
        if not isinstance(incoming, Incoming):
            return incoming  # an admin call answered
        method, path, body, headers, controls = incoming
        family, handler = ROUTES.get(path.rstrip("/"), ("ollama", ""))
        if self.config["fail_status"]:
            return self.provider_failure(family, self.config["fail_status"], None)
        if not handler:
            return 404, [("Content-Type", "text/plain")], [b"404 page not found"]  # what Ollama says
        if method != "POST":
            return json_reply({"error": "method not allowed"}, 405)
        auth = headers.get("authorization", "")
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            return self.provider_failure(family, 401, None)
        fail = self.active_failure(controls)
        if fail.get("disconnect"):
            raise Disconnect
        if "status" in fail or "error" in fail:
            return self.provider_failure(family, fail.get("status"), fail.get("error"))
        if not isinstance(body, dict):
            return self.provider_failure(family, 400, None)
        status, headers_out, items = getattr(self, handler)(body, path)
        if status != 200 or headers_out:
            return status, headers_out, items
        chunk_delay = float(controls.get("chunk_delay", self.config["chunk_delay"]))
        content_type = "text/event-stream" if family == "tgi" else "application/x-ndjson"
        return 200, [("Content-Type", content_type)], self.drip(list(items), fail, chunk_delay, family)

    def provider_failure(self, family: str, status: int | None, kind: str | None) -> Response:
        """An error in the family's own shape: a named kind's body, else a generic one for the status."""
        if kind == "html":
            return status or 502, [("Content-Type", "text/html")], [HTML_502]
        if kind in NAMED_ERRORS[family]:
            named_status, payload = NAMED_ERRORS[family][kind]  # type: ignore[index]
            return json_reply(payload, status or named_status)
        status = status or 500
        payload: dict[str, Any] = {"error": f"mock failure (HTTP {status})"}
        if family == "tgi":
            payload["error_type"] = TGI_ERROR_TYPES.get(status, "generation" if status >= 500 else "validation")
        return json_reply(payload, status)

    def drip(self, items: list[bytes], fail: dict[str, Any], chunk_delay: float, family: str) -> Iterator[bytes]:
        """Send stream items one by one, failing mid-way on demand, in the family's error shape."""
        for i, item in enumerate(items):
            if i and chunk_delay:
                gevent.sleep(chunk_delay)
            if i == fail.get("disconnect_after"):
                raise Disconnect
            if i == fail.get("stream_error_after"):
                yield STREAM_ERRORS.get(family, STREAM_ERRORS["tgi"])
                return
            yield item

    # -- Ollama -----------------------------------------------------------------------------------

    @staticmethod
    def ollama_frames(model: str, body: dict[str, Any], prompt_words: int, reply: str, cut_short: bool,
                      chat: bool, tool_calls: list[dict[str, Any]] | None = None) -> Response:
        created = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        final: dict[str, Any] = {"model": model, "created_at": created, "done": True,
                                 "done_reason": "length" if cut_short else "stop", "total_duration": 1000000,
                                 "load_duration": 1000, "prompt_eval_count": prompt_words,
                                 "prompt_eval_duration": 1000, "eval_count": words(reply) + len(tool_calls or []),
                                 "eval_duration": 1000}

        def piece(text: str, calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
            if not chat:
                return {"response": text}
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if calls:
                message["tool_calls"] = calls
            return {"message": message}

        if body.get("stream") is False:
            return json_reply({"model": model, "created_at": created, **piece(reply, tool_calls), **final})
        lines = [{"model": model, "created_at": created, **piece(p), "done": False} for p in pieces_of(reply)
                 if reply]
        if tool_calls:
            lines.append({"model": model, "created_at": created, **piece("", tool_calls), "done": False})
        lines.append({"model": model, "created_at": created, **piece(""), **final})
        return 200, [], [orjson.dumps(line) + b"\n" for line in lines]

    def ollama_generate(self, body: dict[str, Any], path: str) -> Response:
        if not body.get("model"):
            return json_reply({"error": "model is required"}, 400)
        prompt = str(body.get("prompt") or "")
        reply, short = cut(echo(prompt), (body.get("options") or {}).get("num_predict"))
        prompt_words = words(prompt) + words(str(body.get("system") or ""))
        return self.ollama_frames(body["model"], body, prompt_words, reply, short, chat=False)

    def ollama_chat(self, body: dict[str, Any], path: str) -> Response:
        messages = body.get("messages")
        if not body.get("model") or not isinstance(messages, list):
            return json_reply({"error": "model is required" if not body.get("model") else "messages are required"}, 400)
        prompt_words = sum(words(text_of(m.get("content"))) for m in messages)
        tools = body.get("tools") or []
        if tools and not (messages and messages[-1].get("role") == "tool"):
            fn = tools[0].get("function") or {}
            params = fn.get("parameters") or {}
            args = {p: placeholder((params.get("properties") or {}).get(p, {})) for p in params.get("required", [])}
            calls = [{"function": {"name": fn.get("name", ""), "arguments": args}}]
            return self.ollama_frames(body["model"], body, prompt_words, "", False, chat=True, tool_calls=calls)
        last = next((m for m in reversed(messages) if m.get("role") in ("user", "tool")), {})
        reply, short = cut(echo(text_of(last.get("content"))), (body.get("options") or {}).get("num_predict"))
        return self.ollama_frames(body["model"], body, prompt_words, reply, short, chat=True)

    def ollama_embed(self, body: dict[str, Any], path: str) -> Response:
        given = body.get("input")
        inputs = [given] if isinstance(given, str) else given
        if not body.get("model") or not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs):
            return json_reply({"error": "invalid input type"}, 400)
        dims = int(body.get("dimensions") or 8)
        return json_reply({"model": body["model"], "embeddings": [vector(x, dims) for x in inputs],
                           "total_duration": 1000000, "load_duration": 1000,
                           "prompt_eval_count": sum(words(x) for x in inputs)})

    # -- TGI --------------------------------------------------------------------------------------

    def tgi_generate(self, body: dict[str, Any], path: str) -> Response:
        inputs = body.get("inputs")
        if not isinstance(inputs, str) or not inputs:
            return json_reply({"error": "Input validation error: `inputs` cannot be empty",
                               "error_type": "validation"}, 422)
        params = body.get("parameters") or {}
        reply, short = cut(echo(inputs), params.get("max_new_tokens"))
        reason = "length" if short else "eos_token"
        for stop in params.get("stop") or ():
            if stop and stop in reply:
                reply, reason = reply[: reply.index(stop) + len(stop)], "stop_sequence"
                break
        pieces = pieces_of(reply)
        tokens = [{"id": 1000 + i, "text": p, "logprob": -0.1, "special": False} for i, p in enumerate(pieces)]
        eos = {"id": 2, "text": "</s>", "logprob": -0.01, "special": True}
        generated = len(tokens) + (reason == "eos_token")
        text = inputs + reply if params.get("return_full_text") else reply
        if path.rstrip("/") == "/generate":
            payload: dict[str, Any] = {"generated_text": text}
            if params.get("details"):
                payload["details"] = {"finish_reason": reason, "generated_tokens": generated,
                                      "seed": params.get("seed"), "prefill": [],
                                      "tokens": tokens + ([eos] if reason == "eos_token" else []), "top_tokens": None}
            return json_reply(payload)
        events = [{"index": i + 1, "token": t, "generated_text": None, "details": None, "top_tokens": None}
                  for i, t in enumerate(tokens)]
        last_token = eos if reason == "eos_token" else events.pop()["token"]
        events.append({"index": len(events) + 1, "token": last_token, "generated_text": text, "top_tokens": None,
                       "details": {"finish_reason": reason, "generated_tokens": generated,
                                   "input_length": words(inputs), "seed": params.get("seed")}})
        return 200, [], [b"data:" + orjson.dumps(e) + b"\n\n" for e in events]

    def tgi_messages(self, body: dict[str, Any], path: str) -> Response:
        status, headers, payload = self.chat(body, str(body.get("model") or "tgi"))
        if status != 200 or not body.get("stream"):
            return status, headers or [("Content-Type", "application/json")], payload
        return 200, [], list(payload)

    # -- custom -----------------------------------------------------------------------------------

    def custom(self, body: dict[str, Any], path: str) -> Response:
        params = body.get("params")
        prompts = params.get("prompt") if isinstance(params, dict) else None
        if not body.get("model") or not isinstance(prompts, list) or not prompts:
            return json_reply({"error": "expected {'model': ..., 'params': {'prompt': [...]}}"}, 400)
        assert isinstance(params, dict)
        echoed = {k: params[k] for k in ("temperature", "top_k", "top_p") if params.get(k) is not None}
        data = [{"prompt": p, "output": [cut(echo(str(p)), params.get("max_tokens"))[0]], "params": echoed}
                for p in prompts]
        return json_reply({"data": data, "message": "ok"})


def serve(argv: list[str] | None = None) -> None:
    """Command line: run the server in this process until killed."""
    parser = mock_parser(__doc__)
    args = parser.parse_args(argv)
    app = PromptMockApp(args.api_key, args.fail_status, args.delay, args.chunk_delay, not args.no_record)
    run_server(app, args, _Handler)


if __name__ == "__main__":
    serve()
