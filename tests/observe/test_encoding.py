"""What the exporters write, decoded by the reference libraries: OTLP spans by opentelemetry-proto,
histogram sums against prometheus_client's own ``observe``, Langfuse timestamps against datetime;
and the export queue's batching under steady load."""

from __future__ import annotations

import datetime as dt
import gzip
import random

import gevent
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from prometheus_client import CollectorRegistry, Histogram

from proxy.errors import ServiceUnavailable
from proxy.observe import otlp
from proxy.observe.exporters import Timestamps
from proxy.observe.otel import OTel, server_attributes
from proxy.observe.prometheus import LATENCY_BUCKETS, Metrics, add_samples
from proxy.observe.queue import BatchQueue
from proxy.observe.record import build_record
from tests.observe.test_units import make_ctx


def attrs(span: Span) -> dict[str, object]:
    out: dict[str, object] = {}
    for kv in span.attributes:
        kind = kv.value.WhichOneof("value")
        value = getattr(kv.value, kind)
        out[kv.key] = [getattr(v, v.WhichOneof("value")) for v in value.values] if kind == "array_value" else value
    return out


def decode(body: bytes) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    message.ParseFromString(body)
    return message


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**31, 2**62, -1, -2**40])
def test_otlp_int_attributes_round_trip(value: int) -> None:
    span = otlp.span(b"t" * 16, b"s" * 8, None, otlp.span_head("x", otlp.KIND_INTERNAL), 1, 2,
                     [otlp.int_attribute(otlp.key("n"), value)])
    body = otlp.request(b"", b"", [span])
    (decoded,) = decode(body).resource_spans[0].scope_spans[0].spans
    assert attrs(decoded) == {"n": value}


def test_otlp_span_fields_and_attribute_types_decode() -> None:
    head = otlp.span_head("chat gpt-4o é", otlp.KIND_SERVER)
    extra = [otlp.attribute("s", "ünï"), otlp.attribute("b", True), otlp.attribute("f", 0.25),
             otlp.attribute("list", ["stop", "length"]), otlp.float_attribute(otlp.key("g"), -1.5)]
    parent = otlp.span(b"\x01" * 16, b"\x02" * 8, None, head, 1_700_000_000_000_000_000, 1_700_000_000_500_000_000,
                       extra, otlp.status_error("upstream down"))
    child = otlp.span(b"\x01" * 16, b"\x03" * 8, b"\x02" * 8, otlp.span_head("stage auth", otlp.KIND_INTERNAL),
                      5, 6)
    resource, scope = otlp.scope_prefix({"service.name": "svc", "n": 3}, "llmrelay", "1.0")
    request = decode(otlp.request(resource, scope, [parent, child]))
    (resource_spans,) = request.resource_spans
    assert {kv.key: kv.value for kv in resource_spans.resource.attributes}["service.name"].string_value == "svc"
    (scope_spans,) = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version) == ("llmrelay", "1.0")
    root, stage = scope_spans.spans
    assert root.name == "chat gpt-4o é" and root.kind == Span.SPAN_KIND_SERVER
    assert (root.trace_id, root.span_id, root.parent_span_id) == (b"\x01" * 16, b"\x02" * 8, b"")
    assert (root.start_time_unix_nano, root.end_time_unix_nano) == (1_700_000_000_000_000_000,
                                                                    1_700_000_000_500_000_000)
    assert attrs(root) == {"s": "ünï", "b": True, "f": 0.25, "list": ["stop", "length"], "g": -1.5}
    assert root.status.code == Status.STATUS_CODE_ERROR and root.status.message == "upstream down"
    assert root.flags == 0x100
    assert stage.parent_span_id == root.span_id and stage.kind == Span.SPAN_KIND_INTERNAL
    assert stage.status.code == Status.STATUS_CODE_UNSET


def test_otel_payload_of_a_failed_call_gzip_and_cache() -> None:
    exporter = OTel({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SERVICE_NAME": "gw",
                     "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"})
    try:
        ok = build_record(make_ctx(), cost=0.5)
        failed_ctx = make_ctx()
        failed_ctx.error, failed_ctx.status, failed_ctx.response = ServiceUnavailable("down"), 503, None
        failed = build_record(failed_ctx)
        for record in (ok, failed):
            record.update(model_group="gpt", model="gpt-4o", custom_llm_provider="openai",
                          api_base="https://api.example.com:8443/v1")
        body = exporter.payload([ok, failed])
        assert exporter.url == "http://127.0.0.1:1/v1/traces" and exporter.headers["Content-Encoding"] == "gzip"
        assert len(exporter._shapes) == 1  # both calls share the constant parts of their spans
    finally:
        exporter.close(0)
    (resource_spans,) = decode(gzip.decompress(body)).resource_spans  # one gzip stream, made in slices
    service = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
    assert service["service.name"] == "gw" and service["telemetry.sdk.name"] == "opentelemetry"
    spans = resource_spans.scope_spans[0].spans
    roots = [s for s in spans if not s.parent_span_id]
    assert len(roots) == 2 and len(spans) == 2 * (1 + len(ok["timings"]))
    ok_root, failed_root = roots
    assert ok_root.name == "chat gpt" and ok_root.status.code == Status.STATUS_CODE_UNSET
    assert failed_root.status.code == Status.STATUS_CODE_ERROR and "down" in failed_root.status.message
    root_attrs = attrs(ok_root)
    assert root_attrs["gen_ai.usage.input_tokens"] == 3 and root_attrs["gen_ai.usage.output_tokens"] == 5
    assert root_attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert root_attrs["llmrelay.key_alias"] == "alias-1" and root_attrs["session.id"] == "s-1"
    assert attrs(failed_root)["http.response.status_code"] == 503
    client = next(s for s in spans if s.kind == Span.SPAN_KIND_CLIENT and s.trace_id == ok_root.trace_id)
    assert client.parent_span_id == ok_root.span_id
    assert attrs(client)["server.address"] == "api.example.com" and attrs(client)["server.port"] == 8443
    assert ok_root.trace_id != failed_root.trace_id


