"""Azure adapters, fed with recorded Azure OpenAI payloads, then run against the mock upstream."""

from __future__ import annotations

import http.client
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from proxy.context import RequestContext
from proxy.deployment import Deployment
from proxy.errors import (
    AuthenticationError,
    ContentPolicyViolation,
    ContextWindowExceeded,
    NotFound,
    ProxyError,
    RateLimited,
    UpstreamError,
)
from proxy.providers.azure import DEFAULT_API_VERSION, AzureAdapter, AzureAIAdapter
from proxy.providers.base import UpstreamCall
from tests.mock_upstream import MockOpenAI

# ruff: noqa: E501 - recorded payloads keep their lines whole, as they came over the wire
# Recorded from Azure OpenAI (api-version 2024-10-21): a prompt-filter chunk with no choices,
# content chunks with filter results, an asynchronous-filter annotation without a delta.
STREAM = b"""data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"jailbreak":{"filtered":false,"detected":false},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}}]}

data: {"choices":[{"content_filter_results":{},"delta":{"content":"","refusal":null,"role":"assistant"},"finish_reason":null,"index":0,"logprobs":null}],"created":1726000000,"id":"chatcmpl-A6kZ","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk","system_fingerprint":"fp_b2ffeb16ee"}

data: {"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}},"delta":{"content":"Hi"},"finish_reason":null,"index":0,"logprobs":null}],"created":1726000000,"id":"chatcmpl-A6kZ","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk","system_fingerprint":"fp_b2ffeb16ee"}

data: {"choices":[{"content_filter_results":{},"delta":{},"finish_reason":"stop","index":0,"logprobs":null}],"created":1726000000,"id":"chatcmpl-A6kZ","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk","system_fingerprint":"fp_b2ffeb16ee"}

data: {"choices":[{"index":0,"finish_reason":null,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}},"content_filter_offsets":{"check_offset":2,"start_offset":2,"end_offset":4}}],"created":0,"id":"","model":"","object":""}

data: [DONE]

"""

CONTENT_FILTER = b'{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI\'s content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":false,"severity":"safe"},"jailbreak":{"filtered":false,"detected":false},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":true,"severity":"medium"}}}}}'
CONTEXT = b'{"error":{"message":"This model\'s maximum context length is 128000 tokens. However, your messages resulted in 130532 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}'
RATE_LIMIT = b'{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 7 seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."}}'
UNAUTHORIZED = b'{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}'
NO_DEPLOYMENT = b'{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again."}}'


@pytest.fixture(autouse=True)
def clean_env(monkeypatch) -> None:
    for name in ("AZURE_API_KEY", "AZURE_API_BASE", "AZURE_API_VERSION", "AZURE_AD_TOKEN",
                 "AZURE_AI_API_KEY", "AZURE_AI_API_BASE"):
        monkeypatch.delenv(name, raising=False)


def azure(api_base: str | None = "https://my-res.openai.azure.com", api_key: str | None = "azure-key",
          deployment_name: str = "my-gpt4o", **params: Any) -> Deployment:
    return Deployment(id="d", model_name="g", params={"model": f"azure/{deployment_name}", **params},
                      model_info={}, provider="azure", upstream_model=deployment_name, adapter=AzureAdapter(),
                      api_base=api_base, api_key=api_key)


def azure_ai(api_base: str, api_key: str = "ai-key", **params: Any) -> Deployment:
    return Deployment(id="d", model_name="g", params={"model": "azure_ai/mistral-large", **params},
                      model_info={}, provider="azure_ai", upstream_model="mistral-large",
                      adapter=AzureAIAdapter(), api_base=api_base, api_key=api_key)


def chat(**body: Any) -> RequestContext:
    return RequestContext("chat", {"model": "g", "messages": [{"role": "user", "content": "hello"}], **body})


def test_chat_request_url_auth_and_body() -> None:
    dep = azure(api_version="2024-06-01")
    dep.defaults = {"temperature": 0.2}  # what Deployment.from_entry makes of a temperature litellm_param
    call = dep.adapter.build_request(chat(extra_headers={"x-ms-client-request-id": "r1"}), dep)
    assert call.url == "https://my-res.openai.azure.com/openai/deployments/my-gpt4o/chat/completions?api-version=2024-06-01"
    assert call.headers["api-key"] == "azure-key" and "Authorization" not in call.headers
    assert call.headers["x-ms-client-request-id"] == "r1"
    body = orjson.loads(call.body)
    assert body["model"] == "my-gpt4o" and body["temperature"] == 0.2 and "extra_headers" not in body
    assert "api_version" not in body


