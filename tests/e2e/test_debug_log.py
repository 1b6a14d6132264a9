"""Detailed debug end to end: stage decisions and upstream calls are logged, and no secret it
was configured with appears anywhere in the whole log."""

from __future__ import annotations

import pytest
import requests

from tests.mock_upstream import MockOpenAI
from tests.servers import ProxyProcess

SECRETS = {
    "LLMRELAY_TEST_MASTER": "sk-master-debug-4242",
    "LLMRELAY_TEST_UPSTREAM": "sk-upstream",  # the mock upstream's key
    "LLMRELAY_TEST_HEADER": "hdr-secret-9876",
    "LLMRELAY_TEST_ORG": "org-secret-5555",
}


@pytest.mark.parametrize("switch", ["--detailed_debug", "set_verbose", "LITELLM_LOG"])
def test_debug_log_shows_decisions_and_calls_but_no_secret(upstream: MockOpenAI, switch: str) -> None:
    config = {
        "model_list": [{"model_name": "m", "litellm_params": {
            "model": "openai/m", "api_base": upstream.url, "api_key": "os.environ/LLMRELAY_TEST_UPSTREAM",
            "organization": "os.environ/LLMRELAY_TEST_ORG",
            "extra_headers": {"X-Team-Token": "os.environ/LLMRELAY_TEST_HEADER"}}}],
        "general_settings": {"master_key": "os.environ/LLMRELAY_TEST_MASTER"},
        "litellm_settings": {"set_verbose": switch == "set_verbose"},
    }
    env = dict(SECRETS)
    if switch == "LITELLM_LOG":
        env["LITELLM_LOG"] = "DEBUG"
    args = ["--detailed_debug"] if switch == "--detailed_debug" else []
    with ProxyProcess(config, env=env, extra_args=args) as proxy:
        auth = {"Authorization": f"Bearer {SECRETS['LLMRELAY_TEST_MASTER']}"}
        r = requests.post(f"{proxy.url}/v1/chat/completions", headers=auth, timeout=10,
                          json={"model": "m", "messages": [{"role": "user", "content": "hello debug"}]})
        assert r.status_code == 200, r.text
        r = requests.post(f"{proxy.url}/v1/chat/completions", headers=auth, timeout=10,
                          json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 400
        proxy.stop()
        log = proxy.log()
    assert "stage route: passed" in log and "deployment=" in log
    assert "stage route: raised BadRequest" in log
    assert "upstream request" in log and "/chat/completions" in log and "hello debug" in log
    assert "upstream response" in log and "200 body=" in log
    for name, value in SECRETS.items():
        assert value not in log, f"{name} leaked into the debug log"
