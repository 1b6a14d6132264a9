"""``otel``: one OpenTelemetry trace per call over OTLP/HTTP (protobuf).

The call is a SERVER span named ``{operation} {model group}``; under it one span per pipeline
stage, laid end to end with each stage's own time (what Server-Timing shows), and a CLIENT span
for the upstream call. Attributes follow the GenAI semantic conventions (``gen_ai.*``). Spans are
made from finished records in the exporter's greenlet and sent in batches, so the request path
never touches them.

The resource is the SDK's (``Resource.create``: ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES`` and the ``telemetry.sdk.*`` attributes); the spans are written
straight to protobuf by proxy/observe/otlp.py, since SDK span objects cost more CPU per call than
the rest of the request.

Settings: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (LiteLLM's
``OTEL_ENDPOINT`` too; ``/v1/traces`` is added to a base URL), ``OTEL_EXPORTER_OTLP_TRACES_HEADERS``,
``OTEL_EXPORTER_OTLP_HEADERS`` (or ``OTEL_HEADERS``), ``OTEL_EXPORTER_OTLP_COMPRESSION`` (``gzip``),
``OTEL_SERVICE_NAME`` (default ``llmrelay``).
"""

from __future__ import annotations

import gzip
import random
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import gevent

from proxy.observe import otlp
from proxy.observe.exporters import HTTPExporter, env, parse_headers, slices

OPERATIONS = {"completion": "chat", "text_completion": "text_completion", "embedding": "embeddings",
              "moderation": "moderation"}
DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"
#: request parameters recorded as ``gen_ai.request.*``
PARAMETERS = (("temperature", "gen_ai.request.temperature"), ("max_tokens", "gen_ai.request.max_tokens"),
              ("top_p", "gen_ai.request.top_p"))
KEY_ATTRIBUTES = (("user_api_key_alias", "llmrelay.key_alias"), ("user_api_key_team_id", "llmrelay.team_id"),
                  ("user_api_key_user_id", "llmrelay.user_id"))
# attribute keys written for every call, encoded once
INPUT_TOKENS, OUTPUT_TOKENS = otlp.key("gen_ai.usage.input_tokens"), otlp.key("gen_ai.usage.output_tokens")
RESPONSE_ID, FINISH_REASONS = otlp.key("gen_ai.response.id"), otlp.key("gen_ai.response.finish_reasons")
STATUS_CODE, REQUEST_ID = otlp.key("http.response.status_code"), otlp.key("llmrelay.request_id")
SESSION_ID, COST = otlp.key("session.id"), otlp.key("llmrelay.response_cost")
TTFT, ERROR_TYPE = otlp.key("llmrelay.time_to_first_token_ms"), otlp.key("error.type")
STREAMED = {True: otlp.attribute("llmrelay.stream", True), False: otlp.attribute("llmrelay.stream", False)}
PARAMETER_KEYS = tuple((name, otlp.key(attr)) for name, attr in PARAMETERS)
#: encoded per-model-and-key blocks kept at most (a new entry past this starts the cache afresh)
CACHE_SIZE = 4096


def server_attributes(api_base: str) -> list[tuple[str, Any]]:
    """``server.address`` (the host) and ``server.port`` of the upstream, as the HTTP conventions
    ask, from the deployment's api_base URL."""
    url = urlsplit(api_base)
    if not url.hostname:
        return [("server.address", api_base)]
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        return [("server.address", url.hostname)]
    return [("server.address", url.hostname), ("server.port", port)]


