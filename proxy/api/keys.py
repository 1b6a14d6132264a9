"""Key and team management with LiteLLM's routes and field names (master key, or a management key).

``/key/generate``, ``/key/info``, ``/key/update``, ``/key/delete``, ``/key/list``,
``/key/regenerate``; ``/team/new``, ``/team/info``, ``/team/update``, ``/team/delete``,
``/team/list``. A generated key is shown once; the store keeps its hash (``token``). Each change
reaches this worker's key cache at once and the other workers within one live-update tick.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, request

from proxy.api.render import json_response
from proxy.api.schemas import parse_json
from proxy.errors import BadRequest, NotFound
from proxy.keys.cache import key_from_row, team_from_row
from proxy.keys.records import (
    ALL_TEAM_MODELS,
    KEY_TYPES,
    KeyBody,
    KeyRecord,
    TeamBody,
    TeamRecord,
    hash_key,
    key_name,
    load_body,
    new_key,
    parse_duration,
    token_of,
)
from proxy.store.keys import KeyNotFound, KeyStore, TeamExists, TeamNotFound

if TYPE_CHECKING:
    from proxy.gateway import Gateway
    from proxy.live import LiveUpdates

#: ``models`` entries that name no model group but are understood (LiteLLM's specials, wildcards).
SPECIAL_MODELS = frozenset({"*", ALL_TEAM_MODELS, "all-proxy-models", "no-default-models"})


def json_body() -> dict[str, Any]:
    body = parse_json(request.get_data(cache=False) or b"{}")
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    return body


def make_blueprint(gateway: Gateway, live: LiveUpdates) -> Blueprint:
    bp = Blueprint("keys", __name__)

    def admin() -> None:
        gateway.keys.require_admin(request.headers, request.path)

    def store() -> KeyStore:
        if gateway.key_store is None:
            raise BadRequest("no database: set general_settings.database_path to keep virtual keys and teams")
        return gateway.key_store

    def check_models(models: list[str] | None, team: TeamRecord | None = None) -> None:
        """Every entry must be a model group, an alias, an access group or one of LiteLLM's specials."""
        if not models:
            return
        services = gateway.services
        known = set(services.visible_model_names())
        groups = {g for d in services.models.deployments for g in d.model_info.get("access_groups") or ()}
        for name in models:
            if name not in known and name not in groups and name not in SPECIAL_MODELS and "*" not in name:
                raise BadRequest(f"models: {name!r} is not a model group, alias or access group on this proxy",
                                 param="models")
            if team is not None and team.models and name != ALL_TEAM_MODELS and name not in team.models:
                raise BadRequest(f"models: {name!r} is not among the models of team {team.team_id}", param="models")

    def team_for(team_id: str | None) -> TeamRecord | None:
        if team_id is None:
            return None
        row = store().get_team(team_id)
        if row is None:
            raise BadRequest(f"team_id: no team with id {team_id!r}", param="team_id")
        return team_from_row(row)

    def spend_of(record: KeyRecord | TeamRecord) -> float:
        """Spend in the current budget period: the shared counter, or the store when it knows more."""
        if gateway.spend is not None:
            gateway.spend.flush()
        now = time.time()
        period = record.period(now)
        live_value = gateway.state.spend([f"{record.entity}@{period}"])[f"{record.entity}@{period}"]
        return max(live_value, store().spend_total(record.entity, period))

    def key_changes(data: dict[str, Any], now: float) -> dict[str, Any]:
        """Store columns from a validated key body (only the fields it gives)."""
        changes = {k: v for k, v in data.items() if k not in ("key", "duration", "key_type")}
        if "duration" in data:
            seconds = parse_duration(data["duration"], "duration")
            changes["expires"] = None if seconds is None else now + seconds
        if "budget_duration" in data:
            changes["budget_anchor"] = now  # a new period starts now, as LiteLLM resets budget_reset_at
        if data.get("key_type") and KEY_TYPES[data["key_type"]] is not None:
            changes["allowed_routes"] = KEY_TYPES[data["key_type"]]
        for name in ("models", "allowed_routes", "metadata"):
            if name in changes and changes[name] is None:
                changes[name] = {} if name == "metadata" else []
        if "blocked" in changes:
            changes["blocked"] = bool(changes["blocked"])
        return changes

    def key_reply(key: str, record: KeyRecord) -> dict[str, Any]:
        return {**record.public(), "key": key, "token_id": record.token, "spend": 0.0}

    # -- keys -------------------------------------------------------------------------------

    @bp.post("/key/generate")
    def key_generate() -> Response:
        admin()
        data = load_body(KeyBody, json_body())
        team = team_for(data.get("team_id"))
        check_models(data.get("models"), team)
        key = data.get("key") or new_key()
        if not key.startswith("sk-"):
            raise BadRequest("key: a custom key must start with 'sk-'", param="key")
        now = time.time()
        row = {"token": hash_key(key), "key_name": key_name(key),
               "created_at": now, "updated_at": now, "budget_anchor": now, **key_changes(data, now)}
        if store().get_key(row["token"]) is not None:
            raise BadRequest("key: this key already exists", param="key")
        record = KeyRecord(**row)
        store().put_key(row)
        live.keys_changed()
        return json_response(key_reply(key, record))

    def find_key(given: Any, param: str = "key") -> tuple[str, KeyRecord]:
        if not isinstance(given, str) or not given:
            raise BadRequest(f"{param}: the key (or its hash) is required", param=param)
        row = store().get_key(token_of(given))
        if row is None:
            raise NotFound(f"{param}: no such key", param=param)
        return given, key_from_row(row)

    @bp.get("/key/info")
    def key_info() -> Response:
        admin()
        given, record = find_key(request.args.get("key"))
        return json_response({"key": given, "info": {**record.public(), "spend": spend_of(record)}})

    @bp.post("/key/update")
    def key_update() -> Response:
        admin()
        body = json_body()
        given, record = find_key(body.get("key"))
        data = load_body(KeyBody, body)
        team = team_for(data["team_id"]) if data.get("team_id") else team_for(record.team_id)
        check_models(data.get("models"), team)
        try:
            row = store().update_key(record.token, key_changes(data, time.time()))
        except KeyNotFound:
            raise NotFound("key: no such key", param="key") from None
        live.keys_changed()
        updated = key_from_row(row)
        return json_response({**updated.public(), "key": given, "spend": spend_of(updated)})

    @bp.post("/key/delete")
    def key_delete() -> Response:
        admin()
        body = json_body()
        keys, aliases = body.get("keys"), body.get("key_aliases")
        if not keys and not aliases:
            raise BadRequest("keys: give 'keys' (keys or their hashes) or 'key_aliases'", param="keys")
        for name, value in (("keys", keys), ("key_aliases", aliases)):
            if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise BadRequest(f"{name}: must be a list of strings", param=name)
        wanted = {token_of(k): k for k in keys or ()}
        by_alias = store().tokens_by_alias(aliases or ())
        missing = [k for k in keys or () if store().get_key(token_of(k)) is None]
        if missing or (aliases and not by_alias):
            raise NotFound(f"keys: no such key: {', '.join(missing) or ', '.join(aliases)}", param="keys")
        deleted = store().delete_keys([*wanted, *by_alias])
        live.keys_changed()
        return json_response({"deleted_keys": [wanted.get(t, t) for t in deleted]})

    @bp.get("/key/list")
    def key_list() -> Response:
        admin()
        args = request.args
        page, size = args.get("page", 1, type=int) or 1, args.get("size", 10, type=int) or 10
        if page < 1 or not 1 <= size <= 100:
            raise BadRequest("page: must be >= 1, size between 1 and 100", param="page" if page < 1 else "size")
        rows, total = store().list_keys(user_id=args.get("user_id"), team_id=args.get("team_id"),
                                        key_alias=args.get("key_alias"), page=page, size=size)
        full = args.get("return_full_object", "false").lower() == "true"
        keys = [{**key_from_row(r).public(), "token": r["token"]} if full else r["token"] for r in rows]
        return json_response({"keys": keys, "total_count": total, "current_page": page,
                              "total_pages": math.ceil(total / size) if total else 0})

    @bp.post("/key/regenerate")
    @bp.post("/key/<path:key>/regenerate")
    def key_regenerate(key: str | None = None) -> Response:
        admin()
        body = json_body()
        _, record = find_key(key or body.get("key"))
        data = load_body(KeyBody, {k: v for k, v in body.items() if k not in ("key", "new_key")})
        check_models(data.get("models"), team_for(record.team_id))
        fresh = body.get("new_key") or new_key()
        if not isinstance(fresh, str) or not fresh.startswith("sk-"):
            raise BadRequest("new_key: a custom key must start with 'sk-'", param="new_key")
        changes = {**key_changes(data, time.time()), "key_name": key_name(fresh)}
        try:
            row = store().replace_token(record.token, token_of(fresh), changes)
        except KeyNotFound:
            raise NotFound("key: no such key", param="key") from None
        live.keys_changed()
        return json_response(key_reply(fresh, key_from_row(row)))

    # -- teams ------------------------------------------------------------------------------

    def team_changes(data: dict[str, Any], now: float) -> dict[str, Any]:
        changes = {k: v for k, v in data.items() if k != "team_id"}
        if "budget_duration" in data:
            changes["budget_anchor"] = now
        for name in ("models", "members_with_roles", "metadata"):
            if name in changes and changes[name] is None:
                changes[name] = {} if name == "metadata" else []
        if "blocked" in changes:
            changes["blocked"] = bool(changes["blocked"])
        return changes

    def find_team(team_id: Any) -> TeamRecord:
        if not isinstance(team_id, str) or not team_id:
            raise BadRequest("team_id: required", param="team_id")
        row = store().get_team(team_id)
        if row is None:
            raise NotFound(f"team_id: no team with id {team_id!r}", param="team_id")
        return team_from_row(row)

    def team_view(team: TeamRecord) -> dict[str, Any]:
        return {**team.public(), "spend": spend_of(team)}

    @bp.post("/team/new")
    def team_new() -> Response:
        admin()
        data = load_body(TeamBody, json_body())
        check_models(data.get("models"))
        now = time.time()
        row = {"team_id": data.get("team_id") or str(uuid.uuid4()), "created_at": now, "updated_at": now,
               "budget_anchor": now, **team_changes(data, now)}
        try:
            store().add_team(row)
        except TeamExists:
            raise BadRequest(f"team_id: a team with id {row['team_id']!r} already exists", param="team_id") from None
        live.keys_changed()
        return json_response(team_view(team_from_row(store().get_team(row["team_id"]))))

    @bp.get("/team/info")
    def team_info() -> Response:
        admin()
        team = find_team(request.args.get("team_id"))
        rows, _ = store().list_keys(team_id=team.team_id, size=10_000)
        keys = [{**key_from_row(r).public(), "token": r["token"]} for r in rows]
        return json_response({"team_id": team.team_id, "team_info": team_view(team), "keys": keys,
                              "team_memberships": []})

    @bp.post("/team/update")
    def team_update() -> Response:
        admin()
        body = json_body()
        team = find_team(body.get("team_id"))
        data = load_body(TeamBody, body)
        check_models(data.get("models"))
        try:
            row = store().update_team(team.team_id, team_changes(data, time.time()))
        except TeamNotFound:
            raise NotFound("team_id: no such team", param="team_id") from None
        live.keys_changed()
        return json_response({"team_id": team.team_id, "data": team_view(team_from_row(row))})

    @bp.post("/team/delete")
    def team_delete() -> Response:
        admin()
        team_ids = json_body().get("team_ids")
        if not team_ids or not (isinstance(team_ids, list) and all(isinstance(t, str) for t in team_ids)):
            raise BadRequest("team_ids: a list of team ids is required", param="team_ids")
        missing = [t for t in team_ids if store().get_team(t) is None]
        if missing:
            raise NotFound(f"team_ids: no such team: {', '.join(missing)}", param="team_ids")
        deleted = store().delete_teams(team_ids)
        live.keys_changed()
        return json_response({"deleted_teams": deleted})

    @bp.get("/team/list")
    def team_list() -> Response:
        admin()
        user_id = request.args.get("user_id")
        teams = [team_from_row(r) for r in store().all_teams()]
        if user_id:
            teams = [t for t in teams if any(m.get("user_id") == user_id for m in t.members_with_roles)]
        return json_response([team_view(t) for t in teams])

    return bp

