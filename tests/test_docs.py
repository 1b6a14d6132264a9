"""API docs: the OpenAPI document lists what the app serves; NO_DOCS turns docs off."""

from __future__ import annotations

from proxy.app import create_app
from tests.helpers import mock_model

CONFIG = {"model_list": [mock_model("m")]}


def test_openapi_lists_llm_and_admin_endpoints(monkeypatch) -> None:
    monkeypatch.delenv("NO_DOCS", raising=False)
    client = create_app(dict(CONFIG), live=False).test_client()
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    for path in ("/v1/chat/completions", "/v1/messages", "/anthropic/v1/messages",
                 "/anthropic/v1/messages/count_tokens", "/model/info", "/model_group/info", "/model/group/info",
                 "/model/new", "/health/readiness",
                 "/route/explain", "/spend/logs", "/utils/token_counter"):
        assert path in spec["paths"], path
    assert "post" in spec["paths"]["/model/new"] and "get" in spec["paths"]["/model/info"]
    assert spec["paths"]["/model_group/info"]["get"]["summary"].startswith("Model groups")
    page = client.get("/")
    assert page.status_code == 200 and b"swagger-ui" in page.data


def test_no_docs_turns_them_off(monkeypatch) -> None:
    monkeypatch.setenv("NO_DOCS", "True")
    client = create_app(dict(CONFIG), live=False).test_client()
    assert client.get("/openapi.json").status_code == 404
    assert client.get("/").status_code == 404
    assert client.get("/").get_json()["error"]["type"] == "not_found_error"
