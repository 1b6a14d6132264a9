"""Real nginx in front of llmrelay, configured from the shipped conf/nginx.conf (only the ports,
the body limit and the paths are changed): unbuffered streams, the client's address as nginx
saw it, and 413 in OpenAI's error shape for a body over the limit."""

from __future__ import annotations

import http.client
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mock_upstream import MockOpenAI
from tests.servers import ROOT, ProxyProcess, free_port

MASTER = "sk-nginx-master"
CLIENT = "127.0.0.2"  # the test's own source address: not a trusted proxy (FORWARDED_ALLOW_IPS=127.0.0.1)
LIMIT = "64k"

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
                                reason="nginx is not installed (apt-get install nginx-light)")


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def site_config(proxy_port: int, listen_port: int) -> str:
    """conf/nginx.conf with the test's ports and a small body limit; everything else as shipped."""
    text = (ROOT / "conf" / "nginx.conf").read_text()
    for old, new in (("server 127.0.0.1:4000;", f"server 127.0.0.1:{proxy_port};"),
                     ("listen 80;", f"listen 127.0.0.1:{listen_port};"),
                     ("client_max_body_size 20m;", f"client_max_body_size {LIMIT};")):
        assert old in text, f"conf/nginx.conf no longer has {old!r}"
        text = text.replace(old, new)
    return text


class Nginx:
    def __init__(self, proxy_port: int) -> None:
        self.port = free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="llmrelay-nginx-")
        prefix = Path(self._tmp.name)
        (prefix / "llmrelay.conf").write_text(site_config(proxy_port, self.port))
        (prefix / "nginx.conf").write_text(f"""
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/llmrelay.conf;
}}
""")
        self.prefix = prefix
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Nginx:
        self.proc = subprocess.Popen([nginx_binary(), "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"),
                                      "-e", str(self.prefix / "error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}"
                                   f"{(self.prefix / 'error.log').read_text()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/health/liveliness")
                if conn.getresponse().status == 200:
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("nginx did not answer in 10s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
        self._tmp.cleanup()


@pytest.fixture(scope="module")
def stack(upstream: MockOpenAI) -> Iterator[tuple[ProxyProcess, Nginx]]:
    config = {"model_list": [{"model_name": "m", "litellm_params": {
                  "model": "openai/m", "api_base": upstream.url, "api_key": "sk-upstream"}}],
              "general_settings": {"master_key": MASTER}}
    with ProxyProcess(config, env={"FORWARDED_ALLOW_IPS": "127.0.0.1"}) as proxy:
        nginx = Nginx(proxy.port).start()
        try:
            yield proxy, nginx
        finally:
            nginx.stop()


def post(port: int, body: bytes, headers: dict[str, str] | None = None,
         source: str = CLIENT) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    conn.request("POST", "/v1/chat/completions", body=body,
                 headers={"Authorization": f"Bearer {MASTER}", "Content-Type": "application/json", **(headers or {})})
    return conn.getresponse()


def chat_body(text: str = "one two three four five six", **extra) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": text}], **extra}).encode()


def test_streams_pass_unbuffered(stack) -> None:
    _, nginx = stack
    resp = post(nginx.port, chat_body(stream=True, mock_controls={"chunk_delay": 0.3}))
    assert resp.status == 200
    arrivals = []
    while True:
        line = resp.readline()
        if not line:
            break
        if line.startswith(b"data: {"):
            arrivals.append(time.monotonic())
    assert len(arrivals) >= 4, arrivals
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # chunks 300 ms apart upstream arrive spread out, not in one burst at the end
    assert sum(g > 0.15 for g in gaps) >= len(gaps) - 1, gaps
    assert arrivals[-1] - arrivals[0] > 0.3 * (len(arrivals) - 2), gaps


def spend_row(proxy: ProxyProcess, request_id: str) -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        conn.request("GET", f"/spend/logs?request_id={request_id}", headers={"Authorization": f"Bearer {MASTER}"})
        rows = json.loads(conn.getresponse().read())
        if rows:
            return rows[0]
        time.sleep(0.2)
    raise AssertionError(f"no spend record for {request_id}")


def access_line(proxy: ProxyProcess, request_id: str) -> dict:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for line in proxy.log().splitlines():
            if request_id in line and line.startswith("{"):
                return json.loads(line)
        time.sleep(0.2)
    raise AssertionError(f"no access log line for {request_id}")


def test_client_address_is_the_one_nginx_saw(stack) -> None:
    proxy, nginx = stack
    # through nginx: a client-written X-Forwarded-For is ignored, nginx's own hop is believed
    resp = post(nginx.port, chat_body(), {"X-Forwarded-For": "203.0.113.9"})
    assert resp.status == 200
    resp.read()
    via_nginx = resp.getheader("x-litellm-call-id")
    assert access_line(proxy, via_nginx)["client_ip"] == CLIENT
    assert spend_row(proxy, via_nginx)["requester_ip_address"] == CLIENT

    # straight to llmrelay from an untrusted peer: the header is not believed
    resp = post(proxy.port, chat_body(), {"X-Forwarded-For": "203.0.113.9"})
    assert resp.status == 200
    resp.read()
    direct = resp.getheader("x-litellm-call-id")
    assert access_line(proxy, direct)["client_ip"] == CLIENT
    assert spend_row(proxy, direct)["requester_ip_address"] == CLIENT


def test_body_limit_gives_413_in_openai_shape(stack) -> None:
    _, nginx = stack
    under = post(nginx.port, chat_body("word " * 10_000))  # ~50 KB: under the 64k limit
    assert under.status == 200, under.read()
    under.read()
    over = post(nginx.port, chat_body("word " * 20_000))  # ~100 KB
    assert over.status == 413
    assert over.getheader("Content-Type", "").startswith("application/json")
    error = json.loads(over.read())["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "request_too_large"
    assert re.search(r"too large", error["message"])
