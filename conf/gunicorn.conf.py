"""gunicorn settings for llmrelay: ``gunicorn -c conf/gunicorn.conf.py wsgi:app``.

gevent workers: each request is a greenlet, so one worker holds thousands of concurrent
(streaming) calls. ``llmrelay`` loads this file too, then applies its command-line flags.
"""

import os

bind = os.environ.get("LLMRELAY_BIND", f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '4000')}")
workers = int(os.environ.get("NUM_WORKERS", "1"))
worker_class = "proxy.worker.RelayWorker"  # gevent, draining idle keep-alives on SIGTERM
worker_connections = int(os.environ.get("LLMRELAY_WORKER_CONNECTIONS", "2000"))
# LLM calls are long; the gevent worker heartbeats on its own, so this only catches a stuck hub.
timeout = int(os.environ.get("LLMRELAY_WORKER_TIMEOUT", "120"))
# SIGTERM: stop accepting, let in-flight requests (streams included) finish for this long.
graceful_timeout = int(os.environ.get("LLMRELAY_GRACEFUL_TIMEOUT", "60"))
keepalive = int(os.environ.get("LLMRELAY_KEEPALIVE", "75"))  # above nginx's 60 s upstream keepalive
accesslog = None  # llmrelay writes its own structured access log (the callbacks stage)
errorlog = "-"
loglevel = os.environ.get("LLMRELAY_LOGLEVEL", "info")
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# gunicorn >= 25.1 opens a control socket at a fixed per-user path; several proxies on one host
# would fight over it, and llmrelay's reloads use SIGHUP / POST /config/reload instead.
control_socket_disable = True


def on_starting(server):
    """SIGHUP re-reads the config in place (validated first) instead of restarting workers."""
    from proxy.worker import install_config_reload

    install_config_reload(server)
