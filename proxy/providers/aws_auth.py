"""AWS request signing shared by the adapters that speak to AWS (``bedrock/``, ``sagemaker/``).

Credentials come, in LiteLLM's order, from:

1. a bearer key (``api_key``, or ``AWS_BEARER_TOKEN_BEDROCK`` for Bedrock): no signing at all;
2. ``aws_role_name`` + ``aws_session_name``: STS ``AssumeRole`` (or ``AssumeRoleWithWebIdentity``
   with ``aws_web_identity_token``), called with the deployment's static keys when it has them,
   else botocore's default chain, at ``aws_sts_endpoint`` when given;
3. ``aws_access_key_id`` + ``aws_secret_access_key`` (+ ``aws_session_token``);
4. the environment and the shared credentials/config files (``aws_profile_name``).

Adapters do no I/O, so temporary credentials live in ``AssumedRoles``: one background greenlet per
role fetches them and fetches again a margin before they expire. Only the first request for a role
waits for the exchange; every later one signs with what is held, and a refresh never happens on a
request's path.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gevent
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.configloader import load_config
from botocore.credentials import ConfigProvider, Credentials, EnvProvider, SharedCredentialProvider
from botocore.exceptions import BotoCoreError, ClientError
from gevent.event import Event

from proxy.errors import AuthenticationError

if TYPE_CHECKING:
    from proxy.deployment import Deployment
    from proxy.providers.base import UpstreamCall

log = logging.getLogger(__name__)

#: litellm_params that place and authenticate a call to AWS.
AWS_PARAMS = frozenset(
    {
        "aws_region_name", "region_name", "aws_access_key_id", "aws_secret_access_key",
        "aws_session_token", "aws_profile_name", "aws_role_name", "aws_session_name",
        "aws_web_identity_token", "aws_sts_endpoint",
    }
)
DEFAULT_REGION = "us-east-1"
REFRESH_MARGIN = 300.0  # refresh temporary credentials this long before they expire
FIRST_FETCH_TIMEOUT = 30.0
MAX_BACKOFF = 60.0


def region_of(deployment: Deployment) -> str:
    params = deployment.params
    return str(params.get("aws_region_name") or params.get("region_name") or os.environ.get("AWS_REGION")
               or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION)


@dataclass(frozen=True, slots=True)
class RoleSpec:
    """Everything that decides which temporary credentials STS hands out (the cache key)."""

    role_arn: str
    session_name: str
    region: str
    sts_endpoint: str | None = None
    web_identity_token: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None


@dataclass(slots=True)
class Temporary:
    credentials: Credentials
    expires: float  # epoch seconds


def assume_role(spec: RoleSpec) -> Temporary:
    """One STS exchange through botocore (blocking; run only in the refresher greenlet)."""
    import botocore.session  # the session machinery is only needed when a role is configured

    session = botocore.session.get_session()
    kwargs: dict[str, Any] = {"region_name": spec.region}
    if spec.sts_endpoint:
        kwargs["endpoint_url"] = spec.sts_endpoint
    if spec.access_key_id and spec.secret_access_key:
        kwargs.update(aws_access_key_id=spec.access_key_id, aws_secret_access_key=spec.secret_access_key,
                      aws_session_token=spec.session_token)
    if spec.web_identity_token:
        from botocore import UNSIGNED
        from botocore.config import Config

        token = spec.web_identity_token
        if os.path.isfile(token):  # LiteLLM accepts a token file path or the token itself
            with open(token, encoding="utf-8") as fh:
                token = fh.read().strip()
        client = session.create_client("sts", config=Config(signature_version=UNSIGNED), **kwargs)
        answer = client.assume_role_with_web_identity(RoleArn=spec.role_arn, RoleSessionName=spec.session_name,
                                                      WebIdentityToken=token, DurationSeconds=3600)
    else:
        client = session.create_client("sts", **kwargs)
        answer = client.assume_role(RoleArn=spec.role_arn, RoleSessionName=spec.session_name)
    found = answer["Credentials"]
    expiration = found["Expiration"]
    expires = expiration.timestamp() if hasattr(expiration, "timestamp") else time.time() + 3600
    return Temporary(Credentials(found["AccessKeyId"], found["SecretAccessKey"], found["SessionToken"]), expires)


class _Held:
    """The credentials of one role and the greenlet that keeps them fresh."""

    __slots__ = ("error", "greenlet", "ready", "temporary")

    def __init__(self) -> None:
        self.ready = Event()
        self.temporary: Temporary | None = None
        self.error: str | None = None
        self.greenlet: gevent.Greenlet | None = None


class AssumedRoles:
    """Temporary credentials per role, fetched and refreshed by background greenlets."""

    def __init__(self, fetch: Callable[[RoleSpec], Temporary] = assume_role, *,
                 margin: float = REFRESH_MARGIN, clock: Callable[[], float] = time.time) -> None:
        self._fetch = fetch
        self._margin = margin
        self._clock = clock
        self._held: dict[RoleSpec, _Held] = {}

    def credentials(self, spec: RoleSpec, timeout: float = FIRST_FETCH_TIMEOUT) -> Credentials:
        """The role's current credentials; waits only while the very first exchange is under way."""
        held = self._held.get(spec)
        if held is None:
            held = self._held[spec] = _Held()
            held.greenlet = gevent.spawn(self._keep_fresh, spec, held)
        if not held.ready.wait(timeout):
            raise AuthenticationError(f"AWS: STS did not answer within {timeout:g}s for role {spec.role_arn}")
        temporary = held.temporary
        if temporary is None or temporary.expires <= self._clock():
            raise AuthenticationError(f"AWS: could not assume role {spec.role_arn}: {held.error or 'expired'}")
        return temporary.credentials

    def _keep_fresh(self, spec: RoleSpec, held: _Held) -> None:
        backoff = 1.0
        while True:
            try:
                temporary = self._fetch(spec)
            except (BotoCoreError, ClientError, OSError, KeyError, ValueError) as exc:
                held.error = str(exc)
                log.warning("AWS: assuming role %s failed (retrying in %.0fs): %s", spec.role_arn, backoff, exc)
                held.ready.set()  # waiters learn of the failure instead of hanging
                gevent.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff = 1.0
            held.temporary, held.error = temporary, None
            held.ready.set()
            lifetime = temporary.expires - self._clock()
            # refresh a margin before expiry; short-lived credentials at half their life
            gevent.sleep(max(1.0, lifetime - self._margin if lifetime > 2 * self._margin else lifetime / 2))

    def close(self) -> None:
        for held in self._held.values():
            if held.greenlet is not None:
                held.greenlet.kill(block=False)
        self._held.clear()


