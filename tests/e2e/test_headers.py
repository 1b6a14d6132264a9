"""LiteLLM's response and request headers, end to end: the openai SDK's raw responses and plain requests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import openai
import orjson
import pytest
import requests

from tests.mock_upstream import MockOpenAI
from tests.mock_upstream.anthropic import MockAnthropic
from tests.servers import ProxyProcess, free_port

MASTER = "sk-headers-master"
AUTH = {"Authorization": f"Bearer {MASTER}"}
OPENAI_LIMITS = {"x-ratelimit-limit-requests": "10000", "x-ratelimit-remaining-requests": "9999",
                 "x-ratelimit-limit-tokens": "2000000", "x-ratelimit-remaining-tokens": "1999990"}
HI = [{"role": "user", "content": "hi there"}]


@pytest.fixture(scope="module")
def anthropic_upstream() -> Iterator[MockAnthropic]:
    with MockAnthropic(api_key="sk-ant") as server:
        yield server


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, upstream: MockOpenAI,
          anthropic_upstream: MockAnthropic) -> Iterator[ProxyProcess]:
    tmp: Path = tmp_path_factory.mktemp("headers")
    config = {
        "model_list": [
            {"model_name": "gpt", "litellm_params": {
                "model": "openai/gpt-4o-mini", "api_base": upstream.url, "api_key": "sk-upstream"}},
            {"model_name": "claude", "litellm_params": {
                "model": "anthropic/claude-3-5-haiku-20241022", "api_base": anthropic_upstream.url,
                "api_key": "sk-ant"}},
            {"model_name": "broken", "litellm_params": {
                "model": "openai/gpt-4o-mini", "api_base": f"http://127.0.0.1:{free_port()}/v1", "api_key": "x"}},
            {"model_name": "house", "litellm_params": {"model": "openai/house", "mock_response": "a b c d"},
             "model_info": {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002}},
        ],
        "litellm_settings": {"num_retries": 2, "fallbacks": [{"broken": ["gpt"]}]},
        "general_settings": {"master_key": MASTER, "database_path": str(tmp / "headers.db")},
    }
    with ProxyProcess(config) as server:
        yield server


def client(proxy: ProxyProcess, key: str = MASTER) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"{proxy.url}/v1", max_retries=0)


def server_timing(value: str) -> dict[str, float]:
    out = {}
    for part in value.split(","):
        name, _, dur = part.strip().partition(";dur=")
        out[name] = float(dur)
    return out


def post(proxy: ProxyProcess, headers: dict[str, str] | None = None, **body) -> requests.Response:
    payload = {"model": "gpt", "messages": HI, **body}
    return requests.post(f"{proxy.url}/v1/chat/completions", headers={**AUTH, **(headers or {})},
                         json=payload, timeout=30)


def spend_row(proxy: ProxyProcess, request_id: str) -> dict:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        rows = requests.get(f"{proxy.url}/spend/logs", headers=AUTH, params={"request_id": request_id},
                            timeout=10).json()
        if rows:
            return rows[0]
        time.sleep(0.2)
    raise AssertionError(f"no spend record for {request_id}")


# -- response headers -----------------------------------------------------------------------------

def test_a_plain_answer_carries_litellms_headers(proxy: ProxyProcess, upstream: MockOpenAI) -> None:
    raw = client(proxy).chat.completions.with_raw_response.create(model="gpt", messages=HI)
    assert raw.parse().choices[0].message.content == "echo: hi there"
    h = raw.headers
    assert h["x-litellm-call-id"].startswith("req-")
    assert h["x-litellm-model-group"] == "gpt" and h["x-litellm-model-id"]
    assert h["x-litellm-model-api-base"] == upstream.url
    assert (h["x-litellm-attempted-retries"], h["x-litellm-max-retries"], h["x-litellm-attempted-fallbacks"]) \
        == ("0", "2", "0")
    assert {k: h[k] for k in OPENAI_LIMITS} == OPENAI_LIMITS  # the upstream's, passed through
    assert float(h["x-litellm-response-cost"]) > 0  # priced from the cost map, also without a virtual key
    assert "x-litellm-key-spend" not in h  # the master key has no spend of its own
    duration, overhead = float(h["x-litellm-response-duration-ms"]), float(h["x-litellm-overhead-duration-ms"])
    timing = server_timing(h["server-timing"])
    assert duration == pytest.approx(timing["total"], abs=0.002)
    assert 0 <= overhead < duration
    assert overhead == pytest.approx(timing["total"] - timing["upstream"], abs=0.01)  # the call minus upstream


def test_a_stream_carries_the_headers_known_when_it_starts(proxy: ProxyProcess, upstream: MockOpenAI) -> None:
    with client(proxy).chat.completions.with_streaming_response.create(
            model="gpt", messages=HI, stream=True) as response:
        h = response.headers
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == "echo: hi there"
    assert h["x-litellm-model-api-base"] == upstream.url and h["x-litellm-call-id"]
    assert {k: h[k] for k in OPENAI_LIMITS} == OPENAI_LIMITS
    assert h["x-litellm-attempted-retries"] == "0" and h["x-litellm-max-retries"] == "2"
    assert float(h["x-litellm-response-duration-ms"]) >= float(h["x-litellm-overhead-duration-ms"]) >= 0
    assert "x-litellm-response-cost" not in h  # priced only when the stream has ended


def test_anthropic_rate_limits_are_sent_under_openais_names(proxy: ProxyProcess,
                                                            anthropic_upstream: MockAnthropic) -> None:
    raw = client(proxy).chat.completions.with_raw_response.create(model="claude", messages=HI)
    h = raw.headers
    assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("4000", "3999")
    assert (h["x-ratelimit-limit-tokens"], h["x-ratelimit-remaining-tokens"]) == ("400000", "399990")
    assert h["x-litellm-model-api-base"] == anthropic_upstream.url
    assert "anthropic-ratelimit-requests-limit" not in h


def test_retries_and_fallbacks_are_counted(proxy: ProxyProcess) -> None:
    fail = {"status": 503, "fail_times": 1, "fail_key": uuid.uuid4().hex, "retry_after": "0"}
    raw = client(proxy).chat.completions.with_raw_response.create(
        model="gpt", messages=HI, extra_body={"mock_controls": fail})
    assert raw.headers["x-litellm-attempted-retries"] == "1" and raw.headers["x-litellm-max-retries"] == "2"
    raw = client(proxy).chat.completions.with_raw_response.create(model="broken", messages=HI)
    assert raw.headers["x-litellm-attempted-fallbacks"] == "1" and raw.headers["x-litellm-model-group"] == "gpt"
    assert raw.headers["x-litellm-attempted-retries"] == "0"  # counted for the group that answered


def test_errors_carry_the_headers_too(proxy: ProxyProcess, upstream: MockOpenAI) -> None:
    r = post(proxy, {"x-litellm-num-retries": "1"},
             mock_controls={"status": 500, "retry_after": "0", "fail_key": uuid.uuid4().hex})
    assert r.status_code == 500
    h = r.headers
    assert h["x-litellm-call-id"] and float(h["x-litellm-response-duration-ms"]) > 0
    assert h["x-litellm-attempted-retries"] == "1" and h["x-litellm-max-retries"] == "1"
    assert h["x-litellm-model-api-base"] == upstream.url
    assert "x-litellm-response-cost" not in h and "x-ratelimit-limit-requests" not in h


def test_a_keys_own_limits_replace_the_upstreams(proxy: ProxyProcess) -> None:
    r = requests.post(f"{proxy.url}/key/generate", headers=AUTH, json={"rpm_limit": 50, "tpm_limit": 10000},
                      timeout=10)
    key = r.json()["key"]
    first = client(proxy, key).chat.completions.with_raw_response.create(model="gpt", messages=HI)
    used = first.parse().usage.total_tokens
    h = first.headers
    assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("50", "49")
    assert (h["x-ratelimit-limit-tokens"], h["x-ratelimit-remaining-tokens"]) == ("10000", str(10000 - used))
    cost = float(h["x-litellm-response-cost"])
    assert float(h["x-litellm-key-spend"]) == pytest.approx(cost)  # the key's spend, this call included
    second = client(proxy, key).chat.completions.with_raw_response.create(model="gpt", messages=HI)
    assert second.headers["x-ratelimit-remaining-requests"] == "48"
    assert second.headers["x-ratelimit-remaining-tokens"] == str(10000 - 2 * used)
    assert float(second.headers["x-litellm-key-spend"]) == pytest.approx(2 * cost)

    rpm_only = requests.post(f"{proxy.url}/key/generate", headers=AUTH, json={"rpm_limit": 7}, timeout=10)
    raw = client(proxy, rpm_only.json()["key"]).chat.completions.with_raw_response.create(model="gpt", messages=HI)
    assert (raw.headers["x-ratelimit-limit-requests"], raw.headers["x-ratelimit-remaining-requests"]) == ("7", "6")
    assert raw.headers["x-ratelimit-limit-tokens"] == "2000000"  # no tpm limit on the key: the upstream's


# -- request headers ------------------------------------------------------------------------------

@pytest.mark.parametrize(("header", "value"), [
    ("x-litellm-timeout", "soon"),
    ("x-litellm-timeout", "0"),
    ("x-litellm-stream-timeout", "-1"),
    ("x-litellm-num-retries", "2.5"),
    ("x-litellm-num-retries", "-1"),
    ("x-litellm-tags", ",,"),
    ("x-litellm-enable-message-redaction", "maybe"),
    ("x-litellm-customer-id", ""),
    ("x-litellm-end-user-id", ""),
    ("x-litellm-spend-logs-metadata", "{not json"),
    ("x-litellm-spend-logs-metadata", "[1, 2]"),
])
def test_a_bad_request_header_is_a_400_naming_it(proxy: ProxyProcess, header: str, value: str) -> None:
    r = post(proxy, {header: value})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert header in error["message"] and error["param"] == header


def test_timeout_and_num_retries_headers_steer_the_call(proxy: ProxyProcess, upstream: MockOpenAI) -> None:
    key = uuid.uuid4().hex
    upstream.clear()
    started = time.monotonic()
    r = post(proxy, {"x-litellm-timeout": "0.3", "x-litellm-num-retries": "0"},
             mock_controls={"delay": 2, "fail_key": key})
    assert r.status_code == 408, r.text
    assert time.monotonic() - started < 1.5
    assert len([q for q in upstream.requests() if q["body"].get("mock_controls", {}).get("fail_key") == key]) == 1
    assert r.headers["x-litellm-max-retries"] == "0"


def test_stream_timeout_header_bounds_the_wait_for_each_chunk(proxy: ProxyProcess) -> None:
    r = requests.post(f"{proxy.url}/v1/chat/completions", headers={**AUTH, "x-litellm-stream-timeout": "0.3"},
                      json={"model": "gpt", "messages": HI, "stream": True, "mock_controls": {"chunk_delay": 1}},
                      timeout=30)
    events = [orjson.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "sent nothing for 0.3s" in events[-1]["error"]["message"]


def test_tags_end_user_and_spend_metadata_go_with_the_spend_record(proxy: ProxyProcess) -> None:
    r = post(proxy, {"x-litellm-tags": "b, c ,b", "x-litellm-customer-id": "cust-1",
                     "x-litellm-spend-logs-metadata": '{"project": "p1"}',
                     "x-litellm-enable-message-redaction": "true"},
             user="body-user",
             metadata={"team": "blue", "tags": ["a", "b"], "spend_logs_metadata": {"env": "dev"}})
    assert r.status_code == 200, r.text
    row = spend_row(proxy, r.headers["x-litellm-call-id"])
    assert row["user"] == "cust-1"  # the header outranks the body's user, as in LiteLLM
    assert row["metadata"] == {"team": "blue", "tags": ["a", "b", "c"],
                               "spend_logs_metadata": {"env": "dev", "project": "p1"}}
    assert "hi there" not in str(row)

    r = post(proxy, {"x-litellm-end-user-id": "eu-2"}, model="house")
    assert r.status_code == 200
    assert spend_row(proxy, r.headers["x-litellm-call-id"])["user"] == "eu-2"


def test_the_anthropic_surface_carries_them_and_obeys_them(proxy: ProxyProcess) -> None:
    r = requests.post(f"{proxy.url}/v1/messages", timeout=30,
                      headers={"x-api-key": MASTER, "anthropic-version": "2023-06-01", "x-litellm-num-retries": "1"},
                      json={"model": "claude", "max_tokens": 50, "messages": HI})
    assert r.status_code == 200, r.text
    h = r.headers
    assert h["x-ratelimit-limit-requests"] == "4000" and h["x-litellm-max-retries"] == "1"
    assert float(h["x-litellm-response-duration-ms"]) > 0 and float(h["x-litellm-response-cost"]) > 0
    bad = requests.post(f"{proxy.url}/v1/messages", timeout=30,
                        headers={"x-api-key": MASTER, "x-litellm-timeout": "never"},
                        json={"model": "claude", "max_tokens": 50, "messages": HI})
    assert bad.status_code == 400 and "x-litellm-timeout" in bad.json()["error"]["message"]
