"""Small builders shared by unit tests: a Gateway from a config mapping, a context, a handler."""

from __future__ import annotations

from typing import Any

from proxy.config import load_config
from proxy.context import RequestContext
from proxy.gateway import Gateway


def gateway(config: dict[str, Any]) -> Gateway:
    """A Gateway built from a config mapping, without preloading tokenizer files."""
    return Gateway(load_config(config), preload=False)


def chat_ctx(model: str = "m", text: str = "hello", **body: Any) -> RequestContext:
    return RequestContext("chat", {"model": model, "messages": [{"role": "user", "content": text}], **body})


def mock_model(name: str, text: str = "ok", **params: Any) -> dict[str, Any]:
    """A model_list entry answered by the built-in mock provider."""
    return {"model_name": name, "litellm_params": {"model": f"openai/{name}", "mock_response": text, **params}}
