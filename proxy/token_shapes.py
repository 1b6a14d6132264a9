"""How a request is counted in tokens: chat messages, tool definitions and prompts.

Chat messages are counted the way OpenAI bills them, per the OpenAI cookbook "How to count
tokens with tiktoken": every message costs 3 tokens plus the tokens of each of its string values
(role, content, name, …), a ``name`` costs 1 more, and every reply is primed with 3
(``<|start|>assistant<|message|>``). ``gpt-3.5-turbo-0301`` used 4 per message and -1 per name.
Tool definitions follow the cookbook's formula too.

What the cookbook leaves open, counted as documented here: text parts of a list ``content`` count
as text; an image part counts ``LOW_DETAIL_IMAGE_TOKENS`` at ``detail: low`` and otherwise
``DEFAULT_IMAGE_TOKENS`` (its real size is unknown without fetching it); ``tool_calls`` and
``function_call`` count their function names and arguments.

Each function takes the tokenizer as ``text_len`` (text -> token count), so the rules are the
same whichever tokenizer a model has (proxy/tokens.py picks it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gevent
from tokenizers import Tokenizer

from proxy.hub_counting import SLICE_CHARS, YIELD_CHARS

# Cookbook chat overheads.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3

# OpenAI's vision pricing: 85 tokens at low detail; at high detail 85 + 170 per 512px tile,
# 765 for a 1024x1024 image, the usual size, used when the real size is unknown.
LOW_DETAIL_IMAGE_TOKENS = 85
DEFAULT_IMAGE_TOKENS = 765

TextCounter = Callable[[str], int]


def approximate_len(text: str) -> int:
    """Characters / 4: the count when no encoding can be loaded."""
    return (len(text) + 3) // 4


def count_messages(
    messages: Sequence[Mapping[str, Any]],
    text_len: TextCounter,
    tokens_per_message: int,
    tokens_per_name: int,
) -> int:
    total = 0
    for message in messages:
        total += tokens_per_message
        for key, value in message.items():
            if isinstance(value, str):
                total += text_len(value)
            elif key == "content" and isinstance(value, list):
                total += count_parts(value, text_len)
            elif key == "tool_calls" and isinstance(value, list):
                for call in value:
                    if isinstance(call, Mapping):
                        total += count_function(call.get("function"), text_len)
            elif key == "function_call":
                total += count_function(value, text_len)
            if key == "name":
                total += tokens_per_name
    return total + REPLY_PRIMING_TOKENS


def count_parts(parts: list[Any], text_len: TextCounter) -> int:
    total = 0
    for part in parts:
        if isinstance(part, str):
            total += text_len(part)
        elif not isinstance(part, Mapping):
            continue
        elif part.get("type") == "image_url":
            image = part.get("image_url")
            detail = image.get("detail") if isinstance(image, Mapping) else None
            total += LOW_DETAIL_IMAGE_TOKENS if detail == "low" else DEFAULT_IMAGE_TOKENS
        elif isinstance(part.get("text"), str):
            total += text_len(part["text"])
    return total


def count_function(function: Any, text_len: TextCounter) -> int:
    if not isinstance(function, Mapping):
        return 0
    total = text_len(str(function.get("name") or ""))
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        total += text_len(arguments)
    elif arguments is not None:
        total += text_len(json.dumps(arguments))
    return total


def count_tools(tools: Sequence[Mapping[str, Any]], text_len: TextCounter, func_init: int) -> int:
    """The cookbook's formula for tool definitions (``tools`` or legacy ``functions``)."""
    prop_init, prop_key, enum_init, enum_item, func_end = 3, 3, -3, 3, 12
    total = 0
    for tool in tools:
        function = tool.get("function", tool)
        if not isinstance(function, Mapping):
            continue
        total += func_init
        description = str(function.get("description") or "").removesuffix(".")
        total += text_len(f"{function.get('name', '')}:{description}")
        parameters = function.get("parameters")
        properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
        if not properties or not isinstance(properties, Mapping):
            continue
        total += prop_init
        for prop_name, prop in properties.items():
            prop = prop if isinstance(prop, Mapping) else {}
            total += prop_key
            enum = prop.get("enum")
            if isinstance(enum, list):
                total += enum_init
                for item in enum:
                    total += enum_item + text_len(str(item))
            prop_description = str(prop.get("description") or "").removesuffix(".")
            total += text_len(f"{prop_name}:{prop.get('type', '')}:{prop_description}")
    return total + func_end if tools else total


def count_prompt(prompt: Any, text_len: TextCounter, tokenizer: Tokenizer | None) -> int:
    """A completion prompt: a string, a list of strings, or token ids (counted as they are)."""
    if isinstance(prompt, str):
        if tokenizer is not None:
            # A raw prompt gets the model's special tokens (BOS…), so count them.
            if len(prompt) <= SLICE_CHARS:
                return len(tokenizer.encode(prompt).ids)
            return text_len(prompt) + len(tokenizer.encode("").ids)
        return text_len(prompt)
    total = 0
    for i, item in enumerate(prompt):
        if i % YIELD_CHARS == YIELD_CHARS - 1:
            gevent.sleep(0)  # a prompt of millions of token ids
        if isinstance(item, int):
            total += 1
        elif isinstance(item, str):
            total += count_prompt(item, text_len, tokenizer)
        elif isinstance(item, Sequence):
            total += len(item)
    return total
