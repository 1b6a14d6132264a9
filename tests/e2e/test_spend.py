"""Spend records: one per call, priced from the cost map, and none lost on SIGTERM."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import requests
import yaml

from tests.mock_upstream import MockOpenAI
from tests.servers import ProxyProcess

MASTER = "sk-spend"
AUTH = {"Authorization": f"Bearer {MASTER}"}


@pytest.fixture
def config_path(upstream: MockOpenAI, tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "model_list": [
            {"model_name": "gpt-4o-mini", "litellm_params": {
                "model": "openai/gpt-4o-mini", "api_base": upstream.url, "api_key": "sk-upstream"}},
            {"model_name": "house", "litellm_params": {"model": "openai/house", "mock_response": "a b c d"},
             "model_info": {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002}},
        ],
        "general_settings": {"master_key": MASTER, "database_path": str(tmp_path / "spend.db")},
    }))
    return path


def chat(server: ProxyProcess, model: str, **extra) -> requests.Response:
    return requests.post(f"{server.url}/v1/chat/completions", headers=AUTH, timeout=30, json={
        "model": model, "messages": [{"role": "user", "content": "one two three"}], **extra})


def test_spend_is_recorded_priced_and_survives_sigterm(config_path: Path) -> None:
    server = ProxyProcess(config_path, workers=2).start()
    ids: list[str] = []
    try:
        r = chat(server, "house", user="alice", metadata={"team": "blue"})
        ids.append(r.headers["x-litellm-call-id"])
        r = chat(server, "gpt-4o-mini")
        ids.append(r.headers["x-litellm-call-id"])
        threads = [threading.Thread(target=lambda: ids.append(chat(server, "house").headers["x-litellm-call-id"]))
                   for _ in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        assert server.stop() == 0  # SIGTERM right after the burst: queued records must still land
    again = ProxyProcess(config_path).start()
    try:
        logs = requests.get(f"{again.url}/spend/logs", headers=AUTH, params={"limit": 1000}).json()
        assert {row["request_id"] for row in logs} >= set(ids) and len(ids) == 32
        house = requests.get(f"{again.url}/spend/logs", headers=AUTH, params={"request_id": ids[0]}).json()[0]
        assert house["model"] == "house" and house["user"] == "alice" and house["metadata"] == {"team": "blue"}
        expected = house["prompt_tokens"] * 0.001 + house["completion_tokens"] * 0.002
        assert house["completion_tokens"] == 4 and house["spend"] == pytest.approx(expected)
        mini = requests.get(f"{again.url}/spend/logs", headers=AUTH, params={"request_id": ids[1]}).json()[0]
        assert mini["provider"] == "openai" and mini["spend"] > 0  # priced from the bundled cost map
        assert mini["api_key_hash"] and MASTER not in str(mini)
        total = requests.get(f"{again.url}/global/spend", headers=AUTH).json()["spend"]
        assert total == pytest.approx(sum(row["spend"] for row in logs))
        assert requests.get(f"{again.url}/spend/logs").status_code == 401
    finally:
        again.stop()
