"""Request body schemas: a bad body is a 400 naming the field, before any stage runs.

Only the fields the proxy itself relies on, and every numeric field, are typed; every other
field is kept as sent and passed to the provider (OpenAI adds params often; a gateway must not
stand in the way). Numbers are checked strictly, with OpenAI's documented ranges: an integer
field takes only a JSON integer (``1e308`` or ``2.0`` is a 400 naming the field, never a value
that breaks serialisation further on).

marshmallow is the specification, but a full ``load`` costs ~70 µs a request. ``FastLoader``
derives plain type checks from the same schema and accepts a body that passes them as it is; a
body that does not is handed to marshmallow, which converts what it can and words the error.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import request
from marshmallow import INCLUDE, Schema, ValidationError, fields, missing, validate

from proxy.errors import BadRequest

#: orjson parses 1024 levels of nesting but writes only 254; a body must be one it can forward.
MAX_NESTING = 254


def parse_json(raw: bytes) -> Any:
    """The body as JSON; not JSON, or nested too deep to be sent on, is a 400."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc}") from None
    if raw.count(b"[") + raw.count(b"{") > MAX_NESTING:  # C-speed scan; only then the real check
        try:
            orjson.dumps(body)
        except orjson.JSONEncodeError:
            raise BadRequest(f"Request body is nested deeper than {MAX_NESTING} levels") from None
    return body


def _has_roles(messages: list[dict[str, Any]]) -> None:
    for i, message in enumerate(messages):
        if not isinstance(message.get("role"), str):
            raise ValidationError(f"item {i} has no string role")


def text_or_tokens(value: Any) -> None:
    """A prompt or embedding input: a string, strings, token ids, or lists of token ids."""
    if isinstance(value, str):
        return
    if isinstance(value, list) and all(
        isinstance(v, str) or _token_ids(v) or (isinstance(v, list) and all(_token_ids(t) for t in v))
        for v in value
    ):
        return
    raise ValidationError("must be a string, a list of strings, or token ids (integers or lists of integers)")


def _token_ids(value: Any) -> bool:
    return type(value) is int and 0 <= value <= INT32_MAX


def _moderation_input(value: Any) -> None:
    if isinstance(value, str):
        return
    if isinstance(value, list) and all(isinstance(v, (str, dict)) for v in value):
        return
    raise ValidationError("must be a string, a list of strings, or a list of content parts")


INT32_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_RETRIES = 10  # per-request ``num_retries``: a client must not make the proxy retry without end


def integer(low: int | None = None, high: int | None = INT32_MAX) -> fields.Int:
    """An optional integer field: JSON integers only, within [low, high]."""
    return fields.Int(allow_none=True, strict=True, validate=validate.Range(min=low, max=high))


def number(low: float | None = None, high: float | None = None, *, above: bool = False) -> fields.Float:
    """An optional number field within [low, high] (``above``: strictly above ``low``)."""
    return fields.Float(allow_none=True, validate=validate.Range(min=low, max=high, min_inclusive=not above))


class OpenAIRequest(Schema):
    class Meta:
        unknown = INCLUDE

    model = fields.Str(required=True, validate=validate.Length(min=1))
    stream = fields.Bool(allow_none=True)
    metadata = fields.Dict(allow_none=True)
    user = fields.Str(allow_none=True)
    # proxy fields (proxy/api/openai.py PROXY_FIELDS)
    timeout = number(0, 86400, above=True)
    request_timeout = number(0, 86400, above=True)
    num_retries = integer(0, MAX_RETRIES)


class Sampling(OpenAIRequest):
    """The sampling parameters chat and legacy completions share."""

    n = integer(1, 128)
    temperature = number(0, 2)
    top_p = number(0, 1)
    presence_penalty = number(-2, 2)
    frequency_penalty = number(-2, 2)
    seed = integer(INT64_MIN, INT64_MAX)
    max_tokens = integer(1)
    logit_bias = fields.Dict(keys=fields.Str(), values=fields.Float(validate=validate.Range(-100, 100)),
                             allow_none=True)


_TOKEN = {"type": "integer", "minimum": 0, "maximum": INT32_MAX}
#: What /openapi.json says of the values ``text_or_tokens`` and ``_moderation_input`` take.
TEXT_OR_TOKENS_DOC = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"anyOf": [
    {"type": "string"}, _TOKEN, {"type": "array", "items": _TOKEN}]}}]}
MODERATION_INPUT_DOC = {"anyOf": [{"type": "string"}, {"type": "array", "items": {
    "anyOf": [{"type": "string"}, {"type": "object"}]}}]}
