"""Exporters end to end: a real proxy, the openai SDK, and local receivers asserting what arrived."""

from __future__ import annotations

import base64
import os
import statistics
import time
from pathlib import Path

import openai
import orjson
import pytest
import requests
import yaml
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.mock_upstream import MockOpenAI
from tests.observe.receiver import Receiver
from tests.servers import ProxyProcess

MASTER = "sk-observe"
CUSTOM = '''
import json, os

class Handler:
    def _write(self, event, kwargs):
        with open(os.environ["OBS_CUSTOM_OUT"], "a") as f:
            f.write(json.dumps({"event": event, "id": kwargs["id"], "status": kwargs["status"],
                                "model_group": kwargs["standard_logging_object"]["model_group"]}) + "\\n")

    def log_success_event(self, kwargs, response_obj, start_time, end_time):
        self._write("success", kwargs)

    def log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self._write("failure", kwargs)

handler = Handler()
'''


def write_config(folder: Path, data: dict) -> Path:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def upstream_model(upstream: MockOpenAI, **info) -> dict:
    return {"model_name": "gpt-4o-mini", "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": upstream.url,
                                                            "api_key": "sk-upstream"}, "model_info": info}


def client(proxy: ProxyProcess, key: str = MASTER) -> OpenAI:
    return OpenAI(base_url=f"{proxy.url}/v1", api_key=key, max_retries=0)


