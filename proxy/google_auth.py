"""Google OAuth access tokens for Vertex AI, cached per credential and refreshed off the request path.

``vertex_credentials`` (LiteLLM's name) is a service-account file path, its JSON text or a mapping;
without it, application default credentials are used (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's
file, the metadata server). google-auth does the token exchange; this module decides *when*:

- the first request for a credential fetches its token (only that request waits, and concurrent
  first requests share the one exchange);
- from then on a background greenlet refreshes the token ``REFRESH_MARGIN`` seconds before it
  expires, so no request waits for a token exchange while one is held;
- a failed refresh is retried in the background until the held token expires.

Provider adapters do no I/O: they read tokens from the ``GoogleTokens`` held by the gateway.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import gevent
import orjson
from gevent.lock import Semaphore

from proxy.errors import AuthenticationError

log = logging.getLogger(__name__)

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
#: Seconds before expiry at which the background refresh runs.
REFRESH_MARGIN = 300.0
#: Seconds between attempts after a failed background refresh.
RETRY_DELAY = 15.0


def credential_info(credentials: Any) -> dict[str, Any] | None:
    """``vertex_credentials`` as a mapping: a dict, JSON text, or a file path; None means ADC."""
    if credentials is None or credentials == "":
        return None
    if isinstance(credentials, Mapping):
        return dict(credentials)
    if not isinstance(credentials, str):
        raise AuthenticationError("vertex_credentials must be a service-account file path or its JSON")
    text = credentials.strip()
    if not text.startswith("{"):
        try:
            with open(os.path.expanduser(text), "rb") as fh:
                text = fh.read().decode()
        except OSError as exc:
            raise AuthenticationError(f"vertex_credentials file {credentials!r} cannot be read: {exc}") from None
    try:
        info = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise AuthenticationError("vertex_credentials is not valid JSON") from None
    if not isinstance(info, dict):
        raise AuthenticationError("vertex_credentials must be a JSON object")
    return info


def credential_key(credentials: Any) -> str:
    """A short, stable cache key that holds no secret."""
    if credentials is None or credentials == "":
        return "adc"
    blob = orjson.dumps(credentials, option=orjson.OPT_SORT_KEYS) if isinstance(credentials, Mapping) \
        else str(credentials).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class _Held:
    """One credential: the google-auth object, its current token, and its refresher."""

    def __init__(self, source: Any, margin: float) -> None:
        self.source = source
        self.margin = margin
        self.creds: Any = None
        self.project: str | None = None
        self.token: str | None = None
        self.expires_at = 0.0
        self.lock = Semaphore()
        self.refresher: gevent.Greenlet | None = None
        self.closed = False

    def load(self) -> None:
        """Build the google-auth credentials (reads a file for ADC or a path; once)."""
        if self.creds is not None:
            return
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError
        from google.oauth2 import credentials as user_credentials
        from google.oauth2 import service_account

        try:
            info = credential_info(self.source)
            if info is None:
                self.creds, self.project = google.auth.default(scopes=list(SCOPES))
            elif info.get("type") == "service_account":
                self.creds = service_account.Credentials.from_service_account_info(info, scopes=list(SCOPES))
                self.project = info.get("project_id")
            elif info.get("type") == "authorized_user":  # gcloud's user credentials file
                self.creds = user_credentials.Credentials.from_authorized_user_info(info, scopes=list(SCOPES))
                self.project = info.get("quota_project_id")
            else:
                raise ValueError(f"credential type {info.get('type')!r} is not supported "
                                 "(use a service_account or authorized_user file)")
        except (DefaultCredentialsError, ValueError) as exc:
            raise AuthenticationError(f"vertex_ai credentials cannot be loaded: {exc}") from None

    def valid(self) -> str | None:
        # a token this close to expiry is not handed out (clock skew, time in flight)
        return self.token if self.token and time.time() < self.expires_at - min(10.0, self.margin / 2) else None

    def fetch(self) -> str:
        """Exchange for a fresh token now; concurrent callers wait for the one exchange."""
        with self.lock:
            token = self.valid()
            if token:
                return token
            self._refresh()
            assert self.token is not None
            return self.token

    def _refresh(self) -> None:
        from google.auth.exceptions import GoogleAuthError
        from google.auth.transport.requests import Request

        self.load()
        try:
            self.creds.refresh(Request())
        except (GoogleAuthError, OSError) as exc:
            raise AuthenticationError(f"vertex_ai token exchange failed: {exc}") from None
        self.token = self.creds.token
        expiry = getattr(self.creds, "expiry", None)  # naive UTC datetime
        self.expires_at = expiry.replace(tzinfo=datetime.UTC).timestamp() if expiry is not None \
            else time.time() + 3600
        self.schedule(max(1.0, self.expires_at - self.margin - time.time()))

    def schedule(self, delay: float) -> None:
        if self.closed:
            return
        if self.refresher is not None and not self.refresher.dead and self.refresher is not gevent.getcurrent():
            self.refresher.kill(block=False)
        self.refresher = gevent.spawn_later(delay, self.background)

    def background(self) -> None:
        """Refresh ahead of expiry, off the request path; retry while the held token lasts."""
        try:
            with self.lock:
                self._refresh()
            log.debug("vertex_ai token refreshed; valid until %s", time.ctime(self.expires_at))
        except Exception as exc:
            log.warning("vertex_ai token refresh failed (retrying in %gs): %s", RETRY_DELAY, exc)
            self.schedule(RETRY_DELAY)

    def close(self) -> None:
        self.closed = True
        if self.refresher is not None:
            self.refresher.kill(block=False)


class GoogleTokens:
    """Access tokens per credential, built once per worker and shared by its requests."""

    def __init__(self, margin: float = REFRESH_MARGIN) -> None:
        self.margin = margin
        self._held: dict[str, _Held] = {}

    def _entry(self, credentials: Any) -> _Held:
        key = credential_key(credentials)
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = _Held(credentials, self.margin)
        return held

    def token(self, credentials: Any) -> str:
        """A valid access token; only the first call for a credential waits for the exchange."""
        held = self._entry(credentials)
        return held.valid() or held.fetch()

    def project(self, credentials: Any) -> str | None:
        """The project the credentials name (service-account ``project_id``, or ADC's project)."""
        held = self._entry(credentials)
        held.load()
        return held.project

    def expires_at(self, credentials: Any) -> float:
        return self._entry(credentials).expires_at

    def close(self) -> None:
        for held in self._held.values():
            held.close()
