"""auth stage: master key in any supported header, constant-time compare, 401 otherwise."""

from __future__ import annotations

import pytest

from middleware.auth import Auth
from proxy.errors import AuthenticationError
from proxy.pipeline import StageNotUsed
from tests.helpers import chat_ctx, gateway, mock_model


@pytest.fixture
def auth() -> Auth:
    gw = gateway({"model_list": [mock_model("m")], "general_settings": {"master_key": "sk-secret"}})
    return Auth({"master_key": None}, gw.services)


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer sk-secret"},
    {"Authorization": "bearer sk-secret"},
    {"api-key": "sk-secret"},
    {"x-api-key": "sk-secret"},
])
def test_accepts_the_master_key_in_every_header_style(auth: Auth, headers) -> None:
    ctx = chat_ctx()
    ctx.headers = headers
    assert auth(ctx, lambda c: "passed") == "passed"
    assert ctx.caller["role"] == "admin"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk-other"}, {"api-key": "sk-secre"}])
def test_rejects_missing_or_wrong_keys(auth: Auth, headers) -> None:
    ctx = chat_ctx()
    ctx.headers = headers
    with pytest.raises(AuthenticationError) as info:
        auth(ctx, lambda c: pytest.fail("call_next must not run"))
    assert info.value.status == 401
    assert info.value.body()["error"]["type"] == "authentication_error"


def test_leaves_the_chain_without_a_master_key() -> None:
    gw = gateway({"model_list": [mock_model("m")]})
    with pytest.raises(StageNotUsed):
        Auth({"master_key": None}, gw.services)


def test_stage_option_overrides_general_settings() -> None:
    gw = gateway({"model_list": [mock_model("m")], "general_settings": {"master_key": "sk-a"}})
    stage = Auth({"master_key": "sk-b"}, gw.services)
    ctx = chat_ctx()
    ctx.headers = {"Authorization": "Bearer sk-b"}
    assert stage(ctx, lambda c: 1) == 1
