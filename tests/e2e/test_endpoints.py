"""The other OpenAI endpoints end to end: completions, embeddings, moderations, batch completions."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
import requests

from tests.mock_upstream import MockOpenAI
from tests.servers import ProxyProcess

MASTER = "sk-endpoints"


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def proxy(request: pytest.FixtureRequest, upstream: MockOpenAI) -> Iterator[ProxyProcess]:
    def dep(name: str, model: str) -> dict:
        return {"model_name": name, "litellm_params": {"model": model, "api_base": upstream.url,
                                                       "api_key": "sk-upstream"}}

    config = {
        "model_list": [
            dep("gpt-3.5-turbo", "openai/gpt-3.5-turbo"),
            dep("llama3", "openai/llama3"),
            dep("text-davinci-003", "text-completion-openai/text-davinci-003"),
            dep("text-embedding-ada-002", "openai/text-embedding-ada-002"),
            dep("text-moderation-stable", "openai/text-moderation-stable"),
        ],
        "general_settings": {"master_key": MASTER},
    }
    with ProxyProcess(config, workers=request.param) as server:
        yield server


@pytest.fixture
def client(proxy: ProxyProcess) -> openai.OpenAI:
    return openai.OpenAI(api_key=MASTER, base_url=proxy.url, max_retries=0)


def test_completions(client) -> None:
    resp = client.completions.create(model="text-davinci-003", prompt="Say this is a test")
    assert resp.object == "text_completion" and resp.choices[0].text == "echo: Say this is a test"
    chunks = list(client.completions.create(model="text-davinci-003", prompt="a b", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "echo: a b"


def test_chat_on_a_completion_model(client) -> None:
    resp = client.chat.completions.create(model="text-davinci-003",
                                          messages=[{"role": "user", "content": "hello there"}])
    assert resp.object == "chat.completion" and resp.choices[0].message.content == "echo: hello there"


def test_embeddings_float_and_base64(client, upstream) -> None:
    resp = client.embeddings.create(model="text-embedding-ada-002", input=["hello from litellm"])
    assert len(resp.data) == 1 and len(resp.data[0].embedding) == 8
    assert resp.usage.prompt_tokens == 3
    assert upstream.requests()[-1]["body"]["encoding_format"] == "base64"  # the SDK's default survives
    as_floats = client.embeddings.create(model="text-embedding-ada-002", input=["hello from litellm"],
                                         encoding_format="float")
    assert as_floats.data[0].embedding == pytest.approx(resp.data[0].embedding, abs=1e-6)


def test_moderations(client) -> None:
    resp = client.moderations.create(model="text-moderation-stable", input="hello from litellm")
    assert resp.results[0].flagged is False
    flagged = client.moderations.create(model="text-moderation-stable", input="mock:flag")
    assert flagged.results[0].flagged is True


def test_batch_completions_to_several_models(proxy) -> None:
    r = requests.post(f"{proxy.url}/chat/completions", headers={"Authorization": f"Bearer {MASTER}"},
                      json={"model": "gpt-3.5-turbo,llama3,nope",
                            "messages": [{"role": "user", "content": "write a short poem"}]})
    answers = r.json()
    assert r.status_code == 200 and isinstance(answers, list) and len(answers) == 3
    assert [a.get("model") for a in answers[:2]] == ["gpt-3.5-turbo", "llama3"]
    assert answers[2]["error"]["code"] == "model_not_found"