def test_langfuse_generic_webhook_otel_and_custom_receive_every_call(upstream: MockOpenAI, tmp_path: Path) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    (tmp_path / "custom_obs.py").write_text(CUSTOM)
    out = tmp_path / "custom.jsonl"
    path = write_config(tmp_path, {
        "model_list": [upstream_model(upstream)],
        "litellm_settings": {"num_retries": 0, "success_callback": ["langfuse", "generic_api"],
                             "failure_callback": ["langfuse"],
                             "callbacks": ["webhook", "otel", "custom_obs.handler"]},
        "general_settings": {"master_key": MASTER},
    })
    with Receiver() as rx:
        env = {"LANGFUSE_HOST": rx.url, "LANGFUSE_PUBLIC_KEY": "pk-lf-1", "LANGFUSE_SECRET_KEY": "sk-lf-1",
               "GENERIC_LOGGER_ENDPOINT": f"{rx.url}/generic", "GENERIC_LOGGER_HEADERS": "X-Team=obs,X-Token=t1",
               "WEBHOOK_URL": f"{rx.url}/hook", "OTEL_EXPORTER_OTLP_ENDPOINT": rx.url,
               "OTEL_SERVICE_NAME": "relay-test", "OBS_CUSTOM_OUT": str(out)}
        proxy = ProxyProcess(path, env=env).start()
        try:
            api = client(proxy)
            api.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "one two three"}], temperature=0.5,
                extra_body={"metadata": {"generation_name": "gen-plain", "trace_id": "trace-plain",
                                         "trace_user_id": "end-user-7", "session_id": "sess-1", "tags": ["a", "b"]}})
            stream = api.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "four five"}], stream=True,
                stream_options={"include_usage": True}, extra_body={"metadata": {"trace_id": "trace-stream"}})
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "echo: four five"
            with pytest.raises(openai.InternalServerError):
                api.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                            extra_body={"mock_controls": {"status": 500},
                                                        "metadata": {"trace_id": "trace-fail"}})
        finally:
            assert proxy.stop() == 0  # SIGTERM right away: queued records are flushed, not lost
        log = proxy.log()

        # Langfuse: basic auth, a trace and a generation per call, failures at level ERROR
        posts = rx.posts("/api/public/ingestion")
        assert posts, log
        assert posts[0]["headers"]["authorization"] == "Basic " + base64.b64encode(b"pk-lf-1:sk-lf-1").decode()
        events = [e for p in posts for e in orjson.loads(p["body"])["batch"]]
        traces = {e["body"]["id"]: e["body"] for e in events if e["type"] == "trace-create"}
        gens = {e["body"]["traceId"]: e["body"] for e in events if e["type"] == "generation-create"}
        assert set(traces) == set(gens) == {"trace-plain", "trace-stream", "trace-fail"}
        assert traces["trace-plain"]["userId"] == "end-user-7" and traces["trace-plain"]["sessionId"] == "sess-1"
        assert traces["trace-plain"]["tags"] == ["a", "b"]
        plain = gens["trace-plain"]
        assert plain["name"] == "gen-plain" and plain["model"] == "gpt-4o-mini"
        assert plain["usage"]["input"] == 3 and plain["usage"]["output"] == 4 and plain["level"] == "DEFAULT"
        assert plain["input"] == {"messages": [{"role": "user", "content": "one two three"}]}
        assert (plain["output"]["role"], plain["output"]["content"]) == ("assistant", "echo: one two three")
        assert plain["modelParameters"]["temperature"] == 0.5
        assert plain["startTime"] <= plain["endTime"]
        streamed = gens["trace-stream"]
        assert (streamed["output"]["role"], streamed["output"]["content"]) == ("assistant", "echo: four five")
        assert streamed["usage"]["input"] == 2 and streamed["usage"]["output"] == 3
        assert streamed["completionStartTime"] <= streamed["endTime"]
        assert gens["trace-fail"]["level"] == "ERROR" and gens["trace-fail"]["statusMessage"]

        # generic_api: successes only, as a JSON array, with the configured headers
        generic = rx.posts("/generic")
        assert generic and generic[0]["headers"]["x-team"] == "obs" and generic[0]["headers"]["x-token"] == "t1"
        records = [r for p in generic for r in orjson.loads(p["body"])]
        assert sorted(r["trace_id"] for r in records) == ["trace-plain", "trace-stream"]
        plain_record = next(r for r in records if r["trace_id"] == "trace-plain")
        assert plain_record["model_group"] == "gpt-4o-mini" and plain_record["custom_llm_provider"] == "openai"
        assert plain_record["metadata"]["user_api_key_alias"] == "master_key"
        assert plain_record["metadata"]["requester_metadata"]["generation_name"] == "gen-plain"
        assert plain_record["total_tokens"] == 7 and plain_record["response_time"] > 0

        # webhook (in callbacks): successes and failures
        hooked = [r for p in rx.posts("/hook") for r in orjson.loads(p["body"])]
        assert sorted(r["status"] for r in hooked) == ["failure", "success", "success"]

        # otel: one SERVER span per call with gen_ai attributes, stage spans and the upstream CLIENT span
        spans = []
        for p in rx.posts("/v1/traces"):
            assert p["headers"]["content-type"] == "application/x-protobuf"
            req = ExportTraceServiceRequest()
            req.ParseFromString(p["body"])
            for rs in req.resource_spans:
                service = {a.key: a.value.string_value for a in rs.resource.attributes}["service.name"]
                assert service == "relay-test"
                spans.extend(s for ss in rs.scope_spans for s in ss.spans)
        roots = [s for s in spans if not s.parent_span_id]
        assert len(roots) == 3 and {s.name for s in roots} == {"chat gpt-4o-mini"}
        attrs = {a.key: a.value for a in roots[0].attributes}
        assert attrs["gen_ai.operation.name"].string_value == "chat"
        assert attrs["gen_ai.request.model"].string_value == "gpt-4o-mini"
        assert attrs["gen_ai.provider.name"].string_value == "openai"
        assert attrs["gen_ai.usage.input_tokens"].int_value > 0
        children = [s for s in spans if s.parent_span_id == roots[0].span_id]
        names = {s.name for s in children}
        assert {"stage callbacks", "stage auth", "stage route"} <= names
        client_spans = [s for s in children if s.kind == s.SPAN_KIND_CLIENT]
        assert len(client_spans) == 1 and client_spans[0].name == "chat gpt-4o-mini"
        assert all(roots[0].start_time_unix_nano <= s.start_time_unix_nano <= s.end_time_unix_nano
                   <= roots[0].end_time_unix_nano for s in children)
        failed = [s for s in roots if s.status.code == s.status.STATUS_CODE_ERROR]
        assert len(failed) == 1

        # custom callback: LiteLLM's hook names, successes and failures
        lines = [orjson.loads(x) for x in out.read_text().splitlines()]
        assert sorted(x["event"] for x in lines) == ["failure", "success", "success"]
        assert all(x["model_group"] == "gpt-4o-mini" for x in lines)


