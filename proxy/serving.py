"""gunicorn settings llmrelay needs to serve correctly, carried by the package.

``llmrelay`` applies them before its own flags; ``conf/gunicorn.conf.py`` and an operator's own
gunicorn file reuse them::

    from proxy.serving import settings
    globals().update(settings())
    workers = 4  # then override what you like

Without them gunicorn falls back to its sync worker: one request at a time per worker, no
in-place reload, no drain. Each value can be tuned from the environment, as documented in the
README's "Run in production" section.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


def settings(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """gunicorn setting name -> value, read from ``environ`` now (not at import)."""
    env = os.environ if environ is None else environ
    host, port = env.get("HOST", "0.0.0.0"), env.get("PORT", "4000")
    return {
        "bind": env.get("LLMRELAY_BIND", f"{host}:{port}"),
        "workers": int(env.get("NUM_WORKERS", "1")),
        # gevent: each request is a greenlet, so one worker holds thousands of concurrent streams;
        # this subclass also closes idle keep-alive connections as soon as a drain starts
        "worker_class": "proxy.worker.RelayWorker",
        "worker_connections": int(env.get("LLMRELAY_WORKER_CONNECTIONS", "2000")),
        # LLM calls are long; the gevent worker heartbeats on its own, so this only catches a stuck hub
        "timeout": int(env.get("LLMRELAY_WORKER_TIMEOUT", "120")),
        # SIGTERM: stop accepting, let in-flight requests (streams included) finish for this long
        "graceful_timeout": int(env.get("LLMRELAY_GRACEFUL_TIMEOUT", "60")),
        "keepalive": int(env.get("LLMRELAY_KEEPALIVE", "75")),  # above nginx's 60 s upstream keepalive
        "accesslog": None,  # llmrelay writes its own structured access log (the callbacks stage)
        "errorlog": "-",
        "loglevel": env.get("LLMRELAY_LOGLEVEL", "info"),
        "forwarded_allow_ips": env.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        # gunicorn >= 25.1 opens a control socket at a fixed per-user path; several proxies on one
        # host would fight over it, and llmrelay reloads through SIGHUP / POST /config/reload
        "control_socket_disable": True,
        "on_starting": on_starting,
        "child_exit": child_exit,
    }


def on_starting(arbiter: Any) -> None:
    """Master start: check everything workers will open, publish the first config generation,
    and make SIGHUP reload in place (proxy/master.py)."""
    from proxy import master

    master.prepare_once()
    master.install_reload(arbiter)


def child_exit(arbiter: Any, worker: Any) -> None:
    """A worker ended: its live Prometheus gauges (requests in flight) stop counting."""
    from proxy.observe.prometheus import mark_dead

    try:
        mark_dead(worker.pid)
    except Exception:  # the master must never fail over metrics files
        arbiter.log.exception("metrics: could not mark worker %s dead", worker.pid)
