"""The fault matrix (README "What clients get when things fail"): the rows not covered elsewhere.

Rows already under test elsewhere: 429 with Retry-After, 500, 503, 502 HTML, timeout before
headers, connection refused and reset before headers (test_openai_chat.py); timeout between
chunks (test_router.py); an upstream error event mid-stream (test_openai_chat.py); Redis gone
(tests/state/test_outage.py, test_shared_state.py); store locked (tests/store/test_db.py,
test_spend.py).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import requests

from tests.mock_upstream import MockOpenAI
from tests.servers import ProxyProcess

MSG = [{"role": "user", "content": "one two three four five six seven eight nine ten"}]


@pytest.fixture(scope="module")
def own_upstream() -> Iterator[MockOpenAI]:
    with MockOpenAI() as server:  # its own, so its connections can be counted
        yield server


@pytest.fixture(scope="module")
def proxy(own_upstream: MockOpenAI) -> Iterator[ProxyProcess]:
    config = {"model_list": [{"model_name": "m", "litellm_params": {
        "model": "openai/gpt-4o-mini", "api_base": own_upstream.url, "api_key": "sk-x"}}]}
    with ProxyProcess(config) as server:
        yield server


def post(proxy: ProxyProcess, controls: dict, **extra) -> requests.Response:
    return requests.post(f"{proxy.url}/v1/chat/completions", timeout=30,
                         json={"model": "m", "messages": MSG, "mock_controls": controls, **extra})


def openai_error(resp: requests.Response) -> dict:
    body = resp.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_upstream_status_with_and_without_retry_after(proxy: ProxyProcess, status: int) -> None:
    plain = post(proxy, {"status": status})
    assert plain.status_code == status and "Retry-After" not in plain.headers
    openai_error(plain)
    told = post(proxy, {"status": status, "retry_after": "9"})
    assert told.status_code == status and told.headers["Retry-After"] == "9"
    openai_error(told)


def test_a_200_that_is_not_json_is_a_502(proxy: ProxyProcess) -> None:
    resp = post(proxy, {"error": "not_json"})
    assert resp.status_code == 502
    assert openai_error(resp)["type"] == "api_error"


def test_a_stream_cut_midway_ends_with_an_error_event_not_done(proxy: ProxyProcess) -> None:
    resp = post(proxy, {"disconnect_after": 3}, stream=True)
    assert resp.status_code == 200
    events = [e for e in resp.text.split("\n\n") if e]
    assert "[DONE]" not in resp.text
    last = orjson.loads(events[-1][len("data: "):])
    assert set(last["error"]) == {"message", "type", "param", "code"}


def upstream_connections(port: int) -> int:
    """ESTABLISHED TCP connections on the upstream's side of ``port`` (from /proc/net/tcp)."""
    count = 0
    with open("/proc/net/tcp") as table:
        for line in list(table)[1:]:
            local, state = line.split()[1], line.split()[3]
            if int(local.split(":")[1], 16) == port and state == "01":
                count += 1
    return count


