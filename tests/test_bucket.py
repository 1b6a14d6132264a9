"""Config from a bucket: S3 (SigV4-signed) and GCS objects fetched from local stand-ins, and the
proxy started on a config that exists only in a bucket."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from proxy.bucket import BucketSource, bucket_source, config_path_from_env, materialize
from proxy.errors import ConfigError
from tests.install import llmrelay_command
from tests.servers import free_port

CONFIG = {"model_list": [{"model_name": "from-bucket", "litellm_params": {
    "model": "openai/b", "mock_response": "served from the bucket"}}]}


class Store(http.server.BaseHTTPRequestHandler):
    objects: dict[str, bytes] = {}
    seen: list[tuple[str, str]] = []

    def do_GET(self) -> None:
        Store.seen.append((self.path, self.headers.get("Authorization", "")))
        body = Store.objects.get(self.path)
        self.send_response(200 if body is not None else 404)
        body = body if body is not None else b"<Error><Code>NoSuchKey</Code></Error>"
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def store() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Store)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Store.objects, Store.seen = {}, []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.fixture
def aws(monkeypatch, store: str) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", store)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    return store


def test_s3_object_is_fetched_signed(aws: str, tmp_path: Path) -> None:
    Store.objects["/litellm-proxy/proxy_config.yaml"] = yaml.safe_dump(CONFIG).encode()
    path = materialize(BucketSource("s3", "litellm-proxy", "proxy_config.yaml"), tmp_path / "c.yaml")
    assert yaml.safe_load(path.read_text()) == CONFIG
    requested, auth = Store.seen[-1]
    assert requested == "/litellm-proxy/proxy_config.yaml"
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/") and "/eu-west-1/s3/aws4_request" in auth


def test_gcs_object_through_the_emulator(monkeypatch, store: str, tmp_path: Path) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", store)
    monkeypatch.setenv("GOOGLE_OAUTH_ACCESS_TOKEN", "ya29.token")
    Store.objects["/storage/v1/b/litellm-proxy/o/dir%2Fproxy_config.yaml?alt=media"] = b"model_list: []\n"
    path = materialize(BucketSource("gcs", "litellm-proxy", "dir/proxy_config.yaml"), tmp_path / "c.yaml")
    assert path.read_text() == "model_list: []\n"
    assert Store.seen[-1][1] == "Bearer ya29.token"


def test_missing_object_and_bad_settings_are_clear_errors(aws: str) -> None:
    with pytest.raises(ConfigError, match=r"s3://b/nope.yaml: cannot fetch the config: HTTP 404"):
        BucketSource("s3", "b", "nope.yaml").fetch()
    with pytest.raises(ConfigError, match="must be s3 or gcs"):
        bucket_source({"LITELLM_CONFIG_BUCKET_NAME": "b", "LITELLM_CONFIG_BUCKET_TYPE": "ftp",
                       "LITELLM_CONFIG_BUCKET_OBJECT_KEY": "k"})
    assert bucket_source({}) is None


def test_config_file_path_wins_over_the_bucket(monkeypatch) -> None:
    monkeypatch.setenv("CONFIG_FILE_PATH", "/etc/llmrelay/config.yaml")
    monkeypatch.setenv("LITELLM_CONFIG_BUCKET_NAME", "b")
    assert config_path_from_env() == "/etc/llmrelay/config.yaml"


def test_proxy_starts_on_a_config_held_in_a_bucket(aws: str, tmp_path: Path) -> None:
    Store.objects["/litellm-proxy/proxy_config.yaml"] = yaml.safe_dump(CONFIG).encode()
    port = free_port()
    env = {**os.environ, "LITELLM_CONFIG_BUCKET_TYPE": "s3", "LITELLM_CONFIG_BUCKET_NAME": "litellm-proxy",
           "LITELLM_CONFIG_BUCKET_OBJECT_KEY": "proxy_config.yaml", "LLMRELAY_STATE_DIR": str(tmp_path),
           "PORT": str(port), "HOST": "127.0.0.1"}
    env.pop("CONFIG_FILE_PATH", None)
    proc = subprocess.Popen(llmrelay_command(), cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = requests.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                                  json={"model": "from-bucket", "messages": [{"role": "user", "content": "x"}]})
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert r.json()["choices"][0]["message"]["content"] == "served from the bucket"
        assert (tmp_path / "config.yaml").exists()
        assert (tmp_path / "llmrelay.db").exists()  # the store beside it, in the state directory
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
