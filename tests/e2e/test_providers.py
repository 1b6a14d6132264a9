"""Every implemented provider end to end: the openai SDK -> llmrelay -> a mock speaking that
provider's wire format (Azure, Anthropic, Ollama, Hugging Face TGI, custom endpoints)."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import orjson
import pytest

from tests.mock_upstream import MockOpenAI
from tests.mock_upstream.anthropic import MockAnthropic
from tests.mock_upstream.prompt import MockPromptServers
from tests.servers import ProxyProcess

MASTER = "sk-providers"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CHATML = {"system": {"pre_message": "<|im_start|>system\n", "post_message": "<|im_end|>"},
          "user": {"pre_message": "<|im_start|>user\n", "post_message": "<|im_end|>\n"},
          "assistant": {"pre_message": "<|im_start|>assistant\n", "post_message": "<|im_end|>"}}


@pytest.fixture(scope="module")
def anthropic_upstream() -> Iterator[MockAnthropic]:
    with MockAnthropic(api_key="sk-ant") as server:
        yield server


@pytest.fixture(scope="module")
def prompt_upstream() -> Iterator[MockPromptServers]:
    with MockPromptServers() as server:
        yield server


@pytest.fixture(scope="module")
def proxy(upstream: MockOpenAI, anthropic_upstream, prompt_upstream) -> Iterator[ProxyProcess]:
    config = {
        "model_list": [
            {"model_name": "azure-gpt", "litellm_params": {
                "model": "azure/my-gpt4o-deployment", "api_base": upstream.base_url, "api_key": "sk-upstream",
                "api_version": "2024-10-21"}},
            {"model_name": "claude", "litellm_params": {
                "model": "anthropic/claude-3-5-sonnet-20241022", "api_base": anthropic_upstream.url,
                "api_key": "sk-ant"}},
            {"model_name": "claude-lenient", "litellm_params": {
                "model": "anthropic/claude-3-5-sonnet-20241022", "api_base": anthropic_upstream.url,
                "api_key": "sk-ant", "drop_params": True}},
            {"model_name": "gpt-trimmed", "litellm_params": {
                "model": "openai/gpt-4o-mini", "api_base": upstream.url, "api_key": "sk-upstream",
                "drop_params": True, "additional_drop_params": ["seed", "tools[*].function.strict"]}},
            {"model_name": "llama-chat", "litellm_params": {
                "model": "ollama_chat/llama3.2", "api_base": prompt_upstream.ollama_url}},
            {"model_name": "llama-generate", "litellm_params": {
                "model": "ollama/llama3.2", "api_base": prompt_upstream.ollama_url}},
            {"model_name": "zephyr", "litellm_params": {
                "model": "huggingface/HuggingFaceH4/zephyr-7b-beta", "api_base": prompt_upstream.tgi_url,
                "roles": CHATML, "initial_prompt_value": "", "final_prompt_value": "<|im_start|>assistant\n"}},
            {"model_name": "custom-llama", "litellm_params": {
                "model": "custom/meta-llama/Llama-2-13b-hf", "api_base": prompt_upstream.custom_url}},
        ],
        "general_settings": {"master_key": MASTER},
    }
    with ProxyProcess(config) as server:
        yield server


@pytest.fixture
def client(proxy: ProxyProcess) -> openai.OpenAI:
    return openai.OpenAI(api_key=MASTER, base_url=f"{proxy.url}/v1", max_retries=0)


def ask(client: openai.OpenAI, model: str, text: str = "hello there", **extra):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **extra)


def streamed_text(client: openai.OpenAI, model: str, text: str = "one two") -> str:
    chunks = list(ask(client, model, text, stream=True))
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_azure(client, upstream) -> None:
    upstream.clear()
    assert ask(client, "azure-gpt").choices[0].message.content == "echo: hello there"
    sent = upstream.requests()[-1]
    assert sent["path"] == "/openai/deployments/my-gpt4o-deployment/chat/completions"
    assert "api-version=2024-10-21" in str(sent["query"])
    assert sent["headers"]["api-key"] == "sk-upstream"
    assert streamed_text(client, "azure-gpt") == "echo: one two"


def test_anthropic_chat_stream_and_tools(client, anthropic_upstream) -> None:
    anthropic_upstream.clear()
    resp = ask(client, "claude", max_tokens=50)
    assert resp.choices[0].message.content == "echo: hello there" and resp.usage.completion_tokens > 0
    body = anthropic_upstream.requests()[-1]["body"]
    assert body["model"] == "claude-3-5-sonnet-20241022" and body["max_tokens"] == 50
    assert streamed_text(client, "claude") == "echo: one two"
    tool = ask(client, "claude", "weather?", tools=[WEATHER], tool_choice="auto")
    call = tool.choices[0].message.tool_calls[0]
    assert tool.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert "city" in orjson.loads(call.function.arguments)


def test_anthropic_errors_keep_their_meaning(client) -> None:
    with pytest.raises(openai.RateLimitError):
        ask(client, "claude", extra_body={"mock_controls": {"status": 429}})
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, "claude", extra_body={"mock_controls": {"error": "prompt_too_long"}})
    assert info.value.code == "context_length_exceeded"


def test_drop_params_set_on_one_deployment(client, anthropic_upstream, upstream) -> None:
    with pytest.raises(openai.BadRequestError) as info:  # no drop_params on this one: refused, by name
        ask(client, "claude", frequency_penalty=0.5)
    assert "frequency_penalty" in info.value.message and info.value.param == "frequency_penalty"
    anthropic_upstream.clear()
    for stream in (False, True):
        answer = ask(client, "claude-lenient", frequency_penalty=0.5, logit_bias={"1": 2}, stream=stream,
                     temperature=0.3)
        if stream:
            assert "".join(c.choices[0].delta.content or "" for c in answer if c.choices) == "echo: hello there"
        else:
            assert answer.choices[0].message.content == "echo: hello there"
    for request in anthropic_upstream.requests():
        body = request["body"]
        assert body["temperature"] == 0.3
        assert not {"frequency_penalty", "logit_bias", "drop_params", "additional_drop_params"} & set(body)
    upstream.clear()
    tool = {"type": "function", "function": {**WEATHER["function"], "strict": True}}
    ask(client, "gpt-trimmed", seed=7, tools=[tool], top_p=0.5)
    body = upstream.requests()[-1]["body"]
    assert "seed" not in body and "strict" not in body["tools"][0]["function"] and body["top_p"] == 0.5
    assert not {"drop_params", "additional_drop_params"} & set(body)
    upstream.clear()
    ask(client, "gpt-trimmed", extra_body={"additional_drop_params": ["top_p"], "drop_params": True}, top_p=0.5)
    body = upstream.requests()[-1]["body"]
    assert "top_p" not in body and not {"drop_params", "additional_drop_params"} & set(body)


def test_ollama_chat_and_generate(client, prompt_upstream) -> None:
    assert ask(client, "llama-chat").choices[0].message.content == "echo: hello there"
    assert streamed_text(client, "llama-chat") == "echo: one two"
    assert ask(client, "llama-generate").choices[0].message.content == "echo: hello there"


def test_huggingface_with_prompt_template(client, prompt_upstream) -> None:
    prompt_upstream.clear()
    resp = ask(client, "zephyr", "what is tgi")
    sent = prompt_upstream.requests()[-1]
    assert sent["path"] == "/generate"
    assert sent["body"]["inputs"] == "<|im_start|>user\nwhat is tgi<|im_end|>\n<|im_start|>assistant\n"
    assert resp.choices[0].message.content.startswith("echo: ")
    assert streamed_text(client, "zephyr").startswith("echo: ")


def test_custom_endpoint_format_from_the_docs(client, prompt_upstream) -> None:
    prompt_upstream.clear()
    resp = ask(client, "custom-llama", "The capital of France is P", temperature=0.2, max_tokens=10)
    body = prompt_upstream.requests()[-1]["body"]
    assert body["model"] == "meta-llama/Llama-2-13b-hf"
    assert body["params"]["prompt"] == ["The capital of France is P"] and body["params"]["max_tokens"] == 10
    assert resp.choices[0].message.content == "echo: The capital of France is P"
    assert resp.usage is not None and resp.usage.completion_tokens > 0  # estimated: the API gives none
    assert streamed_text(client, "custom-llama", "a b") == "echo: a b"  # streamed from one plain answer
