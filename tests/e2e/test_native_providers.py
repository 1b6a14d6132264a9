"""The openai SDK -> llmrelay -> local stand-ins of Bedrock (embeddings, tool histories), SageMaker
(HF embedding containers), Cohere v2 (chat, streams, tools, embed): answers translated, requests
SigV4-signed where AWS wants them, errors mapped to OpenAI's shape and status."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator

import openai
import pytest

from tests.mock_upstream.native import AWS_KEY_ID, AWS_SECRET, MockNativeServers
from tests.servers import ProxyProcess

MASTER = "sk-native"
COHERE_KEY = "co-test-key"


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockNativeServers]:
    with MockNativeServers(api_key=COHERE_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(upstream: MockNativeServers) -> Iterator[ProxyProcess]:
    aws = {"aws_access_key_id": AWS_KEY_ID, "aws_secret_access_key": AWS_SECRET, "aws_region_name": "us-west-2"}
    bedrock = {**aws, "aws_bedrock_runtime_endpoint": upstream.url}
    cohere = {"api_base": upstream.url, "api_key": COHERE_KEY}
    config = {
        "model_list": [
            {"model_name": "titan-v2", "litellm_params": {"model": "bedrock/amazon.titan-embed-text-v2:0", **bedrock}},
            {"model_name": "titan-v1", "litellm_params": {"model": "bedrock/amazon.titan-embed-text-v1", **bedrock}},
            {"model_name": "cohere-bd", "litellm_params": {"model": "bedrock/cohere.embed-english-v3", **bedrock}},
            {"model_name": "claude-bd", "litellm_params": {
                "model": "bedrock/anthropic.claude-3-haiku-20240307-v1:0", **bedrock}},
            {"model_name": "sm-embed", "litellm_params": {"model": "sagemaker/bge-endpoint", "api_base": upstream.url,
                                                         **aws}},
            {"model_name": "command-r", "litellm_params": {"model": "cohere/command-r-08-2024", **cohere}},
            {"model_name": "cohere-embed", "litellm_params": {"model": "cohere/embed-english-v3.0", **cohere}},
            {"model_name": "cohere-badkey", "litellm_params": {"model": "cohere/command-r", "api_base": upstream.url,
                                                              "api_key": "wrong"}},
        ],
        "general_settings": {"master_key": MASTER},
    }
    with ProxyProcess(config) as server:
        yield server


@pytest.fixture
def client(proxy: ProxyProcess) -> openai.OpenAI:
    return openai.OpenAI(api_key=MASTER, base_url=f"{proxy.url}/v1", max_retries=0)


def test_titan_v2_embeddings_one_call_per_input(client: openai.OpenAI, upstream: MockNativeServers) -> None:
    upstream.clear()
    out = client.embeddings.create(model="titan-v2", input=["alpha beta", "gamma"], dimensions=256)
    assert [d.index for d in out.data] == [0, 1] and len(out.data[0].embedding) == 256
    assert out.usage.prompt_tokens == 3
    sent = sorted(upstream.requests(), key=lambda r: r["body"]["inputText"])
    assert [r["body"] for r in sent] == [{"inputText": "alpha beta", "dimensions": 256},
                                         {"inputText": "gamma", "dimensions": 256}]
    assert all(r["path"] == "/model/amazon.titan-embed-text-v2%3A0/invoke" and r["signature"] == "valid"
               for r in sent)


def test_titan_v1_and_cohere_on_bedrock(client: openai.OpenAI, upstream: MockNativeServers) -> None:
    assert len(client.embeddings.create(model="titan-v1", input="one").data[0].embedding) == 8
    out = client.embeddings.create(model="cohere-bd", input=["a b", "c"])
    assert len(out.data) == 2 and out.usage.prompt_tokens > 0
    assert upstream.requests()[-1]["body"] == {"texts": ["a b", "c"], "input_type": "search_document"}
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="titan-v1", input="x", dimensions=256)
    assert info.value.status_code == 400 and "dimensions" in info.value.message


def test_bedrock_tool_history_without_tools_gets_a_tool_config(client: openai.OpenAI,
                                                               upstream: MockNativeServers) -> None:
    out = client.chat.completions.create(model="claude-bd", messages=[
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "tooluse_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "tooluse_1", "content": "sunny"},
    ])
    assert out.choices[0].message.content == "echo: sunny"
    sent = upstream.requests()[-1]["body"]
    assert sent["toolConfig"]["tools"][0]["toolSpec"]["name"] == "dummy_tool"


def test_sagemaker_embeddings(client: openai.OpenAI, upstream: MockNativeServers) -> None:
    out = client.embeddings.create(model="sm-embed", input=["hello world", "bye"])
    assert len(out.data) == 2 and len(out.data[1].embedding) == 8 and out.usage.prompt_tokens > 0
    sent = upstream.requests()[-1]
    assert sent["path"] == "/endpoints/bge-endpoint/invocations" and sent["body"] == {"inputs": ["hello world", "bye"]}
    assert sent["signature"] == "valid" and "/us-west-2/sagemaker/aws4_request" in sent["headers"]["authorization"]
    floats = client.embeddings.create(model="sm-embed", input="x").data[0].embedding
    b64 = client.embeddings.create(model="sm-embed", input="x", encoding_format="base64").data[0].embedding
    assert struct.unpack("<8f", base64.b64decode(b64)) == pytest.approx(floats, abs=1e-6)  # little-endian float32


def test_sagemaker_container_error_is_a_502(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client.embeddings.create(model="sm-embed", input="x", extra_body={"mock_controls": {"status": 424}})
    assert info.value.status_code == 502 and "ModelError" in info.value.message


def test_cohere_chat_json_stream_and_tools(client: openai.OpenAI, upstream: MockNativeServers) -> None:
    out = client.chat.completions.create(model="command-r", max_tokens=10, top_p=0.5, stop=["END"], messages=[
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi cohere"}])
    assert out.choices[0].message.content == "echo: hi cohere" and out.choices[0].finish_reason == "stop"
    assert out.usage.prompt_tokens == 4 + 7 and out.usage.completion_tokens == 3
    sent = upstream.requests()[-1]
    assert sent["path"] == "/v2/chat" and sent["headers"]["authorization"] == f"Bearer {COHERE_KEY}"
    assert sent["body"]["p"] == 0.5 and sent["body"]["stop_sequences"] == ["END"] and sent["body"]["max_tokens"] == 10
    chunks = list(client.chat.completions.create(model="command-r", stream=True, stream_options={"include_usage": True},
                                                 messages=[{"role": "user", "content": "one two"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: one two"
    assert chunks[-1].usage.completion_tokens == 3
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    out = client.chat.completions.create(model="command-r", tools=tools, tool_choice="required",
                                         messages=[{"role": "user", "content": "weather?"}])
    call = out.choices[0].message.tool_calls[0]
    assert out.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert call.function.arguments == '{"city":"mock"}' and upstream.requests()[-1]["body"]["tool_choice"] == "REQUIRED"
    streamed = list(client.chat.completions.create(model="command-r", tools=tools, stream=True,
                                                   messages=[{"role": "user", "content": "weather?"}]))
    args = "".join(tc.function.arguments or "" for c in streamed if c.choices
                   for tc in c.choices[0].delta.tool_calls or ())
    assert args == '{"city":"mock"}' and streamed[-1].choices[0].finish_reason == "tool_calls"


def test_cohere_embeddings(client: openai.OpenAI, upstream: MockNativeServers) -> None:
    out = client.embeddings.create(model="cohere-embed", input=["x y z"])
    assert len(out.data[0].embedding) == 8 and out.usage.prompt_tokens == 3
    assert upstream.requests()[-1]["body"] == {"model": "embed-english-v3.0", "texts": ["x y z"],
                                               "input_type": "search_document", "embedding_types": ["float"]}


def test_cohere_errors_are_mapped(client: openai.OpenAI) -> None:
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="cohere-badkey", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="command-r", messages=[{"role": "user", "content": "x"}],
                                       extra_body={"mock_controls": {"status": 429}})
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="command-r", messages=[{"role": "user", "content": "x"}],
                                       extra_body={"mock_controls": {"error": "context_length_exceeded"}})
    assert info.value.code == "context_length_exceeded"