def local_credentials(profile: str | None, explicit: bool) -> Credentials | None:
    """botocore's static providers: environment, then shared credentials and config files."""
    providers: list[Any] = [] if explicit else [EnvProvider()]
    name = profile or "default"
    creds_file = os.path.expanduser(os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"))
    config_file = os.path.expanduser(os.environ.get("AWS_CONFIG_FILE", "~/.aws/config"))
    providers.append(SharedCredentialProvider(creds_file, name))
    providers.append(ConfigProvider(config_file, name, config_parser=load_config))
    for provider in providers:
        try:
            found = provider.load()
        except BotoCoreError:
            continue
        if found is not None:
            frozen = found.get_frozen_credentials()
            return Credentials(frozen.access_key, frozen.secret_key, frozen.token)
    return None


def role_spec(deployment: Deployment, region: str) -> RoleSpec | None:
    params = deployment.params
    role, session = params.get("aws_role_name"), params.get("aws_session_name")
    if not role:
        return None
    if not session:
        raise AuthenticationError("AWS: aws_role_name needs aws_session_name (the STS RoleSessionName)")
    return RoleSpec(str(role), str(session), region, params.get("aws_sts_endpoint"),
                    params.get("aws_web_identity_token"), params.get("aws_access_key_id"),
                    params.get("aws_secret_access_key"), params.get("aws_session_token"))


class AwsSigner:
    """Signs calls for one AWS service with a deployment's credentials (see the module docstring)."""

    def __init__(self, service: str, roles: AssumedRoles, bearer_env: str | None = None) -> None:
        self.service = service
        self.roles = roles
        self.bearer_env = bearer_env
        # deployment -> (credentials or role, bearer key); resolved once per deployment
        self._resolved: weakref.WeakKeyDictionary[Deployment, tuple[Credentials | RoleSpec | None, str | None]] = \
            weakref.WeakKeyDictionary()

    def resolve(self, deployment: Deployment) -> tuple[Credentials | RoleSpec | None, str | None]:
        """Local lookups only: static credentials, a role to assume, or a bearer key."""
        params = deployment.params
        if deployment.api_key:
            return None, str(deployment.api_key)
        spec = role_spec(deployment, region_of(deployment))
        if spec is not None:
            return spec, None
        key_id, secret = params.get("aws_access_key_id"), params.get("aws_secret_access_key")
        if key_id and secret:
            return Credentials(str(key_id), str(secret), params.get("aws_session_token")), None
        if self.bearer_env and os.environ.get(self.bearer_env):
            return None, os.environ[self.bearer_env]
        profile = (params.get("aws_profile_name") or os.environ.get("AWS_PROFILE")
                   or os.environ.get("AWS_DEFAULT_PROFILE"))
        credentials = local_credentials(profile, explicit=bool(params.get("aws_profile_name")))
        if credentials is None:
            bearer = f", {self.bearer_env}" if self.bearer_env else ""
            raise AuthenticationError(
                f"{self.service}: no AWS credentials found: set aws_access_key_id/aws_secret_access_key, "
                "aws_role_name/aws_session_name (or api_key) on the deployment, AWS_ACCESS_KEY_ID/"
                f"AWS_SECRET_ACCESS_KEY{bearer} in the environment, or a profile with static keys "
                "(aws_profile_name)")
        return credentials, None

    def sign(self, call: UpstreamCall, deployment: Deployment, region: str | None = None) -> UpstreamCall:
        resolved = self._resolved.get(deployment)
        if resolved is None:
            resolved = self._resolved[deployment] = self.resolve(deployment)
        found, bearer = resolved
        headers = {k: v for k, v in call.headers.items() if k.lower() != "authorization"}
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
            call.headers = headers
            return call
        credentials = self.roles.credentials(found) if isinstance(found, RoleSpec) else found
        request = AWSRequest(method=call.method, url=call.url, data=call.body or b"", headers=headers)
        SigV4Auth(credentials, self.service, region or region_of(deployment)).add_auth(request)
        call.headers = dict(request.headers.items())
        return call
