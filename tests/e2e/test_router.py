"""Router end to end: limits, retries, fallbacks, context window, cooldowns, explain, aliases."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
import requests

from tests.mock_upstream import MockOpenAI
from tests.servers import ProxyProcess, free_port

MASTER = "sk-router"
AUTH = {"Authorization": f"Bearer {MASTER}"}


@pytest.fixture(scope="module")
def proxy(upstream: MockOpenAI) -> Iterator[ProxyProcess]:
    def dep(name: str, model: str, model_info: dict | None = None, **params) -> dict:
        return {"model_name": name, "model_info": model_info or {},
                "litellm_params": {"model": f"openai/{model}", "api_base": upstream.url,
                                   "api_key": "sk-upstream", **params}}

    dead = f"http://127.0.0.1:{free_port()}/v1"
    config = {
        "model_list": [
            dep("limited", "limited-a", rpm=3),
            dep("pair", "pair-a", api_base=dead), dep("pair", "pair-b"),
            dep("flaky", "flaky-a"),
            dep("backup", "backup-a"),
            dep("guarded", "guarded-a"),
            dep("small", "small-a", model_info={"max_input_tokens": 50}),
            dep("large", "large-a"),
            dep("cool", "cool-a", api_base=dead), dep("cool", "cool-b", api_base=dead),
            dep("ordered", "first", order=1), dep("ordered", "second", order=2),
            dep("slow-stream", "slow-stream", stream_timeout=0.4),
        ],
        "router_settings": {"model_group_alias": {"gpt-4": "backup"}, "num_retries": 1,
                            "allowed_fails": 1, "cooldown_time": 30},
        "litellm_settings": {"fallbacks": [{"flaky": ["backup"]}],
                             "context_window_fallbacks": [{"small": ["large"]}],
                             "content_policy_fallbacks": [{"guarded": ["backup"]}]},
        "general_settings": {"master_key": MASTER},
    }
    with ProxyProcess(config) as server:
        yield server


def chat(proxy: ProxyProcess, model: str, text: str = "hi", **extra) -> requests.Response:
    return requests.post(f"{proxy.url}/v1/chat/completions", headers=AUTH, timeout=30,
                         json={"model": model, "messages": [{"role": "user", "content": text}], **extra})


def test_rpm_limit_gives_429_with_retry_after(proxy) -> None:
    codes = [chat(proxy, "limited").status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    r = chat(proxy, "limited")
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert "rpm limit: 3/3" in r.json()["error"]["message"]


def test_retry_goes_to_the_healthy_deployment(proxy, upstream) -> None:
    for _ in range(6):
        r = chat(proxy, "pair")
        assert r.status_code == 200, r.text
        assert r.json()["model"] == "pair-b"


def test_fallback_after_retries(proxy) -> None:
    r = chat(proxy, "flaky", mock_controls={"status": 503, "fail_times": 2, "fail_key": "fb"})
    # the flaky deployment fails (and its retry), then the fallback group answers
    assert r.status_code == 200 and r.json()["model"] == "backup-a"
    assert r.headers["x-litellm-attempted-fallbacks"] == "1"
    assert r.headers["x-litellm-model-group"] == "backup"


def test_context_window_fallback_before_the_call(proxy, upstream) -> None:
    upstream.clear()
    long_text = "word " * 200
    r = chat(proxy, "small", long_text)
    assert r.status_code == 200 and r.json()["model"] == "large-a"
    assert all(req["body"]["model"] != "small-a" for req in upstream.requests())  # never sent upstream


def test_context_window_fallback_on_upstream_error(proxy) -> None:
    r = chat(proxy, "small", "short", mock_controls={"error": "context_length_exceeded", "fail_key": "cw",
                                                     "fail_times": 1})
    assert r.status_code == 200 and r.json()["model"] == "large-a"


def test_content_policy_fallback_on_openai_refusal(proxy) -> None:
    r = chat(proxy, "guarded", "short", mock_controls={"error": "content_policy_violation", "fail_key": "cp",
                                                       "fail_times": 1})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "backup-a" and r.headers["x-litellm-attempted-fallbacks"] == "1"
    client = openai.OpenAI(api_key=MASTER, base_url=f"{proxy.url}/v1", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:  # no content_policy_fallbacks for this group
        client.chat.completions.create(model="large", messages=[{"role": "user", "content": "x"}],
                                       extra_body={"mock_controls": {"error": "content_policy_violation"}})
    assert caught.value.code == "content_policy_violation" and "safety system" in caught.value.message


def test_alias(proxy) -> None:
    r = chat(proxy, "gpt-4")
    assert r.status_code == 200 and r.json()["model"] == "backup-a"


def test_order_prefers_lower(proxy) -> None:
    assert {chat(proxy, "ordered").json()["model"] for _ in range(5)} == {"first"}


def test_cooldown_listed_and_429_when_all_cool(proxy) -> None:
    for _ in range(3):
        chat(proxy, "cool")
    r = requests.get(f"{proxy.url}/health/cooldowns", headers=AUTH)
    cooling = [c for c in r.json()["cooldowns"] if c["model_name"] == "cool"]
    assert len(cooling) == 2 and all(0 < c["seconds_left"] <= 30 for c in cooling)
    r = chat(proxy, "cool")
    assert r.status_code == 429 and "cooldown" in r.json()["error"]["message"]
    assert requests.get(f"{proxy.url}/health/cooldowns").status_code == 401


def test_route_explain(proxy) -> None:
    r = requests.post(f"{proxy.url}/route/explain", headers=AUTH,
                      json={"model": "ordered", "messages": [{"role": "user", "content": "x"}]})
    body = r.json()
    assert body["chosen"]["model"] == "openai/first"
    assert body["excluded"][0]["reason"].startswith("order: 2 > 1")
    r = requests.post(f"{proxy.url}/route/explain", headers=AUTH,
                      json={"model": "small", "messages": [{"role": "user", "content": "word " * 200}]})
    assert r.json()["chosen"] is None and "context window" in r.json()["excluded"][0]["reason"]
    assert r.json()["error"]["code"] == "context_length_exceeded"


def test_streams_fall_back_before_the_first_byte(proxy) -> None:
    client = openai.OpenAI(api_key=MASTER, base_url=f"{proxy.url}/v1", max_retries=0)
    controls = {"status": 500, "fail_times": 2, "fail_key": "fs"}
    stream = client.chat.completions.create(model="flaky", messages=[{"role": "user", "content": "a b"}],
                                            stream=True, extra_body={"mock_controls": controls})
    chunks = list(stream)
    assert chunks[0].model == "backup-a"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: a b"


def test_stream_timeout_between_chunks(proxy) -> None:
    r = requests.post(f"{proxy.url}/v1/chat/completions", headers=AUTH, timeout=30, json={
        "model": "slow-stream", "stream": True, "messages": [{"role": "user", "content": "a b c"}],
        "mock_controls": {"chunk_delay": 1.5}})
    events = [e for e in r.text.split("\n\n") if e]
    assert r.status_code == 200  # the first chunk was already out when the upstream stalled
    last = events[-1]
    assert '"error"' in last and "sent nothing for 0.4s" in last and "[DONE]" not in r.text