#: What /openapi.json says of a message (``_has_roles`` checks it; the rest is passed on as sent).
MESSAGE_DOC = {"required": ["role"], "properties": {"role": {"type": "string"}}}


class ChatRequest(Sampling):
    messages = fields.List(fields.Dict(metadata=MESSAGE_DOC), required=True,
                           validate=[validate.Length(min=1), _has_roles])
    max_completion_tokens = integer(1)
    top_logprobs = integer(0, 20)
    top_k = integer(0)  # not OpenAI's; sent by Anthropic clients and forwarded to providers that take it
    tools = fields.List(fields.Dict(), allow_none=True)
    stream_options = fields.Dict(allow_none=True)


class CompletionRequest(Sampling):
    prompt = fields.Raw(required=True, validate=text_or_tokens, metadata=TEXT_OR_TOKENS_DOC)
    best_of = integer(1, 20)
    logprobs = integer(0, 5)
    echo = fields.Bool(allow_none=True)


def _no_stream(value: bool | None) -> None:
    """Embeddings and moderations come whole: a stream asked for is a 400, not an SSE error event."""
    if value:
        raise ValidationError("streaming is not available for this endpoint")


class EmbeddingRequest(OpenAIRequest):
    stream = fields.Bool(allow_none=True, validate=_no_stream)
    input = fields.Raw(required=True, validate=text_or_tokens, metadata=TEXT_OR_TOKENS_DOC)
    dimensions = integer(1, 65536)


class ModerationRequest(OpenAIRequest):
    stream = fields.Bool(allow_none=True, validate=_no_stream)
    model = fields.Str(load_default="omni-moderation-latest")
    input = fields.Raw(required=True, validate=_moderation_input, metadata=MODERATION_INPUT_DOC)


_PLAIN_TYPES: dict[type, tuple[type, ...]] = {
    fields.Str: (str,),
    fields.Int: (int,),
    fields.Float: (int, float),
    fields.Bool: (bool,),
    fields.Dict: (dict,),
    fields.List: (list,),
}


class FastLoader:
    """``load(body)``: the body as is when it plainly matches the schema, else marshmallow's load."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.checks: list[tuple[str, tuple[type, ...] | None, bool, bool, list[Any], type | None, bool]] = []
        self.dict_values: dict[str, tuple[tuple[type, ...], list[Any]]] = {}
        for name, field in schema.fields.items():
            types = _PLAIN_TYPES.get(type(field))
            inner = None
            if isinstance(field, fields.List):
                inner = _PLAIN_TYPES.get(type(field.inner), (object,))[0]
            if isinstance(field, fields.Dict) and field.value_field is not None:
                value_types = _PLAIN_TYPES.get(type(field.value_field), (object,))
                self.dict_values[name] = (value_types, list(field.value_field.validators))
            has_default = field.load_default is not missing
            self.checks.append((name, types, field.required, field.allow_none, list(field.validators),
                                inner, has_default))

    def plainly_valid(self, body: dict[str, Any]) -> bool:
        for name, (value_types, validators) in self.dict_values.items():
            mapping = body.get(name)
            if isinstance(mapping, dict) and not _values_valid(mapping, value_types, validators):
                return False
        for name, types, required, allow_none, validators, inner, has_default in self.checks:
            value = body.get(name, missing)
            if value is missing:
                if required or has_default:
                    return False
                continue
            if value is None:
                if not allow_none:
                    return False
                continue
            if types is not None:
                if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                    return False
                if inner is not None and not all(isinstance(v, inner) for v in value):
                    return False
            try:
                for check in validators:
                    check(value)
            except ValidationError:
                return False
        return True

    def load(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.plainly_valid(body):
            return body
        return self.schema.load(body)


def _values_valid(mapping: dict[str, Any], types: tuple[type, ...], validators: list[Any]) -> bool:
    for value in mapping.values():
        if not isinstance(value, types) or isinstance(value, bool):
            return False
        try:
            for check in validators:
                check(value)
        except ValidationError:
            return False
    return True


SCHEMAS: dict[str, FastLoader] = {
    "chat": FastLoader(ChatRequest()),
    "completion": FastLoader(CompletionRequest()),
    "embedding": FastLoader(EmbeddingRequest()),
    "moderation": FastLoader(ModerationRequest()),
}


def json_body() -> dict[str, Any]:
    """The current admin request's JSON object body ({} when empty); a 400 when it is not one."""
    body = parse_json(request.get_data(cache=False) or b"{}")
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    return body
