"""Google end to end: the openai SDK through llmrelay to the local Google stand-in (Gemini API and
Vertex AI, tokens from a service account whose token_uri is the stand-in), and the /vertex_ai
surface driven by the google-genai SDK (vertexai=True, base URL pointed at the proxy)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
import requests
from google.genai import Client, types
from google.oauth2.credentials import Credentials

from tests.mock_upstream.gemini import MockGoogle
from tests.servers import ProxyProcess

MASTER = "sk-google-master"
GEMINI_KEY = "AIza-mock-key"


@pytest.fixture(scope="module")
def google() -> Iterator[MockGoogle]:
    with MockGoogle(api_key=GEMINI_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(google: MockGoogle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    key_file = google.write_service_account(tmp_path_factory.mktemp("sa") / "sa.json", project="mock-project")
    vertex = {"vertex_project": "mock-project", "vertex_location": "us-central1",
              "vertex_credentials": str(key_file), "api_base": google.url}
    config = {
        "model_list": [
            {"model_name": "gemini-flash", "litellm_params": {
                "model": "gemini/gemini-2.0-flash", "api_key": GEMINI_KEY, "api_base": f"{google.url}/v1beta"}},
            {"model_name": "gemini-embed", "litellm_params": {
                "model": "gemini/text-embedding-004", "api_key": GEMINI_KEY, "api_base": f"{google.url}/v1beta"}},
            {"model_name": "vertex-gemini", "litellm_params": {"model": "vertex_ai/gemini-2.0-flash", **vertex}},
            {"model_name": "vertex-claude", "litellm_params": {
                "model": "vertex_ai/claude-3-5-sonnet-v2@20241022", **vertex, "vertex_location": "us-east5"}},
            {"model_name": "vertex-embed", "litellm_params": {"model": "vertex_ai/text-embedding-005", **vertex}},
            {"model_name": "vertex-other", "litellm_params": {"model": "vertex_ai/gemini-1.5-pro", **vertex}},
            {"model_name": "safe-backup", "litellm_params": {"model": "openai/gpt-4o-mini",
                                                             "mock_response": "answered by the backup"}},
        ],
        "litellm_settings": {"content_policy_fallbacks": [{"gemini-flash": ["safe-backup"]}]},
        "general_settings": {"master_key": MASTER},
    }
    with ProxyProcess(config) as server:
        yield server


@pytest.fixture
def client(proxy: ProxyProcess) -> openai.OpenAI:
    return openai.OpenAI(api_key=MASTER, base_url=f"{proxy.url}/v1", max_retries=0)


def last(google: MockGoogle) -> dict[str, Any]:
    return google.requests()[-1]


def test_gemini_chat_with_system_and_usage(client: openai.OpenAI, google: MockGoogle) -> None:
    resp = client.chat.completions.create(model="gemini-flash", max_tokens=50, messages=[
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hello gemini"}])
    assert resp.choices[0].message.content == "echo: hello gemini"
    assert resp.choices[0].finish_reason == "stop"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (4, 3, 7)
    sent = last(google)
    assert sent["path"] == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert sent["headers"]["x-goog-api-key"] == GEMINI_KEY and "key=" not in sent["query"]
    assert sent["body"]["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert sent["body"]["generationConfig"] == {"maxOutputTokens": 50}


def test_gemini_stream_tools_and_json(client: openai.OpenAI, google: MockGoogle) -> None:
    stream = client.chat.completions.create(model="gemini-flash", stream=True, stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "one two three"}])
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: one two three"
    assert chunks[-1].usage.total_tokens == 3 + 4
    assert last(google)["query"] == "alt=sse" and last(google)["path"].endswith(":streamGenerateContent")
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    resp = client.chat.completions.create(model="gemini-flash", tools=tools, tool_choice="required",
                                          messages=[{"role": "user", "content": "weather?"}])
    call = resp.choices[0].message.tool_calls[0]
    assert resp.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert call.function.arguments == '{"city":"mock"}'
    assert last(google)["body"]["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    follow = client.chat.completions.create(model="gemini-flash", tools=tools, messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "tool_calls": [{"id": call.id, "type": "function", "function": {
            "name": "get_weather", "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert follow.choices[0].message.content == "echo: sunny"
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
              "additionalProperties": False}
    resp = client.chat.completions.create(model="gemini-flash", messages=[{"role": "user", "content": "json"}],
                                          response_format={"type": "json_schema",
                                                           "json_schema": {"name": "a", "schema": schema}})
    assert resp.choices[0].message.content == '{"n":1}'


def test_vertex_gemini_signed_with_service_account_token(client: openai.OpenAI, google: MockGoogle) -> None:
    resp = client.chat.completions.create(model="vertex-gemini", messages=[{"role": "user", "content": "hi vertex"}])
    assert resp.choices[0].message.content == "echo: hi vertex"
    sent = last(google)
    assert sent["path"] == ("/v1/projects/mock-project/locations/us-central1/publishers/google/models/"
                            "gemini-2.0-flash:generateContent")
    issued = google.tokens()
    assert issued and sent["headers"]["authorization"] == f"Bearer {issued[-1]['access_token']}"
    client.chat.completions.create(model="vertex-gemini", messages=[{"role": "user", "content": "again"}])
    assert len(google.tokens()) == len(issued)  # the token is held, not fetched per request
    chunks = list(client.chat.completions.create(model="vertex-gemini", stream=True,
                                                 messages=[{"role": "user", "content": "stream me"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: stream me"


def test_claude_on_vertex(client: openai.OpenAI, google: MockGoogle) -> None:
    resp = client.chat.completions.create(model="vertex-claude", max_tokens=20,
                                          messages=[{"role": "user", "content": "hello claude"}])
    assert resp.choices[0].message.content == "echo: hello claude" and resp.usage.completion_tokens == 3
    sent = last(google)
    assert sent["path"].endswith(
        "/locations/us-east5/publishers/anthropic/models/claude-3-5-sonnet-v2@20241022:rawPredict")
    assert sent["body"]["anthropic_version"] == "vertex-2023-10-16" and "model" not in sent["body"]
    chunks = list(client.chat.completions.create(model="vertex-claude", max_tokens=20, stream=True,
                                                 messages=[{"role": "user", "content": "stream claude"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: stream claude"
    assert last(google)["path"].endswith(":streamRawPredict")


def test_embeddings(client: openai.OpenAI, google: MockGoogle) -> None:
    out = client.embeddings.create(model="vertex-embed", input=["alpha beta", "gamma"], dimensions=4)
    assert [len(d.embedding) for d in out.data] == [4, 4] and out.usage.prompt_tokens == 3
    assert last(google)["path"].endswith("/publishers/google/models/text-embedding-005:predict")
    out = client.embeddings.create(model="gemini-embed", input="alpha beta")
    assert len(out.data[0].embedding) == 8
    assert last(google)["path"] == "/v1beta/models/text-embedding-004:batchEmbedContents"


def test_errors_are_mapped(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="vertex-gemini", messages=[{"role": "user", "content": "x"}],
                                       extra_body={"extra_headers": {"x-mock-status": "429"}})
    assert info.value.body["code"] == "RESOURCE_EXHAUSTED"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gemini-flash", messages=[{"role": "user", "content": "x"}],
                                       extra_body={"extra_headers": {"x-mock-error": "context_length"}})
    assert info.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="vertex-gemini", messages=[{"role": "user", "content": "mock:block this"}])
    assert info.value.code == "content_policy_violation"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key="wrong", base_url=client.base_url, max_retries=0).chat.completions.create(
            model="gemini-flash", messages=[{"role": "user", "content": "x"}])


def test_safety_block_falls_back(client: openai.OpenAI) -> None:
    resp = client.chat.completions.with_raw_response.create(
        model="gemini-flash", messages=[{"role": "user", "content": "mock:unsafe please"}])
    assert resp.parse().choices[0].message.content == "answered by the backup"
    assert resp.headers["x-litellm-attempted-fallbacks"] == "1"


# -- /vertex_ai with the google-genai SDK -------------------------------------------------------------


def genai_client(proxy: ProxyProcess, key: str = MASTER, header: bool = False) -> Client:
    """The Vertex SDK pointed at the proxy: the proxy key as its "Google token", or in x-litellm-api-key."""
    headers = {"x-litellm-api-key": key} if header else {}
    token = "not-a-google-token" if header else key
    return Client(vertexai=True, project="client-project", location="us-central1",
                  credentials=Credentials(token=token),
                  http_options=types.HttpOptions(base_url=f"{proxy.url}/vertex_ai", api_version="v1",
                                                 headers=headers))


def test_genai_sdk_generate_and_stream_through_the_proxy(proxy: ProxyProcess, google: MockGoogle) -> None:
    sdk = genai_client(proxy)
    resp = sdk.models.generate_content(model="vertex-gemini", contents="hello from genai")
    assert resp.text == "echo: hello from genai"
    assert resp.usage_metadata.total_token_count == 3 + 4
    sent = last(google)
    # re-aimed at the deployment's project and model, signed with the proxy's own token
    assert sent["path"] == ("/v1/projects/mock-project/locations/us-central1/publishers/google/models/"
                            "gemini-2.0-flash:generateContent")
    assert sent["headers"]["authorization"].startswith("Bearer ya29.mock-")
    pieces = [c.text for c in sdk.models.generate_content_stream(model="vertex-gemini", contents="a b c d")]
    assert len(pieces) == 5 and "".join(pieces) == "echo: a b c d"  # one event per word, relayed as sent
    assert last(google)["query"] == "alt=sse"
    by_header = genai_client(proxy, header=True)  # held: a dropped Client closes its connection pool
    counted = by_header.models.count_tokens(model="vertex-gemini", contents="one two three")
    assert counted.total_tokens == 3


def test_vertex_surface_checks_key_and_model_permissions_and_records_spend(proxy: ProxyProcess) -> None:
    r = requests.post(f"{proxy.url}/key/generate", headers={"Authorization": f"Bearer {MASTER}"},
                      json={"models": ["vertex-gemini"]}, timeout=10)
    assert r.status_code == 200, r.text
    key = r.json()["key"]
    path = "/vertex_ai/v1/projects/p/locations/us-central1/publishers/google/models/{}:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "count these four"}]}]}
    ok = requests.post(proxy.url + path.format("vertex-gemini"), json=body, timeout=10,
                       headers={"x-litellm-api-key": f"Bearer {key}"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["candidates"][0]["content"]["parts"][0]["text"] == "echo: count these four"
    denied = requests.post(proxy.url + path.format("vertex-other"), json=body, timeout=10,
                           headers={"x-litellm-api-key": key})
    assert denied.status_code == 403 and denied.json()["error"]["status"] == "PERMISSION_DENIED"
    anonymous = requests.post(proxy.url + path.format("vertex-gemini"), json=body, timeout=10)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["status"] == "UNAUTHENTICATED"
    upstream_error = requests.post(proxy.url + path.format("vertex-gemini"), json=body, timeout=10,
                                   headers={"x-litellm-api-key": key, "x-pass-x-mock-status": "404"})
    assert upstream_error.status_code == 404
    assert upstream_error.json()["error"]["message"] == "Requested entity was not found."  # as the upstream sent it
    logs = requests.get(f"{proxy.url}/spend/logs", headers={"Authorization": f"Bearer {MASTER}"},
                        params={"request_id": ok.headers["x-litellm-call-id"]}, timeout=10).json()
    assert logs and logs[0]["model"] == "vertex-gemini" and logs[0]["provider"] == "vertex_ai"
    assert (logs[0]["prompt_tokens"], logs[0]["completion_tokens"]) == (3, 4)
