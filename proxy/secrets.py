"""Secret managers: where ``os.environ/NAME`` in the config is looked up before the environment.

``general_settings.key_management_system`` names one (LiteLLM's values):

- ``aws_secret_manager``: AWS Secrets Manager through boto3, with boto3's own credential chain
  and endpoint settings (``AWS_ENDPOINT_URL_SECRETS_MANAGER``, ``AWS_ENDPOINT_URL``, profiles,
  roles); the region is ``key_management_settings.aws_region_name`` or ``AWS_REGION_NAME``, else
  boto3's. The secret ``NAME`` holds the value as its string; with
  ``key_management_settings.primary_secret_name`` one JSON secret holds every ``NAME: value``.
- ``hashicorp_vault``: Vault's KV v2 over HTTP, as LiteLLM reads it: ``GET
  $HCP_VAULT_ADDR/v1/$HCP_VAULT_MOUNT_NAME/data/[$HCP_VAULT_PATH_PREFIX/]NAME`` with
  ``X-Vault-Token: $HCP_VAULT_TOKEN`` (and ``X-Vault-Namespace: $HCP_VAULT_NAMESPACE``); the value
  is the secret's ``key`` field (``data.data.key``).

``key_management_settings``: ``hosted_keys`` limits the names asked of the manager,
``access_mode: write_only`` asks it nothing, ``refresh_interval`` (seconds; for Vault also
``HCP_VAULT_REFRESH_INTERVAL``; default one day, as LiteLLM) is how long a value read is reused.

A secret the manager does not have falls back to the environment. A manager that cannot be
reached while the master validates the config fails the boot (or the reload) with one line; a
worker that cannot reach it later serves the value it read before (or the environment's) and says
so once. Values are never logged: only names are.
"""

from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import orjson

from proxy.errors import ConfigError

log = logging.getLogger(__name__)

SYSTEMS = ("aws_secret_manager", "hashicorp_vault")
DEFAULT_REFRESH_INTERVAL = 86400.0  # LiteLLM's SECRET_MANAGER_REFRESH_INTERVAL
TIMEOUT = 5.0


class Unreachable(Exception):
    """The manager did not answer, or refused us (network, credentials, permissions)."""


class SecretManager(ABC):
    """One backend: ``read(name)`` -> the value, None when it has no such secret."""

    system = ""

    @abstractmethod
    def read(self, name: str) -> str | None: ...


class AWSSecretManager(SecretManager):
    system = "aws_secret_manager"

    def __init__(self, settings: Mapping[str, Any]) -> None:
        import boto3
        from botocore.config import Config as BotoConfig

        region = settings.get("aws_region_name") or os.environ.get("AWS_REGION_NAME")
        self.client = boto3.session.Session().client(
            "secretsmanager", region_name=region,
            config=BotoConfig(connect_timeout=TIMEOUT, read_timeout=TIMEOUT, retries={"max_attempts": 2}))
        self.primary = settings.get("primary_secret_name")
        self._primary_values: dict[str, Any] | None = None

    def _get(self, secret_id: str) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self.client.get_secret_value(SecretId=secret_id)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ResourceNotFoundException":
                return None
            raise Unreachable(f"{code or 'error'}: {exc.response.get('Error', {}).get('Message', '')}") from None
        except BotoCoreError as exc:
            raise Unreachable(str(exc)) from None
        value = answer.get("SecretString")
        return value if isinstance(value, str) else None

    def read(self, name: str) -> str | None:
        if not self.primary:
            return self._get(name)
        if self._primary_values is None:
            raw = self._get(self.primary)
            try:
                values = orjson.loads(raw) if raw else {}
            except orjson.JSONDecodeError:
                raise Unreachable(f"secret {self.primary} (primary_secret_name) is not a JSON object") from None
            self._primary_values = values if isinstance(values, dict) else {}
        value = self._primary_values.get(name)
        return None if value is None else str(value)


