"""/health end to end: calls to every deployment, per-call timeouts, no key in the answer, and
background checks that keep an unhealthy deployment out of routing until it passes again."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import requests

from tests.mock_upstream import MockOpenAI
from tests.servers import ProxyProcess, free_port

MASTER = "sk-health-master"
AUTH = {"Authorization": f"Bearer {MASTER}"}
WRONG_KEY = "sk-wrong-upstream-key-4711"


def dep(name: str, api_base: str, api_key: str = "sk-upstream", model: str | None = None, **info) -> dict:
    return {"model_name": name, "model_info": info,
            "litellm_params": {"model": f"openai/{model or name}", "api_base": api_base, "api_key": api_key}}


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers (a hanging deployment)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        sock.close()


def test_health_calls_every_deployment(upstream: MockOpenAI, silent_server: str) -> None:
    config = {
        "model_list": [
            dep("good", upstream.url),
            dep("bad-key", upstream.url, api_key=WRONG_KEY),
            dep("hang", silent_server, health_check_timeout=1),
            dep("emb", upstream.url, model="text-embedding-3-small", mode="embedding"),
        ],
        "general_settings": {"master_key": MASTER},
    }
    with ProxyProcess(config) as proxy:
        assert requests.get(f"{proxy.url}/health", timeout=10).status_code == 401
        upstream.clear()
        started = time.monotonic()
        r = requests.get(f"{proxy.url}/health", headers=AUTH, timeout=30)
        took = time.monotonic() - started
        assert r.status_code == 200, r.text
        body = r.json()
        assert took < 5, f"a hanging deployment held the answer for {took:.1f}s"
        assert body["healthy_count"] == 2 and body["unhealthy_count"] == 2
        healthy = {e["model_name"]: e for e in body["healthy_endpoints"]}
        unhealthy = {e["model_name"]: e for e in body["unhealthy_endpoints"]}
        assert set(healthy) == {"good", "emb"} and set(unhealthy) == {"bad-key", "hang"}
        assert healthy["good"] == {"model": "openai/good", "model_name": "good", "api_base": upstream.url,
                                   "model_id": healthy["good"]["model_id"], "checked_at": healthy["good"]["checked_at"],
                                   "latency_ms": healthy["good"]["latency_ms"]}
        assert unhealthy["bad-key"]["error"].startswith("401")
        assert "timeout" in unhealthy["hang"]["error"]
        assert WRONG_KEY not in r.text and "sk-upstream" not in r.text
        paths = sorted(x["path"] for x in upstream.requests())
        assert paths == ["/v1/chat/completions", "/v1/chat/completions", "/v1/embeddings"]
        chat_call = next(x for x in upstream.requests() if x["path"] == "/v1/chat/completions")
        assert chat_call["body"]["max_tokens"] == 1 and chat_call["body"]["messages"][0]["content"] == "ping"

        narrowed = requests.get(f"{proxy.url}/health", params={"model": "good"}, headers=AUTH, timeout=30).json()
        assert narrowed["healthy_count"] == 1 and narrowed["unhealthy_count"] == 0
        unknown = requests.get(f"{proxy.url}/health", params={"model": "nope"}, headers=AUTH, timeout=30)
        assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "model"


def test_readiness_reports_store_redis_and_callbacks(upstream: MockOpenAI, redis_url: str) -> None:
    config = {"model_list": [dep("good", upstream.url)],
              "litellm_settings": {"success_callback": ["langfuse"]},
              "router_settings": {"redis_url": redis_url, "redis_key_prefix": f"ready{free_port()}:"}}
    with ProxyProcess(config) as proxy:
        body = requests.get(f"{proxy.url}/health/readiness", timeout=10).json()
        assert body["status"] == "healthy" and body["db"] == "connected"
        assert body["redis"] == "connected" and body["cache"] == "redis"
        assert body["success_callbacks"] == ["langfuse"]
        assert body["litellm_version"]
        assert requests.get(f"{proxy.url}/health/liveliness", timeout=10).json() == "I'm alive!"


def test_background_checks_keep_an_unhealthy_deployment_out(upstream: MockOpenAI, redis_url: str) -> None:
    late_port = free_port()
    late_url = f"http://127.0.0.1:{late_port}/v1"
    interval = 2
    config = {
        "model_list": [dep("pair", upstream.url, model="pair-a"), dep("pair", late_url, model="pair-b")],
        "router_settings": {"redis_url": redis_url, "redis_key_prefix": f"bg{late_port}:",
                            "disable_cooldowns": True},
        "general_settings": {"master_key": MASTER, "background_health_checks": True,
                             "health_check_interval": interval},
    }
    with ProxyProcess(config, workers=2) as proxy:
        deadline = time.monotonic() + 15
        body: dict = {}
        while time.monotonic() < deadline:
            body = requests.get(f"{proxy.url}/health", headers=AUTH, timeout=10).json()
            if body.get("unhealthy_count") == 1:
                break
            time.sleep(0.2)
        assert body["unhealthy_count"] == 1 and body["unhealthy_endpoints"][0]["model"] == "openai/pair-b"
        time.sleep(1.5)  # the other worker re-reads the shared results within its 1 s poll
        # every request goes to the healthy deployment (cooldowns are off: only the check excludes)
        for _ in range(8):
            r = requests.post(f"{proxy.url}/v1/chat/completions", headers=AUTH, timeout=10,
                              json={"model": "pair", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200 and r.json()["model"] == "pair-a", (
                r.text, requests.get(f"{proxy.url}/health", headers=AUTH, timeout=10).text)
        explain = requests.post(f"{proxy.url}/route/explain", headers=AUTH, timeout=10,
                                json={"model": "pair", "messages": [{"role": "user", "content": "x"}]}).json()
        assert [e["model"] for e in explain["excluded"]] == ["openai/pair-b"]
        assert explain["excluded"][0]["reason"].startswith("unhealthy: background health check failed")

        # one worker of the two checks per interval: count the checks over three intervals
        upstream.clear()
        time.sleep(interval * 3)
        checks = [x for x in upstream.requests() if x["body"].get("max_tokens") == 1]
        assert 2 <= len(checks) <= 4, len(checks)

        # the deployment comes back: the next check passes and it serves again
        with MockOpenAI(port=late_port, api_key="sk-upstream"):
            deadline = time.monotonic() + interval * 4
            seen = set()
            while time.monotonic() < deadline and "pair-b" not in seen:
                r = requests.post(f"{proxy.url}/v1/chat/completions", headers=AUTH, timeout=10,
                                  json={"model": "pair", "messages": [{"role": "user", "content": "hi"}]})
                seen.add(r.json()["model"])
                time.sleep(0.1)
            assert "pair-b" in seen
            assert requests.get(f"{proxy.url}/health", headers=AUTH, timeout=10).json()["unhealthy_count"] == 0
