"""Secret managers end to end: the upstream key lives only in Vault; an unreachable manager
fails the boot with one line."""

from __future__ import annotations

import pytest
import requests

from tests.mock_upstream import MockOpenAI
from tests.servers import ProxyProcess, free_port
from tests.vault_server import VaultStandIn

TOKEN = "hvs.e2e-token"
MASTER = "sk-secrets-master"
UPSTREAM_KEY = "sk-upstream"  # what the mock upstream accepts; only Vault holds it


def config(upstream: MockOpenAI) -> dict:
    return {"model_list": [{"model_name": "m", "litellm_params": {
                "model": "openai/m", "api_base": upstream.url, "api_key": "os.environ/UPSTREAM_KEY"}}],
            "general_settings": {"master_key": MASTER, "key_management_system": "hashicorp_vault"}}


def test_upstream_key_from_vault_is_used_and_never_shown(upstream: MockOpenAI) -> None:
    with VaultStandIn(TOKEN, {"secret/UPSTREAM_KEY": {"key": UPSTREAM_KEY}}) as vault:
        env = {"HCP_VAULT_ADDR": vault.url, "HCP_VAULT_TOKEN": TOKEN}
        with ProxyProcess(config(upstream), workers=2, env=env) as proxy:
            auth = {"Authorization": f"Bearer {MASTER}"}
            for _ in range(4):
                r = requests.post(f"{proxy.url}/v1/chat/completions", headers=auth, timeout=10,
                                  json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == 200, r.text
            info = requests.get(f"{proxy.url}/model/info", headers=auth, timeout=10)
            assert info.status_code == 200 and UPSTREAM_KEY not in info.text
            assert "api_key" not in info.json()["data"][0]["litellm_params"]
            log = proxy.log()
        assert UPSTREAM_KEY not in log


def test_unreachable_manager_fails_the_boot_with_one_line(upstream: MockOpenAI) -> None:
    env = {"HCP_VAULT_ADDR": f"http://127.0.0.1:{free_port()}", "HCP_VAULT_TOKEN": TOKEN}
    proxy = ProxyProcess(config(upstream), env=env)
    with pytest.raises(RuntimeError) as err:
        proxy.start(timeout=20)
    proxy.stop()
    lines = [line for line in str(err.value).splitlines() if "key_management_system" in line]
    assert len(lines) == 1 and "hashicorp_vault cannot be reached" in lines[0], str(err.value)
    assert "exited with 2" in str(err.value)
