"""The Gemini ``generateContent`` wire format, shared by the ``gemini/`` and ``vertex_ai/`` adapters.

Request (OpenAI chat -> ``GenerateContentRequest``):

- ``system``/``developer`` messages become ``systemInstruction``; the other turns become
  ``contents`` with roles ``user`` and ``model`` (same-role turns merged); assistant
  ``tool_calls`` become ``functionCall`` parts, ``tool`` messages ``functionResponse`` parts (named
  after the call they answer, ``response: {"content": ...}``, as LiteLLM sends it);
- content parts: text; ``image_url``/``file`` with a base64 ``data:`` URL become ``inlineData``,
  an http(s) or ``gs://`` URL ``fileData`` (the proxy never downloads on the request path);
- ``temperature``, ``top_p``, ``top_k``, ``max_tokens``/``max_completion_tokens``, ``stop``, ``n``,
  ``presence_penalty``, ``frequency_penalty``, ``seed``, ``logprobs``/``top_logprobs`` and
  ``response_format`` (``json_object`` -> ``responseMimeType``; ``json_schema`` -> plus
  ``responseSchema``) go into ``generationConfig``;
- function ``tools`` become one ``functionDeclarations`` tool; ``tool_choice``
  auto/none/required/named becomes ``toolConfig.functionCallingConfig`` mode AUTO/NONE/ANY/ANY with
  ``allowedFunctionNames``;
- ``reasoning_effort`` becomes ``generationConfig.thinkingConfig`` as LiteLLM maps it: a
  ``thinkingBudget`` (minimal 128 — 1 on gemini-2.5-flash, 512 on -flash-lite —, low 1024,
  medium 2048, high 4096, disable/none 0; LiteLLM's ``DEFAULT_REASONING_EFFORT_*_THINKING_BUDGET``
  environment variables change them), or on Gemini 3 and later a ``thinkingLevel`` (minimal and
  low: ``low``; medium and high: ``high``); thoughts are included unless disabled;
- Gemini's own fields (``safetySettings``/``safety_settings``, ``cachedContent``/``cached_content``,
  ``labels``) pass through; a ``thinkingConfig`` goes into ``generationConfig``, where the API
  reads it, and wins over ``reasoning_effort``.

Responses: proxy/providers/gemini_response.py.
"""

from __future__ import annotations

import mimetypes
import os
import re
from typing import Any

import orjson

from proxy.errors import BadRequest
from proxy.providers.openai import CHAT_PARAMS
from proxy.providers.shapes import alternating_turns

TRANSLATED = frozenset(
    {
        "messages", "model", "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "n",
        "presence_penalty", "frequency_penalty", "seed", "logprobs", "top_logprobs", "response_format",
        "tools", "tool_choice", "parallel_tool_calls", "stream", "stream_options", "user", "extra_headers",
        "reasoning_effort",
    }
)
#: Gemini request fields (and LiteLLM's snake_case names for them) sent as they are.
NATIVE = {
    "top_k": None, "safety_settings": "safetySettings", "safetySettings": "safetySettings",
    "cached_content": "cachedContent", "cachedContent": "cachedContent", "labels": "labels",
    "thinkingConfig": None, "generationConfig": None, "toolConfig": None,
}
UNSUPPORTED = CHAT_PARAMS - TRANSLATED


def _budget(name: str, default: int) -> int:
    """A thinking budget, overridable with LiteLLM's environment variable of the same name."""
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


#: reasoning_effort -> thinkingBudget (Gemini 2.x), LiteLLM's defaults and variable names
THINKING_BUDGETS = {
    "low": _budget("DEFAULT_REASONING_EFFORT_LOW_THINKING_BUDGET", 1024),
    "medium": _budget("DEFAULT_REASONING_EFFORT_MEDIUM_THINKING_BUDGET", 2048),
    "high": _budget("DEFAULT_REASONING_EFFORT_HIGH_THINKING_BUDGET", 4096),
    "disable": _budget("DEFAULT_REASONING_EFFORT_DISABLE_THINKING_BUDGET", 0),
    "none": 0,
}
#: the smallest budget per model family (the first name found in the model wins), else the default
MINIMAL_BUDGETS = (
    ("gemini-2.5-flash-lite", _budget("DEFAULT_REASONING_EFFORT_MINIMAL_THINKING_BUDGET_GEMINI_2_5_FLASH_LITE", 512)),
    ("gemini-2.5-pro", _budget("DEFAULT_REASONING_EFFORT_MINIMAL_THINKING_BUDGET_GEMINI_2_5_PRO", 128)),
    ("gemini-2.5-flash", _budget("DEFAULT_REASONING_EFFORT_MINIMAL_THINKING_BUDGET_GEMINI_2_5_FLASH", 1)),
)
MINIMAL_BUDGET = _budget("DEFAULT_REASONING_EFFORT_MINIMAL_THINKING_BUDGET", 128)
#: reasoning_effort -> thinkingLevel (Gemini 3 and later cannot switch thinking off)
THINKING_LEVELS = {"minimal": "low", "low": "low", "medium": "high", "high": "high", "disable": "low",
                   "none": "low"}
