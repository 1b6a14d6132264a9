"""The proxy on PostgreSQL (DATABASE_URL): runtime models and spend logs live in the database and
survive a restart; the SQLite file is never created."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests
import yaml

from tests.pg_server import create_database, drop_database
from tests.servers import ProxyProcess

MASTER = "sk-pg"
AUTH = {"Authorization": f"Bearer {MASTER}"}


@pytest.fixture
def database(pg_url: str) -> Iterator[str]:
    """A database of this test's own on the session's server."""
    url = create_database(pg_url.rsplit("/", 1)[0] + "/postgres", prefix="llmrelay_e2e_")
    try:
        yield url
    finally:
        drop_database(url)


def write_config(tmp_path: Path, general: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "model_list": [
            {"model_name": "house", "litellm_params": {"model": "openai/house", "mock_response": "a b c d"},
             "model_info": {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002}},
        ],
        "general_settings": {"master_key": MASTER, "database_path": str(tmp_path / "unused.db"), **general},
    }))
    return path


def chat(server: ProxyProcess, model: str) -> requests.Response:
    return requests.post(f"{server.url}/v1/chat/completions", headers=AUTH, timeout=30, json={
        "model": model, "messages": [{"role": "user", "content": "one two three"}]})


def test_models_and_spend_live_in_postgres_across_a_restart(database: str, tmp_path: Path) -> None:
    # First run: the URL from the environment.
    first = ProxyProcess(write_config(tmp_path, {}), workers=2, env={"DATABASE_URL": database}).start()
    ids: list[str] = []
    try:
        r = requests.post(f"{first.url}/model/new", headers=AUTH, json={
            "model_name": "pg-runtime", "litellm_params": {"model": "openai/pg", "mock_response": "from postgres"}})
        assert r.status_code == 200, r.text
        model_id = r.json()["model_id"]
        for _ in range(5):
            r = chat(first, "house")
            assert r.status_code == 200, r.text
            ids.append(r.headers["x-litellm-call-id"])
    finally:
        assert first.stop() == 0  # SIGTERM: queued spend rows are flushed on the way out
    assert not (tmp_path / "unused.db").exists()
    # The workers were patched before psycopg was imported: it chose gevent-aware waits itself.
    assert "imported before gevent patched" not in first.log()
    assert "Traceback" not in first.log()

    with psycopg.connect(database) as conn:
        rows = conn.execute("SELECT id, model_name, deleted FROM models").fetchall()
        assert rows == [(model_id, "pg-runtime", 0)]
        spend = dict(conn.execute("SELECT request_id, spend FROM spend_logs WHERE model = 'house'").fetchall())
        assert set(spend) == set(ids)
        assert all(value > 0 for value in spend.values())  # priced from model_info

    # Second run: the URL from the config file (os.environ/ reference), a fresh process.
    config = write_config(tmp_path, {"database_url": "os.environ/LLMRELAY_T_PG_URL",
                                     "database_connection_pool_limit": 2})
    second = ProxyProcess(config, env={"LLMRELAY_T_PG_URL": database, "DATABASE_URL": ""}).start()
    try:
        r = chat(second, "pg-runtime")
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "from postgres"
        logs = requests.get(f"{second.url}/spend/logs", headers=AUTH, params={"limit": 100}).json()
        assert set(ids) <= {row["request_id"] for row in logs}
    finally:
        assert second.stop() == 0
    assert not (tmp_path / "unused.db").exists()
