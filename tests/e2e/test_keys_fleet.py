"""Two instances sharing Redis and PostgreSQL act as one gateway for keys, spend and budgets.

A key generated on one works on the other at once; spend from both shows on either; a budget
used up through one is refused on the other; a deletion takes effect everywhere within a second.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.pg_server import create_database, drop_database
from tests.servers import ProxyProcess

MASTER = "sk-fleet-master"
AUTH = {"Authorization": f"Bearer {MASTER}"}


def config(redis_url: str, prefix: str, tmp: Path) -> dict[str, Any]:
    host_port = redis_url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    return {
        "model_list": [{"model_name": "house", "litellm_params": {"model": "openai/house", "mock_response": "a b c d"},
                        "model_info": {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002}}],
        "router_settings": {"redis_host": host, "redis_port": int(port), "redis_key_prefix": prefix},
        "general_settings": {"master_key": MASTER, "database_path": str(tmp / "unused.db")},
    }


@pytest.fixture
def fleet(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[ProxyProcess, ProxyProcess]]:
    database = create_database(pg_url.rsplit("/", 1)[0] + "/postgres", prefix="llmrelay_fleet_")
    prefix = f"llmrelay-fleet:{uuid.uuid4().hex}:"
    env = {"DATABASE_URL": database}
    a = ProxyProcess(config(redis_url, prefix, tmp_path), workers=2, env=env).start()
    b = ProxyProcess(config(redis_url, prefix, tmp_path), env=env).start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()
        a.__exit__()
        b.__exit__()
        drop_database(database)
    assert not (tmp_path / "unused.db").exists()  # the fleet's store is PostgreSQL


def chat(server: ProxyProcess, key: str) -> requests.Response:
    return requests.post(f"{server.url}/v1/chat/completions", timeout=30,
                         headers={"Authorization": f"Bearer {key}", "Connection": "close"},
                         json={"model": "house", "messages": [{"role": "user", "content": "one two three"}]})


def key_info(server: ProxyProcess, key: str) -> dict[str, Any]:
    r = requests.get(f"{server.url}/key/info", headers=AUTH, params={"key": key}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["info"]


def test_two_instances_share_keys_spend_budgets_and_deletions(fleet: tuple[ProxyProcess, ProxyProcess]) -> None:
    a, b = fleet
    r = requests.post(f"{a.url}/key/generate", headers=AUTH, json={"max_budget": 0.05, "key_alias": "fleet"})
    assert r.status_code == 200, r.text
    key = r.json()["key"]

    # generated on a, works on b at once
    assert chat(b, key).status_code == 200
    assert chat(a, key).status_code == 200

    # spend from both shows on either (records are written in batches every 0.5 s)
    deadline = time.monotonic() + 5
    while True:
        spends = [key_info(s, key)["spend"] for s in (a, b)]
        logs = requests.get(f"{b.url}/spend/logs", headers=AUTH, params={"api_key": key}, timeout=10).json()
        if len(logs) == 2 and all(s > 0 for s in spends):
            break
        assert time.monotonic() < deadline, (spends, logs)
        time.sleep(0.2)
    assert spends[0] == pytest.approx(spends[1])

    # use the budget up through a; b refuses
    for _ in range(40):
        if chat(a, key).status_code != 200:
            break
    else:
        pytest.fail("the budget never ran out")
    deadline = time.monotonic() + 3
    while chat(b, key).status_code == 200:
        assert time.monotonic() < deadline, "b kept serving a key whose budget a used up"
        time.sleep(0.1)
    refused = chat(b, key)
    assert refused.status_code == 400 and refused.json()["error"]["type"] == "budget_exceeded"

    # a deletion on b takes effect on every worker of a within a second
    other = requests.post(f"{b.url}/key/generate", headers=AUTH, json={}).json()["key"]
    assert all(chat(a, other).status_code == 200 for _ in range(4))
    assert requests.post(f"{b.url}/key/delete", headers=AUTH, json={"keys": [other]}, timeout=10).status_code == 200
    deleted_at = time.monotonic()
    while any(chat(a, other).status_code != 401 for _ in range(4)):
        assert time.monotonic() - deleted_at < 1.0, "a deleted key still works on the other instance"
        time.sleep(0.05)