def test_server_attributes_from_api_base() -> None:
    assert server_attributes("https://x.openai.azure.com/openai") == [("server.address", "x.openai.azure.com"),
                                                                     ("server.port", 443)]
    assert server_attributes("http://127.0.0.1:11434") == [("server.address", "127.0.0.1"), ("server.port", 11434)]
    assert server_attributes("not a url") == [("server.address", "not a url")]


def test_add_samples_matches_observe_bucket_for_bucket() -> None:
    rng = random.Random(7)
    samples = [rng.choice(LATENCY_BUCKETS[:-1]) for _ in range(50)] + [rng.uniform(0, 400) for _ in range(500)]
    one, bulk = CollectorRegistry(), CollectorRegistry()
    by_observe = Histogram("h", "h", buckets=LATENCY_BUCKETS, registry=one)
    for value in samples:
        by_observe.observe(value)
    add_samples(Histogram("h", "h", buckets=LATENCY_BUCKETS, registry=bulk), samples)

    def values(registry: CollectorRegistry) -> dict[tuple, float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for metric in registry.collect() for s in metric.samples if not s.name.endswith("_created")}

    expected, got = values(one), values(bulk)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value), name


def test_metrics_sum_calls_per_label_set_until_flushed() -> None:
    metrics = Metrics()
    record = build_record(make_ctx(), cost=0.5)
    record.update(model_group="gpt", model="gpt-4o", model_id="dep-1", api_base="http://up",
                  custom_llm_provider="openai")
    for _ in range(3):
        metrics.observe(record)
    registry = metrics.registry

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("litellm_requests_metric_total", model="gpt-4o", api_key_alias="alias-1", requested_model="gpt",
                 end_user="", hashed_api_key="h4sh", team="team-1", team_alias="", user="user-1") is None
    metrics.flush()
    labels = {"end_user": "", "hashed_api_key": "h4sh", "api_key_alias": "alias-1", "requested_model": "gpt",
              "team": "team-1", "team_alias": "", "user": "user-1"}
    assert value("litellm_requests_metric_total", **labels, model="gpt-4o") == 3
    assert value("litellm_input_tokens_metric_total", **labels, model="gpt-4o") == 9
    assert value("litellm_spend_metric_total", **labels, model="gpt-4o") == pytest.approx(1.5)
    assert value("litellm_request_total_latency_metric_count", **labels, model="gpt-4o") == 3
    assert value("litellm_deployment_success_responses_total", litellm_model_name="gpt-4o", model_id="dep-1",
                 api_base="http://up", api_provider="openai", requested_model="gpt", hashed_api_key="h4sh",
                 api_key_alias="alias-1", team="team-1", team_alias="") == 3
    metrics.flush()  # nothing new: nothing counted twice
    assert value("litellm_requests_metric_total", **labels, model="gpt-4o") == 3


def test_metrics_flush_on_their_own_while_calls_run() -> None:
    metrics = Metrics()
    metrics.start_call()
    metrics.observe(build_record(make_ctx()))
    gevent.sleep(0.7)  # past FLUSH_INTERVAL
    assert metrics.registry.get_sample_value("litellm_in_flight_requests") == 1
    assert sum(s.value for m in metrics.registry.collect() if m.name == "litellm_requests_metric"
               for s in m.samples if s.name.endswith("_total")) == 1
    metrics.end_call()


@pytest.mark.parametrize("ts", [0.0, 1.5, 1_767_225_599.9996, 1_800_000_000.001, 1_800_000_000.999])
def test_langfuse_timestamps_match_datetime(ts: float) -> None:
    stamp = Timestamps().format
    stamp(ts - 5)  # the cached second must be replaced, not reused
    reference = dt.datetime.fromtimestamp(ts, dt.UTC)
    whole = int(ts)
    expected = (dt.datetime.fromtimestamp(whole, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
                + f".{int((ts - whole) * 1000):03d}Z")
    assert stamp(ts) == expected
    assert stamp(ts)[:19] == reference.strftime("%Y-%m-%dT%H:%M:%S")


def test_queue_drain_takes_what_was_there_and_batches_the_rest() -> None:
    """Records that arrive while a batch is being sent wait for the next batch; they are not sent one
    per request as they trickle in."""
    sent: list[int] = []

    def send(batch: list[int]) -> None:
        sent.append(len(batch))
        gevent.sleep(0.02)  # the receiver takes a moment; records keep arriving meanwhile

    queue = BatchQueue("steady", send, batch_size=100, interval=0.1)
    stop = gevent.event.Event()

    def producer() -> None:
        while not stop.is_set():
            queue.put(1)
            gevent.sleep(0.001)

    worker = gevent.spawn(producer)
    gevent.sleep(0.6)
    stop.set()
    worker.join()
    queue.close(timeout=2)
    assert queue.sent == sum(sent) and queue.dropped == 0
    # Steady arrivals of ~1/ms: batches of tens; chasing the queue would send batches of 1-20.
    assert len(sent) <= 12, sent
    assert sum(sent) / len(sent) >= 25, sent
