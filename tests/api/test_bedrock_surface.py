"""The /bedrock surface's own rules: which header carries the proxy key, how refusals look to AWS SDKs."""

from __future__ import annotations

import orjson

from proxy.api.bedrock import PATH, aws_error_reply, proxy_key
from proxy.errors import PermissionDenied, RateLimited


def test_proxy_key_headers() -> None:
    assert proxy_key({"x-litellm-api-key": "sk-1", "Authorization": "AWS4-HMAC-SHA256 Credential=..."}) == "sk-1"
    assert proxy_key({"litellm_user_api_key": "sk-2"}) == "sk-2"
    assert proxy_key({"Authorization": "Bearer sk-3"}) == "sk-3"
    assert proxy_key({"Authorization": "AWS4-HMAC-SHA256 Credential=AKID/..."}) is None  # the SDK's own signature


def test_paths() -> None:
    match = PATH.match("/bedrock/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x/converse-stream")
    assert match and match["operation"] == "converse-stream" and match["model"].startswith("arn%3Aaws")
    assert PATH.match("/bedrock/model/a/b/invoke")["model"] == "a/b"
    assert PATH.match("/bedrock/guardrail/g/version/1/apply") is None


def test_refusals_carry_aws_error_types() -> None:
    reply = aws_error_reply(PermissionDenied("not allowed", code="model_access_denied"))
    headers = dict(reply.headers)
    assert reply.status == 403 and headers["x-amzn-ErrorType"] == "AccessDeniedException"
    body = orjson.loads(reply.body)
    assert body["message"] == "not allowed" and body["error"]["code"] == "model_access_denied"
    reply = aws_error_reply(RateLimited("slow", retry_after=3))
    headers = dict(reply.headers)
    assert headers["x-amzn-ErrorType"] == "ThrottlingException" and headers["Retry-After"] == "3"
