"""SageMaker embeddings (HF embedding containers behind InvokeEndpoint), fed recorded payloads."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from proxy.context import RequestContext
from proxy.deployment import Deployment
from proxy.errors import AuthenticationError, BadRequest, RateLimited, UpstreamError
from proxy.providers.sagemaker import SageMakerAdapter

ADAPTER = SageMakerAdapter()
STATIC = {"aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "secret", "aws_region_name": "eu-central-1"}


def deployment(**params: Any) -> Deployment:
    return Deployment(id=f"sm-{sorted(params)}", model_name="sm", params={"model": "sagemaker/bge-large", **params},
                      model_info={}, provider="sagemaker", upstream_model="bge-large", adapter=ADAPTER,
                      api_base=params.get("api_base"))


def ctx(**body: Any) -> RequestContext:
    return RequestContext("embedding", {"model": "sm", **body})


def test_request_url_body_and_signature() -> None:
    dep = deployment(**STATIC)
    call = ADAPTER.sign(ADAPTER.build_request(ctx(input=["a b", "c"], truncate=True), dep), dep)
    assert call.url == "https://runtime.sagemaker.eu-central-1.amazonaws.com/endpoints/bge-large/invocations"
    assert orjson.loads(call.body) == {"inputs": ["a b", "c"], "truncate": True}
    assert re.match(r"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/\d{8}/eu-central-1/sagemaker/aws4_request",
                    call.headers["Authorization"])
    assert ADAPTER.url(deployment(api_base="http://local:9/")) == "http://local:9/endpoints/bge-large/invocations"
    assert ADAPTER.url(deployment(sagemaker_base_url="https://x/y")) == "https://x/y"


def test_bad_input_and_dimensions_are_refused() -> None:
    with pytest.raises(BadRequest) as info:
        ADAPTER.build_request(ctx(input=[[1, 2]]), deployment(**STATIC))
    assert info.value.param == "input"
    with pytest.raises(BadRequest) as info:
        ADAPTER.build_request(ctx(input="x", dimensions=64), deployment(**STATIC))
    assert info.value.param == "dimensions"


TEI = b"[[0.010,-0.020,0.030],[0.040,0.050,-0.060]]"
WRAPPED = b'{"embedding":[[0.1,0.2]]}'


def test_parse_tei_and_wrapped_answers() -> None:
    out = ADAPTER.parse_response(ctx(input=["a", "b"]), deployment(), 200, TEI)
    assert out == {"object": "list", "model": "bge-large",
                   "data": [{"object": "embedding", "index": 0, "embedding": [0.01, -0.02, 0.03]},
                            {"object": "embedding", "index": 1, "embedding": [0.04, 0.05, -0.06]}]}
    assert ADAPTER.parse_response(ctx(input="a"), deployment(), 200, WRAPPED)["data"][0]["embedding"] == [0.1, 0.2]
    with pytest.raises(UpstreamError):
        ADAPTER.parse_response(ctx(input="a"), deployment(), 200, b'{"generated_text": "no"}')


MODEL_ERROR = (b'{"ErrorCode":"CLIENT_ERROR_FROM_MODEL","LogStreamArn":"arn:aws:logs:...","Message":"Received client '
               b'error (422) from primary with message \\"Input validation error\\"","OriginalMessage":"x",'
               b'"OriginalStatusCode":422}')


def test_map_errors() -> None:
    err = ADAPTER.map_error(424, {"x-amzn-errortype": "ModelError:http://internal.amazon.com/"}, MODEL_ERROR)
    assert err.status == 502 and err.code == "ModelError" and "Received client error (422)" in err.message
    err = ADAPTER.map_error(403, {"x-amzn-errortype": "InvalidSignatureException"}, b'{"message":"bad sig"}')
    assert isinstance(err, AuthenticationError)
    err = ADAPTER.map_error(400, {"x-amzn-errortype": "ThrottlingException"}, b'{"message":"slow down"}')
    assert isinstance(err, RateLimited)
