"""Virtual keys, teams, budgets and spend end to end: a real proxy, LiteLLM's admin routes, the openai SDK."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import openai
import pytest
import requests
import yaml

from tests.mock_upstream import MockOpenAI
from tests.servers import ProxyProcess

MASTER = "sk-keys-master"
AUTH = {"Authorization": f"Bearer {MASTER}"}
PRICES = {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002}


def config(tmp: Path, upstream_url: str | None = None, **extra) -> dict:
    slow = [{"model_name": "upstream", "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": upstream_url,
                                                          "api_key": "sk-upstream"}}] if upstream_url else []
    return {
        "model_list": [*slow,
            {"model_name": "house", "litellm_params": {"model": "openai/house", "mock_response": "a b c d"},
             "model_info": PRICES},
            {"model_name": "other", "litellm_params": {"model": "openai/other", "mock_response": "x"},
             "model_info": PRICES},
            {"model_name": "beta", "litellm_params": {"model": "openai/beta", "mock_response": "y"},
             "model_info": {**PRICES, "access_groups": ["beta-models"]}},
        ],
        "general_settings": {"master_key": MASTER, "database_path": str(tmp / "keys.db")},
        **extra,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: MockOpenAI) -> Iterator[ProxyProcess]:
    with ProxyProcess(config(tmp_path_factory.mktemp("keys"), upstream.url)) as proxy:
        yield proxy


def admin(server: ProxyProcess, path: str, body: dict | None = None, auth: str = MASTER,
          **params) -> requests.Response:
    headers = {"Authorization": f"Bearer {auth}"}
    if body is None:
        return requests.get(server.url + path, headers=headers, params=params, timeout=10)
    return requests.post(server.url + path, headers=headers, json=body, timeout=10)


def generate(server: ProxyProcess, **body) -> str:
    r = admin(server, "/key/generate", body)
    assert r.status_code == 200, r.text
    return r.json()["key"]


def client(server: ProxyProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=server.url + "/v1", max_retries=0)


def ask(server: ProxyProcess, key: str, model: str = "house", **extra):
    return client(server, key).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "one two three"}], **extra)


def wait_for_fresh_minute(margin: float = 8.0) -> None:
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.2)


# -- admin routes: who may call them -----------------------------------------------------------

ADMIN_ROUTES = [
    ("POST", "/key/generate", {}),
    ("GET", "/key/info", None),
    ("POST", "/key/update", {}),
    ("POST", "/key/delete", {}),
    ("GET", "/key/list", None),
    ("POST", "/key/regenerate", {}),
    ("POST", "/team/new", {}),
    ("GET", "/team/info", None),
    ("POST", "/team/update", {}),
    ("POST", "/team/delete", {}),
    ("GET", "/team/list", None),
    ("GET", "/spend/logs", None),
]


def test_every_admin_route_needs_the_master_key_or_a_management_key(server: ProxyProcess) -> None:
    plain = generate(server)
    manager = generate(server, key_type="management")
    for method, path, body in ADMIN_ROUTES:
        def call(headers: dict, method=method, path=path, body=body) -> requests.Response:
            return requests.request(method, server.url + path, headers=headers, json=body, timeout=10)

        nobody, wrong = call({}), call({"Authorization": "Bearer sk-wrong"})
        assert (nobody.status_code, wrong.status_code) == (401, 401), path
        assert wrong.json()["error"]["code"] == "invalid_api_key"
        refused = call({"Authorization": f"Bearer {plain}"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_only", path
        for key in (MASTER, manager):  # past auth: at worst a 400/404 about the (empty) body
            status = call({"Authorization": f"Bearer {key}"}).status_code
            assert status in (200, 400, 404), (path, status)
    with pytest.raises(openai.PermissionDeniedError):  # a management key calls no LLM route
        ask(server, manager)


# -- keys ----------------------------------------------------------------------------------------

def test_generate_call_info_update_list_regenerate_delete(server: ProxyProcess) -> None:
    r = admin(server, "/key/generate", {"models": ["house"], "key_alias": "life", "metadata": {"app": "t"},
                                         "max_budget": 10, "budget_duration": "30d", "user_id": "ann"})
    body = r.json()
    key, token = body["key"], body["token_id"]
    assert key.startswith("sk-") and body["key_name"] == f"sk-...{key[-4:]}" and len(token) == 64
    raw = client(server, key).chat.completions.with_raw_response.create(
        model="house", messages=[{"role": "user", "content": "one two three"}])
    assert raw.parse().choices[0].message.content == "a b c d"
    cost = float(raw.headers["x-litellm-response-cost"])
    assert cost > 0 and float(raw.headers["x-litellm-key-spend"]) == pytest.approx(cost)  # this call included
    again = client(server, key).chat.completions.with_raw_response.create(
        model="house", messages=[{"role": "user", "content": "one two three"}])
    assert float(again.headers["x-litellm-key-spend"]) == pytest.approx(2 * cost)

    for given in (key, token):  # /key/info takes the key or its hash
        info = admin(server, "/key/info", key=given).json()
        assert info["key"] == given and "token" not in info["info"]
        assert info["info"]["key_alias"] == "life" and info["info"]["spend"] == pytest.approx(2 * cost)
        assert info["info"]["budget_reset_at"] and info["info"]["metadata"] == {"app": "t"}

    assert admin(server, "/key/update", {"key": key, "models": ["house", "other"], "rpm_limit": 50}).status_code == 200
    time.sleep(0.1)
    assert ask(server, key, "other").choices[0].message.content == "x"
    assert admin(server, "/key/info", key=key).json()["info"]["rpm_limit"] == 50

    listed = admin(server, "/key/list", key_alias="life").json()
    assert listed["keys"] == [token] and listed["total_count"] == 1 and listed["current_page"] == 1
    full = admin(server, "/key/list", user_id="ann", return_full_object="true").json()["keys"]
    assert full[0]["token"] == token and full[0]["key_alias"] == "life"

    before = admin(server, "/key/info", key=key).json()["info"]["spend"]
    fresh = admin(server, "/key/regenerate", {"key": key}).json()
    assert fresh["key"] != key and fresh["key_alias"] == "life"
    with pytest.raises(openai.AuthenticationError):
        ask(server, key)
    assert ask(server, fresh["key"]).choices
    assert admin(server, "/key/info", key=fresh["key"]).json()["info"]["spend"] == pytest.approx(before + cost)

    assert admin(server, "/key/delete", {"keys": [fresh["key"]]}).json() == {"deleted_keys": [fresh["key"]]}
    with pytest.raises(openai.AuthenticationError) as info:
        ask(server, fresh["key"])
    assert info.value.status_code == 401 and info.value.body["code"] == "invalid_api_key"
    assert admin(server, "/key/delete", {"keys": [fresh["key"]]}).status_code == 404


def test_refusals_carry_their_status_and_code(server: ProxyProcess) -> None:
    with pytest.raises(openai.AuthenticationError):
        ask(server, "sk-never-generated")
    limited = generate(server, models=["house"])
    with pytest.raises(openai.PermissionDeniedError) as info:
        ask(server, limited, "other")
    assert info.value.status_code == 403 and info.value.body["code"] == "model_access_denied"
    grouped = generate(server, models=["beta-models"])  # an access group named in `models`
    assert ask(server, grouped, "beta").choices
    with pytest.raises(openai.PermissionDeniedError):
        ask(server, grouped, "house")
    short = generate(server, duration="1s")
    assert ask(server, short).choices
    time.sleep(1.2)
    with pytest.raises(openai.AuthenticationError) as info:
        ask(server, short)
    assert info.value.body["code"] == "expired_key" and "Expired Key" in info.value.message


@pytest.mark.parametrize(("body", "field"), [
    ({"models": ["no-such-model"]}, "models"),
    ({"max_budget": -1}, "max_budget"),
    ({"budget_duration": "monthly"}, "budget_duration"),
    ({"duration": "1y"}, "duration"),
    ({"rpm_limit": -5}, "rpm_limit"),
    ({"team_id": "no-such-team"}, "team_id"),
])
def test_bad_key_bodies_are_400s_naming_the_field(server: ProxyProcess, body: dict, field: str) -> None:
    r = admin(server, "/key/generate", body)
    assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text


def test_budget_is_enforced_with_litellms_error(server: ProxyProcess) -> None:
    key = generate(server, max_budget=0.001)  # one call of "house" costs more than that
    assert ask(server, key).choices
    with pytest.raises(openai.BadRequestError) as info:
        ask(server, key)
    assert info.value.status_code == 400 and info.value.body["type"] == "budget_exceeded"
    assert "Budget has been exceeded! Current cost: " in info.value.message


def test_rpm_limit_answers_429_with_retry_after(server: ProxyProcess) -> None:
    wait_for_fresh_minute()
    key = generate(server, rpm_limit=2)
    assert ask(server, key).choices and ask(server, key).choices
    with pytest.raises(openai.RateLimitError) as info:
        ask(server, key)
    retry = int(info.value.response.headers["Retry-After"])
    assert info.value.status_code == 429 and 1 <= retry <= 60


def test_tpm_and_parallel_limits(server: ProxyProcess) -> None:
    wait_for_fresh_minute()
    key = generate(server, tpm_limit=5)  # the first call uses more than 5 tokens
    assert ask(server, key).choices
    with pytest.raises(openai.RateLimitError):
        ask(server, key)
    slow = generate(server, max_parallel_requests=1)
    results: list[int] = []

    def one() -> None:
        r = requests.post(server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {slow}"},
                          json={"model": "upstream", "messages": [{"role": "user", "content": "x"}],
                                "mock_controls": {"delay": 0.6}}, timeout=10)
        results.append(r.status_code)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200, 429, 429]
    assert ask(server, slow).choices  # the slot is free again once the call has ended


# -- teams ---------------------------------------------------------------------------------------

def test_team_models_limits_and_shared_budget(server: ProxyProcess) -> None:
    team_id = f"team-{uuid.uuid4().hex[:6]}"
    r = admin(server, "/team/new", {"team_id": team_id, "team_alias": "blue", "models": ["house"],
                                     "max_budget": 0.03, "members_with_roles": [{"role": "admin", "user_id": "ann"}]})
    assert r.status_code == 200 and r.json()["team_id"] == team_id
    assert admin(server, "/team/new", {"team_id": team_id}).status_code == 400
    bad = admin(server, "/key/generate", {"team_id": team_id, "models": ["other"]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "models"
    first, second = generate(server, team_id=team_id), generate(server, team_id=team_id)
    with pytest.raises(openai.PermissionDeniedError):
        ask(server, first, "other")  # the team's models apply to a key that lists none
    assert ask(server, first).choices  # spends from the team's budget
    assert ask(server, first).choices
    with pytest.raises(openai.BadRequestError) as info:
        ask(server, second)  # the other key of the team: the team is over budget
    assert info.value.body["type"] == "budget_exceeded" and f"Team={team_id}" in info.value.message

    team_info = admin(server, "/team/info", team_id=team_id).json()
    assert team_info["team_info"]["spend"] >= 0.03 and len(team_info["keys"]) == 2
    assert team_info["team_info"]["members_with_roles"][0]["user_id"] == "ann"
    updated = admin(server, "/team/update", {"team_id": team_id, "max_budget": 100}).json()
    assert updated["data"]["max_budget"] == 100
    time.sleep(0.1)
    assert ask(server, second).choices
    assert any(t["team_id"] == team_id for t in admin(server, "/team/list").json())
    assert [t["team_id"] for t in admin(server, "/team/list", user_id="ann").json()] == [team_id]
    assert admin(server, "/team/delete", {"team_ids": [team_id]}).json() == {"deleted_teams": [team_id]}
    with pytest.raises(openai.AuthenticationError):
        ask(server, first)  # a deleted team takes its keys with it
    assert admin(server, "/team/info", team_id=team_id).status_code == 404


# -- spend ---------------------------------------------------------------------------------------

def test_spend_logs_filter_on_key_user_team_model_and_time(server: ProxyProcess) -> None:
    team_id = f"team-{uuid.uuid4().hex[:6]}"
    admin(server, "/team/new", {"team_id": team_id})
    key = generate(server, team_id=team_id, key_alias="logs", metadata={"k": 1})
    ask(server, key, user="zoe", extra_body={"metadata": {"job": "7"}})
    stream = client(server, key).chat.completions.create(
        model="other", messages=[{"role": "user", "content": "x"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "x"
    with pytest.raises(openai.PermissionDeniedError):
        ask(server, generate(server, models=["house"], team_id=team_id), "other")  # a failed call is logged too
    time.sleep(0.3)
    rows = admin(server, "/spend/logs", api_key=key).json()
    assert {r["model"] for r in rows} == {"house", "other"} and len(rows) == 2
    house = next(r for r in rows if r["model"] == "house")
    assert house["user"] == "zoe" and house["team_id"] == team_id and house["key_alias"] == "logs"
    assert house["api_key"] == house["api_key_hash"] and len(house["api_key"]) == 64
    assert house["metadata"] == {"job": "7"} and house["status"] == 200 and house["spend"] > 0
    assert house["deployment_id"] and house["total_tokens"] > 0 and house["latency_ms"] > 0
    assert [r["request_id"] for r in admin(server, "/spend/logs", user_id="zoe").json()] == [house["request_id"]]
    by_team = admin(server, "/spend/logs", team_id=team_id).json()
    assert len(by_team) == 3 and {r["status"] for r in by_team} == {200, 403}
    other = admin(server, "/spend/logs", team_id=team_id, model="other").json()
    assert {r["model"] for r in other} == {"other"} and sorted(r["status"] for r in other) == [200, 403]
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert len(admin(server, "/spend/logs", api_key=key, start_date=today, end_date=today).json()) == 2
    assert admin(server, "/spend/logs", api_key=key, start_date="2000-01-01", end_date="2000-01-02").json() == []
    assert admin(server, "/spend/logs", start_date="yesterday").status_code == 400
    stream_row = next(r for r in rows if r["model"] == "other")
    assert stream_row["spend"] > 0  # a stream is priced when it ends
    info = admin(server, "/key/info", key=key).json()["info"]
    assert info["spend"] == pytest.approx(house["spend"] + stream_row["spend"])


def test_sigterm_right_after_a_burst_loses_no_spend_record(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path)))
    proxy = ProxyProcess(path, workers=2).start()
    ids: list[str] = []
    try:
        key = requests.post(proxy.url + "/key/generate", headers=AUTH, json={"max_budget": 100}).json()["key"]

        def one() -> None:
            r = requests.post(proxy.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                              json={"model": "house", "messages": [{"role": "user", "content": "x"}]}, timeout=30)
            assert r.status_code == 200
            ids.append(r.headers["x-litellm-call-id"])

        threads = [threading.Thread(target=one) for _ in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        assert proxy.stop() == 0
    again = ProxyProcess(path).start()
    try:
        rows = requests.get(again.url + "/spend/logs", headers=AUTH, params={"api_key": key, "limit": 1000}).json()
        assert {r["request_id"] for r in rows} == set(ids) and len(ids) == 30
        info = requests.get(again.url + "/key/info", headers=AUTH, params={"key": key}).json()["info"]
        assert info["spend"] == pytest.approx(sum(r["spend"] for r in rows))  # the durable total survived
    finally:
        again.stop()


def test_redis_makes_key_limits_exact_across_workers(tmp_path: Path, redis_url: str) -> None:
    host, port = redis_url.split("//", 1)[1].split("/", 1)[0].split(":")
    settings = {"router_settings": {"redis_host": host, "redis_port": int(port),
                                    "redis_key_prefix": f"keys-e2e:{uuid.uuid4().hex}:"}}
    with ProxyProcess(config(tmp_path, **settings), workers=2) as proxy:
        wait_for_fresh_minute()
        key = generate(proxy, rpm_limit=4)
        statuses = []
        for _ in range(8):
            r = requests.post(proxy.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                              json={"model": "house", "messages": [{"role": "user", "content": "x"}]}, timeout=10)
            statuses.append(r.status_code)
        assert statuses.count(200) == 4 and statuses.count(429) == 4
        assert admin(proxy, "/key/delete", {"keys": [key]}).status_code == 200
        time.sleep(0.5)  # every worker has heard of it
        for _ in range(4):
            r = requests.post(proxy.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                              json={"model": "house", "messages": [{"role": "user", "content": "x"}]}, timeout=10)
            assert r.status_code == 401
