"""Model management end to end on a two-worker server: info without secrets, add/update/delete
without restart, persistence across restarts, token counting, config reload under load."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import openai
import pytest
import requests
import yaml

from tests.mock_upstream import MockOpenAI
from tests.servers import ProxyProcess

MASTER = "sk-models"
AUTH = {"Authorization": f"Bearer {MASTER}"}
SECRETS = {"LLMRELAY_T_UPSTREAM_KEY": "sk-upstream", "LLMRELAY_T_BASE": "base-from-env",
           "LLMRELAY_T_CRED": "sk-cred-secret-value", "LLMRELAY_T_HF": "hf-secret-token",
           "LLMRELAY_T_ORG1": "org-env-first", "LLMRELAY_T_ORG2": "org-env-second"}


def base_config(upstream: MockOpenAI, tmp: Path) -> dict:
    return {
        "model_list": [
            {"model_name": "gpt-4o-mini", "litellm_params": {
                "model": "openai/gpt-4o-mini", "api_base": upstream.url,
                "api_key": "os.environ/LLMRELAY_T_UPSTREAM_KEY",
                "extra_headers": {"Authorization-Extra": "literal-secret", "X-Team": "blue"},
                "aws_secret_access_key": "literal-aws-secret"},
             "model_info": {"metadata": "here's additional metadata on the model", "access_groups": ["beta"],
                            "custom_tokenizer": {"identifier": "x", "auth_token": "os.environ/LLMRELAY_T_HF"}}},
            {"model_name": "from-env-base", "litellm_params": {
                "model": "openai/other", "api_base": "os.environ/LLMRELAY_T_BASE", "api_key": "k"}},
            {"model_name": "with-cred", "litellm_params": {
                "model": "openai/cred-model", "litellm_credential_name": "c1"}},
            {"model_name": "per-org", "litellm_params": {
                "model": "openai/gpt-4o-mini", "api_base": upstream.url, "api_key": "sk-upstream",
                "organization": ["os.environ/LLMRELAY_T_ORG1", "os.environ/LLMRELAY_T_ORG2", "org-shown"]}},
        ],
        "credential_list": [{"credential_name": "c1", "credential_values": {
            "api_key": "os.environ/LLMRELAY_T_CRED", "api_base": upstream.url, "organization": "org-cred"},
            "credential_info": {"description": "test"}}],
        "general_settings": {"master_key": MASTER, "database_path": str(tmp / "models.db")},
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def config_path(upstream: MockOpenAI, workdir: Path) -> Path:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(base_config(upstream, workdir)))
    return path


@pytest.fixture(scope="module")
def proxy(config_path: Path):
    server = ProxyProcess(config_path, workers=2, env=SECRETS).start()
    yield server
    server.stop()


def chat(proxy: ProxyProcess, model: str, text: str = "hi") -> requests.Response:
    return requests.post(f"{proxy.url}/v1/chat/completions", headers=AUTH, timeout=30,
                         json={"model": model, "messages": [{"role": "user", "content": text}]})


def test_model_info_never_shows_a_secret(proxy) -> None:
    r = requests.get(f"{proxy.url}/model/info", headers=AUTH)
    assert r.status_code == 200
    text = r.text
    for secret in [*SECRETS.values(), "literal-secret", "literal-aws-secret", "org-cred"]:
        assert secret not in text, secret
    rows = {row["model_name"]: row for row in r.json()["data"]}
    main = rows["gpt-4o-mini"]
    assert "api_key" not in main["litellm_params"] and "aws_secret_access_key" not in main["litellm_params"]
    assert main["litellm_params"]["extra_headers"] == {"X-Team": "blue"}
    assert "api_base" not in rows["from-env-base"]["litellm_params"]
    assert set(rows["with-cred"]["litellm_params"]) == {"model", "litellm_credential_name"}
    info = main["model_info"]
    assert info["metadata"] == "here's additional metadata on the model"
    assert info["max_input_tokens"] == 128000 and info["input_cost_per_token"] > 0
    assert info["litellm_provider"] == "openai" and info["mode"] == "chat" and info["db_model"] is False
    assert "tools" in info["supported_openai_params"]
    assert info["custom_tokenizer"] == {"identifier": "x"}
    one = requests.get(f"{proxy.url}/v1/model/info", headers=AUTH, params={"litellm_model_id": info["id"]})
    assert [row["model_name"] for row in one.json()["data"]] == ["gpt-4o-mini"]
    assert requests.get(f"{proxy.url}/model/info").status_code == 401


def test_environment_organizations_are_used_but_never_shown(proxy, upstream) -> None:
    upstream.clear()
    for _ in range(30):  # shuffled over three deployments: each is picked at least once
        assert chat(proxy, "per-org").status_code == 200
    sent = {r["headers"].get("openai-organization") for r in upstream.requests()}
    assert {"org-env-first", "org-env-second"} <= sent  # each organization is a deployment of its own
    for path in ("/model/info", "/v1/model/info", "/model/group/info", "/v1/model/group/info", "/model_group/info"):
        r = requests.get(f"{proxy.url}{path}", headers=AUTH)
        assert r.status_code == 200
        assert "org-env-first" not in r.text and "org-env-second" not in r.text, path
    rows = [row for row in requests.get(f"{proxy.url}/model/info", headers=AUTH).json()["data"]
            if row["model_name"] == "per-org"]
    assert sorted(row["litellm_params"].get("organization", "") for row in rows) == ["", "", "org-shown"]
    groups = {g["model_group"]: g for g in requests.get(f"{proxy.url}/model/group/info", headers=AUTH).json()["data"]}
    assert groups["per-org"]["deployments"] == 3


def test_model_group_info(proxy) -> None:
    r = requests.get(f"{proxy.url}/model/group/info", headers=AUTH)
    groups = {g["model_group"]: g for g in r.json()["data"]}
    assert groups["gpt-4o-mini"]["max_input_tokens"] == 128000
    assert groups["gpt-4o-mini"]["access_groups"] == ["beta"]
    litellm_path = requests.get(f"{proxy.url}/model_group/info", headers=AUTH)  # LiteLLM's spelling
    assert litellm_path.status_code == 200 and litellm_path.json() == r.json()
    one = requests.get(f"{proxy.url}/model_group/info", headers=AUTH, params={"model_group": "with-cred"}).json()
    assert [g["model_group"] for g in one["data"]] == ["with-cred"]
    assert requests.get(f"{proxy.url}/model_group/info").status_code == 401
    assert "/model_group/info" in requests.get(f"{proxy.url}/openapi.json").json()["paths"]


def test_bad_model_bodies_are_400_naming_the_field(proxy) -> None:
    cases = [
        ({"litellm_params": {"model": "openai/x"}}, "model_name"),
        ({"model_name": "x", "litellm_params": {"api_base": "http://x"}}, "litellm_params.model"),
        ({"model_name": "x", "litellm_params": {"model": "openai/x", "rpm": "fast"}}, "litellm_params.rpm"),
        ({"model_name": "x", "litellm_params": {"model": "replicate/x"}}, "litellm_params.model"),
    ]
    for body, field in cases:
        r = requests.post(f"{proxy.url}/model/new", headers=AUTH, json=body)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["message"].startswith(field), r.text
    assert requests.post(f"{proxy.url}/model/new", json=cases[0][0]).status_code == 401


def served_by_pids(proxy: ProxyProcess, model: str) -> set[int]:
    """Worker pids in the access log (JSON lines) that served ``model`` successfully."""
    pids = set()
    for line in proxy.log().splitlines():
        if line.startswith("{") and f'"model":"{model}"' in line:
            record = json.loads(line)
            if record["status"] == 200:
                pids.add(record["pid"])
    return pids


def hammer(proxy: ProxyProcess, model: str, n: int = 40) -> list[requests.Response]:
    out: list[requests.Response] = []

    def one() -> None:
        out.append(chat(proxy, model))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_add_update_delete_without_restart(proxy, upstream, config_path) -> None:
    body = {"model_name": "runtime-model", "litellm_params": {
        "model": "openai/runtime-upstream", "api_base": upstream.url,
        "api_key": "os.environ/LLMRELAY_T_UPSTREAM_KEY"}, "model_info": {"version": "1.0"}}
    r = requests.post(f"{proxy.url}/model/new", headers=AUTH, json=body)
    assert r.status_code == 200, r.text
    model_id = r.json()["model_id"]
    time.sleep(1.0)
    answers = hammer(proxy, "runtime-model")
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200][:2]
    assert {a.json()["model"] for a in answers} == {"runtime-upstream"}
    time.sleep(0.5)  # the access log is written every 0.2 s
    assert len(served_by_pids(proxy, "runtime-model")) == 2  # both workers served it
    info = requests.get(f"{proxy.url}/model/info", headers=AUTH, params={"litellm_model_id": model_id}).json()
    row = info["data"][0]
    assert row["model_info"]["db_model"] is True and "api_key" not in row["litellm_params"]
    assert "sk-upstream" not in str(info)
    names = [m["id"] for m in requests.get(f"{proxy.url}/v1/models", headers=AUTH).json()["data"]]
    assert "runtime-model" in names

    r = requests.post(f"{proxy.url}/model/update", headers=AUTH, json={
        "id": model_id, "litellm_params": {"model": "openai/updated-upstream"}})
    assert r.status_code == 200, r.text
    time.sleep(1.0)
    assert {a.json()["model"] for a in hammer(proxy, "runtime-model", 20)} == {"updated-upstream"}

    r = requests.post(f"{proxy.url}/model/delete", headers=AUTH, json={"id": model_id})
    assert r.status_code == 200
    time.sleep(1.0)
    gone = hammer(proxy, "runtime-model", 20)
    assert {a.status_code for a in gone} == {400}  # no ghost model on any worker
    assert requests.post(f"{proxy.url}/model/delete", headers=AUTH, json={"id": model_id}).status_code == 404
    config_id = requests.get(f"{proxy.url}/model/info", headers=AUTH).json()["data"][0]["model_info"]["id"]
    r = requests.post(f"{proxy.url}/model/delete", headers=AUTH, json={"id": config_id})
    assert r.status_code == 400 and "config file" in r.json()["error"]["message"]


def test_runtime_models_survive_a_restart(config_path) -> None:
    first = ProxyProcess(config_path, env=SECRETS).start()
    try:
        r = requests.post(f"{first.url}/model/new", headers=AUTH, json={
            "model_name": "persistent", "litellm_params": {"model": "openai/p", "mock_response": "still here"}})
        assert r.status_code == 200
    finally:
        assert first.stop() == 0
    second = ProxyProcess(config_path, env=SECRETS).start()
    try:
        r = chat(second, "persistent")
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "still here"
    finally:
        second.stop()


def test_token_counter(proxy) -> None:
    r = requests.post(f"{proxy.url}/utils/token_counter", headers=AUTH, json={
        "model": "with-cred", "messages": [{"role": "user", "content": "hello world"}]})
    body = r.json()
    assert body == {"total_tokens": 9, "request_model": "with-cred", "model_used": "cred-model",
                    "tokenizer_type": "approximate (cl100k_base)"}
    r = requests.post(f"{proxy.url}/utils/token_counter", headers=AUTH,
                      json={"model": "gpt-4o", "prompt": "hello world"})
    assert r.json()["total_tokens"] == 2 and r.json()["tokenizer_type"] == "openai_tokenizer"
    r = requests.post(f"{proxy.url}/utils/token_counter", headers=AUTH, json={"model": "gpt-4o"})
    assert r.status_code == 400


def write_atomically(path: Path, text: str) -> None:
    """As a careful operator (or a config management tool) replaces a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def test_reload_under_load_drops_nothing(upstream, workdir) -> None:
    path = workdir / "reload.yaml"
    config = base_config(upstream, workdir)
    config["general_settings"]["database_path"] = str(workdir / "reload.db")
    write_atomically(path, yaml.safe_dump(config))
    server = ProxyProcess(path, workers=2, env=SECRETS).start()
    failures: list[str] = []
    done = threading.Event()
    counts = {"ok": 0}

    def load() -> None:
        client = openai.OpenAI(api_key=MASTER, base_url=f"{server.url}/v1", max_retries=0)
        while not done.is_set():
            try:
                client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
                counts["ok"] += 1
            except Exception as exc:  # any failure is a finding
                failures.append(repr(exc))

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        for i in range(3):
            config["model_list"].append({"model_name": f"added-{i}", "litellm_params": {
                "model": "openai/x", "mock_response": f"added {i}"}})
            write_atomically(path, yaml.safe_dump(config))
            r = requests.post(f"{server.url}/config/reload", headers=AUTH)
            assert r.status_code == 200 and f"added-{i}" in r.json()["models"]
            # the reload answered once every worker serves it
            assert [chat(server, f"added-{i}").status_code for _ in range(12)] == [200] * 12
            answer = chat(server, f"added-{i}").json()
            assert answer.get("choices", [{}])[0].get("message", {}).get("content") == f"added {i}", (
                answer, [line for line in server.log().splitlines() if not line.startswith("{")][-30:])
        write_atomically(path, "model_list: [ {model_name: broken")  # refused, old config stays
        r = requests.post(f"{server.url}/config/reload", headers=AUTH)
        assert r.status_code == 400 and "invalid YAML" in r.json()["error"]["message"]
        config["model_list"].append({"model_name": "by-sighup", "litellm_params": {
            "model": "openai/x", "mock_response": "hup"}})
        write_atomically(path, yaml.safe_dump(config))
        server.signal(signal.SIGHUP)
        time.sleep(1.5)
        assert [chat(server, "by-sighup").status_code for _ in range(6)] == [200] * 6
        write_atomically(path, "model_list: [ {model_name: broken")
        server.signal(signal.SIGHUP)
        time.sleep(1.0)
        assert chat(server, "by-sighup").status_code == 200
    finally:
        done.set()
        for w in workers:
            w.join()
        server.stop()
    assert not failures, failures[:3]
    assert counts["ok"] > 50
    assert "config refused" in server.log() or "refused" in server.log()
