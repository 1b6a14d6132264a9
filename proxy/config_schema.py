"""The marshmallow schema of a LiteLLM-format ``config.yaml``: ``ConfigFile`` and its sections.

Typed keys are checked (types, ranges, choices); LiteLLM carries many more, so the sections keep
unknown keys as given (``Open``), and unknown keys inside ``litellm_params`` are provider params.
``config.load_config`` resolves the file before validating it with these; ``/openapi.json``
documents the file from them.
"""

from __future__ import annotations

from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates_schema

from proxy.client_credentials import ClientAuthRules

ROUTING_STRATEGIES = (
    "simple-shuffle",
    "least-busy",
    "usage-based-routing",
    "usage-based-routing-v2",
    "latency-based-routing",
    "cost-based-routing",
)


class StrOrList(fields.Field):
    """A string or a list of strings (e.g. ``organization: [org-1, org-2]``)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        raise ValidationError("Must be a string or a list of strings.")


class ClientAuthParams(fields.Field):
    """``configurable_clientside_auth_params``: param names and ``{"api_base": "<regex>"}``."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        try:
            ClientAuthRules.parse(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        return value


class FallbackList(fields.Field):
    """``[{"model-a": ["model-b", ...]}, ...]`` as LiteLLM writes fallbacks."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, list):
            raise ValidationError('Must be a list like [{"model-a": ["model-b"]}].')
        for item in value:
            if not isinstance(item, dict) or not all(
                isinstance(k, str) and isinstance(v, list) and all(isinstance(x, str) for x in v)
                for k, v in item.items()
            ):
                raise ValidationError('Each entry must map a model name to a list of model names.')
        return value


class Open(Schema):
    """LiteLLM sections carry many keys; the typed ones are checked, the rest kept as given."""

    class Meta:
        unknown = INCLUDE


class LitellmParams(Open):
    model = fields.Str(required=True)
    api_base = fields.Str(allow_none=True)
    api_key = fields.Str(allow_none=True)
    api_version = fields.Str(allow_none=True)
    organization = StrOrList(allow_none=True)
    rpm = fields.Int(allow_none=True, validate=validate.Range(min=0))
    tpm = fields.Int(allow_none=True, validate=validate.Range(min=0))
    weight = fields.Float(allow_none=True, validate=validate.Range(min=0))
    order = fields.Int(allow_none=True)
    timeout = fields.Float(allow_none=True, validate=validate.Range(min=0, min_inclusive=False))
    stream_timeout = fields.Float(allow_none=True, validate=validate.Range(min=0, min_inclusive=False))
    max_retries = fields.Int(allow_none=True, validate=validate.Range(min=0))
    mock_response = fields.Raw(allow_none=True)
    extra_headers = fields.Dict(keys=fields.Str(), values=fields.Raw(), allow_none=True)
    litellm_credential_name = fields.Str(allow_none=True)
    custom_llm_provider = fields.Str(allow_none=True)
    drop_params = fields.Bool(allow_none=True)
    additional_drop_params = fields.List(fields.Str(), allow_none=True)
    configurable_clientside_auth_params = ClientAuthParams(allow_none=True)


class ModelEntry(Schema):
    model_name = fields.Str(required=True)
    litellm_params = fields.Nested(LitellmParams, required=True)
    model_info = fields.Dict(keys=fields.Str(), load_default=dict, allow_none=True)


class Credential(Schema):
    credential_name = fields.Str(required=True)
    credential_values = fields.Dict(keys=fields.Str(), required=True)
    credential_info = fields.Dict(keys=fields.Str(), load_default=dict, allow_none=True)


class LitellmSettings(Open):
    drop_params = fields.Bool()
    set_verbose = fields.Bool()
    num_retries = fields.Int(validate=validate.Range(min=0))
    request_timeout = fields.Float(validate=validate.Range(min=0, min_inclusive=False))
    fallbacks = FallbackList()
    context_window_fallbacks = FallbackList()
    content_policy_fallbacks = FallbackList()
    default_fallbacks = fields.List(fields.Str())
    allowed_fails = fields.Int(validate=validate.Range(min=0))
    cooldown_time = fields.Float(validate=validate.Range(min=0))
    success_callback = fields.List(fields.Str())
    failure_callback = fields.List(fields.Str())
    callbacks = fields.Raw()
    json_logs = fields.Bool()


class RouterSettings(Open):
    routing_strategy = fields.Str(validate=validate.OneOf(ROUTING_STRATEGIES))
    model_group_alias = fields.Dict(keys=fields.Str(), values=fields.Raw())
    num_retries = fields.Int(validate=validate.Range(min=0))
    timeout = fields.Float(validate=validate.Range(min=0, min_inclusive=False))
    stream_timeout = fields.Float(validate=validate.Range(min=0, min_inclusive=False))
    retry_after = fields.Float(validate=validate.Range(min=0))
    allowed_fails = fields.Int(validate=validate.Range(min=0))
    cooldown_time = fields.Float(validate=validate.Range(min=0))
    fallbacks = FallbackList()
    context_window_fallbacks = FallbackList()
    content_policy_fallbacks = FallbackList()
    default_fallbacks = fields.List(fields.Str())
    redis_host = fields.Str(allow_none=True)
    redis_port = fields.Int(allow_none=True)
    redis_password = fields.Str(allow_none=True)
    redis_url = fields.Str(allow_none=True)


class GeneralSettings(Open):
    master_key = fields.Str(allow_none=True)
    database_path = fields.Str(allow_none=True)
    database_url = fields.Str(allow_none=True)
    database_connection_pool_limit = fields.Int(validate=validate.Range(min=1))
    database_connection_timeout = fields.Float(validate=validate.Range(min=0))
    alerting = fields.List(fields.Str())
    allow_client_side_credentials = fields.Bool()
    max_request_size_mb = fields.Float(allow_none=True, validate=validate.Range(min=0, min_inclusive=False))


class ConfigFile(Schema):
    """The whole file. Unknown top-level sections are kept (and warned about) so LiteLLM files load."""

    class Meta:
        unknown = INCLUDE

    model_list = fields.List(fields.Nested(ModelEntry), load_default=list, allow_none=True)
    litellm_settings = fields.Nested(LitellmSettings, load_default=dict, allow_none=True)
    router_settings = fields.Nested(RouterSettings, load_default=dict, allow_none=True)
    general_settings = fields.Nested(GeneralSettings, load_default=dict, allow_none=True)
    environment_variables = fields.Dict(keys=fields.Str(), load_default=dict, allow_none=True)
    credential_list = fields.List(fields.Nested(Credential), load_default=list, allow_none=True)
    pipeline = fields.List(fields.Raw(), load_default=None, allow_none=True)

    @validates_schema
    def _pipeline_entries(self, data: dict[str, Any], **kwargs: Any) -> None:
        for i, entry in enumerate(data.get("pipeline") or []):
            ok = isinstance(entry, str) or (
                isinstance(entry, dict) and len(entry) == 1 and isinstance(next(iter(entry)), str)
            )
            if not ok:
                raise ValidationError(
                    {i: ["Must be a stage name or a one-key mapping {stage_name: {options}}."]},
                    field_name="pipeline",
                )


KNOWN_SECTIONS = set(ConfigFile._declared_fields)