GEMINI_VERSION = re.compile(r"gemini-(\d+)")

TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY", "any": "ANY"}
#: JSON-schema keys Gemini's ``Schema`` accepts (the rest, e.g. additionalProperties, are refused).
SCHEMA_KEYS = frozenset(
    {
        "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
        "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example",
        "anyOf", "propertyOrdering", "default", "items", "minimum", "maximum",
    }
)


# -- request ----------------------------------------------------------------------------------------


def translate_request(request: dict[str, Any], provider: str, model: str = "") -> dict[str, Any]:
    """An OpenAI chat request -> a generateContent body (``model``: the upstream model's name)."""
    refused = sorted(k for k in UNSUPPORTED if k in request and request[k] is not None
                     and request[k] is not False)
    if refused:
        raise BadRequest(f"{provider} does not support {', '.join(refused)}; remove them or set "
                         "drop_params: true", param=refused[0])
    names = {c.get("id"): (c.get("function") or {}).get("name")
             for m in request.get("messages") or () if m.get("role") == "assistant"
             for c in m.get("tool_calls") or ()}
    system, turns = alternating_turns(
        request.get("messages") or [], provider,
        system_blocks=lambda content: [p for p in parts_of(content) if "text" in p],
        user_blocks=parts_of, assistant_blocks=model_parts,
        tool_result=lambda message: function_response(message, names))
    body: dict[str, Any] = {"contents": [{"role": "model" if t["role"] == "assistant" else "user",
                                          "parts": t["content"]} for t in turns]}
    if system:
        body["systemInstruction"] = {"parts": system}
    config = generation_config(request, model)
    tools = [declaration(t) for t in request.get("tools") or () if t.get("type", "function") == "function"]
    if tools:
        body["tools"] = [{"functionDeclarations": tools}]
        choice = tool_config(request.get("tool_choice"))
        if choice:
            body["toolConfig"] = choice
    for key, value in request.items():
        if key in NATIVE and value is not None:
            if key == "top_k":
                config["topK"] = value
            elif key == "thinkingConfig":
                config["thinkingConfig"] = value
            elif key == "generationConfig" and isinstance(value, dict):
                config.update(value)
            else:
                body[NATIVE[key] or key] = value
    if config:
        body["generationConfig"] = config
    return body


def thinking_config(effort: Any, model: str) -> dict[str, Any]:
    """``reasoning_effort`` as Gemini's ``thinkingConfig`` for ``model``."""
    if effort not in THINKING_LEVELS:
        raise BadRequest(f"reasoning_effort must be one of {', '.join(THINKING_LEVELS)}; got {effort!r}",
                         param="reasoning_effort")
    include = effort not in ("disable", "none")
    version = GEMINI_VERSION.search(model.lower())
    if version and int(version.group(1)) >= 3:
        return {"thinkingLevel": THINKING_LEVELS[effort], "includeThoughts": include}
    if effort == "minimal":
        lowered = model.lower()
        budget = next((b for family, b in MINIMAL_BUDGETS if family in lowered), MINIMAL_BUDGET)
    else:
        budget = THINKING_BUDGETS[effort]
    return {"thinkingBudget": budget, "includeThoughts": include}


def generation_config(request: dict[str, Any], model: str = "") -> dict[str, Any]:
    config: dict[str, Any] = {}
    for src, dst in (("temperature", "temperature"), ("top_p", "topP"), ("n", "candidateCount"),
                     ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty"),
                     ("seed", "seed"), ("logprobs", "responseLogprobs"), ("top_logprobs", "logprobs")):
        if request.get(src) is not None:
            config[dst] = request[src]
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    stop = request.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else [s for s in stop if s]
    fmt = request.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema") if fmt["type"] == "json_schema" else None
        if isinstance(schema, dict):
            config["responseSchema"] = gemini_schema(schema)
    elif fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        raise BadRequest("response_format must be text, json_object or json_schema", param="response_format")
    if request.get("reasoning_effort") is not None:
        config["thinkingConfig"] = thinking_config(request["reasoning_effort"], model)
    return config


