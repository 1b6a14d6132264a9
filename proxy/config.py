"""Load a LiteLLM-format ``config.yaml`` into a validated, resolved ``Config``.

Order matters and follows LiteLLM: ``environment_variables`` are exported first, then every
``os.environ/NAME`` value anywhere in the file is resolved, then ``credential_list`` entries are
merged into the model entries that name them, then marshmallow validates the whole file against
``config_schema.ConfigFile``. Errors name the config path (``model_list[2].litellm_params.model:
...``) and are all reported at once. Unknown keys inside ``litellm_params`` are provider params
and pass through untouched.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from marshmallow import ValidationError

from proxy.config_schema import KNOWN_SECTIONS, ConfigFile, ModelEntry
from proxy.errors import ConfigError
from proxy.secrets import Secrets

log = logging.getLogger(__name__)

ENV_PREFIX = "os.environ/"
BARE_STAR = re.compile(r"(:[ \t]+)\*([ \t]*(?:#.*)?)$", re.MULTILINE)


@dataclass
class Config:
    """A loaded config: validated sections plus what resolution learnt along the way."""

    path: Path | None
    model_list: list[dict[str, Any]]
    litellm_settings: dict[str, Any]
    router_settings: dict[str, Any]
    general_settings: dict[str, Any]
    environment_variables: dict[str, Any]
    credential_list: list[dict[str, Any]]
    pipeline: list[Any] | None
    env_paths: set[str] = field(default_factory=set)  # config paths whose value came from os.environ/
    env_values: frozenset[str] = frozenset()  # the values those os.environ/ references resolved to
    warnings: list[str] = field(default_factory=list)

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def supplied_values(self, credential_name: str | None = None) -> frozenset[str]:
        """Values that came from outside the file for a deployment using ``credential_name``:
        every environment value, plus that credential's values. They are never shown."""
        for cred in self.credential_list:
            if credential_name and cred["credential_name"] == credential_name:
                return self.env_values | scalar_strings(cred["credential_values"])
        return self.env_values

    def credential_keys(self, name: str | None) -> set[str]:
        """Param names a credential supplies (their values are secrets wherever they appear)."""
        for cred in self.credential_list:
            if cred["credential_name"] == name:
                return set(cred["credential_values"])
        return set()

    def setting(self, name: str, default: Any = None) -> Any:
        """A router-level setting: router_settings wins over litellm_settings (LiteLLM's rule)."""
        for section in (self.router_settings, self.litellm_settings):
            if section.get(name) is not None:
                return section[name]
        return default


def flatten_errors(messages: Any, prefix: str = "") -> list[str]:
    """marshmallow's nested error dict -> ``["model_list[2].litellm_params.model: ..."]``."""
    if isinstance(messages, dict):
        out: list[str] = []
        for key, value in messages.items():
            if isinstance(key, int):
                path = f"{prefix}[{key}]"
            elif key == "_schema":
                path = prefix
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            out.extend(flatten_errors(value, path))
        return out
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return [f"{prefix or '(config)'}: {' '.join(messages)}"]
    if isinstance(messages, list):
        return [line for m in messages for line in flatten_errors(m, prefix)]
    return [f"{prefix or '(config)'}: {messages}"]


