"""A local Google upstream for end-to-end tests: the Gemini API, Vertex AI, and an OAuth token endpoint.

It runs in its own process (``python tests/mock_upstream/gemini_server.py --port 8902``);
``tests.mock_upstream.gemini.MockGoogle`` starts and drives it. The request log, ``/__mock__/*``
admin endpoints and the per-request failure controls work as in the OpenAI mock (README.md).

Routes:

- Gemini API: ``POST /v1beta/models/{model}:generateContent``, ``:streamGenerateContent``
  (``?alt=sse``: one SSE event per word; else a JSON array), ``:batchEmbedContents``,
  ``:countTokens``; key in ``x-goog-api-key`` or ``?key=`` (when the server has one; a wrong key is
  Google's 400 ``API_KEY_INVALID``).
- Vertex AI: ``POST /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:{method}`` for the
  same methods plus ``:predict`` (text embeddings); ``publishers/anthropic/models/{model}:rawPredict``
  and ``:streamRawPredict`` answer as Anthropic's Messages API (the Anthropic mock's replies), and
  require ``anthropic_version: vertex-2023-10-16`` and no ``model`` in the body. Every Vertex call
  needs ``Authorization: Bearer`` with a token this server issued (else 401 ``UNAUTHENTICATED``).
- OAuth: ``POST /token`` takes a service account's JWT-bearer grant, checks the assertion
  (RS256 signature against ``--public-key`` when given, Google's ``aud``, a cloud-platform
  ``scope``), and issues ``{"access_token", "expires_in": --token-ttl, "token_type": "Bearer"}``.
  ``GET /__mock__/tokens`` lists the tokens issued.

Replies: ``"echo: <text of the last user turn>"``; tokens are words (``promptTokenCount`` counts
the words of ``systemInstruction`` and ``contents``; with ``cachedContent`` half of them are
reported as ``cachedContentTokenCount``). With function declarations and a mode other than
``NONE`` the reply is one ``functionCall`` of the first (or the allowed) function, unless the last
turn is a ``functionResponse`` and the mode is ``AUTO``. ``responseMimeType: application/json``
answers JSON (placeholders for ``responseSchema``). ``maxOutputTokens`` cuts the reply
(``MAX_TOKENS``). A prompt containing ``mock:block`` gets ``promptFeedback.blockReason: SAFETY``
and no candidates; ``mock:unsafe`` a candidate with ``finishReason: SAFETY`` and no content.
Failures: ``x-mock-status`` answers Google's error body for that status; ``x-mock-error:
context_length`` the 400 "input token count ... exceeds the maximum"; ``x-mock-stream-error-after``
ends a stream with an error event.
"""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import gevent
import orjson

try:  # imported as part of the test package
    from .anthropic_server import AnthropicMockApp
    from .openai_server import (
        Disconnect,
        Incoming,
        MockApp,
        Response,
        _Handler,
        mock_parser,
        placeholder,
        run_server,
        vector,
        words,
    )
except ImportError:  # run as a script
    from anthropic_server import AnthropicMockApp
    from openai_server import (
        Disconnect,
        Incoming,
        MockApp,
        Response,
        _Handler,
        mock_parser,
        placeholder,
        run_server,
        vector,
        words,
    )

GEMINI_PATH = re.compile(r"^/v1(?:beta|alpha)?\d*/models/(?P<model>[^/:]+):(?P<method>\w+)$")
VERTEX_PATH = re.compile(r"^/v1(?:beta1)?/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/"
                         r"publishers/(?P<publisher>[^/]+)/models/(?P<model>[^/:]+):(?P<method>\w+)$")
STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
MESSAGES = {400: "Request contains an invalid argument.", 401: "Request had invalid authentication credentials.",
            403: "The caller does not have permission", 404: "Requested entity was not found.",
            429: "Resource has been exhausted (e.g. check quota).", 500: "Internal error encountered.",
            503: "The model is overloaded. Please try again later."}
#: The audience Google's token endpoint requires in a service account's assertion (google-auth sends
#: it whatever the key file's token_uri is).
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
CONTEXT_MESSAGE = "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."


