"""Shared state end to end against a real redis-server: limits and cooldowns across workers and
instances, runtime models across hosts, and a Redis outage in the middle of traffic."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.mock_upstream import MockOpenAI
from tests.redis_server import RedisServer
from tests.servers import ProxyProcess, free_port

MASTER = "sk-shared"
AUTH = {"Authorization": f"Bearer {MASTER}"}


def redis_settings(url: str, prefix: str) -> dict:
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    return {"redis_host": host, "redis_port": int(port), "redis_key_prefix": prefix}


DEAD = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens here; same for every instance


def config(upstream: MockOpenAI, url: str, prefix: str, tmp: Path, db: str, **extra) -> dict:
    """The same config for every instance (so deployment ids match), with its own SQLite file."""
    dead = DEAD
    return {
        "model_list": [
            {"model_name": "limited", "litellm_params": {"model": "openai/limited", "api_base": upstream.url,
                                                         "api_key": "sk-upstream", "rpm": 6}},
            {"model_name": "shaky", "litellm_params": {"model": "openai/shaky-a", "api_base": dead}},
            {"model_name": "shaky", "litellm_params": {"model": "openai/shaky-b", "api_base": dead}},
            {"model_name": "plain", "litellm_params": {"model": "openai/plain", "api_base": upstream.url,
                                                       "api_key": "sk-upstream"}},
        ],
        "router_settings": {**redis_settings(url, prefix), "allowed_fails": 0, "cooldown_time": 60, **extra},
        "general_settings": {"master_key": MASTER, "database_path": str(tmp / db)},
    }


def chat(server: ProxyProcess, model: str) -> requests.Response:
    return requests.post(f"{server.url}/v1/chat/completions", headers=AUTH, timeout=30,
                         json={"model": model, "messages": [{"role": "user", "content": "x"}]})


def wait_for_fresh_minute(margin: float = 12.0) -> None:
    """Limits count per UTC minute: start a limit test well inside one."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.2)


@pytest.fixture
def prefix() -> str:
    return f"llmrelay-e2e:{uuid.uuid4().hex}:"


@pytest.fixture
def pair(upstream, redis_url, prefix, tmp_path) -> Iterator[tuple[ProxyProcess, ProxyProcess]]:
    """Two instances (one with two workers) on one Redis, each with its own SQLite file."""
    a = ProxyProcess(config(upstream, redis_url, prefix, tmp_path, "a.db"), workers=2).start()
    b = ProxyProcess(config(upstream, redis_url, prefix, tmp_path, "b.db")).start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def test_rpm_limit_holds_across_instances_and_workers(pair) -> None:
    a, b = pair
    wait_for_fresh_minute()
    codes = []
    for _ in range(6):
        codes += [chat(a, "limited").status_code, chat(b, "limited").status_code]
    assert codes.count(200) == 6 and codes.count(429) == 6, codes


def test_cooldown_seen_by_the_other_instance(pair) -> None:
    a, b = pair
    for _ in range(4):
        chat(a, "shaky")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        seen = requests.get(f"{b.url}/health/cooldowns", headers=AUTH).json()["cooldowns"]
        if len([c for c in seen if c["model_name"] == "shaky"]) == 2:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"instance b never saw the cooldowns: {seen}")
    r = chat(b, "shaky")
    assert r.status_code == 429 and "cooldown" in r.json()["error"]["message"]


def test_runtime_models_reach_other_hosts_and_persist(upstream, redis_url, prefix, tmp_path) -> None:
    cfg_a = config(upstream, redis_url, prefix, tmp_path, "host-a.db")
    cfg_b = config(upstream, redis_url, prefix, tmp_path, "host-b.db")
    a = ProxyProcess(cfg_a).start()
    b = ProxyProcess(cfg_b, workers=2).start()
    try:
        r = requests.post(f"{a.url}/model/new", headers=AUTH, json={
            "model_name": "fleet-model", "litellm_params": {"model": "openai/fleet", "mock_response": "everywhere"}})
        model_id = r.json()["model_id"]
        time.sleep(1.0)
        answers = [chat(b, "fleet-model") for _ in range(8)]
        assert [x.status_code for x in answers] == [200] * 8
        b.stop()
        b = ProxyProcess(cfg_b).start()  # its own SQLite file kept the mirrored model
        assert chat(b, "fleet-model").json()["choices"][0]["message"]["content"] == "everywhere"
        requests.post(f"{a.url}/model/delete", headers=AUTH, json={"id": model_id})
        time.sleep(1.0)
        assert chat(b, "fleet-model").status_code == 400
    finally:
        a.stop()
        b.stop()


def test_redis_outage_mid_run(upstream, private_redis: RedisServer, prefix, tmp_path) -> None:
    server = ProxyProcess(config(upstream, private_redis.url, prefix, tmp_path, "outage.db"), workers=2).start()
    failures: list[int] = []
    done = threading.Event()
    served = {"n": 0}

    def load() -> None:
        while not done.is_set():
            code = chat(server, "plain").status_code
            served["n"] += 1
            if code != 200:
                failures.append(code)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        private_redis.kill()
        time.sleep(2.0)
        during = served["n"]
        time.sleep(1.5)
        assert served["n"] > during  # still serving with Redis gone
        private_redis.start()
        time.sleep(2.5)
    finally:
        done.set()
        for t in threads:
            t.join()
        server.stop()
    assert not failures, failures[:5]
    log = server.log()
    assert log.count("Redis") >= 2 and "Traceback" not in log
