"""`MockGoogle`: the test-side handle of the Google stand-in (`gemini_server.py`): Gemini API,
Vertex AI and the OAuth token endpoint in one process.

`service_account(path)` writes a service-account key file whose `token_uri` is this server's
`/token`, with a fresh RSA key whose public half the server checks token requests against.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import orjson

from . import MockOpenAI

__all__ = ["MockGoogle"]

SERVER = Path(__file__).resolve().with_name("gemini_server.py")


def rsa_key_pair() -> tuple[bytes, bytes]:
    """(private PKCS#8 PEM, public PEM) of a new 2048-bit RSA key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


class MockGoogle(MockOpenAI):
    """Start, stop and inspect one Google stand-in process."""

    server = SERVER

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_key: str | None = None,
                 fail_status: int | None = None, delay: float = 0.0, chunk_delay: float = 0.0,
                 record: bool = True, token_ttl: int = 3600, startup_timeout: float = 10.0) -> None:
        super().__init__(host, port, api_key=api_key, fail_status=fail_status, delay=delay,
                         chunk_delay=chunk_delay, record=record, models=None, startup_timeout=startup_timeout)
        self._private, public = rsa_key_pair()
        self._keydir = tempfile.TemporaryDirectory()
        public_path = Path(self._keydir.name) / "public.pem"
        public_path.write_bytes(public)
        self._args += ["--public-key", str(public_path), "--token-ttl", str(token_ttl)]

    @property
    def url(self) -> str:
        """The server root: a Vertex `api_base`; the Gemini API base is `url + "/v1beta"`."""
        return self.base_url

    def service_account(self, project: str = "mock-project") -> dict[str, Any]:
        """A service-account key (as its JSON object) whose tokens come from this server."""
        return {
            "type": "service_account", "project_id": project, "private_key_id": "mock-key-1",
            "private_key": self._private.decode(), "client_email": f"proxy@{project}.iam.gserviceaccount.com",
            "client_id": "1234567890", "token_uri": f"{self.base_url}/token",
        }

    def write_service_account(self, path: Path, project: str = "mock-project") -> Path:
        path.write_bytes(orjson.dumps(self.service_account(project)))
        return path

    def tokens(self) -> list[dict[str, Any]]:
        """Access tokens issued so far (each with the service account that asked: `iss`)."""
        return orjson.loads(self._call("GET", "/__mock__/tokens"))

    def stop(self) -> None:
        super().stop()
        self._keydir.cleanup()
