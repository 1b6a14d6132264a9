"""Secret managers: ``os.environ/NAME`` read from AWS Secrets Manager (moto's server) or a Vault
KV v2 stand-in first, then the environment; values cached for the TTL and hidden like env values."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest

from proxy.config import load_config
from proxy.errors import ConfigError
from proxy.secrets import Secrets
from tests.servers import free_port
from tests.vault_server import VaultStandIn

TOKEN = "hvs.test-token-123"


def config(system: str, **settings) -> dict:
    return {
        "model_list": [{"model_name": "m", "litellm_params": {
            "model": "openai/m", "api_key": "os.environ/OPENAI_API_KEY", "api_base": "os.environ/ONLY_IN_ENV"}}],
        "general_settings": {"key_management_system": system, "key_management_settings": settings},
    }


@pytest.fixture
def moto_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_REGION_NAME": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_ENDPOINT_URL_SECRETS_MANAGER": url}.items():
        monkeypatch.setenv(name, value)
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def vault(monkeypatch: pytest.MonkeyPatch) -> Iterator[VaultStandIn]:
    with VaultStandIn(TOKEN, {"kv/llm/OPENAI_API_KEY": {"key": "sk-from-vault"}}) as server:
        monkeypatch.setenv("HCP_VAULT_ADDR", server.url)
        monkeypatch.setenv("HCP_VAULT_TOKEN", TOKEN)
        monkeypatch.setenv("HCP_VAULT_NAMESPACE", "admin")
        monkeypatch.setenv("HCP_VAULT_MOUNT_NAME", "kv")
        monkeypatch.setenv("HCP_VAULT_PATH_PREFIX", "llm")
        yield server


def test_aws_secret_manager_first_then_environment(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    client = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=moto_server)
    client.create_secret(Name="OPENAI_API_KEY", SecretString="sk-from-aws")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.setenv("ONLY_IN_ENV", "http://env-base/v1")
    loaded = load_config(config("aws_secret_manager"))
    params = loaded.model_list[0]["litellm_params"]
    assert params["api_key"] == "sk-from-aws"  # the manager wins over the environment
    assert params["api_base"] == "http://env-base/v1"  # not in the manager: the environment's
    assert "sk-from-aws" in loaded.env_values and "model_list[0].litellm_params.api_key" in loaded.env_paths


def test_aws_hosted_keys_and_primary_secret(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    client = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=moto_server)
    client.create_secret(Name="litellm_secrets", SecretString='{"OPENAI_API_KEY": "sk-primary"}')
    client.create_secret(Name="ONLY_IN_ENV", SecretString="http://aws-base/v1")
    monkeypatch.setenv("ONLY_IN_ENV", "http://env-base/v1")
    loaded = load_config(config("aws_secret_manager", primary_secret_name="litellm_secrets"))
    assert loaded.model_list[0]["litellm_params"]["api_key"] == "sk-primary"
    loaded = load_config(config("aws_secret_manager", hosted_keys=["OPENAI_API_KEY"]))
    assert loaded.model_list[0]["litellm_params"]["api_base"] == "http://env-base/v1"  # not hosted: env


def test_vault_kv2_with_token_namespace_mount_and_prefix(vault: VaultStandIn) -> None:
    loaded = load_config(config("hashicorp_vault"))
    assert loaded.model_list[0]["litellm_params"]["api_key"] == "sk-from-vault"
    asked = {r["path"]: r for r in vault.requests}
    assert set(asked) == {"/v1/kv/data/llm/OPENAI_API_KEY", "/v1/kv/data/llm/ONLY_IN_ENV"}
    assert all(r["token"] == TOKEN and r["namespace"] == "admin" for r in vault.requests)


def test_values_are_cached_for_the_ttl_and_served_when_the_manager_is_down(
        vault: VaultStandIn, caplog: pytest.LogCaptureFixture) -> None:
    secrets = Secrets()
    load_config(config("hashicorp_vault"), secrets=secrets)
    asked = len(vault.requests)
    load_config(config("hashicorp_vault"), secrets=secrets)
    assert len(vault.requests) == asked  # within the TTL nothing is asked again
    load_config(config("hashicorp_vault", refresh_interval=0.000001), secrets=secrets)
    assert len(vault.requests) == asked * 2  # past it, everything is
    vault.stop()
    with caplog.at_level("DEBUG"):
        for _ in range(2):
            again = load_config(config("hashicorp_vault", refresh_interval=0.000001), secrets=secrets, strict=False)
            assert again.model_list[0]["litellm_params"]["api_key"] == "sk-from-vault"
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1  # logged once
    assert "sk-from-vault" not in caplog.text
    with pytest.raises(ConfigError) as err:
        load_config(config("hashicorp_vault"))  # the master's check: a fresh process, strict
    assert len(err.value.errors) == 1
    assert err.value.errors[0].startswith("general_settings.key_management_system: hashicorp_vault cannot be reached")


def test_unknown_system_and_missing_token_are_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="'azure_key_vault' is not supported"):
        load_config(config("azure_key_vault"))
    monkeypatch.delenv("HCP_VAULT_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="needs HCP_VAULT_TOKEN"):
        load_config(config("hashicorp_vault"))
