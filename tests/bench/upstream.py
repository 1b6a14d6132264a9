"""Mock OpenAI upstream for the benchmark: canned chat completions over minimal HTTP/1.1.

It is a raw gevent ``StreamServer`` rather than a WSGI app so that it spends a few
microseconds per request and never becomes the bottleneck of the targets it serves.
Run it on its own: ``python -m tests.bench.upstream --port 8900``.
"""

from __future__ import annotations

import argparse
import itertools
import signal
import socket
import sys
import time
from collections.abc import Iterator

import gevent
import orjson
from gevent.server import StreamServer

CONTENT = "Hello from the llmrelay bench upstream."
USAGE = {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}
CHAT_PATHS = frozenset({b"/v1/chat/completions", b"/chat/completions"})
#: Log receivers the observability row sends to (Langfuse ingestion, OTLP/HTTP): taken in, 200.
SINK_PATHS = frozenset({b"/api/public/ingestion", b"/v1/traces"})
MAX_HEAD = 64 * 1024

_ids = itertools.count(1)


def completion(model: str) -> bytes:
    """A valid non-streaming ``chat.completion`` body."""
    return orjson.dumps(
        {
            "id": f"chatcmpl-bench-{next(_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": CONTENT},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
        }
    )


def stream_events(model: str, pieces: int, include_usage: bool) -> list[bytes]:
    """The SSE events of one streamed completion, each a complete ``data: ...`` event."""
    ident, created = f"chatcmpl-bench-{next(_ids)}", int(time.time())

    def event(delta: dict, finish: str | None, **extra: object) -> bytes:
        chunk = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    step = max(1, -(-len(CONTENT) // max(1, pieces)))
    events = [event({"role": "assistant", "content": ""}, None)]
    events += [event({"content": CONTENT[i : i + step]}, None) for i in range(0, len(CONTENT), step)]
    events.append(event({}, "stop", **({"usage": USAGE} if include_usage else {})))
    events.append(b"data: [DONE]\n\n")
    return events


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _response(status: str, body: bytes, content_type: bytes, keep_alive: bool) -> bytes:
    conn = b"keep-alive" if keep_alive else b"close"
    return (
        b"HTTP/1.1 %s\r\nServer: bench-upstream\r\nContent-Type: %s\r\n"
        b"Content-Length: %d\r\nConnection: %s\r\n\r\n%s" % (status.encode(), content_type, len(body), conn, body)
    )


def _error(status: str, message: str, keep_alive: bool) -> bytes:
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error"}})
    return _response(status, body, b"application/json", keep_alive)


class _Reader:
    """Buffered reads off a socket; returns None when the peer closes mid-message."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def until(self, sep: bytes, limit: int = MAX_HEAD) -> bytes | None:
        while (idx := self.buf.find(sep)) < 0:
            if len(self.buf) > limit or not self._fill():
                return None
        out = bytes(self.buf[:idx])
        del self.buf[: idx + len(sep)]
        return out

    def exact(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            if not self._fill():
                return None
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def chunked(self) -> bytes | None:
        parts = []
        while True:
            line = self.until(b"\r\n")
            if line is None:
                return None
            size = int(line.split(b";", 1)[0], 16)
            if size == 0:
                trailer = self.until(b"\r\n")
                while trailer:  # skip trailers up to the blank line
                    trailer = self.until(b"\r\n")
                return None if trailer is None else b"".join(parts)
            data = self.exact(size + 2)
            if data is None:
                return None
            parts.append(data[:-2])


class Upstream:
    """Connection handler; streamed answers pause ``interval`` seconds between pieces."""

    def __init__(self, stream_pieces: int, stream_interval: float) -> None:
        self.stream_pieces = stream_pieces
        self.stream_interval = stream_interval

    def __call__(self, sock: socket.socket, _addr: object) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = _Reader(sock)
        try:
            while self._serve_one(sock, reader):
                pass
        except (ConnectionError, OSError):
            pass
        finally:
            sock.close()

    def _serve_one(self, sock: socket.socket, reader: _Reader) -> bool:
        head = reader.until(b"\r\n\r\n")
        if head is None:
            return False
        lines = head.split(b"\r\n")
        try:
            method, path, version = lines[0].split(b" ", 2)
        except ValueError:
            sock.sendall(_error("400 Bad Request", "bad request line", False))
            return False
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        connection = headers.get(b"connection", b"").lower()
        keep_alive = connection != b"close" and (version == b"HTTP/1.1" or connection == b"keep-alive")

        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            body = reader.chunked()
        else:
            body = reader.exact(int(headers.get(b"content-length", b"0") or 0))
        if body is None:
            return False

        path = path.split(b"?", 1)[0]
        if path in SINK_PATHS:
            sock.sendall(_response("200 OK", b"{}", b"application/json", keep_alive))
        elif path not in CHAT_PATHS:
            sock.sendall(_error("404 Not Found", "unknown path", keep_alive))
        elif method != b"POST":
            sock.sendall(_error("405 Method Not Allowed", "use POST", keep_alive))
        else:
            try:
                request = orjson.loads(body)
                model = str(request.get("model", "bench-model"))
            except (orjson.JSONDecodeError, AttributeError):
                sock.sendall(_error("400 Bad Request", "body is not a JSON object", keep_alive))
                return keep_alive
            if request.get("stream"):
                usage = bool((request.get("stream_options") or {}).get("include_usage"))
                self._stream(sock, model, usage, keep_alive)
            else:
                sock.sendall(_response("200 OK", completion(model), b"application/json", keep_alive))
        return keep_alive

    def _stream(self, sock: socket.socket, model: str, usage: bool, keep_alive: bool) -> None:
        conn = b"keep-alive" if keep_alive else b"close"
        head = (
            b"HTTP/1.1 200 OK\r\nServer: bench-upstream\r\nContent-Type: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nConnection: %s\r\n\r\n" % conn
        )
        events: Iterator[bytes] = iter(stream_events(model, self.stream_pieces, usage))
        sock.sendall(head + _chunk(next(events)))  # first chunk leaves with the headers
        for data in events:
            gevent.sleep(self.stream_interval)
            sock.sendall(_chunk(data))
        sock.sendall(b"0\r\n\r\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--stream-pieces", type=int, default=8, help="content pieces per stream")
    parser.add_argument("--stream-interval-ms", type=float, default=2.0, help="pause between streamed pieces")
    args = parser.parse_args(argv)
    handler = Upstream(args.stream_pieces, args.stream_interval_ms / 1000.0)
    server = StreamServer((args.host, args.port), handler, backlog=1024)
    gevent.signal_handler(signal.SIGTERM, server.stop)
    gevent.signal_handler(signal.SIGINT, server.stop)
    print(f"bench upstream on http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
