"""Bedrock end to end: the openai SDK -> llmrelay -> a local server speaking the Converse API
(JSON and the binary event stream), checking that requests arrive SigV4-signed."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest

from tests.providers.test_bedrock_adapter import event
from tests.servers import ProxyProcess

MASTER = "sk-bedrock"
MODEL_ID = "anthropic.claude-3-5-sonnet-20240620-v1:0"


class Converse(http.server.BaseHTTPRequestHandler):
    """Answers /model/{id}/converse and /converse-stream with 'echo: <last user text>'."""

    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Converse.seen.append({"path": self.path, "auth": self.headers.get("Authorization", ""), "body": body})
        text = "echo: " + body["messages"][-1]["content"][-1]["text"]
        usage = {"inputTokens": 5, "outputTokens": len(text.split()), "totalTokens": 5 + len(text.split())}
        if self.path.endswith("/converse-stream"):
            frames = [event("messageStart", {"role": "assistant"})]
            frames += [event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
                       for piece in (text[:4], text[4:])]
            frames += [event("contentBlockStop", {"contentBlockIndex": 0}),
                       event("messageStop", {"stopReason": "end_turn"}),
                       event("metadata", {"usage": usage, "metrics": {"latencyMs": 1}})]
            payload, kind = b"".join(frames), "application/vnd.amazon.eventstream"
        else:
            payload = orjson.dumps({"output": {"message": {"role": "assistant", "content": [{"text": text}]}},
                                    "stopReason": "end_turn", "usage": usage, "metrics": {"latencyMs": 1}})
            kind = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def proxy() -> Iterator[ProxyProcess]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Converse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = {
        "model_list": [{"model_name": "bedrock-claude", "litellm_params": {
            "model": f"bedrock/{MODEL_ID}", "aws_region_name": "us-west-2",
            "aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "aws_bedrock_runtime_endpoint": f"http://127.0.0.1:{server.server_address[1]}"}}],
        "general_settings": {"master_key": MASTER},
    }
    try:
        with ProxyProcess(config) as proxy_server:
            yield proxy_server
    finally:
        server.shutdown()


def test_converse_signed_json_and_stream(proxy: ProxyProcess) -> None:
    client = openai.OpenAI(api_key=MASTER, base_url=f"{proxy.url}/v1", max_retries=0)
    resp = client.chat.completions.create(model="bedrock-claude", max_tokens=64, messages=[
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hello bedrock"}])
    assert resp.choices[0].message.content == "echo: hello bedrock" and resp.usage.prompt_tokens == 5
    sent = Converse.seen[-1]
    assert sent["path"] == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    assert sent["auth"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/") and "/us-west-2/bedrock/" in sent["auth"]
    assert sent["body"]["system"] == [{"text": "be brief"}]
    assert sent["body"]["inferenceConfig"]["maxTokens"] == 64
    chunks = list(client.chat.completions.create(
        model="bedrock-claude", stream=True, messages=[{"role": "user", "content": "one two"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: one two"
    assert Converse.seen[-1]["path"].endswith("/converse-stream")
