"""Request body schemas: a bad body is a 400 naming the field, before any stage runs.

Only the fields the proxy itself relies on are typed; every other field is kept as sent and
passed to the provider (OpenAI adds params often; a gateway must not stand in the way).

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


def _has_roles(messages: list[dict[str, Any]]) -> None:
    for i, message in enumerate(messages):
        if not isinstance(message.get("role"), str):
            raise ValidationError(f"item {i} has no string role")


class OpenAIRequest(Schema):
    class Meta:
        unknown = INCLUDE

    model = fields.Str(required=True, validate=validate.Length(min=1))
    stream = fields.Bool(allow_none=True)
    metadata = fields.Dict(allow_none=True)
    user = fields.Str(allow_none=True)


class ChatRequest(OpenAIRequest):
    messages = fields.List(fields.Dict(), required=True, validate=[validate.Length(min=1), _has_roles])
    n = fields.Int(allow_none=True, validate=validate.Range(min=1))
    temperature = fields.Float(allow_none=True)
    top_p = fields.Float(allow_none=True)
    max_tokens = fields.Int(allow_none=True)
    max_completion_tokens = fields.Int(allow_none=True)
    tools = fields.List(fields.Dict(), allow_none=True)
    stream_options = fields.Dict(allow_none=True)


class CompletionRequest(OpenAIRequest):
    prompt = fields.Raw(required=True)
    max_tokens = fields.Int(allow_none=True)
    temperature = fields.Float(allow_none=True)


class EmbeddingRequest(OpenAIRequest):
    input = fields.Raw(required=True)


class ModerationRequest(OpenAIRequest):
    model = fields.Str(load_default="omni-moderation-latest")
    input = fields.Raw(required=True)


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
        for name, field in schema.fields.items():
            types = _PLAIN_TYPES.get(type(field))
            inner = None
            if isinstance(field, fields.List):
                inner = _PLAIN_TYPES.get(type(field.inner), (object,))[0]
            has_default = field.load_default is not missing
            self.checks.append((name, types, field.required, field.allow_none, list(field.validators),
                                inner, has_default))

    def plainly_valid(self, body: dict[str, Any]) -> bool:
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


SCHEMAS: dict[str, FastLoader] = {
    "chat": FastLoader(ChatRequest()),
    "completion": FastLoader(CompletionRequest()),
    "embedding": FastLoader(EmbeddingRequest()),
    "moderation": FastLoader(ModerationRequest()),
}


def json_body() -> dict[str, Any]:
    """The current admin request's JSON object body ({} when empty); a 400 when it is not one."""
    try:
        body = orjson.loads(request.get_data(cache=False) or b"{}")
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    return body