class VaultSecretManager(SecretManager):
    system = "hashicorp_vault"

    def __init__(self, settings: Mapping[str, Any]) -> None:
        import requests

        self.session = requests.Session()
        self.addr = os.environ.get("HCP_VAULT_ADDR", "http://127.0.0.1:8200").rstrip("/")
        token = os.environ.get("HCP_VAULT_TOKEN", "")
        if not token:
            raise ConfigError(["general_settings.key_management_system: hashicorp_vault needs HCP_VAULT_TOKEN"])
        self.session.headers["X-Vault-Token"] = token
        namespace = os.environ.get("HCP_VAULT_NAMESPACE")
        if namespace:
            self.session.headers["X-Vault-Namespace"] = namespace
        self.mount = os.environ.get("HCP_VAULT_MOUNT_NAME", "secret").strip("/")
        self.prefix = (os.environ.get("HCP_VAULT_PATH_PREFIX") or "").strip("/")

    def url(self, name: str) -> str:
        path = f"{self.prefix}/{name}" if self.prefix else name
        return f"{self.addr}/v1/{self.mount}/data/{path}"

    def read(self, name: str) -> str | None:
        import requests

        try:
            resp = self.session.get(self.url(name), timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise Unreachable(f"{self.addr}: {type(exc).__name__}") from None
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise Unreachable(f"{self.addr} answered {resp.status_code}")
        try:
            data = resp.json()["data"]["data"]
        except (ValueError, KeyError, TypeError):
            raise Unreachable(f"{self.addr}: not a KV v2 answer for {name}") from None
        value = data.get("key") if isinstance(data, dict) else None
        return None if value is None else str(value)


def make_manager(system: str, settings: Mapping[str, Any]) -> SecretManager:
    if system == "aws_secret_manager":
        return AWSSecretManager(settings)
    if system == "hashicorp_vault":
        return VaultSecretManager(settings)
    raise ConfigError([f"general_settings.key_management_system: {system!r} is not supported here "
                       f"(supported: {', '.join(SYSTEMS)})"])


class Secrets:
    """The ``os.environ/`` lookup of one process: manager first (values kept ``refresh_interval``
    seconds), then the environment. Keep one per process so reloads reuse what was read."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], tuple[str | None, float]] = {}  # (system, name) -> (value, read at)
        self._warned: set[str] = set()

    def lookup(self, general_settings: Mapping[str, Any], strict: bool) -> Lookup:
        """The resolver for one config load; ``strict`` (the master's check) turns an unreachable
        manager into a ConfigError instead of serving what was read before."""
        system = general_settings.get("key_management_system")
        settings = general_settings.get("key_management_settings") or {}
        if not system:
            return Lookup(self, None, settings, strict)
        if not isinstance(settings, Mapping):
            raise ConfigError(["general_settings.key_management_settings: Must be a mapping."])
        return Lookup(self, make_manager(str(system), settings), settings, strict)


class Lookup:
    """``lookup(name)`` -> (value, came from outside the file) for one config load."""

    def __init__(self, secrets: Secrets, manager: SecretManager | None, settings: Mapping[str, Any],
                 strict: bool) -> None:
        self.secrets, self.manager, self.strict = secrets, manager, strict
        hosted = settings.get("hosted_keys")
        self.hosted = set(hosted) if isinstance(hosted, list) else None
        self.reads = settings.get("access_mode", "read_only") != "write_only"
        interval = settings.get("refresh_interval") or (
            os.environ.get("HCP_VAULT_REFRESH_INTERVAL") if manager and manager.system == "hashicorp_vault" else None)
        self.ttl = float(interval or DEFAULT_REFRESH_INTERVAL)

    def __call__(self, name: str) -> str | None:
        manager = self.manager
        if manager is None or not self.reads or (self.hosted is not None and name not in self.hosted):
            return os.environ.get(name)
        key = (manager.system, name)
        cached = self.secrets._values.get(key)
        if cached is not None and time.monotonic() - cached[1] < self.ttl:
            value = cached[0]
        else:
            try:
                value = manager.read(name)
            except Unreachable as exc:
                if self.strict:
                    raise ConfigError([f"general_settings.key_management_system: {manager.system} cannot be "
                                       f"reached to read {name}: {exc}"]) from None
                if manager.system not in self.secrets._warned:
                    self.secrets._warned.add(manager.system)
                    log.error("secret manager %s unreachable (%s); serving the values read before, "
                              "else the environment's", manager.system, exc)
                return cached[0] if cached is not None and cached[0] is not None else os.environ.get(name)
            self.secrets._values[key] = (value, time.monotonic())
            self.secrets._warned.discard(manager.system)
            log.debug("secret %s %s %s", name, "read from" if value is not None else "not in", manager.system)
        return value if value is not None else os.environ.get(name)
