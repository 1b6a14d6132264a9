"""gunicorn's gevent worker, with a shutdown that does not wait on idle keep-alive connections.

On SIGTERM gunicorn stops accepting and waits (up to ``graceful_timeout``) until no connection
greenlet is left. A client holding an idle keep-alive connection — nginx, any SDK's pool — would
keep the worker alive for the whole keep-alive period. This worker closes idle connections as
soon as shutdown starts, so the drain waits only for requests really in flight, streams included.
"""

from __future__ import annotations

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

    def run(self) -> None:
        gevent.spawn(self._close_idle_when_stopping)
        try:
            super().run()
        finally:
            self._close_app()

    def _close_app(self) -> None:
        """Flush what the app buffers (usage counters, spend logs) before the process exits."""
        gateway = getattr(self.wsgi, "extensions", {}).get("llmrelay")
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


def install_config_reload(arbiter: Any) -> None:
    """Make SIGHUP re-read llmrelay's config in place instead of restarting workers.

    The master validates the file first; a file that does not validate is refused (errors
    logged, workers untouched). A good one bumps the store's ``config_generation`` and every
    worker swaps the new config in within a second, keeping its connections — no request is
    dropped, and a bad file can never leave the proxy without workers.
    """
    import logging
    import os

    log = logging.getLogger("llmrelay")

    def handle_hup() -> None:
        from pathlib import Path

        from proxy.bucket import refresh
        from proxy.config import load_config
        from proxy.errors import ConfigError
        from proxy.gateway import Gateway, open_store
        from proxy.live import CONFIG_GENERATION, bump_counter

        path = os.environ.get("CONFIG_FILE_PATH")
        if not path:
            log.error("SIGHUP: no CONFIG_FILE_PATH to re-read")
            return
        try:
            refresh(Path(path))  # a config kept in a bucket is fetched anew
            config = load_config(path)
            Gateway(config, preload=False, store=False, shared_state=False).close()
        except ConfigError as exc:
            log.error("SIGHUP: config %s refused, the running config stays:\n  %s", path, "\n  ".join(exc.errors))
            return
        store = open_store(config)
        if store is None:
            return
        try:
            generation = bump_counter(store, CONFIG_GENERATION)
        finally:
            store.close()
        log.info("SIGHUP: config %s validated; workers reload it in place (generation %d)", path, generation)

    arbiter.handle_hup = handle_hup
