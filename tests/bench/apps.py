"""Reference WSGI apps the benchmark measures llmrelay against.

Each forwarder does the least a gateway must do for a chat call: parse the client's JSON,
send it upstream, parse the upstream's answer and send it back with its status and
content type. Streamed calls are passed through chunk by chunk. They differ only in the
HTTP client (and JSON codec), which is the largest single factor in a gateway's speed.
gunicorn loads them as ``tests.bench.apps:create_app('<kind>')``; the upstream comes from
``BENCH_UPSTREAM_BASE`` (``http://host:port/v1``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import orjson
from flask import Flask, Response, request

from tests.bench.upstream import completion

UPSTREAM_KEY = "sk-bench"
CHAT_ROUTES = ("/v1/chat/completions", "/chat/completions")
TIMEOUT_S = 60.0
POOL_SIZE = 100  # above the 16 benchmark connections, so no client ever churns sockets

Reply = tuple[int, str, bytes]
StreamReply = tuple[int, str, Iterator[bytes]]


class Client(Protocol):
    """One upstream HTTP client behind a forwarder."""

    loads: Callable[[bytes], Any]
    dumps: Callable[[Any], bytes]

    def send(self, body: bytes) -> Reply: ...

    def stream(self, body: bytes) -> StreamReply: ...


def upstream_url() -> str:
    base = os.environ.get("BENCH_UPSTREAM_BASE", "http://127.0.0.1:8900/v1")
    return base.rstrip("/") + "/chat/completions"


def upstream_headers() -> dict[str, str]:
    return {"Content-Type": "application/json", "Authorization": f"Bearer {UPSTREAM_KEY}"}


def _std_dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class RequestsClient:
    """``requests.Session``: the common default, with the most Python per call."""

    loads = staticmethod(json.loads)
    dumps = staticmethod(_std_dumps)

    def __init__(self) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        self.url = upstream_url()
        self.session = requests.Session()
        self.session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE))
        self.session.headers.update(upstream_headers())

    def send(self, body: bytes) -> Reply:
        resp = self.session.post(self.url, data=body, timeout=TIMEOUT_S)
        return resp.status_code, resp.headers.get("content-type", ""), resp.content

    def stream(self, body: bytes) -> StreamReply:
        resp = self.session.post(self.url, data=body, timeout=TIMEOUT_S, stream=True)

        def chunks() -> Iterator[bytes]:
            try:
                yield from resp.iter_content(chunk_size=None)
            finally:
                resp.close()

        return resp.status_code, resp.headers.get("content-type", ""), chunks()


class Urllib3Client:
    """``urllib3.PoolManager`` without the requests layer on top."""

    loads = staticmethod(orjson.loads)
    dumps = staticmethod(orjson.dumps)

    def __init__(self) -> None:
        import urllib3

        self.url = upstream_url()
        self.headers = upstream_headers()
        self.pool = urllib3.PoolManager(
            maxsize=POOL_SIZE, retries=False, timeout=urllib3.Timeout(connect=5.0, read=TIMEOUT_S)
        )

    def send(self, body: bytes) -> Reply:
        resp = self.pool.request("POST", self.url, body=body, headers=self.headers)
        return resp.status, resp.headers.get("content-type", ""), resp.data

    def stream(self, body: bytes) -> StreamReply:
        resp = self.pool.request("POST", self.url, body=body, headers=self.headers, preload_content=False)

        def chunks() -> Iterator[bytes]:
            try:
                yield from resp.stream(None)
            finally:
                resp.release_conn()

        return resp.status, resp.headers.get("content-type", ""), chunks()


class GeventHttpClient:
    """geventhttpclient: a C HTTP parser on gevent sockets, one client per upstream host."""

    loads = staticmethod(orjson.loads)
    dumps = staticmethod(orjson.dumps)

    def __init__(self) -> None:
        from geventhttpclient import URL
        from geventhttpclient.client import HTTPClientPool

        self.url = URL(upstream_url())
        self.path = self.url.request_uri
        self.headers = upstream_headers()
        self.clients = HTTPClientPool(concurrency=POOL_SIZE, connection_timeout=5.0, network_timeout=TIMEOUT_S)

    def send(self, body: bytes) -> Reply:
        client = self.clients.get_client(self.url)
        resp = client.request("POST", self.path, body=body, headers=self.headers)
        data = resp.read()
        return resp.status_code, resp.get("content-type") or "", data

    def stream(self, body: bytes) -> StreamReply:
        client = self.clients.get_client(self.url)
        resp = client.request("POST", self.path, body=body, headers=self.headers)

        def chunks() -> Iterator[bytes]:
            try:
                # readline() returns as soon as one SSE event is complete; read(n) would wait for n bytes
                while event := resp.readline(b"\n\n"):
                    yield event
            finally:
                resp.release()

        return resp.status_code, resp.get("content-type") or "", chunks()


CLIENTS: dict[str, Callable[[], Client]] = {
    "requests": RequestsClient,
    "urllib3": Urllib3Client,
    "geventhttpclient": GeventHttpClient,
}


def _forwarder(app: Flask, client: Client) -> None:
    def chat() -> Response:
        payload = client.loads(request.get_data())
        body = client.dumps(payload)
        if payload.get("stream"):
            status, ctype, chunks = client.stream(body)
            return Response(chunks, status=status, content_type=ctype)
        status, ctype, raw = client.send(body)
        if ctype.startswith("application/json"):
            raw = client.dumps(client.loads(raw))
        return Response(raw, status=status, content_type=ctype)

    for route in CHAT_ROUTES:
        app.add_url_rule(route, "chat" + route.replace("/", "_"), chat, methods=["POST"])


def _canned(app: Flask) -> None:
    def chat() -> Response:
        payload = orjson.loads(request.get_data())
        body = completion(str(payload.get("model", "bench-model")))
        return Response(body, status=200, content_type="application/json")

    for route in CHAT_ROUTES:
        app.add_url_rule(route, "chat" + route.replace("/", "_"), chat, methods=["POST"])


def create_app(kind: str) -> Flask:
    """``kind`` is a key of ``CLIENTS``, or ``canned`` for the no-upstream ceiling."""
    app = Flask(f"bench_{kind}")
    if kind == "canned":
        _canned(app)
    elif kind in CLIENTS:
        _forwarder(app, CLIENTS[kind]())
    else:
        raise ValueError(f"unknown bench app {kind!r}; choose canned or one of {sorted(CLIENTS)}")
    return app
