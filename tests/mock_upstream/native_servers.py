"""One local upstream for the providers with wire formats of their own: Amazon Bedrock Runtime,
SageMaker runtime and STS (all checking AWS SigV4 signatures), and Cohere's v2 API.

It runs in its own process (``python tests/mock_upstream/native_servers.py --port 8903``);
``tests.mock_upstream.native.MockNativeServers`` starts and drives it. The request log
(``GET``/``DELETE /__mock__/requests``; entries also hold ``"signature"``: ``"valid"`` or why not),
``POST /__mock__/config``, ``--fail-status``/``--delay`` and the per-request failure controls
(``x-mock-*`` headers, or a ``mock_controls`` body object) work as in the OpenAI mock (README.md).

**Signatures.** Every AWS route recomputes the request's SigV4 signature with botocore, from the
raw path, the signed headers and the body, using the secret it knows for the access key: the
``--aws-key ID:SECRET`` pairs given at start (default ``AKIDEXAMPLE`` with the documentation
secret) and every temporary key its STS issued. A bad signature is AWS's 403
``InvalidSignatureException``, an unknown key 403 ``UnrecognizedClientException``, a temporary key
without its session token 403 ``UnrecognizedClientException``, an expired one 403
``ExpiredTokenException``.

Routes, all ``POST``:

- Bedrock (service ``bedrock``): ``/model/{id}/converse`` and ``/converse-stream`` answer
  ``"echo: <text of the last user turn>"``, or, with ``toolConfig`` and a last turn that is not a
  tool result, a ``toolUse`` of the first tool; streams are binary event streams (messageStart,
  contentBlockDelta per word, contentBlockStop, messageStop, metadata with usage).
  ``/model/{id}/invoke`` answers by body: ``inputText`` (Titan embeddings: ``embedding``,
  ``inputTextTokenCount``; ``embeddingsByType`` for v2), ``texts`` (Cohere embed), or
  ``messages`` (Anthropic Messages), with the ``X-Amzn-Bedrock-Input/Output-Token-Count`` headers.
  ``/invoke-with-response-stream`` sends Anthropic's events as ``chunk`` frames
  (``{"bytes": base64}``), the last with ``amazon-bedrock-invocationMetrics``.
- SageMaker (service ``sagemaker``): ``/endpoints/{name}/invocations`` with ``{"inputs": ...}``
  answers TEI's array of vectors.
- STS (service ``sts``): ``/`` with the query form ``Action=AssumeRole`` issues temporary
  credentials valid for ``--sts-lifetime`` seconds (default 3600), in STS's XML.
- Cohere: ``/v2/chat`` (JSON, or SSE with ``"stream": true``; a tool call when ``tools`` are given
  and the last message is not a tool result) and ``/v2/embed`` (``embeddings.float``,
  ``meta.billed_units``); the key is checked when the server has ``--api-key``.

Tokens are words, vectors are ``openai_server.vector`` (8 floats unless dimensions say otherwise).
Failures speak each service's error shape: ``x-mock-status: N`` (AWS ``{"message"}`` with
``x-amzn-ErrorType`` for the status; Cohere ``{"message"}``), ``x-mock-error:
context_length_exceeded`` (Bedrock's 400 "Input is too long for requested model.", Cohere's 400
"too many tokens"), and ``x-mock-stream-error-after: N`` (N stream items, then a Bedrock
``throttlingException`` exception frame, or for Cohere an SSE error event).
"""

from __future__ import annotations

import base64
import os
import re
import struct
import time
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import gevent
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

try:  # imported as part of the test package
    from .openai_server import MockApp, Response, _Handler, mock_parser, placeholder, run_server, vector, words
except ImportError:  # run as a script: the sibling module is importable by name
    from openai_server import MockApp, Response, _Handler, mock_parser, placeholder, run_server, vector, words

DEFAULT_KEYS = {"AKIDEXAMPLE": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}
AUTH = re.compile(r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
                  r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[^,]+), Signature=(?P<sig>[0-9a-f]{64})$")
