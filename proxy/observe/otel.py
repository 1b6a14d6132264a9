"""``otel``: one OpenTelemetry trace per call over OTLP/HTTP (protobuf), built with the SDK.

The call is a SERVER span named ``{operation} {model group}``; under it one span per pipeline
stage, laid end to end with each stage's own time (what Server-Timing shows), and a CLIENT span
for the upstream call. Attributes follow the GenAI semantic conventions (``gen_ai.*``). Spans are
made from finished records in the exporter's greenlet and sent in batches, so the request path
never touches the SDK.

Settings: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (LiteLLM's
``OTEL_ENDPOINT`` too; ``/v1/traces`` is added to a base URL), ``OTEL_EXPORTER_OTLP_HEADERS``
(or ``OTEL_HEADERS``), ``OTEL_SERVICE_NAME`` (default ``llmrelay``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import gevent

from proxy.observe.exporters import Exporter, env, parse_headers

OPERATIONS = {"completion": "chat", "text_completion": "text_completion", "embedding": "embeddings",
              "moderation": "moderation"}
DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"


def traces_endpoint(environ: Mapping[str, str]) -> str:
    exact = env(environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if exact:
        return exact
    base = env(environ, "OTEL_EXPORTER_OTLP_ENDPOINT") or env(environ, "OTEL_ENDPOINT")
    if not base:
        return DEFAULT_ENDPOINT
    base = base.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


class OTel(Exporter):
    name = "otel"
    # Making and encoding spans is CPU work on the hub: small batches, with a yield every few
    # records, so requests are served in between instead of waiting for a whole batch.
    batch_size = 50
    yield_every = 8

    def __init__(self, environ: Mapping[str, str], on_drop: Callable[[str, int], None] | None = None) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

        finished: list[Any] = []

        class Collect(SpanProcessor):
            """Keeps ended spans for the batch being built (no thread, no queue of its own)."""

            def on_end(self, span: Any) -> None:
                finished.append(span)

        self._finished = finished
        self.endpoint = traces_endpoint(environ)
        service = env(environ, "OTEL_SERVICE_NAME", "llmrelay")
        self.provider = TracerProvider(resource=Resource.create({"service.name": service}), shutdown_on_exit=False)
        self.provider.add_span_processor(Collect())
        self.tracer = self.provider.get_tracer("llmrelay")
        headers = parse_headers(env(environ, "OTEL_EXPORTER_OTLP_HEADERS") or env(environ, "OTEL_HEADERS"))
        self.exporter = OTLPSpanExporter(endpoint=self.endpoint, headers=headers or None, timeout=10)
        super().__init__(on_drop)

    def send(self, batch: list[dict[str, Any]]) -> None:
        from opentelemetry.sdk.trace.export import SpanExportResult

        self._finished.clear()
        for i, record in enumerate(batch, 1):
            self.spans(record)
            if i % self.yield_every == 0:
                gevent.sleep(0)
        spans, self._finished[:] = list(self._finished), []
        if spans and self.exporter.export(spans) is not SpanExportResult.SUCCESS:
            raise RuntimeError(f"OTLP export of {len(spans)} spans to {self.endpoint} failed")

    def spans(self, record: dict[str, Any]) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        ns = 1_000_000_000
        start = int(record["startTime"] * ns)
        end = int(record["endTime"] * ns)
        operation = OPERATIONS.get(record["call_type"], record["call_type"])
        failed = record["status"] == "failure"
        meta = record["metadata"]
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": record["model_group"] or "",
            "gen_ai.usage.input_tokens": record["prompt_tokens"],
            "gen_ai.usage.output_tokens": record["completion_tokens"],
            "http.response.status_code": record["status_code"],
            "llmrelay.request_id": record["id"],
            "llmrelay.stream": record["stream"],
        }
        if record["custom_llm_provider"]:
            attrs["gen_ai.provider.name"] = record["custom_llm_provider"]
            attrs["gen_ai.system"] = record["custom_llm_provider"]
        if record["model"]:
            attrs["gen_ai.response.model"] = record["model"]
        params = record["model_parameters"]
        for name, attr in (("temperature", "gen_ai.request.temperature"), ("max_tokens", "gen_ai.request.max_tokens"),
                           ("top_p", "gen_ai.request.top_p")):
            if isinstance(params.get(name), (int, float)):
                attrs[attr] = params[name]
        response = record["response"]
        if isinstance(response, dict):
            if response.get("id"):
                attrs["gen_ai.response.id"] = str(response["id"])
            reasons = [c.get("finish_reason") for c in response.get("choices") or () if c.get("finish_reason")]
            if reasons:
                attrs["gen_ai.response.finish_reasons"] = reasons
        for key, attr in (("user_api_key_alias", "llmrelay.key_alias"), ("user_api_key_team_id", "llmrelay.team_id"),
                          ("user_api_key_user_id", "llmrelay.user_id"), ("session_id", "session.id")):
            if meta.get(key):
                attrs[attr] = str(meta[key])
        if record["response_cost"] is not None:
            attrs["llmrelay.response_cost"] = record["response_cost"]
        if record["time_to_first_token"] is not None:
            attrs["llmrelay.time_to_first_token_ms"] = record["time_to_first_token"] * 1000
        if failed:
            attrs["error.type"] = (record["error_information"] or {}).get("error_class") or "error"
        root = self.tracer.start_span(f"{operation} {record['model_group']}", kind=SpanKind.SERVER,
                                      attributes=attrs, start_time=start)
        if failed:
            root.set_status(Status(StatusCode.ERROR, record["error_str"] or ""))
        parent = trace.set_span_in_context(root)
        at = start
        for stage, seconds in record["timings"].items():
            length = int(seconds * ns)
            if stage == "upstream":
                up_attrs = {k: v for k, v in attrs.items() if k.startswith("gen_ai.")}
                if record["api_base"]:
                    up_attrs["server.address"] = record["api_base"]
                span = self.tracer.start_span(f"{operation} {record['model'] or record['model_group']}",
                                              context=parent, kind=SpanKind.CLIENT, attributes=up_attrs,
                                              start_time=at)
            else:
                span = self.tracer.start_span(f"stage {stage}", context=parent,
                                              attributes={"llmrelay.stage": stage}, start_time=at)
            at = min(end, at + length)
            span.end(end_time=at)
        root.end(end_time=end)

    def close(self, timeout: float = 5.0) -> None:
        super().close(timeout)
        self.exporter.shutdown()