def test_missing_custom_callback_fails_the_boot_naming_the_config_path(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"model_list": [], "litellm_settings": {"callbacks": ["nowhere_mod.handler"]}})
    proxy = ProxyProcess(path)
    with pytest.raises(RuntimeError) as info:
        proxy.start()
    assert "exited with 2" in str(info.value)
    assert "litellm_settings.callbacks[0]: custom callback 'nowhere_mod.handler'" in str(info.value)
    assert str(path) in str(info.value)


def metric_total(text: str, family: str, **labels: str) -> float:
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name == family and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_metrics_add_up_across_two_workers(upstream: MockOpenAI, tmp_path: Path) -> None:
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    (multiproc / "counter_999999.db").write_bytes(b"stale values of an earlier run")
    path = write_config(tmp_path, {
        "model_list": [upstream_model(upstream, input_cost_per_token=0.001, output_cost_per_token=0.002),
                       {"model_name": "house", "litellm_params": {"model": "openai/house", "mock_response": "a b",
                                                                  "rpm": 1000}}],
        "litellm_settings": {"num_retries": 0, "callbacks": ["prometheus", "generic_api"],
                             "turn_off_message_logging": True},
    })
    with Receiver() as rx:
        env = {"PROMETHEUS_MULTIPROC_DIR": str(multiproc), "GENERIC_LOGGER_ENDPOINT": f"{rx.url}/generic"}
        with ProxyProcess(path, workers=2, env=env) as proxy:
            assert not (multiproc / "counter_999999.db").exists()  # the master emptied the folder
            n_house, n_up = 0, 6

            def served_by() -> set[str]:
                return {p.name.rsplit("_", 1)[1].split(".")[0] for p in multiproc.glob("counter_*.db")}

            # a new connection each time, until both workers have answered some (or 200 calls); a
            # worker's files appear when it first moves its counts there (within 0.5 s)
            while n_house < 12 or (len(served_by()) < 2 and n_house < 200):
                r = requests.post(f"{proxy.url}/v1/chat/completions", timeout=10, headers={"Connection": "close"},
                                  json={"model": "house", "messages": [{"role": "user", "content": f"hi {n_house}"}]})
                assert r.status_code == 200
                n_house += 1
                if n_house % 12 == 0:
                    time.sleep(0.8)
            for _ in range(n_up):
                r = requests.post(f"{proxy.url}/v1/chat/completions", timeout=10, headers={"Connection": "close"},
                                  json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "one two"}]})
                assert r.status_code == 200
            r = requests.post(f"{proxy.url}/v1/chat/completions", timeout=10, headers={"Connection": "close"},
                              json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}],
                                    "mock_controls": {"status": 500}})
            assert r.status_code == 500
            assert len(served_by()) == 2, "both workers served requests"
            # each worker moves its calls into the shared files every FLUSH_INTERVAL (0.5 s)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                text = requests.get(f"{proxy.url}/metrics", timeout=10, headers={"Connection": "close"}).text
                if metric_total(text, "litellm_request_total_latency_metric_count") == n_house + n_up + 1:
                    break
                time.sleep(0.1)
            for _ in range(6):  # whichever worker answers, every request is counted once
                scrape = requests.get(f"{proxy.url}/metrics", timeout=10, headers={"Connection": "close"})
                assert scrape.status_code == 200
                text = scrape.text
                assert metric_total(text, "litellm_requests_metric_total", requested_model="house") == n_house
                assert metric_total(text, "litellm_requests_metric_total", requested_model="gpt-4o-mini") == n_up + 1
                assert metric_total(text, "litellm_proxy_failed_requests_metric_total", exception_status="500") == 1
                up = {"requested_model": "gpt-4o-mini"}
                assert metric_total(text, "litellm_input_tokens_metric_total", **up) == 2 * n_up
                assert metric_total(text, "litellm_output_tokens_metric_total", **up) == 3 * n_up  # "echo: one two"
                assert metric_total(text, "litellm_spend_metric_total") == pytest.approx(n_up * (2 * 0.001 + 3 * 0.002))
                assert metric_total(text, "litellm_request_total_latency_metric_count") == n_house + n_up + 1
                assert metric_total(text, "litellm_llm_api_latency_metric_count",
                                    requested_model="gpt-4o-mini") == n_up + 1
                assert metric_total(text, "litellm_deployment_success_responses_total") == n_house + n_up
                assert metric_total(text, "litellm_in_flight_requests") == 0
                assert metric_total(text, "litellm_remaining_requests_metric", model_group="house") <= 1000
                assert "litellm_deployment_state" in text
            # messages are not logged when turn_off_message_logging is set
            records = rx.wait(lambda r: [x for p in r.posts("/generic") for x in orjson.loads(p["body"])]
                              if sum(len(orjson.loads(p["body"])) for p in r.posts("/generic")) >= n_house + n_up + 1
                              else None)
            assert {x["messages"] for x in records} == {"redacted-by-litellm"}
            assert "hi 0" not in str(records)


