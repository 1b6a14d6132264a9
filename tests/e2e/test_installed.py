"""The installed package serves like the checkout: gevent worker, concurrency, reloads all-or-nothing.

Every server here is the ``llmrelay`` of a wheel installed in a venv (tests/install.py), started
from a folder outside the checkout.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from proxy import __version__
from tests.install import installed_bin, run
from tests.mock_upstream import MockOpenAI
from tests.servers import ProxyProcess

MASTER = "sk-master"
AUTH = {"Authorization": f"Bearer {MASTER}"}


def config(upstream: MockOpenAI, *names: str) -> dict[str, Any]:
    return {
        "model_list": [{"model_name": n, "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": upstream.url,
                                                           "api_key": "sk-upstream"}} for n in names],
        "general_settings": {"master_key": MASTER},
    }


def chat(url: str, model: str, **body: Any) -> requests.Response:
    """One call on a new connection (so any worker may take it)."""
    return requests.post(f"{url}/v1/chat/completions", headers={**AUTH, "Connection": "close"},
                         json={"model": model, "messages": [{"role": "user", "content": "hi"}], **body}, timeout=30)


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def test_installed_package_runs_outside_the_checkout(upstream: MockOpenAI) -> None:
    bin_dir = installed_bin()
    assert run([str(bin_dir / "llmrelay"), "--version"]) == f"llmrelay {__version__}"
    where = run([str(bin_dir / "python"), "-c", "import proxy, middleware; print(proxy.__file__, middleware.__file__)"])
    assert where.count(str(bin_dir.parent)) == 2, where  # both packages from the venv, not the checkout
    with ProxyProcess(config(upstream, "m")) as server:
        assert chat(server.url, "m").status_code == 200
        log = server.log()
    assert "Using worker: proxy.worker.RelayWorker" in log and "Using worker: sync" not in log


def test_bundled_data_ships_in_the_wheel(upstream: MockOpenAI) -> None:
    with ProxyProcess(config(upstream, "gpt-4o")) as server:
        r = requests.post(f"{server.url}/utils/token_counter", headers=AUTH,
                          json={"model": "gpt-4o", "prompt": "hello world"})
        assert r.json() == {**r.json(), "total_tokens": 2, "tokenizer_type": "openai_tokenizer"}
        info = requests.get(f"{server.url}/model/info", headers=AUTH).json()["data"][0]["model_info"]
        assert info["max_input_tokens"] and info["input_cost_per_token"] > 0


def test_one_worker_serves_concurrent_requests_concurrently(upstream: MockOpenAI) -> None:
    with ProxyProcess(config(upstream, "m"), workers=1) as server:
        chat(server.url, "m")  # warm
        started = time.monotonic()
        with ThreadPoolExecutor(20) as pool:
            codes = list(pool.map(lambda _: chat(server.url, "m", mock_controls={"delay": 0.3}).status_code, range(20)))
        elapsed = time.monotonic() - started
        assert codes == [200] * 20
        assert elapsed < 2.0, f"20 calls to a 300 ms upstream took {elapsed:.2f}s on one worker"

        def stream(_: int) -> int:
            with requests.post(f"{server.url}/v1/chat/completions", headers=AUTH, stream=True, timeout=30, json={
                    "model": "m", "stream": True, "messages": [{"role": "user", "content": "a b c d"}],
                    "mock_controls": {"chunk_delay": 0.2}}) as r:
                return sum(1 for line in r.iter_lines() if line)

        started = time.monotonic()
        with ThreadPoolExecutor(60) as pool:
            lines = list(pool.map(stream, range(60)))
        assert min(lines) >= 4 and time.monotonic() - started < 15


@pytest.mark.parametrize("workers", [2, 4])
def test_reload_answers_when_every_worker_serves_it(upstream: MockOpenAI, tmp_path: Path, workers: int) -> None:
    path = tmp_path / "config.yaml"
    write_atomically(path, yaml.safe_dump(config(upstream, "old")))
    with ProxyProcess(path, workers=workers) as server:
        write_atomically(path, yaml.safe_dump(config(upstream, "old", "new")))
        r = requests.post(f"{server.url}/config/reload", headers=AUTH, timeout=30)
        assert r.status_code == 200, r.text
        # broken right after the reload: the workers serve the validated snapshot, not the file
        write_atomically(path, "model_list: [ {model_name: broken")
        codes = [chat(server.url, "new").status_code for _ in range(6 * workers)]
        assert codes == [200] * len(codes)
        time.sleep(1.0)  # several polls later, still the same generation everywhere
        codes = [chat(server.url, "new").status_code for _ in range(6 * workers)]
        assert codes == [200] * len(codes)
        r = requests.post(f"{server.url}/config/reload", headers=AUTH, timeout=30)
        assert r.status_code == 400 and "invalid YAML" in r.json()["error"]["message"]
        assert [chat(server.url, "new").status_code for _ in range(4)] == [200] * 4


def test_sighup_with_a_broken_file_leaves_every_worker_on_the_old_config(upstream: MockOpenAI, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    write_atomically(path, yaml.safe_dump(config(upstream, "a")))
    with ProxyProcess(path, workers=2) as server:
        write_atomically(path, yaml.safe_dump(config(upstream, "a", "b")))
        server.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "every worker serves it" not in server.log():
            assert time.monotonic() < deadline, server.log()[-2000:]
            time.sleep(0.1)
        assert [chat(server.url, "b").status_code for _ in range(10)] == [200] * 10
        write_atomically(path, "model_list: [ {model_name: broken")
        server.signal(signal.SIGHUP)
        time.sleep(1.5)
        assert server.proc is not None and server.proc.poll() is None, "the master must survive a bad file"
        assert [chat(server.url, "b").status_code for _ in range(10)] == [200] * 10
        assert [chat(server.url, "a").status_code for _ in range(4)] == [200] * 4
        log = server.log()
        assert "refused, every worker keeps its config" in log
        assert "Worker failed to boot" not in log and "Traceback" not in log


def test_reload_is_503_naming_a_worker_that_did_not_follow(upstream: MockOpenAI, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    write_atomically(path, yaml.safe_dump(config(upstream, "a")))
    server = ProxyProcess(path, workers=2, env={"LLMRELAY_RELOAD_TIMEOUT": "1.5"}).start()
    try:
        assert server.proc is not None
        children = run(["pgrep", "-P", str(server.proc.pid)]).split()
        assert len(children) == 2
        stopped = int(children[0])
        os.kill(stopped, signal.SIGSTOP)  # a worker that cannot follow (stuck hub)
        try:
            write_atomically(path, yaml.safe_dump(config(upstream, "a", "b")))
            r = requests.post(f"{server.url}/config/reload", headers={**AUTH, "Connection": "close"}, timeout=30)
        finally:
            os.kill(stopped, signal.SIGCONT)
        assert r.status_code == 503, r.text
        assert str(stopped) in r.json()["error"]["message"]
        # once it runs again it catches up with the published generation
        deadline = time.monotonic() + 5
        while [chat(server.url, "b").status_code for _ in range(8)] != [200] * 8:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        server.stop()
        server.__exit__()


def test_sighup_to_the_whole_process_group_keeps_the_workers(upstream: MockOpenAI) -> None:
    with ProxyProcess(config(upstream, "a"), workers=2) as server:
        assert server.proc is not None
        before = set(run(["pgrep", "-P", str(server.proc.pid)]).split())
        for pid in before:
            os.kill(int(pid), signal.SIGHUP)
        time.sleep(0.5)
        assert set(run(["pgrep", "-P", str(server.proc.pid)]).split()) == before
        assert "was sent SIGHUP" not in server.log()
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(chat(server.url, "a").status_code)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [200] * 4
