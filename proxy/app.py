"""create_app: the Flask app for one config, with its blueprints and error rendering."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from proxy.api import admin, anthropic, bedrock, docs, health, keys, metrics, models, openai, vertex
from proxy.api.body_limit import BodyLimit
from proxy.api.render import error_response
from proxy.bucket import config_path_from_env
from proxy.config import Config, load_config, read_text
from proxy.errors import ConfigError, ProxyError, ServiceUnavailable, error_for_status
from proxy.forwarded import ForwardedFor
from proxy.gateway import Gateway, open_store
from proxy.generations import INSTANCE_ENV, Generations, Instance
from proxy.health import HealthMonitor
from proxy.live import LiveUpdates
from proxy.secrets import Secrets
from proxy.store import StoreAPI, StoreError, connect

log = logging.getLogger(__name__)

STORE_ENV = "LLMRELAY_DATABASE"  # the store the master opened; its workers open the same


def boot(
    config: Config | str | os.PathLike[str] | dict | None, secrets: Secrets | None = None
) -> tuple[Config, StoreAPI | None, int]:
    """The config, store and config generation a new app starts with.

    A worker whose master published a snapshot (proxy/master.py) starts from that snapshot, not
    from the file, so every worker serves the same generation. Otherwise the config is loaded
    here: a Config, a path, a mapping, or None for ``CONFIG_FILE_PATH`` (or the bucket's copy);
    a file-based config is then published as this process's own first generation.
    """
    if config is None and os.environ.get(STORE_ENV) and os.environ.get(INSTANCE_ENV):
        store = connect(os.environ[STORE_ENV])
        generations = Generations(store, Instance.here())
        # Counted as a worker before reading: a reload that does not see this worker yet was
        # published before the read below, so this worker starts from that generation or later.
        generations.report(0)
        snapshot = generations.latest()
        if snapshot is not None:
            return snapshot.load(secrets), store, snapshot.generation
        generations.forget()
        store.close()
    text = None
    if not isinstance(config, Config):
        if config is None:
            config = config_path_from_env()
            if config is None:
                raise ConfigError(["no config: set CONFIG_FILE_PATH (or LITELLM_CONFIG_BUCKET_*)"])
        if not isinstance(config, dict):
            text = read_text(Path(config).resolve())
        config = load_config(config, text=text, secrets=secrets)
    store = open_store(config)
    generation = 0
    if store is not None and config.path is not None:
        generation = Generations(store, Instance.here()).publish(config.path, text or read_text(config.path))
    return config, store, generation


def create_app(
    config: Config | str | os.PathLike[str] | dict | None = None, *, live: bool = True
) -> Flask:
    """Build the app. ``config`` is a loaded Config, a path, a mapping, or None (the master's
    snapshot, else CONFIG_FILE_PATH). ``live`` starts the background watch for model changes
    and reloads."""
    secrets = Secrets()  # this worker's secret-manager cache, reused by every reload
    config, store, generation = boot(config, secrets)
    for warning in config.warnings:
        log.warning("config: %s", warning)
    if config.litellm_settings.get("set_verbose"):
        logging.getLogger().setLevel(logging.DEBUG)  # LiteLLM's verbose switch: the detailed debug log
    gateway = Gateway(config, store=store if store is not None else False)
    gateway.secrets = secrets
    generations = Generations(store, Instance.here()) if store is not None else None
    updates = LiveUpdates(gateway, generations, generation)
    monitor = HealthMonitor(gateway)  # background health checks, when the config turns them on
    if live:
        updates.start()
        monitor.start()

    app = Flask("llmrelay")
    app.config["JSON_SORT_KEYS"] = False
    app.extensions["llmrelay"] = gateway
    app.extensions["llmrelay.live"] = updates
    app.extensions["llmrelay.health"] = monitor
    app.register_blueprint(openai.make_blueprint(gateway))
    app.wsgi_app = openai.OpenAIEndpoints(gateway, app.wsgi_app)  # type: ignore[method-assign]
    app.wsgi_app = anthropic.AnthropicEndpoints(gateway, app.wsgi_app)  # type: ignore[method-assign]
    app.wsgi_app = vertex.VertexEndpoints(gateway, app.wsgi_app)  # type: ignore[method-assign]
    app.wsgi_app = bedrock.BedrockEndpoints(gateway, app.wsgi_app)  # type: ignore[method-assign]
    app.wsgi_app = BodyLimit(gateway, app.wsgi_app, anthropic.error_for_path)  # type: ignore[method-assign]
    app.wsgi_app = ForwardedFor(app.wsgi_app)  # type: ignore[method-assign]  # outermost: every surface
    app.register_blueprint(health.make_blueprint(gateway))
    app.register_blueprint(metrics.make_blueprint(gateway))
    app.register_blueprint(admin.make_blueprint(gateway, updates))
    app.register_blueprint(models.make_blueprint(gateway, updates))
    app.register_blueprint(keys.make_blueprint(gateway, updates))
    docs_blueprint = docs.make_blueprint(gateway, app)
    if docs_blueprint is not None:
        app.register_blueprint(docs_blueprint)

    @app.errorhandler(ProxyError)
    def proxy_error(err: ProxyError) -> Response:
        return error_response(err)

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> Response:
        status = err.code or 500
        message = err.description or err.name
        if status == 404:
            message = f"Not found: no endpoint at this path ({err.description})"
        return error_response(error_for_status(status)(message, status=status))

    @app.errorhandler(StoreError)
    def store_error(err: StoreError) -> Response:
        # Locked past its timeout, read-only, full: the caller may try again later; LLM calls
        # never wait on the store, so only admin calls end here.
        log.warning("store: %s (%s)", err, request.path)
        reason = err.__cause__ or "busy"
        return error_response(ServiceUnavailable(f"The proxy's database is not available now ({reason}); "
                                                 "try again later", code="store_unavailable"))

    @app.errorhandler(Exception)
    def unexpected(err: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(ProxyError("Internal server error; see the proxy log for details"))

    return app
