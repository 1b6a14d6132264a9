"""A config.yaml kept in an S3 or GCS bucket (LiteLLM's ``LITELLM_CONFIG_BUCKET_*`` variables).

For hosts that cannot mount a file (Fargate, Railway, ...)::

    LITELLM_CONFIG_BUCKET_TYPE=s3          # or gcs
    LITELLM_CONFIG_BUCKET_NAME=my-bucket
    LITELLM_CONFIG_BUCKET_OBJECT_KEY=proxy_config.yaml

The object is fetched at start (and again on every reload) and written to a local copy, which
the proxy then treats like any config file. S3 requests are SigV4-signed by botocore with the
usual AWS credentials (environment, profile); ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``
point at an S3-compatible store. GCS uses its JSON API with ``GOOGLE_OAUTH_ACCESS_TOKEN`` when
set (else no token: public objects), and honours ``STORAGE_EMULATOR_HOST``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import requests

from proxy.errors import ConfigError
from proxy.statedir import state_dir

TIMEOUT = (5.0, 30.0)


@dataclass(frozen=True)
class BucketSource:
    kind: str  # s3 | gcs
    bucket: str
    key: str

    @property
    def label(self) -> str:
        return f"{self.kind}://{self.bucket}/{self.key}"

    def fetch(self) -> bytes:
        """The object's bytes; ConfigError (with the reason) when it cannot be had."""
        try:
            response = self._s3_get() if self.kind == "s3" else self._gcs_get()
        except requests.RequestException as exc:
            raise ConfigError([f"{self.label}: cannot fetch the config: {exc}"]) from None
        if response.status_code != 200:
            raise ConfigError([f"{self.label}: cannot fetch the config: HTTP {response.status_code} "
                               f"{response.text[:200]}"])
        return response.content

    def _s3_get(self) -> requests.Response:
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.session import get_session

        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        key = quote(self.key, safe="/")
        if endpoint:
            url = f"{endpoint.rstrip('/')}/{self.bucket}/{key}"  # path style, as S3-compatible stores expect
        else:
            url = f"https://{self.bucket}.s3.{region}.amazonaws.com/{key}"
        request = AWSRequest(method="GET", url=url)
        credentials = get_session().get_credentials()
        if credentials is not None:
            S3SigV4Auth(credentials.get_frozen_credentials(), "s3", region).add_auth(request)
        return requests.get(url, headers=dict(request.headers.items()), timeout=TIMEOUT)

    def _gcs_get(self) -> requests.Response:
        base = os.environ.get("STORAGE_EMULATOR_HOST") or "https://storage.googleapis.com"
        url = f"{base.rstrip('/')}/storage/v1/b/{self.bucket}/o/{quote(self.key, safe='')}?alt=media"
        token = os.environ.get("GOOGLE_OAUTH_ACCESS_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(url, headers=headers, timeout=TIMEOUT)


def bucket_source(environ: Mapping[str, str] | None = None) -> BucketSource | None:
    """The configured bucket object, or None when the variables are not set."""
    env = os.environ if environ is None else environ
    bucket, key = env.get("LITELLM_CONFIG_BUCKET_NAME"), env.get("LITELLM_CONFIG_BUCKET_OBJECT_KEY")
    if not bucket:
        return None
    kind = (env.get("LITELLM_CONFIG_BUCKET_TYPE") or "s3").strip().lower()
    if kind not in ("s3", "gcs"):
        raise ConfigError([f"LITELLM_CONFIG_BUCKET_TYPE={kind!r}: must be s3 or gcs"])
    if not key:
        raise ConfigError(["LITELLM_CONFIG_BUCKET_OBJECT_KEY is not set"])
    return BucketSource(kind, bucket, key)


def local_copy_path() -> Path:
    """Where the fetched config lives: ``config.yaml`` in the state directory (proxy/statedir.py)."""
    return state_dir()[0] / "config.yaml"


def materialize(source: BucketSource, path: Path | None = None) -> Path:
    """Fetch the object and replace the local copy atomically; the copy's path."""
    path = path or local_copy_path()
    data = source.fetch()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def refresh(path: Path | None) -> None:
    """Before a reload: re-fetch the bucket object into ``path`` when the config comes from a bucket."""
    source = bucket_source()
    if source is not None and path is not None and path == local_copy_path():
        materialize(source, path)


def config_path_from_env() -> str | None:
    """``CONFIG_FILE_PATH``, else the local copy of the bucket's config (fetched now), else None."""
    path = os.environ.get("CONFIG_FILE_PATH")
    if path:
        return path
    source = bucket_source()
    return str(materialize(source)) if source is not None else None
