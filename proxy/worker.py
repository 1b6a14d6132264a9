"""gunicorn's gevent worker, with a shutdown that does not wait on idle keep-alive connections.

On SIGTERM gunicorn stops accepting and waits (up to ``graceful_timeout``) until no connection
greenlet is left. A client holding an idle keep-alive connection — nginx, any SDK's pool — would
keep the worker alive for the whole keep-alive period. This worker closes idle connections as
soon as shutdown starts, so the drain waits only for requests really in flight, streams included.
"""

from __future__ import annotations

import signal
from typing import Any

import gevent
from gunicorn.http.errors import NoMoreData
from gunicorn.workers.ggevent import GeventWorker


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
        gevent.spawn(self._close_idle_when_stopping)
        try:
            super().run()
        finally:
            self._close_app()

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
