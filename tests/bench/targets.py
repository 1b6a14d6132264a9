"""What the benchmark can measure: each target, how it is started, and the ``--only`` names."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.bench.procs import port_open

BENCH_DIR = Path(__file__).resolve().parent
REDIS = ("127.0.0.1", 6379)


@dataclass(frozen=True)
class Target:
    """A server under test: a gunicorn app from apps.py, or llmrelay with a config file."""

    key: str
    label: str
    app: str | None = None
    config: str | None = None
    streams: bool = True
    needs_redis: bool = False
    #: a /key/generate body: the load is sent with a virtual key made this way (not the master key)
    virtual_key: dict | None = None
    #: environment for the target; ``{upstream}`` is the mock upstream's base URL (log receivers too)
    env: tuple[tuple[str, str], ...] = ()


TARGETS = (
    Target("requests", "bare Flask forwarder, requests", app="requests"),
    Target("urllib3", "bare Flask forwarder, urllib3 pool + orjson", app="urllib3"),
    Target(
        "geventhttpclient",
        "bare Flask forwarder, geventhttpclient + orjson",
        app="geventhttpclient",
    ),
    Target("canned", "Flask returning a canned response (no upstream)", app="canned", streams=False),
    Target("llmrelay", "llmrelay", config="bench_config.yaml"),
    Target(
        "llmrelay-vkey",
        "llmrelay, virtual key with budget + rpm limit",
        config="bench_config.yaml",
        virtual_key={"max_budget": 1_000_000.0, "rpm_limit": 100_000_000, "key_alias": "bench"},
    ),
    Target(
        "llmrelay-observe",
        "llmrelay, langfuse + prometheus + otel on",
        config="bench_config_observe.yaml",
        env=(("LANGFUSE_HOST", "{upstream}"), ("LANGFUSE_PUBLIC_KEY", "pk-bench"),
             ("LANGFUSE_SECRET_KEY", "sk-bench"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "{upstream}")),
    ),
    Target(
        "llmrelay-redis",
        "llmrelay (redis state)",
        config="bench_config_redis.yaml",
        needs_redis=True,
    ),
)
GROUPS = {
    "all": [t.key for t in TARGETS],
    "bare": ["requests", "urllib3", "geventhttpclient", "canned"],
    "forwarders": ["requests", "urllib3", "geventhttpclient"],
    "llmrelay": ["llmrelay", "llmrelay-vkey", "llmrelay-observe", "llmrelay-redis"],
}
#: ``plain`` names the llmrelay row alone (``llmrelay`` is the group of every llmrelay row)
ALIASES = {"ghc": "geventhttpclient", "redis": "llmrelay-redis", "vkey": "llmrelay-vkey",
           "observe": "llmrelay-observe", "plain": "llmrelay"}


def select(only: str) -> list[Target]:
    """Targets named by ``--only`` (keys, aliases or group names, comma separated)."""
    wanted: set[str] = set()
    by_key = {t.key: t for t in TARGETS}
    for token in filter(None, (p.strip() for p in only.split(","))):
        if token in ALIASES:
            wanted.add(ALIASES[token])
        elif token in GROUPS:
            wanted.update(GROUPS[token])
        elif token in by_key:
            wanted.add(token)
        else:
            choices = sorted([*GROUPS, *by_key, *ALIASES])
            raise SystemExit(f"--only: unknown target {token!r}; choose from {', '.join(choices)}")
    return [t for t in TARGETS if t.key in wanted]


def command(target: Target, port: int, llmrelay_bin: str) -> list[str]:
    """The command line that serves ``target`` on 127.0.0.1:port."""
    if target.app:
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            "gevent",
            "-w",
            "1",
            "--worker-connections",
            "1000",
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "--graceful-timeout",
            "3",
            f"tests.bench.apps:create_app('{target.app}')",
        ]
    assert target.config
    return [
        llmrelay_bin,
        "--config",
        str(BENCH_DIR / target.config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]


def skip_reason(target: Target, llmrelay_bin: str) -> str | None:
    """Why a target cannot run on this machine, if it cannot."""
    if target.config and not shutil.which(llmrelay_bin):
        return f"`{llmrelay_bin}` command not found (install the package: pip install -e .)"
    if target.needs_redis and not port_open(*REDIS):
        return f"no Redis on {REDIS[0]}:{REDIS[1]}"
    return None
