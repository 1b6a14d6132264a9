"""gunicorn's gevent worker, with a shutdown that does not wait on idle keep-alive connections.

On SIGTERM gunicorn stops accepting and waits (up to ``graceful_timeout``) until no connection
greenlet is left. A client holding an idle keep-alive connection — nginx, any SDK's pool — would
keep the worker alive for the whole keep-alive period. This worker closes idle connections as
soon as shutdown starts, so the drain waits only for requests really in flight, streams included.

It also answers requests gunicorn refuses before the app sees them — a request line or headers
over ``limit_request_line`` / ``limit_request_field_size`` / ``limit_request_fields``, a malformed
request — in OpenAI's error shape (414, 431, 400) and closes with a lingering close, where plain
gunicorn writes an HTML page and closes at once: with the client's bytes still unread, that close
is a reset which can destroy the answer before the client reads it.
"""

from __future__ import annotations

import gc
import signal
from typing import Any

import gevent
import orjson
from gunicorn.http import errors as http_errors
from gunicorn.http.errors import NoMoreData
from gunicorn.workers.ggevent import GeventWorker

from proxy.api.body_limit import linger_close
from proxy.api.render import STATUS_LINES
from proxy.errors import BadRequest, HeadersTooLarge, ProxyError

#: gunicorn's parse errors that are the client's fault, answered 400 unless listed in refusal().
BAD_REQUEST_ERRORS = tuple(
    getattr(http_errors, name) for name in (
        "InvalidRequestLine", "InvalidRequestMethod", "InvalidHTTPVersion", "InvalidHeader",
        "InvalidHeaderName", "ObsoleteFolding", "InvalidChunkSize", "ChunkMissingTerminator",
        "InvalidChunkExtension", "LimitRequestLine", "LimitRequestHeaders",
    ) if hasattr(http_errors, name)
)


def refusal(exc: BaseException) -> ProxyError | None:
    """The error a client gets for a request gunicorn could not parse; None for other errors."""
    if isinstance(exc, http_errors.LimitRequestHeaders):
        return HeadersTooLarge(f"Request headers are too large: {exc}")
    if isinstance(exc, http_errors.LimitRequestLine):
        return BadRequest(f"Request line is too long: {exc}", status=414, code="uri_too_long")
    if isinstance(exc, BAD_REQUEST_ERRORS):
        return BadRequest(f"Malformed HTTP request: {exc}", code="bad_http_request")
    return None


#: tracked allocations (net of frees) between two collections of the youngest generation;
#: CPython's default is 700
YOUNG_THRESHOLD = 20_000


def tune_collector() -> None:
    """Set the cyclic collector up for a worker: boot objects frozen, young collections rare.

    Frozen: a worker holds a few hundred thousand long-lived objects from boot (tokenizer
    tables, the config, modules). Every full collection walked all of them: 50-60 ms with the
    hub stopped, a few times a minute under load. Frozen, they are still freed by reference
    counting; a full collection walks only what requests made. (Boot objects caught in a
    reference cycle when a config reload replaces them stay until the worker exits: once, never
    per reload, since what a reload builds is not frozen.)

    Rare young collections: a young collection is due after 700 more tracked objects were made
    than freed, and an object made before a collection and freed after it is never taken off
    that count. Log records that wait a fraction of a second for their exporters' next batch
    outlive a collection every few milliseconds, so each one re-arms the next: at 2,000 calls
    a second with three exporters on, 130 collections a second took 5% of the worker's CPU.
    With collections thousands of records apart, records are sent and freed before one runs:
    under the same load, one collection every couple of seconds (~3 ms each). Garbage in
    reference cycles, the only kind the collector is for, waits that much longer.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


class RelayWorker(GeventWorker):
    """GeventWorker + prompt close of idle connections on shutdown."""

    def init_process(self) -> None:
        self._connections: dict[Any, Any] = {}  # connection greenlet -> client socket
        self._busy: set[Any] = set()  # greenlets inside a request
        super().init_process()

    def init_signals(self) -> None:
        super().init_signals()
        # Reloads are the master's (proxy/master.py): a SIGHUP sent to the whole process group
        # (a terminal hang-up, ``kill -HUP -PGID``, a supervisor) must not kill the workers.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def run(self) -> None:
        tune_collector()
        gevent.spawn(self._close_idle_when_stopping)
        try:
            super().run()
        finally:
            self._close_app()
            # back under the collector, so that the interpreter's exit clears them in order
            # (frozen objects outlive the modules their finalisers call into)
            gc.unfreeze()

    def _close_app(self) -> None:
        """Flush what the app buffers (usage counters, spend logs) before the process exits."""
        extensions = getattr(self.wsgi, "extensions", {})
        monitor = extensions.get("llmrelay.health")
        if monitor is not None:
            monitor.stop()  # no health check starts while the worker drains
        updates = extensions.get("llmrelay.live")
        if updates is not None:
            updates.stop()  # and leave the instance's list of workers a reload waits for
        gateway = extensions.get("llmrelay")
        if gateway is not None:
            try:
                gateway.close()
            except Exception:
                self.log.exception("closing the app failed")

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        current = gevent.getcurrent()
        self._connections[current] = client
        try:
            super().handle(listener, client, addr)
        finally:
            self._connections.pop(current, None)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        current = gevent.getcurrent()
        self._busy.add(current)
        try:
            return super().handle_request(listener_name, req, sock, addr)
        finally:
            self._busy.discard(current)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        err = refusal(exc)
        if err is None:
            super().handle_error(req, client, addr, exc)
            return
        self.log.warning("Invalid request from ip=%s: %s", (addr or ("",))[0], exc)
        body = orjson.dumps(err.body())
        head = (f"HTTP/1.1 {STATUS_LINES.get(err.status, err.status)}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        try:
            client.sendall(head.encode("latin-1") + body)
            linger_close(client, seconds=1.0)
        except OSError:
            self.log.debug("could not answer a refused request")

    def _close_idle_when_stopping(self) -> None:
        while self.alive:
            gevent.sleep(0.1)
        # After alive turns false gunicorn closes each connection when its request ends. An idle
        # one is blocked reading the next request line; ending that read with NoMoreData is the
        # path gunicorn takes when a client hangs up, so it closes quietly.
        for _ in range(int(self.cfg.graceful_timeout * 10) + 1):
            for greenlet in list(self._connections):
                if greenlet not in self._busy:
                    greenlet.kill(NoMoreData(b""), block=False)
            if not self._connections:
                return
            gevent.sleep(0.1)
