"""AWS credentials: STS roles held by AssumedRoles (refreshed by a background greenlet before
expiry, never on a request) and AwsSigner's choice of credentials."""

from __future__ import annotations

import re
from typing import Any

import gevent
import pytest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from proxy.deployment import Deployment
from proxy.errors import AuthenticationError
from proxy.providers.aws_auth import AssumedRoles, AwsSigner, RoleSpec, Temporary, role_spec
from proxy.providers.base import UpstreamCall

SPEC = RoleSpec("arn:aws:iam::123456789012:role/r", "sess", "us-east-1")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_first_fetch_waits_then_background_refresh_before_expiry() -> None:
    clock, fetched = Clock(), []

    def fetch(spec: RoleSpec) -> Temporary:
        fetched.append(clock.now)
        n = len(fetched)
        return Temporary(Credentials(f"ASIA{n}", "s", f"t{n}"), clock.now + 0.2)  # short-lived: refresh at half life

    roles = AssumedRoles(fetch, margin=300.0, clock=clock)
    try:
        first = roles.credentials(SPEC)
        assert first.access_key == "ASIA1" and first.token == "t1" and len(fetched) == 1
        assert roles.credentials(SPEC).access_key == "ASIA1" and len(fetched) == 1  # held, no new exchange
        gevent.sleep(1.2)  # the refresher sleeps max(1s, half-life) and fetches again by itself
        assert len(fetched) >= 2 and roles.credentials(SPEC).access_key == f"ASIA{len(fetched)}"
    finally:
        roles.close()


def test_failed_exchange_is_an_auth_error_then_recovers() -> None:
    calls = []

    def fetch(spec: RoleSpec) -> Temporary:
        calls.append(1)
        if len(calls) == 1:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "not allowed"}}, "AssumeRole")
        return Temporary(Credentials("ASIAOK", "s", "t"), 10**10)

    roles = AssumedRoles(fetch)
    try:
        with pytest.raises(AuthenticationError, match=r"could not assume role .*AccessDenied"):
            roles.credentials(SPEC)
        gevent.sleep(1.1)  # retried after 1s of backoff
        assert roles.credentials(SPEC).access_key == "ASIAOK"
    finally:
        roles.close()


def deployment(**params: Any) -> Deployment:
    return Deployment(id="d", model_name="m", params={"model": "bedrock/x", **params}, model_info={},
                      provider="bedrock", upstream_model="x", adapter=None, api_key=params.get("api_key"))


def test_role_spec_needs_a_session_name_and_keeps_base_keys() -> None:
    with pytest.raises(AuthenticationError, match="aws_session_name"):
        role_spec(deployment(aws_role_name="arn:r"), "us-east-1")
    spec = role_spec(deployment(aws_role_name="arn:r", aws_session_name="s", aws_access_key_id="AKID",
                                aws_secret_access_key="sec", aws_sts_endpoint="http://sts.local"), "eu-west-1")
    assert spec == RoleSpec("arn:r", "s", "eu-west-1", "http://sts.local", None, "AKID", "sec", None)


def test_signer_signs_with_role_credentials() -> None:
    roles = AssumedRoles(lambda spec: Temporary(Credentials("ASIAROLE", "secret", "tok"), 10**10))
    signer = AwsSigner("sagemaker", roles)
    call = UpstreamCall("POST", "https://runtime.sagemaker.eu-west-1.amazonaws.com/endpoints/e/invocations",
                        {"Content-Type": "application/json"}, b"{}")
    try:
        headers = signer.sign(call, deployment(aws_role_name="arn:r", aws_session_name="s",
                                               aws_region_name="eu-west-1")).headers
    finally:
        roles.close()
    assert re.match(r"AWS4-HMAC-SHA256 Credential=ASIAROLE/\d{8}/eu-west-1/sagemaker/aws4_request",
                    headers["Authorization"])
    assert headers["X-Amz-Security-Token"] == "tok"