BEDROCK = re.compile(r"^/model/(?P<model>.+)/(?P<op>converse-stream|converse|invoke-with-response-stream|invoke)$")
SAGEMAKER = re.compile(r"^/endpoints/(?P<name>[^/]+)/invocations$")
AWS_ERRORS = {400: "ValidationException", 403: "AccessDeniedException", 404: "ResourceNotFoundException",
              408: "ModelTimeoutException", 424: "ModelError", 429: "ThrottlingException",
              500: "InternalServerException", 503: "ServiceUnavailableException"}


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream frame: prelude (total length, headers length, CRC), string headers,
    payload, message CRC (CRC32 over everything before it)."""
    encoded = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded += struct.pack("B", len(raw_name)) + raw_name + b"\x07" + struct.pack(">H", len(raw_value)) + raw_value
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event(kind: str, payload: dict[str, Any]) -> bytes:
    return encode_frame({":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
                        orjson.dumps(payload))


def chunk_event(payload: dict[str, Any]) -> bytes:
    """An InvokeModelWithResponseStream ``chunk``: the model's JSON, base64 in ``bytes``."""
    return event("chunk", {"bytes": base64.b64encode(orjson.dumps(payload)).decode()})


def aws_error(status: int, message: str, error_type: str | None = None) -> Response:
    kind = error_type or AWS_ERRORS.get(status, "InternalServerException")
    headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", f"{kind}:http://internal.amazon.com/")]
    return status, headers, [orjson.dumps({"message": message})]


