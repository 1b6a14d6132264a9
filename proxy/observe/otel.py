"""``otel``: one OpenTelemetry trace per call over OTLP/HTTP (protobuf).

The call is a SERVER span named ``{operation} {model group}``; under it one span per pipeline
stage, laid end to end with each stage's own time (what Server-Timing shows), and a CLIENT span
for the upstream call. Attributes follow the GenAI semantic conventions (``gen_ai.*``). Spans are
encoded as each record is built, off the request path, and sent in batches.

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

import logging
import zlib
from collections.abc import Callable, Mapping
from itertools import accumulate, repeat
from operator import mul
from typing import Any
from urllib.parse import urlsplit

from proxy.observe import otlp
from proxy.observe.exporters import MAX_QUEUE, HTTPExporter, env, parse_headers, step_aside

log = logging.getLogger(__name__)

OPERATIONS = {"completion": "chat", "text_completion": "text_completion", "embedding": "embeddings",
              "moderation": "moderation"}
DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"
#: request parameters recorded as ``gen_ai.request.*``
PARAMETERS = (("temperature", "gen_ai.request.temperature"), ("max_tokens", "gen_ai.request.max_tokens"),
              ("top_p", "gen_ai.request.top_p"))
KEY_ATTRIBUTES = (("user_api_key_alias", "llmrelay.key_alias"), ("user_api_key_team_id", "llmrelay.team_id"),
                  ("user_api_key_user_id", "llmrelay.user_id"))
# attributes written for every call: key encoded once, value per call (bound methods: a call
# through a plain method costs less than one through ``__call__``)
INPUT_TOKENS = otlp.IntKey("gen_ai.usage.input_tokens").attribute
OUTPUT_TOKENS = otlp.IntKey("gen_ai.usage.output_tokens").attribute
RESPONSE_ID, REQUEST_ID = otlp.StrKey("gen_ai.response.id").attribute, otlp.StrKey("llmrelay.request_id").attribute
SESSION_ID, ERROR_TYPE = otlp.StrKey("session.id").attribute, otlp.StrKey("error.type").attribute
COST = otlp.FloatKey("llmrelay.response_cost").attribute
TTFT = otlp.FloatKey("llmrelay.time_to_first_token_ms").attribute
STATUS_CODE = otlp.IntKey("http.response.status_code").attribute
STREAMED, NOT_STREAMED = otlp.attribute("llmrelay.stream", True), otlp.attribute("llmrelay.stream", False)
#: request parameter -> its attribute for an int value and for a float value
PARAMETER_KEYS = {name: (otlp.IntKey(attr).attribute, otlp.FloatKey(attr).attribute) for name, attr in PARAMETERS}
#: float -> int, dropping the fraction: a method call costs a fraction of what ``int()`` costs
TRUNCATE = float.__trunc__
#: encoded per-model-and-key blocks kept at most (a new entry past this starts the cache afresh)
CACHE_SIZE = 4096
NANOSECONDS = 1e9
#: bytes gzipped between two yields to the hub (about a millisecond of CPU at level 1)
GZIP_SLICE = 128 * 1024


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


def bsp_setting(environ: Mapping[str, str], name: str, default: int) -> int:
    """A batch span processor setting (``OTEL_BSP_*``, a positive integer); like the SDK, a bad
    value is logged and the default used."""
    value = env(environ, name)
    if value is None or value.strip() == "":
        return default
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0:
        log.warning("%s=%r is not a positive integer: using %d", name, value, default)
        return default
    return number


class OTel(HTTPExporter):
    name = "otel"
    #: the SDK's batch size (``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``): fewer, larger posts cost less
    batch_size = 512

    def __init__(self, environ: Mapping[str, str], on_drop: Callable[[str, int], None] | None = None) -> None:
        from opentelemetry.sdk.resources import Resource

        from proxy import __version__

        self.batch_size = bsp_setting(environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", OTel.batch_size)
        self.interval = bsp_setting(environ, "OTEL_BSP_SCHEDULE_DELAY", int(OTel.interval * 1000)) / 1000
        max_queue = bsp_setting(environ, "OTEL_BSP_MAX_QUEUE_SIZE", MAX_QUEUE)
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
        self._shapes: dict[tuple[Any, ...], otlp.CallSpans] = {}
        self._reasons: dict[Any, bytes] = {}  # by the tuple of reasons, and by a single one
        self._statuses: dict[int, bytes] = {}
        self._random = otlp.RandomIds()
        super().__init__(on_drop, max_queue)

    def encode(self, record: dict[str, Any]) -> bytes:
        return self.spans(record)

    def payload(self, records: list[dict[str, Any]]) -> bytes:
        """The request that carries ``records``."""
        return self.body(list(map(self.encode, records)))

    def body(self, spans: list[bytes], pause: Callable[[], Any] | None = None) -> bytes:
        """The ``ExportTraceServiceRequest`` of encoded calls, gzipped when asked for. With ``pause``
        (``step_aside``) the hub serves requests between slices of the compression."""
        body = otlp.request(self.resource, self.scope, spans)
        if not self.gzip:
            return body
        packer = zlib.compressobj(1, zlib.DEFLATED, 31)  # 31: with a gzip header and trailer
        parts = []
        for offset in range(0, len(body), GZIP_SLICE):
            if offset and pause is not None:
                pause()
            parts.append(packer.compress(body[offset:offset + GZIP_SLICE]))
        parts.append(packer.flush())
        return b"".join(parts)

    def send(self, batch: list[bytes]) -> None:
        self.post(self.url, self.body(batch, pause=step_aside), self.headers)

    # -- one call ---------------------------------------------------------------------------------

    def shape(self, record: dict[str, Any]) -> otlp.CallSpans:
        """The spans' constant parts for a model group, deployment, key and pipeline: made once."""
        meta = record["metadata"]
        timings = record["timings"]
        key = (record["call_type"], record["model_group"], record["custom_llm_provider"], record["model"],
               record["api_base"], meta.get("user_api_key_alias"), meta.get("user_api_key_team_id"),
               meta.get("user_api_key_user_id"), *timings)
        found = self._shapes.get(key)
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
        stages = [None if name == "upstream" else self.stage_head(name) for name in timings]
        found = otlp.CallSpans(
            otlp.span_head(f"{operation} {record['model_group']}", otlp.KIND_SERVER) + otlp.attributes(gen_ai + keys),
            stages,
            otlp.span_head(f"{operation} {record['model'] or record['model_group']}", otlp.KIND_CLIENT)
            + otlp.attributes(gen_ai + client), self._random)
        if len(self._shapes) >= CACHE_SIZE:
            self._shapes.clear()
        self._shapes[key] = found
        return found

    @staticmethod
    def stage_head(name: str) -> bytes:
        return otlp.span_head(f"stage {name}", otlp.KIND_INTERNAL) + otlp.attribute("llmrelay.stage", name)

    def finish_reasons(self, response: dict[str, Any]) -> bytes:
        choices = response.get("choices")
        if choices.__class__ is list and len(choices) == 1 and choices[0].__class__ is dict:
            found = self._reasons.get(choices[0].get("finish_reason"))  # type: ignore[arg-type]
            if found is not None:
                return found
        reasons = tuple(c["finish_reason"] for c in response.get("choices") or ()
                        if isinstance(c, dict) and isinstance(c.get("finish_reason"), str))
        found = self._reasons.get(reasons)
        if found is None:
            found = otlp.attribute("gen_ai.response.finish_reasons", list(reasons)) if reasons else b""
            if len(self._reasons) < CACHE_SIZE:
                self._reasons[reasons] = found
                if len(reasons) == 1:
                    self._reasons[reasons[0]] = found  # type: ignore[index]
        return found

    def status_code(self, status: int) -> bytes:
        found = self._statuses.get(status)
        if found is None:
            found = self._statuses[status] = STATUS_CODE(status)
        return found

    def spans(self, record: dict[str, Any]) -> bytes:
        """The call's spans: the SERVER span, a span per stage and the upstream CLIENT span.

        Runs for every call, so written for the interpreter: a value read once, builtins called
        through C iterators or methods rather than ``int()``/``str()``/``float()`` on values that
        already have the type."""
        start = TRUNCATE(record["startTime"] * NANOSECONDS)
        end = TRUNCATE(record["endTime"] * NANOSECONDS)
        # attributes of the call and of its upstream CLIENT span
        gen_ai = [INPUT_TOKENS(record["prompt_tokens"]), OUTPUT_TOKENS(record["completion_tokens"])]
        params = record["model_parameters"]
        if params:
            for name, value in params.items():
                keys = PARAMETER_KEYS.get(name)
                if keys is not None:
                    if value.__class__ is int:
                        gen_ai.append(keys[0](value))
                    elif value.__class__ is float:
                        gen_ai.append(keys[1](value))
        response = record["response"]
        if response.__class__ is dict:
            response_id = response.get("id")
            if response_id:
                gen_ai.append(RESPONSE_ID(response_id if response_id.__class__ is str else str(response_id)))
            gen_ai.append(self.finish_reasons(response))
        # attributes of the call alone
        streamed = STREAMED if record["stream"] else NOT_STREAMED
        rest = [self.status_code(record["status_code"]), REQUEST_ID(record["id"]), streamed]
        session = record["metadata"].get("session_id")
        if session:
            rest.append(SESSION_ID(str(session)))
        cost = record["response_cost"]
        if cost is not None:
            rest.append(COST(cost if cost.__class__ is float else float(cost)))
        ttft = record["time_to_first_token"]
        if ttft is not None:
            rest.append(TTFT(ttft * 1000))
        if record["status"] == "failure":
            error = record["error_information"] or {}
            rest.append(ERROR_TYPE(error.get("error_class") or "error"))
            rest.append(otlp.status_error(record["error_str"] or ""))
        # stages laid end to end from the call's start, each as long as its own time (C iterators:
        # a comprehension here cost more than the rest of the line)
        bounds = list(accumulate(map(TRUNCATE, map(mul, record["timings"].values(), repeat(NANOSECONDS))),
                                 initial=start))
        if bounds[-1] > end:
            bounds = [min(t, end) for t in bounds]
        return self.shape(record).encode(start, end, bounds, b"".join(gen_ai), b"".join(rest))
