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


def test_docs_are_served_offline(monkeypatch) -> None:
    monkeypatch.delenv("NO_DOCS", raising=False)
    client = create_app(dict(CONFIG), live=False).test_client()
    for path in ("/", "/docs"):
        page = client.get(path).get_data(as_text=True)
        assert "/docs/assets/swagger-ui-bundle.js" in page and "/docs/assets/swagger-ui.css" in page
        assert "http://" not in page and "https://" not in page  # nothing from a CDN
    script = client.get("/docs/assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.data) > 100_000
    assert client.get("/docs/assets/../../setup.py").status_code == 404


def test_openapi_has_request_schemas_and_the_config_schema(monkeypatch) -> None:
    monkeypatch.delenv("NO_DOCS", raising=False)
    spec = create_app(dict(CONFIG), live=False).test_client().get("/openapi.json").get_json()
    chat = spec["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ChatRequest"}
    assert chat["responses"]["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    components = spec["components"]["schemas"]
    assert "messages" in components["ChatRequest"]["properties"]
    assert components["ChatRequest"]["properties"]["messages"]["items"]["required"] == ["role"]
    assert {"model_list", "general_settings", "router_settings"} <= set(components["ConfigFile"]["properties"])
    new_model = spec["paths"]["/model/new"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert new_model == {"$ref": "#/components/schemas/ModelEntry"}
    assert "/health" in spec["paths"] and "/docs" in spec["paths"]


def test_openapi_documents_what_views_really_answer(monkeypatch) -> None:
    """Path parameters are declared, and non-object answers (HTML, a string, lists) are documented as such."""
    monkeypatch.delenv("NO_DOCS", raising=False)
    client = create_app(dict(CONFIG), live=False).test_client()
    spec = client.get("/openapi.json").get_json()
    azure = spec["paths"]["/openai/deployments/{deployment}/chat/completions"]["post"]
    assert [p["name"] for p in azure["parameters"]] == ["deployment"]
    assert [p["name"] for p in spec["paths"]["/models/{model_id}"]["get"]["parameters"]] == ["model_id"]
    for path, media, kind in (("/", "text/html", "string"), ("/health/liveliness", "application/json", "string"),
                              ("/spend/logs", "application/json", "array"), ("/team/list", "application/json", "array"),
                              ("/models", "application/json", "object")):
        ok = spec["paths"][path]["get"]["responses"]["200"]["content"]
        assert list(ok) == [media] and ok[media]["schema"]["type"] == kind, path
    chat = spec["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert set(chat) == {"application/json", "text/event-stream"}  # "stream": true
    assert {"type": "array", "items": {"type": "object"}} in chat["application/json"]["schema"]["anyOf"]  # "a,b"
    assert set(spec["paths"]["/v1/embeddings"]["post"]["responses"]["200"]["content"]) == {"application/json"}
    assert client.get("/").mimetype == "text/html"
    assert isinstance(client.get("/health/liveliness").get_json(), str)
