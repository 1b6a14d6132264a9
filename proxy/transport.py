"""The only module that talks HTTP to upstreams: pooled keep-alive connections, streaming reads.

geventhttpclient is used because it measured fastest on the hot path (see tests/bench and the
README). Socket and protocol failures are mapped to ProxyErrors here, at one boundary, so the rest
of the proxy never sees a socket exception.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import gevent
from geventhttpclient import HTTPClient
from geventhttpclient.response import HTTPParseError, HTTPSocketPoolResponse

from proxy.errors import ProxyError, RequestTimeout, ServiceUnavailable, UpstreamError
from proxy.providers.base import UpstreamCall

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0  # LiteLLM's default request timeout


class UpstreamTimeout(Exception):
    """Internal marker raised by gevent.Timeout; mapped to RequestTimeout."""


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes


def discard(resp: HTTPSocketPoolResponse) -> None:
    """Close (never pool) a connection whose response was not read to the end."""
    pool, sock = getattr(resp, "_pool", None), getattr(resp, "_sock", None)
    resp._pool = resp._sock = None
    if pool is not None and sock is not None:
        pool.release_socket(sock)


class StreamingResponse:
    """An upstream response whose body is read line by line as it arrives."""

    def __init__(self, resp: HTTPSocketPoolResponse, host: str, read_timeout: float) -> None:
        self._resp = resp
        self._host = host
        self._read_timeout = read_timeout
        self.status = resp.status_code
        self.headers = {k.lower(): v for k, v in resp.items()}

    def lines(self) -> Iterator[bytes]:
        """Yield each line as soon as it is complete; never waits for more than one line."""
        resp = self._resp
        try:
            while True:
                with gevent.Timeout(self._read_timeout, UpstreamTimeout):
                    line = resp.readline(b"\n")
                if not line:
                    rest = resp.read()  # a last line without its newline is still a line
                    if rest:
                        yield rest
                    return
                yield line
        except UpstreamTimeout:
            raise RequestTimeout(
                f"upstream {self._host} sent nothing for {self._read_timeout:g}s mid-stream"
            ) from None
        except (OSError, HTTPParseError) as exc:
            raise UpstreamError(f"upstream {self._host} broke the stream: {exc}") from None
        finally:
            self.close()

    def chunks(self) -> Iterator[bytes]:
        """Yield the body's bytes as they arrive, for binary streams (AWS event streams) where
        waiting for a newline would hold frames back."""
        resp = self._resp
        buffer = resp._body_buffer  # the parser's buffer: what has arrived and is not read yet
        try:
            while True:
                if buffer:
                    data = bytes(buffer)
                    del buffer[:]
                    yield data
                    continue
                if resp.message_complete or resp._sock is None:
                    return
                with gevent.Timeout(self._read_timeout, UpstreamTimeout):
                    received = resp._sock.recv(resp.block_size)
                if not received:
                    return
                resp.feed(received)
        except UpstreamTimeout:
            raise RequestTimeout(
                f"upstream {self._host} sent nothing for {self._read_timeout:g}s mid-stream"
            ) from None
        except (OSError, HTTPParseError) as exc:
            raise UpstreamError(f"upstream {self._host} broke the stream: {exc}") from None
        finally:
            self.close()

    def read_all(self, timeout: float) -> bytes:
        try:
            with gevent.Timeout(timeout, UpstreamTimeout):
                return self._resp.read()
        except (UpstreamTimeout, OSError, HTTPParseError):
            return b""
        finally:
            self.close()

    def close(self) -> None:
        if self._resp.message_complete:
            self._resp.release()
        else:
            discard(self._resp)


class Transport:
    """One keep-alive connection pool per upstream origin, shared by every greenlet of a worker."""

    def __init__(self, pool_size: int = 256, connect_timeout: float = 10.0) -> None:
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self._clients: dict[tuple[str, str, int], HTTPClient] = {}
        self._targets: dict[str, tuple[HTTPClient, str, str]] = {}

    def _target(self, url: str) -> tuple[HTTPClient, str, str]:
        """(client, request path, host) for a URL; parsed once per distinct URL."""
        hit = self._targets.get(url)
        if hit is not None:
            return hit
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamError(f"invalid upstream URL {url!r}", status=500)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        key = (parts.scheme, parts.hostname, port)
        client = self._clients.get(key)
        if client is None:
            client = HTTPClient(
                parts.hostname,
                port,
                ssl=parts.scheme == "https",
                concurrency=self.pool_size,
                connection_timeout=self.connect_timeout,
                network_timeout=DEFAULT_TIMEOUT,
                headers={"User-Agent": "llmrelay"},
            )
            pool = client._connection_pool
            pool.after_connect = nodelay  # small SSE lines and bodies must not wait on Nagle
            self._clients[key] = client
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        target = (client, path, f"{parts.hostname}:{port}")
        if len(self._targets) < 4096:
            self._targets[url] = target
        return target

    def _request(self, call: UpstreamCall) -> tuple[HTTPSocketPoolResponse, str]:
        """Send; the caller holds the timeout (one gevent.Timeout per call, not per step)."""
        client, path, host = self._target(call.url)
        try:
            return client.request(call.method, path, body=call.body, headers=call.headers), host
        except (OSError, HTTPParseError) as exc:
            raise connection_error(host, exc) from None

    def send(self, call: UpstreamCall, timeout: float | None = None) -> UpstreamResponse:
        """Send and read the whole answer (non-streaming calls) within ``timeout`` seconds."""
        timeout = timeout or DEFAULT_TIMEOUT
        resp = None
        host = ""
        try:
            with gevent.Timeout(timeout, UpstreamTimeout):
                resp, host = self._request(call)
                body = resp.read()
        except UpstreamTimeout:
            if resp is not None:
                discard(resp)
            host = host or self._target(call.url)[2]
            raise RequestTimeout(f"upstream {host} did not answer within {timeout:g}s") from None
        except (OSError, HTTPParseError) as exc:
            if resp is not None:
                discard(resp)
            raise connection_error(host, exc) from None
        headers = {k.lower(): v for k, v in resp.items()}
        resp.release()
        return UpstreamResponse(resp.status_code, headers, body)

    def open_stream(
        self, call: UpstreamCall, timeout: float | None = None, read_timeout: float | None = None
    ) -> StreamingResponse:
        """Send and return once the status line and headers are in; the body is read lazily."""
        timeout = timeout or DEFAULT_TIMEOUT
        try:
            with gevent.Timeout(timeout, UpstreamTimeout):
                resp, host = self._request(call)
        except UpstreamTimeout:
            raise RequestTimeout(f"upstream {self._target(call.url)[2]} did not answer within {timeout:g}s") from None
        return StreamingResponse(resp, host, read_timeout or timeout)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        self._targets.clear()


def nodelay(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connection_error(host: str, exc: BaseException) -> ProxyError:
    """A socket-level failure -> a clear 5xx naming the upstream."""
    code = getattr(exc, "errno", None)
    if isinstance(exc, ConnectionRefusedError) or code == errno.ECONNREFUSED:
        return ServiceUnavailable(f"upstream {host} refused the connection (is it running?)")
    if isinstance(exc, socket.gaierror):
        return ServiceUnavailable(f"upstream host {host} could not be resolved")
    reason: Any = getattr(exc, "strerror", None) or exc
    return UpstreamError(f"connection to upstream {host} failed: {reason}")
