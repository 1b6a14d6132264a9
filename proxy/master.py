"""The master's share of the work: check before any worker starts, then reload on SIGHUP.

Before a worker is forked the master loads and builds the config as a worker would, checks that
the state directory and the store can be written, and publishes the validated text as the
first config generation. A problem exits with status 2 and one line naming the setting and the
path: a worker never dies at boot over something the master could have seen.

SIGHUP re-validates the file and publishes it as the next generation; every worker applies that
snapshot in place (proxy/live.py), keeping its connections. A file that does not validate is
refused and logged; the workers are untouched, so a bad file can never leave the proxy without
workers, as gunicorn's own restart-on-HUP could.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import socket
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

from proxy.app import STORE_ENV
from proxy.bucket import config_path_from_env
from proxy.config import Config
from proxy.errors import ConfigError
from proxy.gateway import check_config, open_store, store_target
from proxy.generations import INSTANCE_ENV, Generations, Instance
from proxy.live import reload_deadline
from proxy.observe.prometheus import MULTIPROC_ENV
from proxy.statedir import STATE_DIR_ENV, state_dir, writable_problem
from proxy.store import StoreError, connect

log = logging.getLogger("llmrelay")
URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def fail(lines: Iterable[str], header: str | None = None) -> NoReturn:
    """Exit 2 with one line per problem on stderr."""
    if header:
        sys.stderr.write(f"llmrelay: {header}\n" + "".join(f"  {line}\n" for line in lines))
    else:
        sys.stderr.write("".join(f"llmrelay: {line}\n" for line in lines))
    sys.stderr.flush()
    raise SystemExit(2)


def prepare(config_path: str | None) -> Config:
    """Everything the master checks and publishes before forking; exits 2 on a problem."""
    if not config_path:
        fail(["no config: pass --config FILE, set CONFIG_FILE_PATH or LITELLM_CONFIG_BUCKET_NAME"])
    prepare_metrics_dir()  # before anything imports prometheus_client, here or in a worker
    try:
        config, text = check_config(config_path)
    except ConfigError as exc:
        fail(exc.errors, header=f"config {config_path} is not valid:")
    assert config.path is not None
    folder, _ = state_dir()
    os.environ[STATE_DIR_ENV] = str(folder)  # every worker and reload uses the same folder
    os.environ["CONFIG_FILE_PATH"] = str(config.path)
    instance = Instance(socket.gethostname(), os.getpid())
    instance.export()
    located = store_target(config)
    if located is not None:
        target, setting = located
        if isinstance(target, Path):
            problem = writable_problem(target)
            if problem:
                fail([f"{setting}: {problem}"])
        try:
            store = open_store(config, target)
        except (StoreError, sqlite3.Error, OSError) as exc:
            fail([f"{setting}: {describe(target)} cannot be opened as the store ({redact_url(str(exc))})"])
        assert store is not None
        with store:
            generations = Generations(store, instance)
            generations.prune_dead_instances()
            generations.publish(config.path, text)
        os.environ[STORE_ENV] = str(target)
    return config


def prepare_metrics_dir() -> Path:
    """The folder where every worker keeps its Prometheus values, so /metrics adds them up.

    ``PROMETHEUS_MULTIPROC_DIR`` when the operator set it (emptied: values of an earlier run must
    not count), else a fresh temporary folder removed when the master exits.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        folder = Path(given)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.glob("*.db"):
                old.unlink()
        except OSError as exc:
            fail([f"{MULTIPROC_ENV}: {folder} cannot be used for metrics ({exc.strerror or exc})"])
    else:
        folder = Path(tempfile.mkdtemp(prefix="llmrelay-metrics-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ[MULTIPROC_ENV] = str(folder)
    return folder


def describe(target: str | Path) -> str:
    """A store's location for a message: a database URL without its password."""
    return redact_url(str(target))


def redact_url(text: str) -> str:
    return URL_PASSWORD.sub(r"\1***@", text)


def prepare_once() -> None:
    """``prepare`` unless this process already did (``llmrelay`` prepares before gunicorn runs)."""
    if os.environ.get(INSTANCE_ENV) != Instance(socket.gethostname(), os.getpid()).id:
        prepare(config_path_from_env())


def install_reload(arbiter: Any) -> None:
    """SIGHUP: validate, publish the next generation, and log when every worker serves it."""

    def handle_hup() -> None:
        path = os.environ.get("CONFIG_FILE_PATH")
        store_path = os.environ.get(STORE_ENV)
        if not path or not store_path:
            log.error("SIGHUP: no config file or store to reload from; nothing changed")
            return
        try:
            config, text = check_config(path)
        except ConfigError as exc:
            log.error("SIGHUP: config %s refused, every worker keeps its config:\n  %s",
                      path, "\n  ".join(exc.errors))
            return
        with connect(store_path) as store:
            generation = Generations(store, Instance.here()).publish(config.path, text)
        log.info("SIGHUP: config %s validated as generation %d; workers apply it in place", path, generation)
        threading.Thread(target=report_when_applied, args=(store_path, generation), daemon=True).start()

    arbiter.handle_hup = handle_hup


def report_when_applied(store_path: str, generation: int) -> None:
    """Log whether every worker took ``generation`` within the reload deadline."""
    with connect(store_path) as store:
        behind = Generations(store, Instance.here()).wait(generation, reload_deadline())
    if behind:
        log.error("config generation %d: worker(s) %s did not apply it within %gs",
                  generation, ", ".join(map(str, behind)), reload_deadline())
    else:
        log.info("config generation %d: every worker serves it", generation)
