"""Vertex AI adapter: URLs, Claude on Vertex (rawPredict), :predict embeddings, signing with cached
tokens from a service account whose token_uri is the local Google stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import orjson
import pytest

from proxy.context import RequestContext
from proxy.deployment import Deployment
from proxy.errors import AuthenticationError, RateLimited, ServiceUnavailable
from proxy.google_auth import GoogleTokens
from proxy.providers.registry import ProviderRegistry
from proxy.providers.vertex import PassThroughMeter, VertexAdapter
from tests.mock_upstream.gemini import MockGoogle
from tests.providers.test_anthropic_adapter import TEXT_STREAM as CLAUDE_STREAM

# ruff: noqa: E501 - recorded payloads keep their lines whole, as they came over the wire
# Recorded :predict answer of text-embedding-005 (values shortened).
PREDICT = {"predictions": [{"embeddings": {"statistics": {"truncated": False, "token_count": 6}, "values": [0.0123, -0.0456, 0.0789]}},
                           {"embeddings": {"statistics": {"truncated": False, "token_count": 2}, "values": [0.5, 0.25, -0.125]}}],
           "metadata": {"billableCharacterCount": 30}}
# Recorded rawPredict answer of claude-3-5-sonnet-v2@20241022.
CLAUDE = {"id": "msg_vrtx_01NgsJ3SzDydqYZD2ryqSnUS", "type": "message", "role": "assistant", "model": "claude-3-5-sonnet-v2-20241022",
          "content": [{"type": "text", "text": "Hello! How can I help you today?"}], "stop_reason": "end_turn", "stop_sequence": None,
          "usage": {"input_tokens": 10, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 12}}


@pytest.fixture(scope="module")
def google() -> Iterator[MockGoogle]:
    with MockGoogle(token_ttl=3600) as server:
        yield server


def deployment(registry: ProviderRegistry | None = None, **params: Any) -> Deployment:
    entry = {"model_name": "v", "litellm_params": {"model": "vertex_ai/gemini-2.0-flash", "vertex_project": "proj-1",
                                                   "vertex_location": "europe-west4", **params}}
    return Deployment.from_entry(entry, registry or ProviderRegistry())


def test_gemini_urls_and_body() -> None:
    dep = deployment()
    ctx = RequestContext("chat", {"model": "v", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})
    call = dep.adapter.build_request(ctx, dep)
    assert call.url == ("https://europe-west4-aiplatform.googleapis.com/v1/projects/proj-1/locations/europe-west4/"
                        "publishers/google/models/gemini-2.0-flash:generateContent")
    assert orjson.loads(call.body) == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                                       "generationConfig": {"maxOutputTokens": 5}}
    assert dep.defaults == {}  # vertex_* settings are never sent upstream
    ctx.stream = True
    assert dep.adapter.build_request(ctx, dep).url.endswith("/gemini-2.0-flash:streamGenerateContent?alt=sse")
    glob = deployment(vertex_location="global")
    assert glob.adapter.build_request(RequestContext("chat", ctx.body), glob).url.startswith(
        "https://aiplatform.googleapis.com/v1/projects/proj-1/locations/global/")
    private = deployment(api_base="http://10.0.0.5:8080/")
    assert private.adapter.build_request(RequestContext("chat", ctx.body), private).url.startswith(
        "http://10.0.0.5:8080/v1/projects/proj-1/locations/europe-west4/publishers/google/")


def test_claude_on_vertex_uses_raw_predict() -> None:
    dep = deployment(model="vertex_ai/claude-3-5-sonnet-v2@20241022", vertex_location="us-east5")
    ctx = RequestContext("chat", {"model": "v", "messages": [{"role": "system", "content": "Be kind."},
                                                             {"role": "user", "content": "Hello"}], "max_tokens": 64})
    call = dep.adapter.build_request(ctx, dep)
    assert call.url == ("https://us-east5-aiplatform.googleapis.com/v1/projects/proj-1/locations/us-east5/"
                        "publishers/anthropic/models/claude-3-5-sonnet-v2@20241022:rawPredict")
    body = orjson.loads(call.body)
    assert body == {"anthropic_version": "vertex-2023-10-16", "max_tokens": 64, "system": "Be kind.",
                    "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]}
    out = dep.adapter.parse_response(ctx, dep, 200, orjson.dumps(CLAUDE))
    assert out["choices"][0]["message"]["content"] == "Hello! How can I help you today?"
    assert out["choices"][0]["finish_reason"] == "stop" and out["usage"]["total_tokens"] == 22
    ctx.stream = True
    call = dep.adapter.build_request(ctx, dep)
    assert call.url.endswith(":streamRawPredict") and orjson.loads(call.body)["stream"] is True
    chunks = list(dep.adapter.parse_stream(ctx, dep, CLAUDE_STREAM.splitlines(keepends=True)))
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "Hello! How can I help?"
    overloaded = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    assert isinstance(dep.adapter.map_error(529, {}, overloaded), ServiceUnavailable)


def test_predict_embeddings() -> None:
    dep = deployment(model="vertex_ai/text-embedding-005")
    ctx = RequestContext("embedding", {"model": "v", "input": ["hello there world", "x"], "dimensions": 3})
    call = dep.adapter.build_request(ctx, dep)
    assert call.url.endswith("/publishers/google/models/text-embedding-005:predict")
    assert orjson.loads(call.body) == {"instances": [{"content": "hello there world"}, {"content": "x"}],
                                       "parameters": {"outputDimensionality": 3}}
    out = dep.adapter.parse_response(ctx, dep, 200, orjson.dumps(PREDICT))
    assert [d["embedding"] for d in out["data"]] == [[0.0123, -0.0456, 0.0789], [0.5, 0.25, -0.125]]
    assert out["usage"] == {"prompt_tokens": 8, "total_tokens": 8}


def test_google_errors_from_vertex() -> None:
    adapter = VertexAdapter()
    quota = orjson.dumps({"error": {"code": 429, "message": "Quota exceeded for aiplatform.googleapis.com/generate_content_requests_per_minute_per_project_per_base_model with base model: gemini-2.0-flash.", "status": "RESOURCE_EXHAUSTED"}})
    err = adapter.map_error(429, {}, quota)
    assert isinstance(err, RateLimited) and "Quota exceeded" in err.message


def test_sign_uses_a_service_account_token_fetched_once(google: MockGoogle, tmp_path: Path) -> None:
    key_file = google.write_service_account(tmp_path / "sa.json", project="sa-project")
    registry = ProviderRegistry()
    dep = deployment(registry, vertex_credentials=str(key_file), vertex_project=None)
    ctx = RequestContext("chat", {"model": "v", "messages": [{"role": "user", "content": "hi"}]})
    before = len(google.tokens())
    calls = [dep.adapter.sign(dep.adapter.build_request(ctx, dep), dep) for _ in range(3)]
    issued = google.tokens()[before:]
    assert len(issued) == 1 and issued[0]["iss"] == "proxy@sa-project.iam.gserviceaccount.com"
    assert {c.headers["Authorization"] for c in calls} == {f"Bearer {issued[0]['access_token']}"}
    assert "/projects/sa-project/" in calls[0].url  # the project comes from the key file
    registry.close()


def test_credentials_as_json_text_and_a_bad_key(google: MockGoogle) -> None:
    tokens = GoogleTokens()
    text = orjson.dumps(google.service_account()).decode()
    assert tokens.token(text).startswith("ya29.mock-")
    forged = {**google.service_account(), "private_key": MockGoogle().service_account()["private_key"]}
    with pytest.raises(AuthenticationError, match="token exchange failed"):
        tokens.token(forged)  # signed by another key: the token endpoint refuses it
    with pytest.raises(AuthenticationError, match="cannot be read"):
        tokens.token("/nonexistent/key.json")
    tokens.close()


def test_tokens_are_refreshed_in_the_background_before_expiry(tmp_path: Path) -> None:
    with MockGoogle(token_ttl=4) as short:
        tokens = GoogleTokens(margin=2.0)  # refresh 2 s before the 4 s token expires
        info = short.service_account()
        first = tokens.token(info)
        gevent.sleep(2.5)  # the refresher runs here, off any request
        issued = short.tokens()
        assert len(issued) >= 2
        second = tokens.token(info)  # no exchange on this call: the refreshed token is held
        assert second != first and second == issued[-1]["access_token"]
        assert len(short.tokens()) == len(issued)
        tokens.close()


def test_pass_through_meter() -> None:
    meter = PassThroughMeter()
    meter.answer({}, b'{"candidates": [], "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 3, "totalTokenCount": 8}}')
    assert meter.usage == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    meter = PassThroughMeter()
    for line in CLAUDE_STREAM.splitlines(keepends=True):
        meter.feed(line)
    assert meter.usage == {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}
    meter = PassThroughMeter()
    meter.answer({}, orjson.dumps(PREDICT))
    assert meter.usage == {"prompt_tokens": 8, "completion_tokens": 0, "total_tokens": 8}


def test_reasoning_effort_on_vertex_follows_the_model_version() -> None:
    body = {"model": "v", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "low"}
    old, new = deployment(model="vertex_ai/gemini-2.5-flash"), deployment(model="vertex_ai/gemini-3-pro-preview")
    assert orjson.loads(old.adapter.build_request(RequestContext("chat", dict(body)), old).body)["generationConfig"] == {
        "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True}}
    assert orjson.loads(new.adapter.build_request(RequestContext("chat", dict(body)), new).body)["generationConfig"] == {
        "thinkingConfig": {"thinkingLevel": "low", "includeThoughts": True}}