def resolve_env(
    value: Any,
    path: str,
    env_paths: set[str],
    missing: list[str],
    env_values: set[str] | None = None,
    lookup: Callable[[str], str | None] | None = None,
) -> Any:
    """Replace every ``os.environ/NAME`` string, at any depth, by the variable's value.

    ``lookup`` (a secret manager, proxy/secrets.py) is asked instead of the environment when
    given; it falls back to the environment itself. The values found are added to
    ``env_values``: wherever they travel later (an organization list expanded, a credential
    merged, a wildcard made concrete), they are never shown.
    """
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX):]
        env_paths.add(path)
        found = lookup(name) if lookup is not None else os.environ.get(name)
        if found is None:
            where = "in neither the secret manager nor the environment" if lookup is not None else "not set"
            missing.append(f"{path}: environment variable {name} is {where}")
        if found and env_values is not None:
            env_values.add(found)
        return found
    if isinstance(value, dict):
        return {
            k: resolve_env(v, f"{path}.{k}" if path else str(k), env_paths, missing, env_values, lookup)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [resolve_env(v, f"{path}[{i}]", env_paths, missing, env_values, lookup) for i, v in enumerate(value)]
    return value


def secret_lookup(raw: dict[str, Any], secrets: Secrets | None, strict: bool) -> Callable[[str], str | None] | None:
    """The ``os.environ/`` resolver the file asks for: its secret manager's, or None (the environment).

    The manager's own settings are read from the environment only.
    """
    general = raw.get("general_settings")
    if not isinstance(general, dict) or not general.get("key_management_system"):
        return None
    own = {k: general.get(k) for k in ("key_management_system", "key_management_settings")}
    settings = resolve_env(own, "general_settings", set(), [], None)
    return (secrets or Secrets()).lookup(settings, strict)


def scalar_strings(value: Any) -> set[str]:
    """Every scalar inside ``value`` as a string (how a supplied value is recognised later)."""
    if isinstance(value, dict):
        return {s for v in value.values() for s in scalar_strings(v)}
    if isinstance(value, list):
        return {s for v in value for s in scalar_strings(v)}
    if value is None or value == "":
        return set()
    return {str(value)}


def read_text(path: Path) -> str:
    """The file's text; an unreadable file is a ConfigError naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ConfigError([f"{path}: cannot read config file: {reason}"]) from exc


def read_yaml(path: Path, text: str | None = None) -> dict[str, Any]:
    """Parse the file (or ``text``, its contents as read earlier); YAML errors become a
    ConfigError with the line, never a traceback."""
    if text is None:
        text = read_text(path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # LiteLLM's docs write `model_name: *`, which YAML reads as an empty alias. Accept it as
        # the wildcard it means, and say so, rather than refuse a documented example.
        fixed = BARE_STAR.sub(r'\1"*"\2', text)
        if "alias" in str(exc) and fixed != text:
            try:
                raw = yaml.safe_load(fixed)
            except yaml.YAMLError:
                pass
            else:
                log.warning("%s: bare * read as the wildcard \"*\"; quote it to silence this", path)
                return raw if isinstance(raw, dict) else {}
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        hint = ""
        if "alias" in str(exc):
            hint = "; a bare * is a YAML alias: quote it, e.g. model_name: \"*\""
        raise ConfigError([f"{path}: invalid YAML{where}: {problem}{hint}"]) from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: the config must be a mapping with sections such as model_list"])
    return raw


def export_environment(raw: dict[str, Any]) -> None:
    """``environment_variables`` go into os.environ before anything else is resolved."""
    env = raw.get("environment_variables") or {}
    if not isinstance(env, dict):
        raise ConfigError(["environment_variables: Must be a mapping of NAME: value."])
    for name, value in env.items():
        if value is not None:
            os.environ[str(name)] = str(value)


def apply_credentials(data: dict[str, Any], errors: list[str]) -> None:
    """Merge ``credential_list`` values into entries naming them; explicit params win."""
    creds = {c["credential_name"]: c["credential_values"] for c in data.get("credential_list") or []}
    for i, entry in enumerate(data.get("model_list") or []):
        params = entry["litellm_params"]
        name = params.get("litellm_credential_name")
        if not name:
            continue
        if name not in creds:
            known = ", ".join(sorted(creds)) or "none defined"
            errors.append(
                f"model_list[{i}].litellm_params.litellm_credential_name: unknown credential "
                f"{name!r} (credential_list has: {known})"
            )
            continue
        for key, value in creds[name].items():
            params.setdefault(key, value)


def load_config(
    source: str | os.PathLike[str] | dict[str, Any] | None = None,
    text: str | None = None,
    *,
    secrets: Secrets | None = None,
    strict: bool = True,
) -> Config:
    """Load, resolve and validate a config file (or an already-parsed mapping, for tests).

    ``None`` reads ``CONFIG_FILE_PATH``. ``text`` is the file's contents as read earlier (a
    validated snapshot): it is parsed instead of the file, which may have changed since.
    ``secrets`` is the process's secret-manager cache (reused across reloads); ``strict=False``
    (a worker applying a validated snapshot) serves cached or environment values when the
    manager cannot be reached, where the master's check fails. Raises ConfigError listing
    every problem found.
    """
    if source is None:
        env_path = os.environ.get("CONFIG_FILE_PATH")
        if not env_path:
            raise ConfigError(["no config given: pass --config FILE or set CONFIG_FILE_PATH"])
        source = env_path
    path: Path | None = None
    if isinstance(source, dict):
        raw = source
    else:
        path = Path(source).resolve()
        raw = read_yaml(path, text)

    export_environment(raw)
    env_paths: set[str] = set()
    env_values: set[str] = set()
    missing: list[str] = []
    lookup = secret_lookup(raw, secrets, strict)
    resolved = resolve_env(raw, "", env_paths, missing, env_values, lookup)

    try:
        data = ConfigFile().load(resolved)
    except ValidationError as exc:
        raise ConfigError(flatten_errors(exc.messages)) from exc

    errors: list[str] = []
    apply_credentials(data, errors)
    if errors:
        raise ConfigError(errors)

    warnings = [f"{m} (the value is left empty)" for m in missing]
    for key in data:
        if key not in KNOWN_SECTIONS:
            warnings.append(f"{key}: unknown top-level section, ignored")
    return Config(
        path=path,
        model_list=data.get("model_list") or [],
        litellm_settings=data.get("litellm_settings") or {},
        router_settings=data.get("router_settings") or {},
        general_settings=data.get("general_settings") or {},
        environment_variables=data.get("environment_variables") or {},
        credential_list=data.get("credential_list") or [],
        pipeline=data.get("pipeline"),
        env_paths=env_paths,
        env_values=frozenset(env_values),
        warnings=warnings,
    )


def resolve_model_entry(entry: Any, config: Config, env_values: set[str] | None = None) -> dict[str, Any]:
    """A runtime model (``POST /model/new``, the store) checked and resolved like a config entry.

    ``os.environ/`` values are resolved (and added to ``env_values``) and the config's credentials
    merged; raises ConfigError whose lines name the field (``litellm_params.model: ...``).
    """
    if not isinstance(entry, dict):
        raise ConfigError(["(body): must be a JSON object with model_name and litellm_params"])
    missing: list[str] = []
    resolved = resolve_env(entry, "", set(), missing, env_values)
    try:
        data = ModelEntry().load(resolved)
    except ValidationError as exc:
        raise ConfigError(flatten_errors(exc.messages)) from exc
    errors: list[str] = []
    wrapper = {"model_list": [data], "credential_list": config.credential_list}
    apply_credentials(wrapper, errors)
    if errors:
        raise ConfigError([e.replace("model_list[0].", "") for e in errors])
    return data