def test_a_client_leaving_mid_stream_drops_the_upstream_call(proxy: ProxyProcess, own_upstream: MockOpenAI) -> None:
    port = int(own_upstream.base_url.rsplit(":", 1)[1])
    body = orjson.dumps({"model": "m", "stream": True, "messages": MSG, "mock_controls": {"chunk_delay": 0.3}})
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        sock.settimeout(10)
        seen = b""
        while b"data: " not in seen:  # the headers may come in a packet of their own
            piece = sock.recv(65536)
            assert piece, seen
            seen += piece
        # the stream has started
        assert upstream_connections(port) >= 1
    deadline = time.monotonic() + 3.0  # the whole answer would take another ~3 s
    while upstream_connections(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream_connections(port) == 0


def test_a_locked_store_does_not_stop_requests(upstream: MockOpenAI) -> None:
    config = {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/demo", "mock_response": "hi"}}],
              "general_settings": {"master_key": "sk-m"}}
    with ProxyProcess(config) as server:
        db = sqlite3.connect(next(server.state_dir.rglob("*.db")), timeout=1)
        db.execute("BEGIN EXCLUSIVE")  # nobody else can read or write the file now
        try:
            start = time.monotonic()
            for _ in range(5):
                resp = requests.post(f"{server.url}/v1/chat/completions", timeout=10,
                                     headers={"Authorization": "Bearer sk-m"}, json={"model": "m", "messages": MSG})
                assert resp.status_code == 200
            assert time.monotonic() - start < 2.0
        finally:
            db.rollback()
            db.close()
        time.sleep(1.5)  # the spend writer flushes what it kept once the lock is gone
        logs = requests.get(f"{server.url}/spend/logs", timeout=10, headers={"Authorization": "Bearer sk-m"})
        assert logs.status_code == 200 and len(logs.json()) >= 5



@contextlib.contextmanager
def small_disk(folder: Path, size: str = "16m") -> Iterator[Path]:
    """A tmpfs of its own at ``folder`` (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs for the store needs root")
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(path: Path) -> None:
    """Write ``path`` until its filesystem has no byte left."""
    with open(path, "wb", buffering=0) as out:
        for chunk in (b"\0" * 65536, b"\0" * 4096, b"\0"):
            try:
                while True:
                    out.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc


def test_a_store_that_refuses_writes_keeps_serving_and_keeps_the_spend_rows(tmp_path: Path) -> None:
    """The store's filesystem stops taking writes while the proxy runs, then takes them again.

    The fault is a full disk: SQLite gets ENOSPC ("database or disk is full") on the files it
    holds open. A read-only remount cannot be had under them: Linux refuses to remount any
    filesystem (tmpfs, bind mount, loop image) read-only while a file on it is open for writing,
    as SQLite's database, WAL and shared-memory files are. Both faults reach the proxy as the
    same thing, a store that fails every write.
    """
    master = {"Authorization": "Bearer sk-m"}
    with small_disk(tmp_path / "disk") as disk:
        db_path = disk / "llmrelay.db"
        config = {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/demo",
                                                                        "mock_response": "hi"}}],
                  "general_settings": {"master_key": "sk-m", "database_path": str(db_path)}}
        with ProxyProcess(config) as server:
            made = requests.post(f"{server.url}/key/generate", headers=master, json={"models": ["m"]}, timeout=10)
            assert made.status_code == 200
            key = {"Authorization": f"Bearer {made.json()['key']}"}

            def chat(headers: dict[str, str]) -> requests.Response:
                return requests.post(f"{server.url}/v1/chat/completions", headers=headers, timeout=10,
                                     json={"model": "m", "messages": MSG})

            assert chat(key).status_code == 200  # the key is known to the worker now
            before = len(requests.get(f"{server.url}/spend/logs", headers=master, timeout=10).json())
            with sqlite3.connect(db_path) as db:  # an empty WAL: the next commit must grow a file
                assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
            fill(disk / "filler")

            served = [chat(master if i % 2 else key) for i in range(6)]
            assert [r.status_code for r in served] == [200] * 6
            refused = requests.post(f"{server.url}/key/generate", headers=master, json={"models": ["m"]}, timeout=30)
            assert refused.status_code == 503, refused.text
            error = openai_error(refused)
            assert error["code"] == "store_unavailable" and error["type"] == "api_error"
            assert "Traceback" not in refused.text and "database or disk is full" in error["message"]
            time.sleep(1.5)  # the spend writer has tried, and failed, to write the rows meanwhile
            assert "rows wait for the next try" in server.log()
            assert len(requests.get(f"{server.url}/spend/logs", headers=master, timeout=10).json()) == before

            (disk / "filler").unlink()  # room again
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                logs = requests.get(f"{server.url}/spend/logs", headers=master, timeout=10).json()
                if len(logs) >= before + 6:
                    break
                time.sleep(0.2)
            assert {r["request_id"] for r in logs} >= {r.headers["x-litellm-call-id"] for r in served}
            again = requests.post(f"{server.url}/key/generate", headers=master, json={"models": ["m"]}, timeout=10)
            assert again.status_code == 200
            log = server.log()
        assert "dropped" not in log  # nothing lost: the writer kept every row until it could write
        assert "Traceback" not in log, log  # a known outage is one line in the log, not a stack
