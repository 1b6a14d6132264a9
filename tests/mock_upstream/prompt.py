"""`MockPromptServers`: the test-side handle of the mock Ollama / TGI / custom upstream
(`prompt_servers.py`).

It runs the server in a child process, like `MockOpenAI`, and has the same `start()`, `stop()`,
`requests()`, `clear()` and `configure()`. One server answers all three providers, so each has
its own base URL property to put in a deployment's `api_base`::

    with MockPromptServers() as mock:
        {"model": "ollama_chat/llama3.2", "api_base": mock.ollama_url}
        {"model": "huggingface/HuggingFaceH4/zephyr-7b-beta", "api_base": mock.tgi_url}
        {"model": "custom/my-model", "api_base": mock.custom_url}
"""

from __future__ import annotations

from pathlib import Path

from . import MockOpenAI

__all__ = ["MockPromptServers"]

SERVER = Path(__file__).resolve().with_name("prompt_servers.py")


class MockPromptServers(MockOpenAI):
    """Start, stop and inspect one mock Ollama + TGI + custom-endpoint server process."""

    server = SERVER

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_key: str | None = None,
                 fail_status: int | None = None, delay: float = 0.0, chunk_delay: float = 0.0,
                 record: bool = True, startup_timeout: float = 10.0) -> None:
        super().__init__(host, port, api_key=api_key, fail_status=fail_status, delay=delay,
                         chunk_delay=chunk_delay, record=record, models=None, startup_timeout=startup_timeout)

    @property
    def url(self) -> str:
        """The server root."""
        return self.base_url

    @property
    def ollama_url(self) -> str:
        """An Ollama `api_base` (the adapters add `/api/generate`, `/api/chat`, `/api/embed`)."""
        return self.base_url

    @property
    def tgi_url(self) -> str:
        """A TGI / Inference Endpoint `api_base` (`/generate`, `/generate_stream`, `/v1/chat/completions`)."""
        return self.base_url

    @property
    def custom_url(self) -> str:
        """The `custom/` endpoint: its `api_base` is the full URL the request is posted to."""
        return self.base_url + "/custom"