@pytest.mark.parametrize(("kind", "path"), [("completion", "/completions"), ("embedding", "/embeddings")])
def test_other_endpoints_and_default_version(kind, path) -> None:
    dep = azure(api_base="https://my-res.openai.azure.com/openai/")
    ctx = RequestContext(kind, {"model": "g", "prompt": "hi", "input": "hi"})
    call = dep.adapter.build_request(ctx, dep)
    assert call.url == f"https://my-res.openai.azure.com/openai/deployments/my-gpt4o{path}?api-version={DEFAULT_API_VERSION}"


def test_environment_base_key_and_version(monkeypatch) -> None:
    monkeypatch.setenv("AZURE_API_BASE", "https://env-res.openai.azure.com")
    monkeypatch.setenv("AZURE_API_KEY", "env-key")
    monkeypatch.setenv("AZURE_API_VERSION", "2025-01-01-preview")
    dep = azure(api_base=None, api_key=None)
    call = dep.adapter.build_request(chat(), dep)
    assert call.url == "https://env-res.openai.azure.com/openai/deployments/my-gpt4o/chat/completions?api-version=2025-01-01-preview"
    assert call.headers["api-key"] == "env-key"


def test_entra_id_token(monkeypatch) -> None:
    dep = azure(api_key=None, azure_ad_token="eyJ0eXAi")
    call = dep.adapter.build_request(chat(), dep)
    assert call.headers["Authorization"] == "Bearer eyJ0eXAi" and "api-key" not in call.headers
    monkeypatch.setenv("AZURE_API_KEY", "env-key")  # a token in the config beats a key in the environment
    assert dep.adapter.build_request(chat(), dep).headers["Authorization"] == "Bearer eyJ0eXAi"
    monkeypatch.delenv("AZURE_API_KEY")
    monkeypatch.setenv("AZURE_AD_TOKEN", "env-token")
    dep = azure(api_key=None)
    assert dep.adapter.build_request(chat(), dep).headers["Authorization"] == "Bearer env-token"


def test_missing_api_base_is_a_clear_error() -> None:
    dep = azure(api_base=None)
    with pytest.raises(UpstreamError, match="AZURE_API_BASE"):
        dep.adapter.build_request(chat(), dep)


def test_stream_with_filter_chunks_passes_through() -> None:
    dep = azure()
    chunks = list(dep.adapter.parse_stream(chat(stream=True), dep, STREAM.splitlines(keepends=True)))
    assert len(chunks) == 5
    assert chunks[0]["choices"] == [] and chunks[0]["prompt_filter_results"][0]["prompt_index"] == 0
    assert chunks[1]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[1:]) == "Hi"
    assert chunks[3]["choices"][0]["finish_reason"] == "stop"
    annotation = chunks[4]["choices"][0]
    assert annotation["delta"] == {} and annotation["content_filter_offsets"]["end_offset"] == 4


def test_parse_response_keeps_filter_results() -> None:
    dep = azure()
    raw = orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
                        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
                        "choices": [{"index": 0, "finish_reason": "content_filter", "logprobs": None,
                                     "message": {"role": "assistant", "content": None},
                                     "content_filter_results": {"violence": {"filtered": True, "severity": "high"}}}],
                        "usage": {"prompt_tokens": 9, "completion_tokens": 0, "total_tokens": 9}})
    data = dep.adapter.parse_response(chat(), dep, 200, raw)
    assert data["choices"][0]["finish_reason"] == "content_filter"


@pytest.mark.parametrize(("status", "headers", "body", "kind", "retry_after"), [
    (400, {}, CONTENT_FILTER, ContentPolicyViolation, None),
    (400, {}, b'{"error":{"message":"blocked","code":"BadRequest","innererror":{"code":"ResponsibleAIPolicyViolation"}}}',
     ContentPolicyViolation, None),
    (400, {}, CONTEXT, ContextWindowExceeded, None),
    (429, {"retry-after-ms": "6500", "retry-after": "7"}, RATE_LIMIT, RateLimited, 6.5),
    (429, {"retry-after": "12"}, RATE_LIMIT, RateLimited, 12),
    (429, {}, RATE_LIMIT, RateLimited, 7),
    (401, {}, UNAUTHORIZED, AuthenticationError, None),
    (404, {}, NO_DEPLOYMENT, NotFound, None),
])
def test_map_error(status, headers, body, kind, retry_after) -> None:
    err = azure().adapter.map_error(status, headers, body)
    assert type(err) is kind and err.status == status and err.retry_after == retry_after
    shape = err.body()["error"]
    assert set(shape) == {"message", "type", "param", "code"}
    assert not shape["code"].isdigit()  # Azure's code "429" becomes what it means
    if kind is ContentPolicyViolation:
        assert shape["code"] == "content_policy_violation" and not err.retryable
    if kind is NotFound:
        assert shape["code"] == "DeploymentNotFound"


