"""Real servers for end-to-end tests: llmrelay under gunicorn+gevent, started as a user would.

That is the ``llmrelay`` command of an installed wheel (tests/install.py), run from a folder of
its own outside the checkout, with its state directory in that folder.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.install import llmrelay_command

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProxyProcess:
    """``llmrelay --config FILE --port P --num_workers N`` in a subprocess, stopped with SIGTERM."""

    def __init__(
        self,
        config: dict[str, Any] | str | Path,
        *,
        workers: int = 1,
        env: dict[str, str] | None = None,
        port: int | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.workers = workers
        self.env = env or {}
        self.cwd: Path | None = None  # default: the process's own folder, outside the checkout
        self.extra_args = extra_args or []
        self._tmp = tempfile.TemporaryDirectory(prefix="llmrelay-test-")
        if isinstance(config, dict):
            self.config_path = Path(self._tmp.name) / "config.yaml"
            self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        else:
            self.config_path = Path(config)
        self.log_path = Path(self._tmp.name) / "proxy.log"
        self.state_dir = Path(self._tmp.name) / "state"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ProxyProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "LLMRELAY_STATE_DIR": str(self.state_dir), **self.env}
        for name in ("CONFIG_FILE_PATH", "LLMRELAY_INSTANCE", "LLMRELAY_DATABASE", "PYTHONPATH"):
            env.pop(name, None)
        cmd = [*llmrelay_command(), "--config", str(self.config_path), "--host", "127.0.0.1",
               "--port", str(self.port), "--num_workers", str(self.workers), *self.extra_args]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=self.cwd or self._tmp.name, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llmrelay exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(f"{self.url}/health/readiness", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"llmrelay did not become ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        code = self.proc.returncode
        self.proc = None
        return code

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._tmp.cleanup()