def p50_latency(url: str, n: int) -> tuple[float, float]:
    times = []
    with requests.Session() as s:
        for i in range(n):
            t0 = time.perf_counter()
            r = s.post(f"{url}/v1/chat/completions", timeout=30,
                       json={"model": "house", "messages": [{"role": "user", "content": f"hello {i}"}]})
            times.append(time.perf_counter() - t0)
            assert r.status_code == 200
    return statistics.median(times), max(times)


def test_a_receiver_taking_5s_leaves_responses_fast(tmp_path: Path) -> None:
    base = {"model_list": [{"model_name": "house", "litellm_params": {"model": "openai/house",
                                                                      "mock_response": "a b c"}}]}
    plain = write_config(tmp_path, base)
    (tmp_path / "cb").mkdir()
    slow = write_config(tmp_path / "cb", {**base, "litellm_settings": {"callbacks": ["generic_api", "langfuse"]}})
    with Receiver(delay=5.0) as rx:
        env = {"GENERIC_LOGGER_ENDPOINT": f"{rx.url}/generic", "LANGFUSE_HOST": rx.url,
               "LANGFUSE_PUBLIC_KEY": "pk", "LANGFUSE_SECRET_KEY": "sk"}
        with ProxyProcess(plain) as proxy:
            p50_quick(proxy.url)
            base_p50, _ = p50_latency(proxy.url, 60)
        with ProxyProcess(slow, env=env) as proxy:
            p50_quick(proxy.url)
            cb_p50, cb_max = p50_latency(proxy.url, 60)
            assert rx.wait(lambda r: r.posts("/generic"), timeout=10)  # the receiver is being called, and hangs
    # generous: the slow receiver must not show in the responses (it answers after 5 s)
    assert cb_max < 1.0
    assert cb_p50 <= base_p50 * 1.5 + 0.003, (cb_p50, base_p50)


def p50_quick(url: str) -> None:
    """Warm up: first requests pay for imports and connection set-up."""
    p50_latency(url, 10)


