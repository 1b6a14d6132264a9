"""boto3's bedrock-runtime client -> llmrelay's /bedrock -> a local Bedrock stand-in that checks the
SigV4 signature it receives: converse, converse_stream, invoke_model and
invoke_model_with_response_stream, keys and model permissions, errors, spend, and a deployment
whose credentials come from STS (aws_role_name), refreshed in the background."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import orjson
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.mock_upstream.native import AWS_KEY_ID, AWS_SECRET, MockNativeServers
from tests.servers import ProxyProcess

MASTER = "sk-bedrock-native"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
STS_LIFETIME = 4.0  # seconds: short enough to see a background refresh during the test


@pytest.fixture(scope="module")
def upstream() -> Iterator[MockNativeServers]:
    with MockNativeServers(sts_lifetime=STS_LIFETIME) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(upstream: MockNativeServers) -> Iterator[ProxyProcess]:
    static = {"aws_access_key_id": AWS_KEY_ID, "aws_secret_access_key": AWS_SECRET,
              "aws_bedrock_runtime_endpoint": upstream.url}
    config = {
        "model_list": [
            {"model_name": "claude-bd", "litellm_params": {"model": f"bedrock/{HAIKU}", "aws_region_name": "us-west-2",
                                                          **static}},
            {"model_name": "claude-role", "litellm_params": {
                "model": "bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0", "aws_region_name": "eu-west-1",
                "aws_role_name": "arn:aws:iam::123456789012:role/bedrock-caller", "aws_session_name": "llmrelay",
                "aws_sts_endpoint": upstream.url, **static}},
            {"model_name": "claude-badkey", "litellm_params": {
                "model": f"bedrock/{HAIKU}", "aws_access_key_id": AWS_KEY_ID, "aws_secret_access_key": "wrong",
                "aws_bedrock_runtime_endpoint": upstream.url}},
            {"model_name": "gpt-house", "litellm_params": {"model": "openai/house", "mock_response": "hi"}},
        ],
        "general_settings": {"master_key": MASTER},
    }
    with ProxyProcess(config) as server:
        yield server


def client(proxy: ProxyProcess, key: str | None = MASTER) -> Any:
    """boto3 as a user would point it at the proxy: any AWS credentials, the proxy key in a header."""
    runtime = boto3.client("bedrock-runtime", endpoint_url=f"{proxy.url}/bedrock", region_name="us-east-1",
                           aws_access_key_id="anything", aws_secret_access_key="anything",
                           config=Config(retries={"max_attempts": 1}))
    if key is not None:
        def add_key(request: Any, **_: Any) -> None:
            request.headers["x-litellm-api-key"] = key
        runtime.meta.events.register("before-send.bedrock-runtime.*", add_key)
    return runtime


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"text": text}]}]


def test_converse_by_model_name_is_resigned(proxy: ProxyProcess, upstream: MockNativeServers) -> None:
    upstream.clear()
    out = client(proxy).converse(modelId="claude-bd", messages=user("hello native"),
                                 inferenceConfig={"maxTokens": 20})
    assert out["output"]["message"]["content"] == [{"text": "echo: hello native"}]
    assert out["usage"] == {"inputTokens": 2, "outputTokens": 3, "totalTokens": 5}
    sent = upstream.requests()[-1]
    assert sent["path"] == f"/model/{HAIKU.replace(':', '%3A')}/converse"
    assert sent["signature"] == "valid"
    assert sent["headers"]["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AWS_KEY_ID}/")
    assert "/us-west-2/bedrock/aws4_request" in sent["headers"]["authorization"]
    assert "x-litellm-api-key" not in sent["headers"]
    assert sent["body"]["inferenceConfig"] == {"maxTokens": 20}  # the client's body, untouched


def test_converse_by_bedrock_model_id(proxy: ProxyProcess) -> None:
    out = client(proxy).converse(modelId=HAIKU, messages=user("by id"))
    assert out["output"]["message"]["content"][0]["text"] == "echo: by id"


def test_converse_stream_passes_event_stream_through(proxy: ProxyProcess) -> None:
    events = list(client(proxy).converse_stream(modelId="claude-bd", messages=user("one two three"))["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == "echo: one two three"
    assert events[-1]["metadata"]["usage"]["outputTokens"] == 4


def test_invoke_model_and_its_stream(proxy: ProxyProcess, upstream: MockNativeServers) -> None:
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
            "messages": [{"role": "user", "content": "invoke me"}]}
    out = client(proxy).invoke_model(modelId="claude-bd", body=orjson.dumps(body), contentType="application/json",
                                     accept="application/json")
    answer = orjson.loads(out["body"].read())
    assert answer["content"] == [{"type": "text", "text": "echo: invoke me"}]
    assert out["ResponseMetadata"]["HTTPHeaders"]["x-amzn-bedrock-input-token-count"] == "2"
    assert upstream.requests()[-1]["path"].endswith("/invoke")
    streamed = client(proxy).invoke_model_with_response_stream(modelId="claude-bd", body=orjson.dumps(body))
    chunks = [orjson.loads(e["chunk"]["bytes"]) for e in streamed["body"]]
    text = "".join(c["delta"]["text"] for c in chunks if c["type"] == "content_block_delta")
    assert text == "echo: invoke me"
    assert chunks[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == 3
    assert upstream.requests()[-1]["signature"] == "valid"


def test_proxy_key_is_required_and_model_permissions_apply(proxy: ProxyProcess) -> None:
    with pytest.raises(ClientError) as info:
        client(proxy, key=None).converse(modelId="claude-bd", messages=user("x"))
    assert info.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 401
    r = requests.post(f"{proxy.url}/key/generate", headers={"Authorization": f"Bearer {MASTER}"},
                      json={"models": ["claude-role"]}, timeout=10)
    assert r.status_code == 200, r.text
    limited = client(proxy, key=r.json()["key"])
    with pytest.raises(ClientError) as info:
        limited.converse(modelId="claude-bd", messages=user("x"))
    assert info.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "claude-bd" in info.value.response["Error"]["Message"]
    assert limited.converse(modelId="claude-role", messages=user("allowed"))["output"]["message"]["content"][0][
        "text"] == "echo: allowed"
    # the Authorization header works too when it is a proxy key, not the SDK's signature
    r = requests.post(f"{proxy.url}/bedrock/model/claude-bd/converse", headers={"Authorization": f"Bearer {MASTER}"},
                      json={"messages": user("curl")}, timeout=10)
    assert r.status_code == 200 and r.json()["output"]["message"]["content"][0]["text"] == "echo: curl"


def test_unknown_model_and_non_bedrock_model(proxy: ProxyProcess) -> None:
    with pytest.raises(ClientError) as info:
        client(proxy).converse(modelId="nope", messages=user("x"))
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as info:
        client(proxy).converse(modelId="gpt-house", messages=user("x"))
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert "no bedrock/ deployment" in info.value.response["Error"]["Message"]


def test_upstream_errors_pass_through(proxy: ProxyProcess) -> None:
    body = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
            "mock_controls": {"status": 429}}
    with pytest.raises(ClientError) as info:
        client(proxy).invoke_model(modelId="claude-bd", body=orjson.dumps(body))
    assert info.value.response["Error"]["Code"] == "ThrottlingException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    with pytest.raises(ClientError) as info:  # the stand-in refuses the deployment's bad signature
        client(proxy).converse(modelId="claude-badkey", messages=user("x"))
    assert info.value.response["Error"]["Code"] == "InvalidSignatureException"


def test_role_credentials_come_from_sts_and_are_refreshed(proxy: ProxyProcess, upstream: MockNativeServers) -> None:
    runtime = client(proxy)
    assert runtime.converse(modelId="claude-role", messages=user("as role"))["output"]["message"]["content"][0][
        "text"] == "echo: as role"
    sent = upstream.requests()
    sts_calls = [r for r in sent if r["path"] == "/"]
    assert sts_calls and sts_calls[0]["signature"] == "valid"
    assert "Action=AssumeRole" in sts_calls[0]["body"] and "RoleSessionName=llmrelay" in sts_calls[0]["body"]
    call = [r for r in sent if r["path"].endswith("/converse")][-1]
    assert call["signature"] == "valid" and call["headers"]["authorization"].startswith("AWS4-HMAC-SHA256 "
                                                                                        "Credential=ASIA")
    assert "/eu-west-1/bedrock/" in call["headers"]["authorization"] and call["headers"]["x-amz-security-token"]
    time.sleep(STS_LIFETIME * 1.5)  # past the first credentials' expiry: refreshed in the background
    started = time.perf_counter()
    assert runtime.converse(modelId="claude-role", messages=user("later"))["output"]["message"]["content"][0][
        "text"] == "echo: later"
    assert time.perf_counter() - started < 1.0
    keys = {r["headers"]["authorization"].split("/")[0] for r in upstream.requests() if r["path"].endswith("/converse")
            and "ASIA" in r["headers"]["authorization"]}
    assert len(keys) >= 2  # a newer temporary key signed the later call
    assert len([r for r in upstream.requests() if r["path"] == "/"]) >= 2


def test_spend_is_recorded_from_native_usage(proxy: ProxyProcess) -> None:
    runtime = client(proxy)
    runtime.converse(modelId="claude-bd", messages=user("count these four"))
    deadline = time.time() + 5
    rows: list[dict[str, Any]] = []
    while time.time() < deadline:
        rows = requests.get(f"{proxy.url}/spend/logs", headers={"Authorization": f"Bearer {MASTER}"},
                            params={"limit": 100}, timeout=10).json()
        if any(r["model"] == "claude-bd" and r["prompt_tokens"] == 3 for r in rows):
            break
        time.sleep(0.2)
    row = next(r for r in rows if r["model"] == "claude-bd" and r["prompt_tokens"] == 3)
    assert row["completion_tokens"] == 4 and row["provider"] == "bedrock" and row["status"] == 200
