"""Virtual keys and teams as records: hashing, durations, budget periods, and the admin bodies.

A key is shown once (``sk-...``); only its sha256 hex digest is kept, under LiteLLM's name
``token``. Field names are LiteLLM's (``/key/generate``, ``/team/new``), so its admin clients
and scripts work unchanged. Records are plain dataclasses built from store rows; the cache
holds them and the request path reads them, never the store.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from proxy.config import flatten_errors
from proxy.errors import BadRequest

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w|mo)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "mo": 30 * 86400}
_HASH = re.compile(r"^[0-9a-f]{64}$")

#: ``allowed_routes`` entries (LiteLLM's presets) and the ``key_type`` values that set them.
MANAGEMENT_ROUTES = "management_routes"
LLM_API_ROUTES = "llm_api_routes"
INFO_ROUTES = "info_routes"
KEY_TYPES = {"llm_api": [LLM_API_ROUTES], "management": [MANAGEMENT_ROUTES], "read_only": [INFO_ROUTES],
             "default": None}
#: A key's ``models`` entry meaning "whatever the key's team may call" (LiteLLM's name).
ALL_TEAM_MODELS = "all-team-models"


def parse_duration(value: Any, name: str) -> float | None:
    """``"30s"``, ``"1h"``, ``"7d"``, ``"2w"``, ``"1mo"`` -> seconds; None stays None; else a 400 naming ``name``."""
    if value is None or value == "":
        return None
    match = _DURATION.match(str(value)) if isinstance(value, str) else None
    if match is None or int(match[1]) <= 0:
        raise BadRequest(f"{name}: {value!r} is not a duration; use a number and a unit: "
                         "30s, 30m, 1h, 7d, 2w, 1mo", param=name)
    return float(int(match[1]) * _UNIT_SECONDS[match[2]])


def hash_key(key: str) -> str:
    """LiteLLM's ``token``: the sha256 hex digest of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


def token_of(key_or_hash: str) -> str:
    """The stored token for a presented key, or the value itself when it already is one."""
    return key_or_hash if _HASH.match(key_or_hash) else hash_key(key_or_hash)


def new_key() -> str:
    return "sk-" + secrets.token_urlsafe(16)


def key_name(key: str) -> str:
    """How LiteLLM names a key without showing it: ``sk-...`` and its last four characters."""
    return f"sk-...{key[-4:]}"


def budget_period(duration: float | None, anchor: float, now: float) -> int:
    """Start (epoch seconds) of the budget period ``now`` falls in; 0 for a budget that never resets.

    Periods run back to back from ``anchor`` (the key's or team's creation, or the last change of
    its ``budget_duration``), so spend counted under one period number resets by itself when the
    next one starts: nothing has to be zeroed.
    """
    if not duration:
        return 0
    return int(anchor + math.floor((now - anchor) / duration) * duration)


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


@dataclass(slots=True)
class Limits:
    """What a key or a team may spend and how fast; shared by both records."""

    max_budget: float | None = None
    budget_duration: str | None = None
    budget_anchor: float = 0.0
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    max_parallel_requests: int | None = None
    #: ``budget_duration`` in seconds, worked out once when the record is built
    budget_seconds: float | None = None

    def __post_init__(self) -> None:
        self.budget_seconds = parse_duration(self.budget_duration, "budget_duration")

    def period(self, now: float) -> int:
        return budget_period(self.budget_seconds, self.budget_anchor, now)

    def reset_at(self, now: float) -> float | None:
        seconds = self.budget_seconds
        return None if not seconds else self.period(now) + seconds


@dataclass(slots=True)
class KeyRecord(Limits):
    token: str = ""
    key_name: str | None = None
    key_alias: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    models: list[str] = field(default_factory=list)
    expires: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    allowed_routes: list[str] = field(default_factory=list)
    blocked: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def entity(self) -> str:
        """Name of this key's counters in the shared state and in ``spend_totals``."""
        return f"key:{self.token}"

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires

    @property
    def is_admin(self) -> bool:
        return MANAGEMENT_ROUTES in self.allowed_routes

    def public(self) -> dict[str, Any]:
        """The key as /key/info and /key/list show it (no token, times as ISO 8601)."""
        data = asdict(self)
        del data["token"], data["budget_anchor"], data["budget_seconds"]
        data["expires"] = iso(self.expires)
        data["created_at"], data["updated_at"] = iso(self.created_at), iso(self.updated_at)
        data["budget_reset_at"] = iso(self.reset_at(time.time()))
        return data


@dataclass(slots=True)
class TeamRecord(Limits):
    team_id: str = ""
    team_alias: str | None = None
    models: list[str] = field(default_factory=list)
    members_with_roles: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    blocked: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def entity(self) -> str:
        return f"team:{self.team_id}"

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        del data["budget_anchor"], data["budget_seconds"]
        data["created_at"], data["updated_at"] = iso(self.created_at), iso(self.updated_at)
        data["budget_reset_at"] = iso(self.reset_at(time.time()))
        return data


def user_entity(user_id: str) -> str:
    return f"user:{user_id}"


# -- admin bodies ------------------------------------------------------------------------------

class _Member(Schema):
    class Meta:
        unknown = EXCLUDE

    role = fields.Str(load_default="user", validate=validate.OneOf(["admin", "user"]))
    user_id = fields.Str(load_default=None, allow_none=True)
    user_email = fields.Str(load_default=None, allow_none=True)


def _limits(schema: dict[str, Any]) -> dict[str, Any]:
    nonneg = validate.Range(min=0, error="must not be negative")
    # a count the store keeps in a 64-bit INTEGER column
    count = validate.Range(min=0, max=2**63 - 1, error="must be between 0 and 2**63-1")
    schema.update(
        max_budget=fields.Float(allow_none=True, validate=nonneg),
        budget_duration=fields.Str(allow_none=True),
        rpm_limit=fields.Int(allow_none=True, strict=True, validate=count),
        tpm_limit=fields.Int(allow_none=True, strict=True, validate=count),
        max_parallel_requests=fields.Int(allow_none=True, strict=True, validate=count),
        models=fields.List(fields.Str(), allow_none=True),
        metadata=fields.Dict(allow_none=True),
        blocked=fields.Bool(allow_none=True),
    )
    return schema


KeyBody = Schema.from_dict(_limits({
    "key": fields.Str(allow_none=True),
    "key_alias": fields.Str(allow_none=True),
    "duration": fields.Str(allow_none=True),
    "team_id": fields.Str(allow_none=True),
    "user_id": fields.Str(allow_none=True),
    "allowed_routes": fields.List(fields.Str(), allow_none=True),
    "key_type": fields.Str(allow_none=True, validate=validate.OneOf(list(KEY_TYPES))),
}), name="KeyBody")

TeamBody = Schema.from_dict(_limits({
    "team_id": fields.Str(allow_none=True),
    "team_alias": fields.Str(allow_none=True),
    "members_with_roles": fields.List(fields.Nested(_Member), allow_none=True),
}), name="TeamBody")


def load_body(schema: type[Schema], body: Any) -> dict[str, Any]:
    """Validate an admin body; fields LiteLLM knows and we do not are ignored, like extra keys.

    Only the fields present in the body are returned, so an update changes just those.
    """
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    try:
        data = schema(unknown=EXCLUDE).load(body)
    except ValidationError as exc:
        errors = flatten_errors(exc.messages)
        param = errors[0].split(":", 1)[0].split("[")[0].split(".")[0] if errors else None
        raise BadRequest("; ".join(errors), param=param) from None
    for name in ("budget_duration", "duration"):
        if name in data:
            parse_duration(data[name], name)
    return data