def test_slack_alerts_hanging_slow_failures_and_budgets(upstream: MockOpenAI, tmp_path: Path) -> None:
    path = write_config(tmp_path, {
        "model_list": [upstream_model(upstream, input_cost_per_token=0.01, output_cost_per_token=0.01)],
        "litellm_settings": {"num_retries": 0},
        "general_settings": {"master_key": MASTER, "alerting": ["slack"], "alerting_threshold": 1,
                             "alert_types": ["llm_requests_hanging", "llm_too_slow", "llm_exceptions",
                                             "budget_alerts"]},
    })
    with Receiver() as rx, ProxyProcess(path, env={"SLACK_WEBHOOK_URL": f"{rx.url}/slack"}) as proxy:
        api = client(proxy)
        t0 = time.time()
        api.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "slow one"}],
                                    extra_body={"mock_controls": {"delay": 3}})
        answered = time.time()
        texts = rx.wait(lambda r: [p for p in r.posts("/slack") if b"llm_too_slow" in p["body"]] and r.posts("/slack"))
        hanging = [p for p in texts if b"llm_requests_hanging" in p["body"]]
        assert len(hanging) == 1, "one message for the incident, sent while the request hung"
        assert t0 + 1 <= hanging[0]["time"] < answered
        assert "gpt-4o-mini" in orjson.loads(hanging[0]["body"])["text"]
        for _ in range(3):  # repeated failures of one deployment: one message
            with pytest.raises(openai.InternalServerError):
                api.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                            extra_body={"mock_controls": {"status": 500}})
        rx.wait(lambda r: [p for p in r.posts("/slack") if b"llm_exceptions" in p["body"]])
        time.sleep(0.5)
        assert len([p for p in rx.posts("/slack") if b"llm_exceptions" in p["body"]]) == 1
        # a key with a budget: crossing 80% then 100%
        r = requests.post(f"{proxy.url}/key/generate", timeout=10, headers={"Authorization": f"Bearer {MASTER}"},
                          json={"max_budget": 0.12, "key_alias": "alerted-key"})
        key = r.json()["key"]
        keyed = client(proxy, key)
        for _ in range(3):  # each call costs (2 + 3) * 0.01 = 0.05: 0.10 crosses 80%, 0.15 exceeds it
            keyed.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "one two"}])
        def budget_texts(r: Receiver) -> list[str]:
            return [orjson.loads(p["body"])["text"] for p in r.posts("/slack") if b"budget_alerts" in p["body"]]

        budget = rx.wait(lambda r: len(budget_texts(r)) >= 2 and budget_texts(r))
        assert any("crossed 80%" in t and "alerted-key" in t for t in budget)
        assert any("exceeded its budget" in t for t in budget)
    assert os.environ.get("SLACK_WEBHOOK_URL") is None


def test_slack_alert_for_a_deployment_failing_its_health_check(upstream: MockOpenAI, tmp_path: Path) -> None:
    from tests.servers import free_port

    path = write_config(tmp_path, {
        "model_list": [upstream_model(upstream),
                       {"model_name": "gone", "litellm_params": {"model": "openai/gone", "api_key": "sk-x",
                                                                 "api_base": f"http://127.0.0.1:{free_port()}/v1"}}],
        "general_settings": {"master_key": MASTER, "alerting": ["slack"], "alert_types": ["outage_alerts"],
                             "background_health_checks": True, "health_check_interval": 1},
    })
    with Receiver() as rx, ProxyProcess(path, env={"SLACK_WEBHOOK_URL": f"{rx.url}/slack"}):
        posts = rx.wait(lambda r: [p for p in r.posts("/slack") if b"outage_alerts" in p["body"]])
        text = orjson.loads(posts[0]["body"])["text"]
        assert "gone" in text and "health check" in text and "sk-x" not in text
        time.sleep(2.5)  # later checks fail the same way: still one message for the incident
        assert len([p for p in rx.posts("/slack") if b"outage_alerts" in p["body"]]) == 1
        assert not [p for p in rx.posts("/slack") if b"gpt-4o-mini" in p["body"]]  # the healthy one is quiet