def gemini_schema(schema: Any, defs: dict[str, Any] | None = None) -> Any:
    """A JSON schema reduced to what Gemini's ``Schema`` accepts ($refs inlined)."""
    if not isinstance(schema, dict):
        return schema
    defs = {**(defs or {}), **(schema.get("$defs") or schema.get("definitions") or {})}
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.rsplit("/", 1)[-1] in defs:
        return gemini_schema(defs[ref.rsplit("/", 1)[-1]], defs)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in SCHEMA_KEYS:
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: gemini_schema(sub, defs) for name, sub in value.items()}
        elif key in ("items", "anyOf"):
            out[key] = [gemini_schema(s, defs) for s in value] if isinstance(value, list) \
                else gemini_schema(value, defs)
        elif key == "type" and isinstance(value, list):  # ["string", "null"] -> nullable string
            kinds = [v for v in value if v != "null"]
            out["type"] = kinds[0] if kinds else "null"
            if "null" in value:
                out["nullable"] = True
        else:
            out[key] = value
    return out


def parts_of(content: Any) -> list[dict[str, Any]]:
    """OpenAI message content -> Gemini parts."""
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for part in content or ():
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            parts.append(media_part(image.get("url") if isinstance(image, dict) else image,
                                    image.get("format") if isinstance(image, dict) else None))
        elif kind == "file" and isinstance(part.get("file"), dict):
            f = part["file"]
            parts.append(media_part(f.get("file_data") or f.get("file_id"), f.get("format")))
        elif kind == "input_audio" and isinstance(part.get("input_audio"), dict):
            audio = part["input_audio"]
            parts.append({"inlineData": {"mimeType": f"audio/{audio.get('format') or 'wav'}",
                                         "data": audio.get("data")}})
        else:
            raise BadRequest(f"gemini does not accept content parts of type {kind!r}", param="messages")
    return parts


def media_part(url: Any, mime: str | None = None) -> dict[str, Any]:
    """A ``data:`` URL -> ``inlineData``; a URL (http(s), gs://) -> ``fileData``."""
    if not isinstance(url, str) or not url:
        raise BadRequest("image_url.url is missing", param="messages")
    if url.startswith("data:"):
        header, sep, data = url.partition(",")
        if not (sep and header.endswith(";base64")):
            raise BadRequest("data: URLs must be base64-encoded", param="messages")
        return {"inlineData": {"mimeType": header[5:-7], "data": data}}
    guessed = mime or mimetypes.guess_type(url.split("?", 1)[0])[0] or "image/jpeg"
    return {"fileData": {"mimeType": guessed, "fileUri": url}}


def model_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    parts = parts_of(message.get("content"))
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        try:
            args = orjson.loads(fn.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            raise BadRequest(f"tool call {call.get('id')!r} has arguments that are not JSON",
                             param="messages") from None
        parts.append({"functionCall": {"name": fn.get("name"), "args": args}})
    return parts


def function_response(message: dict[str, Any], names: dict[Any, Any]) -> dict[str, Any]:
    name = message.get("name") or names.get(message.get("tool_call_id"))
    if not name:
        raise BadRequest(f"tool message {message.get('tool_call_id')!r} answers no earlier tool call",
                         param="messages")
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return {"functionResponse": {"name": name, "response": {"content": content or ""}}}


def declaration(tool: dict[str, Any]) -> dict[str, Any]:
    fn = tool.get("function") or {}
    out: dict[str, Any] = {"name": fn.get("name")}
    if fn.get("description"):
        out["description"] = fn["description"]
    params = fn.get("parameters")
    if isinstance(params, dict) and params.get("properties"):  # Gemini refuses an empty OBJECT
        out["parameters"] = gemini_schema(params)
    return out


def tool_config(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        if not name:
            raise BadRequest("tool_choice names no function", param="tool_choice")
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    if isinstance(choice, str) and choice in TOOL_MODES:
        return {"functionCallingConfig": {"mode": TOOL_MODES[choice]}}
    raise BadRequest(f"tool_choice {choice!r} is not supported", param="tool_choice")