def google_error(status: int, message: str | None = None) -> Response:
    body = {"error": {"code": status, "message": message or MESSAGES.get(status, f"Mock failure (HTTP {status})."),
                      "status": STATUS_NAMES.get(status, "UNKNOWN")}}
    return status, [("Content-Type", "application/json; charset=UTF-8")], [orjson.dumps(body)]


def reply(payload: Any) -> Response:
    return 200, [("Content-Type", "application/json; charset=UTF-8")], [orjson.dumps(payload)]


def part_text(parts: Any) -> str:
    texts = []
    for part in parts if isinstance(parts, list) else ():
        if isinstance(part, dict):
            if "text" in part:
                texts.append(part["text"])
            elif "functionResponse" in part:
                texts.append(str((part["functionResponse"].get("response") or {}).get("content", "")))
    return " ".join(t for t in texts if t)


def schema_value(schema: dict[str, Any]) -> Any:
    if schema.get("type", "").upper() == "OBJECT" or "properties" in schema:
        return {k: schema_value(v) for k, v in (schema.get("properties") or {}).items()}
    if schema.get("type", "").upper() == "ARRAY":
        return [schema_value(schema.get("items") or {})]
    return placeholder({**schema, "type": str(schema.get("type", "string")).lower()})


def b64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


class GoogleMockApp(MockApp):
    def __init__(self, *args: Any, public_key: bytes | None = None, token_ttl: int = 3600, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.public_key = public_key
        self.token_ttl = token_ttl
        self.tokens: list[dict[str, Any]] = []
        self.claude = AnthropicMockApp(None, None, 0.0, 0.0, False, ())

    def admin(self, method: str, path: str, raw: bytes) -> Response:
        if path == "/__mock__/tokens":
            return reply(self.tokens)
        return super().admin(method, path, raw)

    def handle(self, environ: dict[str, Any]) -> Response:
        if environ.get("PATH_INFO") == "/token":
            return self.token(environ)
        incoming = self.receive(environ)
        if not isinstance(incoming, Incoming):
            return incoming
        method, path, body, headers, controls = incoming
        if self.config["fail_status"]:
            return google_error(int(self.config["fail_status"]))
        vertex, gemini = VERTEX_PATH.match(path), GEMINI_PATH.match(path)
        match = vertex or gemini
        if match is None or method != "POST":
            return google_error(404, f"The requested URL {path} was not found on this server.")
        if vertex:
            auth = headers.get("authorization", "")
            if not any(auth == f"Bearer {t['access_token']}" and t["expires_at"] > time.time() for t in self.tokens):
                return google_error(401, "Request had invalid authentication credentials. Expected OAuth 2 "
                                         "access token, login cookie or other valid authentication credential.")
        elif self.api_key is not None:
            key = headers.get("x-goog-api-key") or (parse_qs(environ.get("QUERY_STRING", "")).get("key") or [""])[0]
            if key != self.api_key:
                return google_error(400, "API key not valid. Please pass a valid API key.")
        fail = self.active_failure(controls)
        if fail.get("disconnect"):
            raise Disconnect
        if fail.get("error") == "context_length":
            return google_error(400, CONTEXT_MESSAGE)
        if "status" in fail or "error" in fail:
            return google_error(int(fail.get("status") or 500))
        if not isinstance(body, dict):
            return google_error(400, "Invalid JSON payload received.")
        model, verb = match["model"], match["method"]
        if vertex and match["publisher"] == "anthropic":
            return self.raw_predict(body, model, verb, fail, controls)
        sse = "alt=sse" in environ.get("QUERY_STRING", "")
        if verb in ("generateContent", "streamGenerateContent"):
            return self.generate(body, model, verb == "streamGenerateContent", sse, fail, controls)
        if verb == "batchEmbedContents" and gemini:
            return reply({"embeddings": [{"values": vector(part_text((r.get("content") or {}).get("parts")),
                                                          int(r.get("outputDimensionality") or 8))}
                                         for r in body.get("requests") or ()]})
        if verb == "predict" and vertex:
            dims = int((body.get("parameters") or {}).get("outputDimensionality") or 8)
            return reply({"predictions": [{"embeddings": {"values": vector(i.get("content", ""), dims),
                                                          "statistics": {"token_count": words(i.get("content", "")),
                                                                         "truncated": False}}}
                                          for i in body.get("instances") or ()],
                          "metadata": {"billableCharacterCount": sum(len(i.get("content", ""))
                                                                     for i in body.get("instances") or ())}})
        if verb == "countTokens":
            return reply({"totalTokens": self.prompt_words(body)})
        return google_error(404, f"Method {verb} is not served here.")

    # -- OAuth ------------------------------------------------------------------------------------

    def token(self, environ: dict[str, Any]) -> Response:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        form = parse_qs(environ["wsgi.input"].read(length).decode())
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"] or not form.get("assertion"):
            return self.oauth_error("unsupported_grant_type", "Invalid grant_type.")
        try:
            head, claims, signature = form["assertion"][0].split(".")
            header, payload = orjson.loads(b64url(head)), orjson.loads(b64url(claims))
        except ValueError:
            return self.oauth_error("invalid_grant", "Invalid JWT.")
        if header.get("alg") != "RS256":
            return self.oauth_error("invalid_grant", "Invalid JWT: alg must be RS256.")
        if self.public_key is not None:
            from cryptography.exceptions import InvalidSignature
            from cryptography.hazmat.primitives import hashes, serialization
            from cryptography.hazmat.primitives.asymmetric import padding

            key = serialization.load_pem_public_key(self.public_key)
            try:
                key.verify(b64url(signature), f"{head}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                return self.oauth_error("invalid_grant", "Invalid JWT Signature.")
        if payload.get("aud") != GOOGLE_TOKEN_AUDIENCE or "cloud-platform" not in str(payload.get("scope", "")):
            return self.oauth_error("invalid_grant", "Invalid JWT: audience or scope.")
        if payload.get("exp", 0) < time.time():
            return self.oauth_error("invalid_grant", "Invalid JWT: Token must be a short-lived token.")
        token = {"access_token": "ya29.mock-" + os.urandom(12).hex(), "expires_in": self.token_ttl,
                 "token_type": "Bearer"}
        self.tokens.append({**token, "iss": payload.get("iss"), "expires_at": time.time() + self.token_ttl})
        return reply(token)

    @staticmethod
    def oauth_error(error: str, description: str) -> Response:
        body = orjson.dumps({"error": error, "error_description": description})
        return 400, [("Content-Type", "application/json")], [body]

    # -- Gemini -----------------------------------------------------------------------------------

    @staticmethod
    def prompt_words(body: dict[str, Any]) -> int:
        system = (body.get("systemInstruction") or {}).get("parts")
        return words(part_text(system)) + sum(words(part_text(c.get("parts"))) for c in body.get("contents") or ())

    def generate(self, body: dict[str, Any], model: str, stream: bool, sse: bool, fail: dict[str, Any],
                 controls: dict[str, Any]) -> Response:
        contents = body.get("contents") or []
        if not contents:
            return google_error(400, "* GenerateContentRequest.contents: contents is not specified")
        for c in contents:
            if c.get("role") not in ("user", "model"):
                return google_error(400, f"Please use a valid role: user, model. (got {c.get('role')!r})")
        prompt = self.prompt_words(body)
        everything = part_text((body.get("systemInstruction") or {}).get("parts")) + " " + \
            " ".join(part_text(c.get("parts")) for c in contents)
        usage: dict[str, Any] = {"promptTokenCount": prompt}
        if body.get("cachedContent"):
            usage["cachedContentTokenCount"] = prompt // 2
        base = {"modelVersion": model, "responseId": "mock" + os.urandom(6).hex()}
        if "mock:block" in everything:
            return reply({"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]},
                "usageMetadata": {**usage, "totalTokenCount": prompt}, **base})
        if "mock:unsafe" in everything:
            cand = {"finishReason": "SAFETY", "index": 0, "safetyRatings": [
                {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": True}]}
            return reply({"candidates": [cand], "usageMetadata": {**usage, "totalTokenCount": prompt}, **base})
        parts, finish = self.answer(body, contents)
        pieces = [p for p in re.findall(r"\s*\S+", parts[0]["text"])] if "text" in parts[0] else []
        limit = (body.get("generationConfig") or {}).get("maxOutputTokens")
        if pieces and limit is not None and len(pieces) > int(limit):
            pieces, finish = pieces[:int(limit)], "MAX_TOKENS"
            parts = [{"text": "".join(pieces)}]
        output = len(pieces) if pieces else max(1, words(orjson.dumps(parts).decode()) // 4)
        full_usage = {**usage, "candidatesTokenCount": output, "totalTokenCount": prompt + output}
        if not stream:
            cand = {"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}
            return reply({"candidates": [cand], "usageMetadata": full_usage, **base})
        events = []
        chunks = [[{"text": p}] for p in pieces] if pieces else [parts]
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            cand: dict[str, Any] = {"content": {"role": "model", "parts": chunk}, "index": 0}
            if last:
                cand["finishReason"] = finish
            events.append({"candidates": [cand], "usageMetadata": full_usage if last else usage, **base})
        if not sse:
            return reply(events)
        frames = [b"data: " + orjson.dumps(e) + b"\r\n\r\n" for e in events]
        chunk_delay = float(controls.get("chunk_delay", self.config["chunk_delay"]))
        return 200, [("Content-Type", "text/event-stream")], self.frames(frames, fail, chunk_delay)

    @staticmethod
    def answer(body: dict[str, Any], contents: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
        declarations = [d for t in body.get("tools") or () for d in t.get("functionDeclarations") or ()]
        config = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {})
        mode = config.get("mode", "AUTO")
        last = contents[-1]
        after_result = any("functionResponse" in p for p in last.get("parts") or ())
        if declarations and mode != "NONE" and not (after_result and mode == "AUTO"):
            allowed = config.get("allowedFunctionNames") or []
            fn = next((d for d in declarations if d.get("name") in allowed), declarations[0])
            schema = fn.get("parameters") or {}
            args = {p: schema_value((schema.get("properties") or {}).get(p) or {}) for p in schema.get("required", [])}
            return [{"functionCall": {"name": fn.get("name"), "args": args}}], "STOP"
        user = next((c for c in reversed(contents) if c.get("role") == "user"), {})
        text = "echo: " + part_text(user.get("parts"))
        gen = body.get("generationConfig") or {}
        if gen.get("responseMimeType") == "application/json":
            value = schema_value(gen["responseSchema"]) if gen.get("responseSchema") else {"echo": text}
            text = orjson.dumps(value).decode()
        return [{"text": text}], "STOP"

    def frames(self, frames: list[bytes], fail: dict[str, Any], chunk_delay: float) -> Iterator[bytes]:
        for i, frame in enumerate(frames):
            if i and chunk_delay:
                gevent.sleep(chunk_delay)
            if i == fail.get("disconnect_after"):
                raise Disconnect
            if i == fail.get("stream_error_after"):
                yield b"data: " + orjson.dumps({"error": {"code": 503, "message": MESSAGES[503],
                                                          "status": "UNAVAILABLE"}}) + b"\r\n\r\n"
                return
            yield frame

    # -- Claude on Vertex -------------------------------------------------------------------------

    def raw_predict(self, body: dict[str, Any], model: str, verb: str, fail: dict[str, Any],
                    controls: dict[str, Any]) -> Response:
        if body.get("anthropic_version") != "vertex-2023-10-16":
            return google_error(400, "anthropic_version: must be vertex-2023-10-16")
        if "model" in body:
            return google_error(400, "model: Extra inputs are not permitted")
        problem = self.claude.validate({**body, "model": model})
        if problem:
            return google_error(400, problem)
        message = self.claude.message({**body, "model": model})
        if verb == "rawPredict" and not body.get("stream"):
            return reply(message)
        chunk_delay = float(controls.get("chunk_delay", self.config["chunk_delay"]))
        return 200, [("Content-Type", "text/event-stream")], self.claude.stream(
            self.claude.events(message), fail, chunk_delay)


def serve(argv: list[str] | None = None) -> None:
    parser = mock_parser(__doc__)
    parser.add_argument("--public-key", help="PEM file: token requests must be signed by its private key")
    parser.add_argument("--token-ttl", type=int, default=3600)
    args = parser.parse_args(argv)
    public_key = open(args.public_key, "rb").read() if args.public_key else None  # noqa: SIM115
    app = GoogleMockApp(args.api_key, args.fail_status, args.delay, args.chunk_delay, not args.no_record, (),
                        public_key=public_key, token_ttl=args.token_ttl)
    run_server(app, args, _Handler)


if __name__ == "__main__":
    serve()
