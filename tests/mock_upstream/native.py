"""`MockNativeServers`: the test-side handle of the Bedrock / SageMaker / STS / Cohere upstream
(`native_servers.py`).

It runs the server in a child process, like `MockOpenAI`, with the same `start()`, `stop()`,
`requests()`, `clear()` and `configure()`. One server answers every route, so its root `url` is
what each deployment points at::

    with MockNativeServers() as mock:
        {"model": "bedrock/amazon.titan-embed-text-v2:0", "aws_bedrock_runtime_endpoint": mock.url, ...}
        {"model": "sagemaker/my-endpoint", "api_base": mock.url, ...}
        {"model": "cohere/command-r", "api_base": mock.url, "api_key": "..."}
        {"aws_sts_endpoint": mock.url}   # with aws_role_name + aws_session_name

AWS routes accept signatures made with `AWS_KEY_ID` / `AWS_SECRET` (or the `aws_keys` given) and
with any temporary key its STS issued.
"""

from __future__ import annotations

from pathlib import Path

from . import MockOpenAI

__all__ = ["AWS_KEY_ID", "AWS_SECRET", "MockNativeServers"]

SERVER = Path(__file__).resolve().with_name("native_servers.py")
AWS_KEY_ID = "AKIDEXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


class MockNativeServers(MockOpenAI):
    """Start, stop and inspect one mock Bedrock + SageMaker + STS + Cohere server process."""

    server = SERVER

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_key: str | None = None,
                 fail_status: int | None = None, delay: float = 0.0, chunk_delay: float = 0.0,
                 record: bool = True, aws_keys: dict[str, str] | None = None, sts_lifetime: float = 3600.0,
                 startup_timeout: float = 10.0) -> None:
        super().__init__(host, port, api_key=api_key, fail_status=fail_status, delay=delay,
                         chunk_delay=chunk_delay, record=record, models=None, startup_timeout=startup_timeout)
        for key_id, secret in (aws_keys or {AWS_KEY_ID: AWS_SECRET}).items():
            self._args += ["--aws-key", f"{key_id}:{secret}"]
        self._args += ["--sts-lifetime", str(sts_lifetime)]

    @property
    def url(self) -> str:
        """The server root: every route hangs off it."""
        return self.base_url
