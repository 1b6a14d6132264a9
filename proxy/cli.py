"""The ``llmrelay`` command: validate the config, then run gunicorn with gevent workers.

    llmrelay --config FILE [--host H] [--port 4000] [--num_workers N] [--detailed_debug]
    llmrelay pipeline --config FILE [--json]
    llmrelay --version

(also ``python -m proxy ...``; the entry point is proxy/__main__.py, which patches with gevent first)

The master checks the config, the state directory and the store before any worker starts
(proxy/master.py), so a problem exits 2 with one line each; each worker then builds its own app
from the validated snapshot. gunicorn runs with the package's serving defaults (proxy/serving.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from importlib import metadata
from typing import Any

from gunicorn.app.base import BaseApplication

from proxy import __version__
from proxy.bucket import config_path_from_env
from proxy.config import Config
from proxy.errors import ConfigError
from proxy.gateway import check_config
from proxy.logs import setup_logging
from proxy.master import fail, prepare
from proxy.serving import settings

log = logging.getLogger("llmrelay")

class ProxyServer(BaseApplication):
    """gunicorn application running ``create_app`` in each gevent worker."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        """The package's serving defaults (proxy/serving.py), then the command's flags."""
        for key, value in {**settings(), **self.options}.items():
            if key in self.cfg.settings:  # a setting this gunicorn does not know is skipped
                self.cfg.set(key, value)

    def load(self) -> Any:
        from proxy.app import create_app

        setup_logging(self.options.get("loglevel") == "debug")
        return create_app()


def check(config_path: str) -> Config:
    """Load and build everything a worker will build; exit 2 with the errors if it cannot."""
    try:
        return check_config(config_path)[0]
    except ConfigError as exc:
        fail(exc.errors, header=f"config {config_path} is not valid:")


def version() -> str:
    """The installed distribution's version (the package's own when run from a source tree)."""
    try:
        return metadata.version("llmrelay")
    except metadata.PackageNotFoundError:
        return __version__


def serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmrelay", description="OpenAI-compatible LLM gateway")
    p.add_argument("--config", "-c", default=None,
                   help="LiteLLM-format config.yaml (default: $CONFIG_FILE_PATH, "
                        "else the LITELLM_CONFIG_BUCKET_* object)")
    p.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "4000")))
    p.add_argument("--num_workers", type=int, default=int(os.environ.get("NUM_WORKERS", "1")))
    p.add_argument("--detailed_debug", action="store_true", help="log at DEBUG level")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    return p


def serve(argv: list[str]) -> None:
    args = serve_parser().parse_args(argv)
    if args.version:
        sys.stdout.write(f"llmrelay {version()}\n")
        return
    setup_logging(args.detailed_debug)
    try:
        config_path = args.config or config_path_from_env()
    except ConfigError as exc:
        fail(exc.errors)
    config = prepare(os.path.abspath(config_path) if config_path else None)
    names = []
    for entry in config.model_list:
        if entry["model_name"] not in names:
            names.append(entry["model_name"])
    log.info("Proxy initialized with Config, Set models:%s", "".join(f"\n    {n}" for n in names))
    if args.num_workers > 1 and not uses_redis(config):
        log.warning("--num_workers %d without Redis: rate limits, cooldowns and usage counters are "
                    "kept per worker; set router_settings.redis_host to share them", args.num_workers)
    ProxyServer({
        "bind": f"{args.host}:{args.port}",
        "workers": args.num_workers,
        "loglevel": "debug" if args.detailed_debug else "info",
    }).run()


def uses_redis(config: Config) -> bool:
    rs = config.router_settings
    return bool(rs.get("redis_host") or rs.get("redis_url") or os.environ.get("REDIS_URL")
                or os.environ.get("REDIS_HOST"))


def pipeline(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="llmrelay pipeline", description="print the resolved stage chain")
    p.add_argument("--config", "-c", default=os.environ.get("CONFIG_FILE_PATH"))
    p.add_argument("--json", action="store_true", help="machine-readable output")
    args = p.parse_args(argv)
    if not args.config:
        print("llmrelay pipeline: pass --config FILE", file=sys.stderr)
        raise SystemExit(2)
    logging.getLogger().setLevel(logging.ERROR)
    config = check(args.config)
    from proxy.gateway import Gateway

    gateway = Gateway(config, preload=False, store=False, shared_state=False)
    chain = gateway.describe()
    if args.json:
        print(json.dumps(chain, indent=2, default=str))
        return
    source = "pipeline:" if config.pipeline is not None else "default pipeline (no pipeline: in config)"
    print(f"{source} outermost first")
    for i, stage in enumerate(chain, 1):
        print(f"  {i}. {stage['stage']:<20} {stage['class']}")
        print(f"     needs: {', '.join(stage['needs']) or '-'}   provides: {', '.join(stage['provides']) or '-'}")
        for key, value in stage["options"].items():
            print(f"     {key}: {json.dumps(value, default=str)}")
    print(f"  {len(chain) + 1}. {'upstream':<20} proxy.dispatch.Dispatcher")
    for name, reason in gateway.pipeline.skipped.items():
        print(f"  (not in the chain: {name}: {reason})")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "pipeline":
        pipeline(argv[1:])
    else:
        serve(argv)