@pytest.mark.parametrize(("base", "url", "auth"), [
    ("https://my-hub.services.ai.azure.com", "https://my-hub.services.ai.azure.com/models/chat/completions?api-version=2024-05-01-preview", "api-key"),
    ("https://my-hub.services.ai.azure.com/models/", "https://my-hub.services.ai.azure.com/models/chat/completions?api-version=2024-05-01-preview", "api-key"),
    ("https://Mistral-large-xyz.eastus2.models.ai.azure.com", "https://Mistral-large-xyz.eastus2.models.ai.azure.com/chat/completions?api-version=2024-05-01-preview", "Authorization"),
    ("https://x.eastus2.models.ai.azure.com/v1/chat/completions?api-version=2024-08-01", "https://x.eastus2.models.ai.azure.com/v1/chat/completions?api-version=2024-08-01", "Authorization"),
])
def test_azure_ai_urls_and_auth(base, url, auth) -> None:
    dep = azure_ai(base, api_version="2024-05-01-preview")
    call = dep.adapter.build_request(chat(), dep)
    assert call.url == url
    assert call.headers[auth] == ("ai-key" if auth == "api-key" else "Bearer ai-key")
    assert orjson.loads(call.body)["model"] == "mistral-large"


def test_azure_ai_embeddings_without_version() -> None:
    dep = azure_ai("https://my-hub.services.ai.azure.com")
    call = dep.adapter.build_request(RequestContext("embedding", {"model": "g", "input": "hi"}), dep)
    assert call.url == "https://my-hub.services.ai.azure.com/models/embeddings"


# --- against the mock upstream, which serves Azure's deployment paths with `api-key` auth --------

def send(call: UpstreamCall) -> tuple[int, dict[str, str], http.client.HTTPResponse]:
    parts = urlsplit(call.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request(call.method, f"{parts.path}?{parts.query}", body=call.body, headers=call.headers)
    resp = conn.getresponse()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp


def roundtrip(dep: Deployment, ctx: RequestContext) -> Any:
    status, headers, resp = send(dep.adapter.build_request(ctx, dep))
    if status >= 400:
        raise dep.adapter.map_error(status, headers, resp.read())
    if ctx.stream:
        return list(dep.adapter.parse_stream(ctx, dep, iter(resp.readline, b"")))
    return dep.adapter.parse_response(ctx, dep, status, resp.read())


def test_mock_roundtrip(upstream: MockOpenAI) -> None:
    dep = azure(api_base=upstream.base_url, api_key="sk-upstream", deployment_name="gpt-4o-mini")
    data = roundtrip(dep, chat())
    assert data["choices"][0]["message"]["content"] == "echo: hello"
    sent = upstream.requests()[-1]
    assert sent["path"] == "/openai/deployments/gpt-4o-mini/chat/completions"
    assert sent["query"] == f"api-version={DEFAULT_API_VERSION}" and sent["headers"]["api-key"] == "sk-upstream"
    chunks = roundtrip(dep, chat(stream=True, stream_options={"include_usage": True}))
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "echo: hello"
    assert chunks[-1]["usage"]["total_tokens"] > 0


def test_mock_errors(upstream: MockOpenAI) -> None:
    dep = azure(api_base=upstream.base_url, api_key="wrong", deployment_name="gpt-4o-mini")
    with pytest.raises(AuthenticationError):
        roundtrip(dep, chat())
    dep = azure(api_base=upstream.base_url, api_key="sk-upstream", deployment_name="gpt-4o-mini")
    with pytest.raises(ProxyError) as info:
        roundtrip(dep, chat(mock_controls={"status": 429, "retry_after": "3"}))
    assert type(info.value) is RateLimited and info.value.retry_after == 3
