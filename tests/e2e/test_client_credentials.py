"""Client-side credentials end to end: api_key / api_base in the body are refused by name unless
the operator allows them; when allowed, the call goes to the client's base with the client's key."""

from __future__ import annotations

import re
from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.mock_upstream import MockOpenAI
from tests.servers import ProxyProcess

MASTER = "sk-clientside"
CLIENT_KEY = "sk-client-own-key"


@pytest.fixture(scope="module")
def client_upstream() -> Iterator[MockOpenAI]:
    """The caller's own upstream, on another port, accepting only the caller's key."""
    with MockOpenAI(api_key=CLIENT_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(upstream: MockOpenAI, client_upstream: MockOpenAI) -> Iterator[ProxyProcess]:
    own = {"api_base": upstream.url, "api_key": "sk-upstream"}
    config = {
        "model_list": [
            {"model_name": "closed", "litellm_params": {"model": "openai/closed-model", **own}},
            {"model_name": "byok", "litellm_params": {
                "model": "openai/byok-model", **own,
                "configurable_clientside_auth_params": [
                    "api_key", {"api_base": "^" + re.escape(client_upstream.url)}]}},
            {"model_name": "key-only", "litellm_params": {
                "model": "openai/key-only-model", **own, "configurable_clientside_auth_params": ["api_key"]}},
        ],
        "general_settings": {"master_key": MASTER},
    }
    with ProxyProcess(config) as server:
        yield server


@pytest.fixture
def client(proxy: ProxyProcess) -> openai.OpenAI:
    return openai.OpenAI(api_key=MASTER, base_url=f"{proxy.url}/v1", max_retries=0)


def ask(client: openai.OpenAI, model: str, stream: bool = False, **extra_body):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}],
                                          stream=stream, extra_body=extra_body)


def test_refused_naming_the_field(client, upstream, client_upstream) -> None:
    upstream.clear()
    client_upstream.clear()
    cases = [("closed", {"api_key": CLIENT_KEY}, "api_key"),
             ("closed", {"api_base": client_upstream.url}, "api_base"),
             ("closed", {"base_url": client_upstream.url}, "base_url"),
             ("key-only", {"api_key": CLIENT_KEY, "api_base": client_upstream.url}, "api_base"),
             ("byok", {"api_key": CLIENT_KEY, "api_base": "http://127.0.0.1:9/v1"}, "api_base")]
    for model, fields, named in cases:
        with pytest.raises(openai.BadRequestError) as info:
            ask(client, model, **fields)
        assert info.value.param == named, (model, fields)
        assert named in info.value.message and "allow_client_side_credentials" in info.value.message
    assert upstream.requests() == [] and client_upstream.requests() == []  # nothing was sent anywhere


def test_allowed_call_goes_to_the_clients_base_with_the_clients_key(client, upstream, client_upstream) -> None:
    upstream.clear()
    client_upstream.clear()
    answer = ask(client, "byok", api_key=CLIENT_KEY, api_base=client_upstream.url)
    assert answer.choices[0].message.content == "echo: hello" and answer.model == "byok-model"
    streamed = ask(client, "byok", stream=True, api_key=CLIENT_KEY, base_url=client_upstream.url)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "echo: hello"
    seen = client_upstream.requests()
    assert len(seen) == 2 and upstream.requests() == []
    for request in seen:
        assert request["headers"]["authorization"] == f"Bearer {CLIENT_KEY}"
        assert not {"api_key", "api_base", "base_url"} & set(request["body"])
    # with only a key allowed, the deployment's own base answers, with the caller's key
    with pytest.raises(openai.AuthenticationError):  # the operator's upstream does not know that key
        ask(client, "key-only", api_key=CLIENT_KEY)
    assert upstream.requests()[-1]["headers"]["authorization"] == f"Bearer {CLIENT_KEY}"
    assert ask(client, "key-only").choices[0].message.content == "echo: hello"  # its own key still serves


def test_anthropic_surface_checks_the_same_way(proxy, client_upstream) -> None:
    client = anthropic.Anthropic(api_key=MASTER, base_url=f"{proxy.url}/anthropic", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model="closed", max_tokens=10, messages=[{"role": "user", "content": "x"}],
                               extra_body={"api_key": CLIENT_KEY})
    assert "api_key" in info.value.body["error"]["message"]
    client_upstream.clear()
    message = client.messages.create(model="byok", max_tokens=10, messages=[{"role": "user", "content": "x"}],
                                     extra_body={"api_key": CLIENT_KEY, "api_base": client_upstream.url})
    assert message.content[0].text == "echo: x"
    assert client_upstream.requests()[-1]["headers"]["authorization"] == f"Bearer {CLIENT_KEY}"


def test_allowed_for_every_model_by_general_settings(upstream, client_upstream) -> None:
    config = {"model_list": [{"model_name": "closed", "litellm_params": {
        "model": "openai/closed-model", "api_base": upstream.url, "api_key": "sk-upstream"}}],
        "general_settings": {"master_key": MASTER, "allow_client_side_credentials": True}}
    client_upstream.clear()
    with ProxyProcess(config) as server:
        client = openai.OpenAI(api_key=MASTER, base_url=f"{server.url}/v1", max_retries=0)
        answer = ask(client, "closed", api_key=CLIENT_KEY, api_base=client_upstream.url)
    assert answer.choices[0].message.content == "echo: hello"
    assert client_upstream.requests()[-1]["headers"]["authorization"] == f"Bearer {CLIENT_KEY}"