def traces_endpoint(environ: Mapping[str, str]) -> str:
    exact = env(environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if exact:
        return exact
    base = env(environ, "OTEL_EXPORTER_OTLP_ENDPOINT") or env(environ, "OTEL_ENDPOINT")
    if not base:
        return DEFAULT_ENDPOINT
    base = base.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


class OTel(HTTPExporter):
    name = "otel"
    batch_size = 200

    def __init__(self, environ: Mapping[str, str], on_drop: Callable[[str, int], None] | None = None) -> None:
        from opentelemetry.sdk.resources import Resource

        from proxy import __version__

        self.url = traces_endpoint(environ)
        headers = parse_headers(env(environ, "OTEL_EXPORTER_OTLP_TRACES_HEADERS")
                                or env(environ, "OTEL_EXPORTER_OTLP_HEADERS") or env(environ, "OTEL_HEADERS"))
        self.gzip = (env(environ, "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION")
                     or env(environ, "OTEL_EXPORTER_OTLP_COMPRESSION") or "").lower() == "gzip"
        self.headers = {**headers, "Content-Type": "application/x-protobuf"}
        if self.gzip:
            self.headers["Content-Encoding"] = "gzip"
        service = env(environ, "OTEL_SERVICE_NAME", "llmrelay")
        resource = Resource.create({"service.name": service})
        self.resource, self.scope = otlp.scope_prefix(dict(resource.attributes), "llmrelay", __version__)
        self._static: dict[tuple[Any, ...], tuple[bytes, bytes, bytes, bytes]] = {}
        self._stages: dict[str, bytes] = {}
        super().__init__(on_drop)

    def send(self, batch: list[dict[str, Any]]) -> None:
        self.post(self.url, self.payload(batch, pause=gevent.sleep), self.headers)

    def payload(self, batch: list[dict[str, Any]], pause: Callable[[], Any] | None = None) -> bytes:
        spans: list[bytes] = []
        for records in slices(batch, pause):
            for record in records:
                spans += self.spans(record)
        body = otlp.request(self.resource, self.scope, spans)
        return gzip.compress(body, 1) if self.gzip else body

    # -- one call ---------------------------------------------------------------------------------

    def static(self, record: dict[str, Any]) -> tuple[bytes, bytes, bytes, bytes]:
        """Name, kind and attributes that repeat for a model group, deployment and key: made once."""
        meta = record["metadata"]
        key = (record["call_type"], record["model_group"], record["custom_llm_provider"], record["model"],
               record["api_base"], *(meta.get(k) for k, _ in KEY_ATTRIBUTES))
        found = self._static.get(key)
        if found is not None:
            return found
        operation = OPERATIONS.get(record["call_type"], record["call_type"])
        gen_ai = [("gen_ai.operation.name", operation), ("gen_ai.request.model", record["model_group"] or "")]
        if record["custom_llm_provider"]:
            gen_ai += [("gen_ai.provider.name", record["custom_llm_provider"]),
                       ("gen_ai.system", record["custom_llm_provider"])]
        if record["model"]:
            gen_ai.append(("gen_ai.response.model", record["model"]))
        keys = [(attr, str(meta[k])) for k, attr in KEY_ATTRIBUTES if meta.get(k)]
        client = server_attributes(record["api_base"]) if record["api_base"] else []
        found = (otlp.span_head(f"{operation} {record['model_group']}", otlp.KIND_SERVER),
                 otlp.attributes(gen_ai + keys),
                 otlp.span_head(f"{operation} {record['model'] or record['model_group']}", otlp.KIND_CLIENT),
                 otlp.attributes(gen_ai + client))
        if len(self._static) >= CACHE_SIZE:
            self._static.clear()
        self._static[key] = found
        return found

    def stage(self, name: str) -> bytes:
        head = self._stages.get(name)
        if head is None:
            head = self._stages[name] = (otlp.span_head(f"stage {name}", otlp.KIND_INTERNAL)
                                         + otlp.attribute("llmrelay.stage", name))
        return head

    def spans(self, record: dict[str, Any]) -> list[bytes]:
        """The call's spans: the SERVER span, a span per stage and the upstream CLIENT span."""
        start = int(record["startTime"] * 1e9)
        end = int(record["endTime"] * 1e9)
        root_head, root_static, client_head, client_static = self.static(record)
        int_attribute, str_attribute = otlp.int_attribute, otlp.str_attribute
        gen_ai = [int_attribute(INPUT_TOKENS, record["prompt_tokens"]),
                  int_attribute(OUTPUT_TOKENS, record["completion_tokens"])]
        params = record["model_parameters"]
        if params:
            for name, encoded in PARAMETER_KEYS:
                value = params.get(name)
                if isinstance(value, float):
                    gen_ai.append(otlp.float_attribute(encoded, value))
                elif isinstance(value, int) and not isinstance(value, bool):
                    gen_ai.append(int_attribute(encoded, value))
        response = record["response"]
        if isinstance(response, dict):
            if response.get("id"):
                gen_ai.append(str_attribute(RESPONSE_ID, str(response["id"])))
            reasons = [c["finish_reason"] for c in response.get("choices") or ()
                       if isinstance(c, dict) and isinstance(c.get("finish_reason"), str)]
            if reasons:
                gen_ai.append(otlp.key_value(FINISH_REASONS, otlp.any_value(reasons)))
        root = [root_static, *gen_ai, int_attribute(STATUS_CODE, record["status_code"]),
                str_attribute(REQUEST_ID, record["id"]), STREAMED[bool(record["stream"])]]
        session = record["metadata"].get("session_id")
        if session:
            root.append(str_attribute(SESSION_ID, str(session)))
        if record["response_cost"] is not None:
            root.append(otlp.float_attribute(COST, float(record["response_cost"])))
        if record["time_to_first_token"] is not None:
            root.append(otlp.float_attribute(TTFT, record["time_to_first_token"] * 1000))
        status = b""
        if record["status"] == "failure":
            error = record["error_information"] or {}
            root.append(str_attribute(ERROR_TYPE, error.get("error_class") or "error"))
            status = otlp.status_error(record["error_str"] or "")
        timings = record["timings"]
        ids = random.randbytes(24 + 8 * len(timings))
        trace_id, root_id = ids[:16], ids[16:24]
        out = [otlp.span(trace_id, root_id, None, root_head, start, end, root, status)]
        at, offset = start, 24
        for stage, seconds in timings.items():
            until = min(end, at + int(seconds * 1e9))
            span_id = ids[offset:offset + 8]
            offset += 8
            if stage == "upstream":
                out.append(otlp.span(trace_id, span_id, root_id, client_head, at, until, (client_static, *gen_ai)))
            else:
                out.append(otlp.span(trace_id, span_id, root_id, self.stage(stage), at, until))
            at = until
        return out