def json_reply(payload: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    return status, [("Content-Type", "application/json"), *(headers or [])], [orjson.dumps(payload)]


def converse_text(message: dict[str, Any]) -> str:
    parts = []
    for block in message.get("content") or ():
        if "text" in block:
            parts.append(block["text"])
        elif "toolResult" in block:
            parts.extend(c.get("text", "") for c in block["toolResult"].get("content") or ())
    return " ".join(parts)


class NativeMockApp(MockApp):
    """Bedrock, SageMaker, STS and Cohere routes with the OpenAI mock's log and controls."""

    def __init__(self, *args: Any, aws_keys: dict[str, str] | None = None, sts_lifetime: float = 3600.0,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aws_keys: dict[str, tuple[str, str | None, float | None]] = {
            k: (s, None, None) for k, s in (aws_keys or DEFAULT_KEYS).items()}
        self.sts_lifetime = sts_lifetime
        self.sts_issued = 0

    def handle(self, environ: dict[str, Any]) -> Response:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
        raw_path = environ.get("RAW_URI", path).split("?", 1)[0]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else environ["wsgi.input"].read()
        if path.startswith("/__mock__/"):
            return self.admin(method, path, raw)
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(name):
                headers[name.lower().replace("_", "-")] = environ[name]
        try:
            body: Any = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
        family = "cohere" if path.startswith("/v2/") else "aws"
        signature = self.verify(method, raw_path, environ.get("QUERY_STRING", ""), headers, raw) \
            if family == "aws" else None
        if self.record:
            self.received.append({"method": method, "path": raw_path, "query": environ.get("QUERY_STRING", ""),
                                  "headers": headers, "body": body, "signature": signature, "time": time.time()})
        controls = self.controls(headers, body)
        delay = controls.get("delay", self.config["delay"])
        if delay:
            gevent.sleep(delay)
        if self.config["fail_status"]:
            return self.failure_of(family, self.config["fail_status"], None)
        if method != "POST":
            return aws_error(405, "method not allowed") if family == "aws" else json_reply({"message": "no"}, 405)
        if family == "aws" and signature != "valid":
            kind, _, message = str(signature).partition(": ")
            return aws_error(403, message, kind)
        if family == "cohere" and self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            return json_reply({"id": "err", "message": "invalid api token"}, 401)
        fail = self.active_failure(controls)
        if "status" in fail or "error" in fail:
            return self.failure_of(family, fail.get("status"), fail.get("error"))
        chunk_delay = float(controls.get("chunk_delay", self.config["chunk_delay"]))
        if (match := BEDROCK.match(path)) is not None:
            return self.bedrock(match["model"], match["op"], body, fail, chunk_delay)
        if (match := SAGEMAKER.match(path)) is not None:
            return self.sagemaker(body)
        if path == "/" and "Action=" in (raw.decode("latin-1") if raw else ""):
            return self.sts(parse_qs(raw.decode()))
        if path == "/v2/chat":
            return self.cohere_chat(body, fail, chunk_delay)
        if path == "/v2/embed":
            return self.cohere_embed(body)
        return aws_error(404, f"no route for {path}", "UnknownOperationException")

    # -- SigV4 ------------------------------------------------------------------------------------

    def verify(self, method: str, raw_path: str, query: str, headers: dict[str, str], raw: bytes) -> str:
        """``"valid"``, or ``"<AWS error type>: <message>"`` saying why the signature is not."""
        found = AUTH.match(headers.get("authorization", ""))
        if found is None:
            return "MissingAuthenticationTokenException: Missing Authentication Token"
        known = self.aws_keys.get(found["key"])
        if known is None:
            return "UnrecognizedClientException: The security token included in the request is invalid."
        secret, token, expires = known
        if token is not None and headers.get("x-amz-security-token") != token:
            return "UnrecognizedClientException: The security token included in the request is invalid."
        if expires is not None and expires < time.time():
            return "ExpiredTokenException: The security token included in the request is expired"
        signed = found["signed"].split(";")
        if any(name not in headers for name in signed):
            return "IncompleteSignatureException: a signed header is missing"
        url = f"http://{headers['host']}{raw_path}" + (f"?{query}" if query else "")
        request = AWSRequest(method=method, url=url, data=raw, headers={n: headers[n] for n in signed})
        request.context["timestamp"] = headers.get("x-amz-date", "")
        signer = SigV4Auth(Credentials(found["key"], secret, token), found["service"], found["region"])
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        if expected != found["sig"]:
            return ("InvalidSignatureException: The request signature we calculated does not match the "
                    "signature you provided. Check your AWS Secret Access Key and signing method.")
        return "valid"

    def failure_of(self, family: str, status: int | None, kind: str | None) -> Response:
        if family == "cohere":
            if kind == "context_length_exceeded":
                return json_reply({"id": "err", "message": "too many tokens: total number of tokens in the prompt "
                                                           "cannot exceed 128000 - received 130000."}, status or 400)
            return json_reply({"id": "err", "message": f"mock failure (HTTP {status or 500})"}, status or 500)
        if kind == "context_length_exceeded":
            return aws_error(status or 400, "Input is too long for requested model.", "ValidationException")
        status = status or 500
        return aws_error(status, f"mock failure (HTTP {status})")

    # -- Bedrock ----------------------------------------------------------------------------------

    def bedrock(self, model: str, op: str, body: Any, fail: dict[str, Any], chunk_delay: float) -> Response:
        if not isinstance(body, dict):
            return aws_error(400, "Malformed input request, please reformat your input and try again.")
        if op.startswith("converse"):
            return self.converse(body, op == "converse-stream", fail, chunk_delay)
        if op == "invoke":
            return self.invoke(model, body)
        return self.invoke_stream(body, fail, chunk_delay)

    def converse(self, body: dict[str, Any], stream: bool, fail: dict[str, Any], chunk_delay: float) -> Response:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return aws_error(400, "A conversation must start with a user message.")
        uses_tools = any("toolUse" in b or "toolResult" in b for m in messages for b in m.get("content") or ())
        if uses_tools and not body.get("toolConfig"):
            return aws_error(400, "The toolConfig field must be defined when using toolUse and toolResult "
                                  "content blocks.")
        prompt = sum(words(converse_text(m)) for m in messages) + sum(words(s.get("text", ""))
                                                                         for s in body.get("system") or ())
        last = messages[-1]
        tools = (body.get("toolConfig") or {}).get("tools") or []
        tool_result = any("toolResult" in b for b in last.get("content") or ())
        blocks: list[dict[str, Any]]
        if tools and not tool_result:
            spec = tools[0]["toolSpec"]
            schema = spec.get("inputSchema", {}).get("json", {})
            args = {p: placeholder(schema.get("properties", {}).get(p, {})) for p in schema.get("required", [])}
            blocks, reason = [{"toolUse": {"toolUseId": "tooluse_" + os.urandom(6).hex(), "name": spec["name"],
                                           "input": args}}], "tool_use"
        else:
            blocks, reason = [{"text": "echo: " + converse_text(last)}], "end_turn"
        text = blocks[0].get("text", "")
        usage = {"inputTokens": prompt, "outputTokens": words(text) or 1, "totalTokens": prompt + (words(text) or 1)}
        if not stream:
            return json_reply({"output": {"message": {"role": "assistant", "content": blocks}},
                               "stopReason": reason, "usage": usage, "metrics": {"latencyMs": 1}})
        frames = [event("messageStart", {"role": "assistant", "p": "abc"})]
        if "toolUse" in blocks[0]:
            use = blocks[0]["toolUse"]
            frames.append(event("contentBlockStart", {"contentBlockIndex": 0, "start": {
                "toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}}))
            arguments = orjson.dumps(use["input"]).decode()
            frames.append(event("contentBlockDelta", {"contentBlockIndex": 0,
                                                      "delta": {"toolUse": {"input": arguments}}}))
        else:
            frames += [event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
                       for piece in re.findall(r"\s*\S+", text)]
        frames += [event("contentBlockStop", {"contentBlockIndex": 0}), event("messageStop", {"stopReason": reason}),
                   event("metadata", {"usage": usage, "metrics": {"latencyMs": 1}})]
        return 200, [("Content-Type", "application/vnd.amazon.eventstream")], self.drip(frames, fail, chunk_delay)

    def drip(self, frames: list[bytes], fail: dict[str, Any], chunk_delay: float) -> Iterator[bytes]:
        for i, frame in enumerate(frames):
            if i and chunk_delay:
                gevent.sleep(chunk_delay)
            if i == fail.get("stream_error_after"):
                yield encode_frame({":exception-type": "throttlingException", ":content-type": "application/json",
                                    ":message-type": "exception"},
                                   orjson.dumps({"message": "Too many requests, please wait before trying again."}))
                return
            yield frame

    def invoke(self, model: str, body: dict[str, Any]) -> Response:
        if "inputText" in body:
            text = str(body["inputText"])
            vec = vector(text, int(body.get("dimensions") or 8))
            out: dict[str, Any] = {"embedding": vec, "inputTextTokenCount": words(text)}
            if "v2" in model:
                out["embeddingsByType"] = {"float": vec}
            return json_reply(out, headers=[("X-Amzn-Bedrock-Input-Token-Count", str(words(text))),
                                            ("X-Amzn-Bedrock-Output-Token-Count", "0")])
        if "texts" in body:
            texts = body["texts"]
            vectors = [vector(t, 8) for t in texts]
            by_type = bool(body.get("embedding_types"))
            out = {"id": "emb-" + os.urandom(4).hex(), "texts": texts,
                   "embeddings": {"float": vectors} if by_type else vectors,
                   "response_type": "embeddings_by_type" if by_type else "embeddings_floats"}
            count = sum(words(t) for t in texts)
            return json_reply(out, headers=[("X-Amzn-Bedrock-Input-Token-Count", str(count)),
                                            ("X-Amzn-Bedrock-Output-Token-Count", "0")])
        if "messages" in body and body.get("anthropic_version"):
            reply, prompt = self.anthropic_reply(body)
            out = {"id": "msg_bdrk_" + os.urandom(6).hex(), "type": "message", "role": "assistant", "model": model,
                   "content": [{"type": "text", "text": reply}], "stop_reason": "end_turn", "stop_sequence": None,
                   "usage": {"input_tokens": prompt, "output_tokens": words(reply)}}
            return json_reply(out, headers=[("X-Amzn-Bedrock-Input-Token-Count", str(prompt)),
                                            ("X-Amzn-Bedrock-Output-Token-Count", str(words(reply)))])
        return aws_error(400, "Malformed input request: #: required key [messages] not found, please reformat "
                              "your input and try again.")

    @staticmethod
    def anthropic_reply(body: dict[str, Any]) -> tuple[str, int]:
        def text(content: Any) -> str:
            if isinstance(content, str):
                return content
            return " ".join(b.get("text", "") for b in content or () if isinstance(b, dict))
        messages = body.get("messages") or []
        prompt = sum(words(text(m.get("content"))) for m in messages)
        return "echo: " + text(messages[-1].get("content") if messages else ""), prompt

    def invoke_stream(self, body: dict[str, Any], fail: dict[str, Any], chunk_delay: float) -> Response:
        if "messages" not in body:
            return aws_error(400, "Malformed input request, please reformat your input and try again.")
        reply, prompt = self.anthropic_reply(body)
        pieces = re.findall(r"\s*\S+", reply)
        frames = [chunk_event({"type": "message_start", "message": {
            "id": "msg_bdrk_1", "type": "message", "role": "assistant", "content": [], "stop_reason": None,
            "usage": {"input_tokens": prompt, "output_tokens": 1}}}),
            chunk_event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})]
        frames += [chunk_event({"type": "content_block_delta", "index": 0,
                                "delta": {"type": "text_delta", "text": p}}) for p in pieces]
        frames += [chunk_event({"type": "content_block_stop", "index": 0}),
                   chunk_event({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                "usage": {"output_tokens": len(pieces)}}),
                   chunk_event({"type": "message_stop", "amazon-bedrock-invocationMetrics": {
                       "inputTokenCount": prompt, "outputTokenCount": len(pieces), "invocationLatency": 5,
                       "firstByteLatency": 2}})]
        return 200, [("Content-Type", "application/vnd.amazon.eventstream")], self.drip(frames, fail, chunk_delay)

    # -- SageMaker and STS ------------------------------------------------------------------------

    def sagemaker(self, body: Any) -> Response:
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs or not all(isinstance(x, str) for x in inputs):
            return aws_error(424, 'Received client error (422) from primary with message "{"error":"Input '
                                  'validation error: `inputs` cannot be empty","error_type":"Validation"}".',
                             "ModelError")
        return json_reply([vector(x, 8) for x in inputs])

    def sts(self, form: dict[str, list[str]]) -> Response:
        if form.get("Action") != ["AssumeRole"] or not form.get("RoleArn") or not form.get("RoleSessionName"):
            return 400, [("Content-Type", "text/xml")], [b"<ErrorResponse><Error><Code>ValidationError</Code>"
                                                          b"<Message>bad request</Message></Error></ErrorResponse>"]
        self.sts_issued += 1
        key, secret, token = f"ASIA{self.sts_issued:012d}", os.urandom(20).hex(), os.urandom(32).hex()
        expires = time.time() + self.sts_lifetime
        self.aws_keys[key] = (secret, token, expires)
        role, session = form["RoleArn"][0], form["RoleSessionName"][0]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
        xml = (f'<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>'
               f"<AssumedRoleUser><AssumedRoleId>AROAMOCK:{session}</AssumedRoleId>"
               f"<Arn>{role.replace(':iam:', ':sts:').replace(':role/', ':assumed-role/')}/{session}</Arn>"
               f"</AssumedRoleUser><Credentials><AccessKeyId>{key}</AccessKeyId>"
               f"<SecretAccessKey>{secret}</SecretAccessKey><SessionToken>{token}</SessionToken>"
               f"<Expiration>{stamp}</Expiration></Credentials></AssumeRoleResult>"
               f"<ResponseMetadata><RequestId>{os.urandom(8).hex()}</RequestId></ResponseMetadata>"
               f"</AssumeRoleResponse>")
        return 200, [("Content-Type", "text/xml")], [xml.encode()]

    # -- Cohere -----------------------------------------------------------------------------------

    def cohere_chat(self, body: Any, fail: dict[str, Any], chunk_delay: float) -> Response:
        messages = body.get("messages") if isinstance(body, dict) else None
        if not body.get("model") or not isinstance(messages, list) or not messages:
            return json_reply({"id": "err", "message": "invalid request: messages must not be empty"}, 400)

        def text(content: Any) -> str:
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
        prompt = sum(words(text(m.get("content"))) for m in messages)
        tools = body.get("tools") or []
        last = messages[-1]
        call = None
        if tools and last.get("role") != "tool" and body.get("tool_choice") != "NONE":
            fn = tools[0]["function"]
            params = fn.get("parameters") or {}
            args = {p: placeholder(params.get("properties", {}).get(p, {})) for p in params.get("required", [])}
            call = {"id": "call_" + os.urandom(6).hex(), "type": "function",
                    "function": {"name": fn["name"], "arguments": orjson.dumps(args).decode()}}
        reply = "" if call else "echo: " + text(last.get("content"))
        limit = body.get("max_tokens")
        reason = "TOOL_CALL" if call else "COMPLETE"
        if limit and words(reply) > int(limit):
            reply, reason = " ".join(reply.split()[: int(limit)]), "MAX_TOKENS"
        usage = {"billed_units": {"input_tokens": prompt, "output_tokens": words(reply) or 1},
                 "tokens": {"input_tokens": prompt + 7, "output_tokens": words(reply) or 1}}
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant"}
            if call:
                message.update(tool_plan="I will call the tool.", tool_calls=[call])
            else:
                message["content"] = [{"type": "text", "text": reply}]
            return json_reply({"id": os.urandom(8).hex(), "finish_reason": reason, "message": message, "usage": usage})
        events = [{"id": os.urandom(8).hex(), "type": "message-start", "delta": {"message": {
            "role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}}]
        if call:
            events.append({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "I will call the tool."}}})
            start = {"id": call["id"], "type": "function",
                     "function": {"name": call["function"]["name"], "arguments": ""}}
            events.append({"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": start}}})
            args = call["function"]["arguments"]
            events += [{"type": "tool-call-delta", "index": 0, "delta": {"message": {"tool_calls": {
                "function": {"arguments": args[i:i + 8]}}}}} for i in range(0, len(args), 8)]
            events.append({"type": "tool-call-end", "index": 0})
        else:
            events.append({"type": "content-start", "index": 0,
                           "delta": {"message": {"content": {"type": "text", "text": ""}}}})
            events += [{"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": p}}}}
                       for p in re.findall(r"\s*\S+", reply)]
            events.append({"type": "content-end", "index": 0})
        events.append({"type": "message-end", "delta": {"finish_reason": reason, "usage": usage}})
        frames = [f"event: {e['type']}\ndata: ".encode() + orjson.dumps(e) + b"\n\n" for e in events]
        return 200, [("Content-Type", "text/event-stream")], self.sse_drip(frames, fail, chunk_delay)

    @staticmethod
    def sse_drip(frames: list[bytes], fail: dict[str, Any], chunk_delay: float) -> Iterator[bytes]:
        for i, frame in enumerate(frames):
            if i and chunk_delay:
                gevent.sleep(chunk_delay)
            if i == fail.get("stream_error_after"):
                yield b'event: error\ndata: {"type":"error","error":"internal server error"}\n\n'
                return
            yield frame

    def cohere_embed(self, body: Any) -> Response:
        texts = body.get("texts") if isinstance(body, dict) else None
        if not body.get("model") or not isinstance(texts, list) or not texts:
            return json_reply({"id": "err", "message": "invalid request: texts must not be empty"}, 400)
        if "3" in str(body["model"]) and not body.get("input_type"):
            return json_reply({"id": "err", "message": "invalid request: valid input_type must be provided with "
                                                       "the provided model"}, 400)
        dims = int(body.get("output_dimension") or 8)
        return json_reply({"id": os.urandom(8).hex(), "texts": texts,
                           "embeddings": {"float": [vector(t, dims) for t in texts]},
                           "meta": {"api_version": {"version": "2"},
                                    "billed_units": {"input_tokens": sum(words(t) for t in texts)}},
                           "response_type": "embeddings_by_type"})


class _RawHandler(_Handler):
    """Keeps the raw request path (with its %-escapes): SigV4 signs the path as sent."""

    def get_environ(self) -> dict[str, Any]:
        env = super().get_environ()
        env["RAW_URI"] = self.path
        return env


def serve(argv: list[str] | None = None) -> None:
    """Command line: run the server in this process until killed."""
    parser = mock_parser(__doc__)
    parser.add_argument("--aws-key", action="append", default=[], help="ACCESS_KEY_ID:SECRET (repeatable)")
    parser.add_argument("--sts-lifetime", type=float, default=3600.0)
    parser.add_argument("--models")
    args = parser.parse_args(argv)
    keys = dict(pair.split(":", 1) for pair in args.aws_key) or None
    app = NativeMockApp(args.api_key, args.fail_status, args.delay, args.chunk_delay, not args.no_record,
                        aws_keys=keys, sts_lifetime=args.sts_lifetime)
    run_server(app, args, _RawHandler)


if __name__ == "__main__":
    serve()


__all__ = ["NativeMockApp", "chunk_event", "encode_frame", "event", "serve"]
