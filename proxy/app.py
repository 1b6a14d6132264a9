"""create_app: the Flask app for one config, with its blueprints and error rendering."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from proxy.api import admin, anthropic, docs, health, keys, models, openai
from proxy.api.render import error_response
from proxy.bucket import config_path_from_env
from proxy.config import Config, load_config
from proxy.errors import ProxyError, error_for_status
from proxy.gateway import Gateway
from proxy.live import LiveUpdates

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "conf" / "config.yaml"


def create_app(
    config: Config | str | os.PathLike[str] | dict | None = None, *, live: bool = True
) -> Flask:
    """Build the app. ``config`` is a loaded Config, a path, a mapping, or None (CONFIG_FILE_PATH,
    then conf/config.yaml). ``live`` starts the background watch for model changes and reloads."""
    if not isinstance(config, Config):
        if config is None:
            config = config_path_from_env() or DEFAULT_CONFIG
        config = load_config(config)
    for warning in config.warnings:
        log.warning("config: %s", warning)
    gateway = Gateway(config)
    updates = LiveUpdates(gateway)
    if live:
        updates.start()

    app = Flask("llmrelay")
    app.config["JSON_SORT_KEYS"] = False
    app.extensions["llmrelay"] = gateway
    app.register_blueprint(openai.make_blueprint(gateway))
    app.wsgi_app = openai.OpenAIEndpoints(gateway, app.wsgi_app)  # type: ignore[method-assign]
    app.wsgi_app = anthropic.AnthropicEndpoints(gateway, app.wsgi_app)  # type: ignore[method-assign]
    app.register_blueprint(health.make_blueprint(gateway))
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

    @app.errorhandler(Exception)
    def unexpected(err: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(ProxyError("Internal server error; see the proxy log for details"))

    return app
