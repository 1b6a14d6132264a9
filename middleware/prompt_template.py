"""``prompt_template``: render chat messages into one prompt for completion-style models.

A deployment may carry LiteLLM's custom template params (``roles`` with ``pre_message`` /
``post_message`` per role, ``initial_prompt_value``, ``final_prompt_value``, ``bos_token``,
``eos_token``). When it does, the rendered prompt is put in ``ctx.extra["prompt"]`` for the
provider adapter (Hugging Face, Ollama, custom endpoints) to send instead of a message list.
"""

from __future__ import annotations

from typing import Any

from proxy.context import RequestContext
from proxy.pipeline import Handler, Stage
from proxy.providers.shapes import text_of

TEMPLATE_KEYS = ("roles", "initial_prompt_value", "final_prompt_value", "bos_token", "eos_token")


def render(messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    """LiteLLM's ``custom_prompt``: bos + initial + per-message pre/content/post + final + eos."""
    roles: dict[str, dict[str, str]] = params.get("roles") or {}
    out = [params.get("bos_token") or "", params.get("initial_prompt_value") or ""]
    for message in messages:
        role = message.get("role", "user")
        style = roles.get(role, {})
        out.append(f"{style.get('pre_message', '')}{text_of(message.get('content'))}{style.get('post_message', '')}")
    out.append(params.get("final_prompt_value") or "")
    out.append(params.get("eos_token") or "")
    return "".join(out)


class PromptTemplate(Stage):
    name = "prompt_template"
    needs = frozenset({"request", "deployment"})
    provides = frozenset({"prompt"})

    def __call__(self, ctx: RequestContext, call_next: Handler) -> Any:
        dep = ctx.deployment
        assert dep is not None
        if ctx.kind == "chat" and any(k in dep.params for k in TEMPLATE_KEYS):
            ctx.extra["prompt"] = render(ctx.body.get("messages") or [], dep.params)
        else:
            ctx.extra.pop("prompt", None)  # a fallback to an untemplated deployment must not inherit it
        return call_next(ctx)
