"""A config on a read-only mount boots; durable state goes to the state directory; the master
refuses, in one line, a store a worker could not open."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from proxy.statedir import state_dir, writable_problem
from tests.install import llmrelay_command
from tests.servers import ProxyProcess, free_port

MASTER = "sk-master"
AUTH = {"Authorization": f"Bearer {MASTER}"}
CONFIG: dict[str, Any] = {
    "model_list": [{"model_name": "demo", "litellm_params": {"model": "openai/demo", "mock_response": "hi"}}],
    "general_settings": {"master_key": MASTER},
}


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Path]]:
    """A tmpfs holding the given files, then remounted read-only (as Kubernetes mounts a ConfigMap)."""
    mounts: list[Path] = []

    def make(files: dict[str, str]) -> Path:
        where = tmp_path / f"ro{len(mounts)}"
        where.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
                          capture_output=True).returncode != 0:
            pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
        mounts.append(where)
        for name, text in files.items():
            (where / name).write_text(text)
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        return where

    yield make
    for where in mounts:
        subprocess.run(["umount", str(where)], capture_output=True)


def start(config_path: Path, cwd: Path, env: dict[str, str]) -> ProxyProcess:
    server = ProxyProcess(config_path, env={"LLMRELAY_STATE_DIR": "", "XDG_DATA_HOME": "", **env})
    server.cwd = cwd
    return server.start()


def add_model(server: ProxyProcess) -> None:
    r = requests.post(f"{server.url}/model/new", headers=AUTH, json={
        "model_name": "added", "litellm_params": {"model": "openai/x", "mock_response": "added"}})
    assert r.status_code == 200, r.text


def test_config_on_a_read_only_mount_boots_and_keeps_state_in_the_user_data_dir(
        read_only_dir: Callable[[dict[str, str]], Path], tmp_path: Path) -> None:
    ro = read_only_dir({"config.yaml": yaml.safe_dump(CONFIG)})
    home = tmp_path / "home"
    home.mkdir()
    server = start(ro / "config.yaml", cwd=ro, env={"HOME": str(home)})
    try:
        r = requests.post(f"{server.url}/v1/chat/completions", headers=AUTH,
                          json={"model": "demo", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "hi"
        add_model(server)
        assert "Traceback" not in server.log()
    finally:
        server.stop()
    assert (home / ".local" / "share" / "llmrelay" / "llmrelay.db").exists()
    assert sorted(p.name for p in ro.iterdir()) == ["config.yaml"]


def test_without_a_usable_home_state_goes_to_dot_llmrelay(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    work = tmp_path / "work"
    work.mkdir()
    server = start(path, cwd=work, env={"HOME": "/"})
    try:
        add_model(server)
    finally:
        server.stop()
    assert (work / ".llmrelay" / "llmrelay.db").exists()
    assert not (tmp_path / "llmrelay.db").exists()  # never beside the config


def run_master(config: dict[str, Any], tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([*llmrelay_command(), "--config", str(path), "--port", str(free_port())],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_a_store_that_cannot_be_written_is_one_line_and_status_2(
        read_only_dir: Callable[[dict[str, str]], Path], tmp_path: Path) -> None:
    ro = read_only_dir({})
    config = {**CONFIG, "general_settings": {**CONFIG["general_settings"], "database_path": str(ro / "llmrelay.db")}}
    done = run_master(config, tmp_path, {})
    assert done.returncode == 2
    assert done.stderr.strip() == (f"llmrelay: general_settings.database_path: {ro}/llmrelay.db is not writable "
                                   "(read-only file system)")
    assert "Booting worker" not in done.stderr + done.stdout

    done = run_master(CONFIG, tmp_path, {"LLMRELAY_STATE_DIR": str(ro / "state")})
    assert done.returncode == 2
    assert done.stderr.strip() == (f"llmrelay: LLMRELAY_STATE_DIR: {ro}/state/llmrelay.db cannot be created "
                                   "(read-only file system)")


def test_a_store_path_under_a_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    config = {**CONFIG, "general_settings": {**CONFIG["general_settings"], "database_path": str(blocker / "x.db")}}
    done = run_master(config, tmp_path, {})
    assert done.returncode == 2
    assert done.stderr.startswith(f"llmrelay: general_settings.database_path: {blocker}/x.db cannot be created")
    assert "Traceback" not in done.stderr


def test_state_dir_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert state_dir({"LLMRELAY_STATE_DIR": str(tmp_path / "s"), "HOME": str(tmp_path)}) == (
        tmp_path / "s", "LLMRELAY_STATE_DIR")
    assert state_dir({"HOME": str(tmp_path / "h")})[0] == tmp_path / "h" / ".local" / "share" / "llmrelay"
    assert state_dir({"XDG_DATA_HOME": str(tmp_path / "x"), "HOME": "/"})[0] == tmp_path / "x" / "llmrelay"
    assert state_dir({"HOME": "/"})[0] == tmp_path / ".llmrelay"
    assert writable_problem(tmp_path / "a" / "b.db") is None and (tmp_path / "a").is_dir()
