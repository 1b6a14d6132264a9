"""Request body schemas: a bad body is a 400 naming the field, before any stage runs.

Only the fields the proxy itself relies on are typed; every other field is kept as sent and
passed to the provider (OpenAI adds params often; a gateway must not stand in the way).
"""

from __future__ import annotations

from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates


class OpenAIRequest(Schema):
    class Meta:
        unknown = INCLUDE

    model = fields.Str(required=True, validate=validate.Length(min=1))
    stream = fields.Bool(allow_none=True)
    metadata = fields.Dict(allow_none=True)
    user = fields.Str(allow_none=True)


class ChatRequest(OpenAIRequest):
    messages = fields.List(fields.Dict(), required=True, validate=validate.Length(min=1))
    n = fields.Int(allow_none=True, validate=validate.Range(min=1))
    temperature = fields.Float(allow_none=True)
    top_p = fields.Float(allow_none=True)
    max_tokens = fields.Int(allow_none=True)
    max_completion_tokens = fields.Int(allow_none=True)
    tools = fields.List(fields.Dict(), allow_none=True)
    stream_options = fields.Dict(allow_none=True)

    @validates("messages")
    def _roles(self, messages: list[dict[str, Any]], **kwargs: Any) -> None:
        for i, message in enumerate(messages):
            if not isinstance(message.get("role"), str):
                raise ValidationError(f"messages[{i}].role: a string role is required")


class CompletionRequest(OpenAIRequest):
    prompt = fields.Raw(required=True)
    max_tokens = fields.Int(allow_none=True)
    temperature = fields.Float(allow_none=True)


class EmbeddingRequest(OpenAIRequest):
    input = fields.Raw(required=True)


class ModerationRequest(OpenAIRequest):
    model = fields.Str(load_default="omni-moderation-latest")
    input = fields.Raw(required=True)


SCHEMAS: dict[str, Schema] = {
    "chat": ChatRequest(),
    "completion": CompletionRequest(),
    "embedding": EmbeddingRequest(),
    "moderation": ModerationRequest(),
}
