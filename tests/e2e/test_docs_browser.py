"""The Swagger UI in a real headless Chromium: the page renders from the proxy's own assets
(no network beyond the proxy) and shows the chat completions path."""

from __future__ import annotations

import shutil
import subprocess
import tempfile

import pytest

from tests.servers import ProxyProcess

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")
def test_swagger_ui_renders_offline_in_chromium() -> None:
    config = {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m", "mock_response": "ok"}}]}
    with ProxyProcess(config) as proxy, tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        assert CHROMIUM is not None
        result = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=15000",
             # anything but the proxy is unreachable: the page must not need a CDN
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             "--dump-dom", f"{proxy.url}/docs"],
            capture_output=True, text=True, timeout=90)
        dom = result.stdout
        assert "swagger-ui" in dom, result.stderr[-2000:]
        assert "/v1/chat/completions" in dom, dom[:2000]
        assert "opblock" in dom  # the UI rendered operations, not just the page shell
