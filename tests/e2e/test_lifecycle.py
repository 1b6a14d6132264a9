"""The command and the process: start-up log, config errors, pipeline printout, SIGTERM drain."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import requests
import yaml

from tests.install import installed_bin, llmrelay_command
from tests.mock_upstream import MockOpenAI
from tests.servers import ROOT, ProxyProcess, free_port


def llmrelay(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The installed command, run from a folder outside the checkout."""
    return subprocess.run([*llmrelay_command(), *args], cwd=cwd or "/tmp", capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_bad_config_exits_non_zero_naming_paths(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({
        "model_list": [{"model_name": "a", "litellm_params": {"api_key": "x"}},
                       {"model_name": "b", "litellm_params": {"model": "openai/b", "tpm": -5}}],
        "pipeline": ["callbacks", "warp_drive", "route"],
    }))
    done = llmrelay("--config", str(path), "--port", str(free_port()))
    assert done.returncode == 2
    assert "model_list[0].litellm_params.model: Missing data for required field." in done.stderr
    assert "model_list[1].litellm_params.tpm:" in done.stderr
    assert "Traceback" not in done.stderr
    path.write_text(yaml.safe_dump({"model_list": [{"model_name": "a", "litellm_params": {"model": "openai/a"}}],
                                    "pipeline": ["callbacks", "warp_drive", "route"]}))
    done = llmrelay("--config", str(path))
    assert done.returncode == 2 and "pipeline[1]: unknown stage 'warp_drive'" in done.stderr


def test_pipeline_command_prints_the_resolved_chain() -> None:
    done = llmrelay("pipeline", "--config", str(ROOT / "conf" / "config.yaml"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    order = [line.split()[1] for line in lines if line.strip()[:2].rstrip(".").isdigit()]
    assert order == ["callbacks", "auth", "retry_fallback", "route", "drop_params", "prompt_template", "upstream"]
    assert "num_retries: 2" in done.stdout and "not in the chain: environment_filter" in done.stdout


def test_start_log_and_config_file_path(upstream: MockOpenAI, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model_list": [
        {"model_name": "alpha", "litellm_params": {"model": "openai/a", "mock_response": "A"}},
        {"model_name": "beta", "litellm_params": {"model": "openai/b", "mock_response": "B"}}]}))
    port = free_port()
    env = {**os.environ, "CONFIG_FILE_PATH": str(path), "PORT": str(port), "HOST": "127.0.0.1",
           "LLMRELAY_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.Popen(llmrelay_command(), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                r = requests.post(f"http://127.0.0.1:{port}/chat/completions",
                                  json={"model": "beta", "messages": [{"role": "user", "content": "x"}]})
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert r.json()["choices"][0]["message"]["content"] == "B"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert "Proxy initialized with Config, Set models:\n    alpha\n    beta" in out
    assert proc.returncode == 0


def test_sigterm_drains_an_in_flight_stream(upstream: MockOpenAI) -> None:
    config = {"model_list": [{"model_name": "m", "litellm_params": {
        "model": "openai/m", "api_base": upstream.url, "api_key": "sk-upstream"}}]}
    server = ProxyProcess(config).start()
    got: list[bytes] = []
    first = threading.Event()

    def consume() -> None:
        with requests.post(f"{server.url}/v1/chat/completions", stream=True, json={
            "model": "m", "stream": True, "messages": [{"role": "user", "content": "one two three four five"}],
            "mock_controls": {"chunk_delay": 0.3}}) as resp:
            for line in resp.iter_lines():
                if line:
                    got.append(line)
                    first.set()

    # an idle keep-alive connection must not hold the shutdown back
    idle = requests.Session()
    idle.get(f"{server.url}/health/liveliness")
    reader = threading.Thread(target=consume)
    reader.start()
    assert first.wait(10)
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    reader.join(30)
    code = server.stop()
    assert got[-1] == b"data: [DONE]" and len(got) >= 8
    assert code == 0
    assert time.monotonic() - started < 10
    assert "Traceback" not in server.log()


def test_plain_gunicorn_serves_the_same_app(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model_list": [
        {"model_name": "g", "litellm_params": {"model": "openai/g", "mock_response": "from gunicorn"}}]}))
    port = free_port()
    env = {**os.environ, "CONFIG_FILE_PATH": str(path), "LLMRELAY_BIND": f"127.0.0.1:{port}",
           "LLMRELAY_STATE_DIR": str(tmp_path / "state")}
    # the installed package's wsgi module, with the example gunicorn file reusing its defaults
    log = tmp_path / "gunicorn.log"
    cmd = [str(installed_bin() / "python"), "-m", "gunicorn", "-c", str(ROOT / "conf" / "gunicorn.conf.py"), "wsgi:app"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = requests.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                                  json={"model": "g", "messages": [{"role": "user", "content": "x"}]})
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert r.json()["choices"][0]["message"]["content"] == "from gunicorn"
        assert "route;dur=" in r.headers["Server-Timing"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    text = log.read_text()
    assert "Using worker: proxy.worker.RelayWorker" in text
    assert "Traceback" not in text
