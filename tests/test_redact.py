"""What /model/info may show: no value from the environment or a credential, wherever it ended up."""

from __future__ import annotations

import orjson

from proxy.app import create_app
from proxy.redact import public_params

SECRET_ENV = {"LLMRELAY_T_ORG_A": "org-env-aaaa", "LLMRELAY_T_ORG_B": "org-env-bbbb",
              "LLMRELAY_T_RPM": "77", "LLMRELAY_T_META": "meta-from-env", "LLMRELAY_T_GROUP": "group-env",
              "LLMRELAY_T_RUNTIME": "org-runtime-env"}


def test_public_params_withholds_supplied_values_at_any_depth() -> None:
    supplied = frozenset({"org-env", "77", "true", "hdr-env"})
    params = {"model": "openai/x", "organization": "org-env", "rpm": 77, "stream": True,
              "orgs": ["org-literal", "org-env"], "nested": {"deep": {"x": "org-env", "y": "kept"}},
              "extra_headers": {"X-Env": "hdr-env", "X-Team": "blue", "X-Api-Key": "literal"},
              "temperature": 0.5, "api_key": "sk-literal", "unresolved": "os.environ/NOPE"}
    out = public_params(params, supplied)
    assert out == {"model": "openai/x", "orgs": ["org-literal"], "nested": {"deep": {"y": "kept"}},
                   "extra_headers": {"X-Team": "blue"}, "temperature": 0.5}


def test_model_info_never_shows_environment_organizations(monkeypatch, tmp_path) -> None:
    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    config = {
        "model_list": [
            {"model_name": "orgs", "litellm_params": {
                "model": "openai/gpt-4o-mini", "api_base": "http://127.0.0.1:9/v1", "api_key": "k",
                "organization": ["os.environ/LLMRELAY_T_ORG_A", "os.environ/LLMRELAY_T_ORG_B", "org-literal"],
                "rpm": "os.environ/LLMRELAY_T_RPM"},
             "model_info": {"metadata": "os.environ/LLMRELAY_T_META",
                            "access_groups": ["os.environ/LLMRELAY_T_GROUP", "public-group"]}},
            {"model_name": "cred", "litellm_params": {"model": "openai/c", "litellm_credential_name": "c1"}},
            {"model_name": "*", "litellm_params": {"model": "*", "organization": "os.environ/LLMRELAY_T_ORG_A"}},
        ],
        "credential_list": [{"credential_name": "c1", "credential_values": {
            "api_key": "sk-cred", "api_base": "http://cred-base.internal/v1", "organization": "org-cred"}}],
        "general_settings": {"database_path": str(tmp_path / "m.db")},
    }
    client = create_app(config, live=False).test_client()
    rows = client.get("/model/info").get_json()["data"]
    text = orjson.dumps(rows).decode()
    for secret in [*SECRET_ENV.values(), "sk-cred", "cred-base.internal", "org-cred"]:
        assert secret not in text, secret
    orgs = [r for r in rows if r["model_name"] == "orgs"]
    assert len(orgs) == 3  # one deployment per organization, as LiteLLM expands them
    assert sorted(r["litellm_params"].get("organization", "-") for r in orgs) == ["-", "-", "org-literal"]
    assert all("rpm" not in r["litellm_params"] and "metadata" not in r["model_info"] for r in orgs)
    assert orgs[0]["model_info"]["access_groups"] == ["public-group"]
    groups = client.get("/model/group/info").get_json()["data"]
    assert SECRET_ENV["LLMRELAY_T_GROUP"] not in orjson.dumps(groups).decode()
    assert client.get("/model_group/info").get_json()["data"] == groups  # LiteLLM's path, same answer
    assert [g["model_group"] for g in client.get("/model_group/info?model_group=orgs").get_json()["data"]] == ["orgs"]

    # a runtime model whose organization list comes from the environment
    r = client.post("/model/new", json={"model_name": "runtime", "litellm_params": {
        "model": "openai/r", "api_key": "k", "organization": ["os.environ/LLMRELAY_T_RUNTIME", "org-public"]}})
    assert r.status_code == 200, r.get_json()
    client.application.extensions["llmrelay"].refresh_models(force=True)
    for path in ("/model/info", "/v1/model/info", "/model/group/info", "/model_group/info"):
        text = client.get(path).get_data(as_text=True)
        assert "org-runtime-env" not in text and SECRET_ENV["LLMRELAY_T_ORG_A"] not in text, path
    runtime = [r for r in client.get("/model/info").get_json()["data"] if r["model_name"] == "runtime"]
    assert sorted(r["litellm_params"].get("organization", "-") for r in runtime) == ["-", "org-public"]
