"""The request-size limit: ``general_settings.max_request_size_mb``, the outermost WSGI layer.

A body announced larger than the limit (``Content-Length``) is refused with a 413 before a byte
of it is read. A body of unknown length (``Transfer-Encoding: chunked``) is read through a
counting wrapper that fails the read at the limit, so it is cut off there, never buffered whole.

After a 413 the connection is closed: the rest of the body is not worth reading to keep it
alive. The close is a lingering one — send the answer, half-close, discard what the client is
still sending for a moment, then close — because closing a socket with unread bytes makes the
kernel send a reset that can destroy the 413 before the client reads it (nginx does the same).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import gevent

from proxy.api.render import Reply, error_reply
from proxy.errors import ProxyError, RequestTooLarge

if TYPE_CHECKING:
    from proxy.gateway import Gateway

log = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_SIZE_MB = 32.0  # LiteLLM's default for the same setting
LINGER_SECONDS = 2.0  # how long a refused client may go on sending before the socket closes
LINGER_MAX_BYTES = 256 * 1024 * 1024
READ_CHUNK = 64 * 1024


def max_request_bytes(general_settings: dict[str, Any]) -> int:
    """The body limit in bytes from ``general_settings.max_request_size_mb`` (MB = 2**20 bytes)."""
    value = general_settings.get("max_request_size_mb")
    if value is None:
        value = DEFAULT_MAX_REQUEST_SIZE_MB
    return int(float(value) * 1024 * 1024)


def too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(
        f"Request body is larger than the proxy's limit of {limit / (1024 * 1024):g} MB "
        "(general_settings.max_request_size_mb)", param=None)


class LimitedInput:
    """``wsgi.input`` that raises RequestTooLarge once more than ``limit`` bytes were read."""

    def __init__(self, stream: Any, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._read = 0
        self.exceeded = False

    def _count(self, data: bytes) -> bytes:
        self._read += len(data)
        if self._read > self._limit:
            self.exceeded = True
            raise too_large(self._limit)
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            # read in pieces, so an endless chunked body fails at the limit, not at memory's end
            parts = []
            while True:
                part = self._count(self._stream.read(READ_CHUNK))
                if not part:
                    return b"".join(parts)
                parts.append(part)
        return self._count(self._stream.read(min(size, self._limit - self._read + 1)))

    def readline(self, size: int | None = -1) -> bytes:
        room = self._limit - self._read + 1
        return self._count(self._stream.readline(room if size is None or size < 0 else min(size, room)))

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")


class BodyLimit:
    """WSGI layer enforcing the body limit for every route; ``error`` renders the 413 per path."""

    def __init__(
        self,
        gateway: Gateway,
        app: Callable[..., Iterable[bytes]],
        error: Callable[[str, ProxyError], Reply] | None = None,
    ) -> None:
        self.gateway = gateway
        self.app = app
        self.error = error or (lambda path, err: error_reply(err))

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        limit = max_request_bytes(self.gateway.config.general_settings)  # follows reloads
        length = environ.get("CONTENT_LENGTH")
        if length:
            try:
                announced = int(length)
            except ValueError:
                announced = 0  # the endpoint itself answers the malformed header
            if announced > limit:
                return self.refuse(environ, start_response, limit)
        stream = LimitedInput(environ["wsgi.input"], limit)
        environ["wsgi.input"] = stream
        body = self.app(environ, start_response)
        if stream.exceeded:  # the endpoint answered the 413 raised by a read
            return Lingering(body, environ.get("gunicorn.socket"))
        return body

    def refuse(self, environ: dict[str, Any], start_response: Callable[..., Any], limit: int) -> Iterable[bytes]:
        log.info("refused a %s byte body on %s (limit %d)", environ.get("CONTENT_LENGTH"),
                 environ.get("PATH_INFO"), limit)
        reply = self.error(environ.get("PATH_INFO", ""), too_large(limit))
        return Lingering(reply.wsgi(start_response), environ.get("gunicorn.socket"))


class Lingering:
    """A response body whose close() ends the connection politely (see the module docstring)."""

    def __init__(self, body: Iterable[bytes], sock: socket.socket | None) -> None:
        self._body = body
        self._sock = sock

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()
        if self._sock is not None:
            linger_close(self._sock)


def linger_close(sock: socket.socket, seconds: float = LINGER_SECONDS, max_bytes: int = LINGER_MAX_BYTES) -> None:
    """Half-close, discard what the peer still sends (bounded), then shut the socket for good.

    The final shutdown makes the server's next read see end-of-file, so gunicorn closes the
    connection instead of draining the rest of the body to keep it alive.
    """
    deadline = time.monotonic() + seconds
    drained = 0
    try:
        sock.shutdown(socket.SHUT_WR)
        while drained < max_bytes:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            data = sock.recv(READ_CHUNK)
            if not data:
                break
            drained += len(data)
            gevent.sleep(0)  # a fast sender must not keep this loop on the hub
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
