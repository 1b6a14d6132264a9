"""Request-size and header limits end to end: clean answers in the surface's error shape."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import orjson
import pytest
import requests

from tests.servers import ProxyProcess

LIMIT_MB = 1


@pytest.fixture(scope="module")
def proxy() -> Iterator[ProxyProcess]:
    config = {
        "model_list": [{"model_name": "demo", "litellm_params": {"model": "openai/demo", "mock_response": "hi"}}],
        "general_settings": {"max_request_size_mb": LIMIT_MB},
    }
    with ProxyProcess(config) as server:
        yield server


def chat_body(size: int) -> bytes:
    return orjson.dumps({"model": "demo", "messages": [{"role": "user", "content": "x" * size}]})


def raw_exchange(port: int, head: bytes, body: bytes = b"", timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + body)
        data = b""
        while True:
            try:
                part = sock.recv(65536)
            except ConnectionResetError:
                break
            if not part:
                break
            data += part
        return data


def split(response: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, orjson.loads(body)


def assert_openai_error(body: dict, status: int) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and "Traceback" not in body["error"]["message"]


def test_a_body_under_the_limit_is_served(proxy: ProxyProcess) -> None:
    resp = requests.post(f"{proxy.url}/v1/chat/completions", data=chat_body(900_000),
                         headers={"Content-Type": "application/json"}, timeout=10)
    assert resp.status_code == 200, resp.text


def test_an_announced_body_over_the_limit_is_refused_before_it_is_sent(proxy: ProxyProcess) -> None:
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 50000000\r\n\r\n")
    start = time.monotonic()
    status, headers, body = split(raw_exchange(proxy.port, head))  # not one byte of the body sent
    assert status == 413 and headers["content-type"] == "application/json"
    assert_openai_error(body, 413)
    assert body["error"]["code"] == "request_too_large" and "max_request_size_mb" in body["error"]["message"]
    assert time.monotonic() - start < 4.0  # answered at once, then closed after a short linger


def test_a_client_sending_a_large_body_reads_the_413(proxy: ProxyProcess) -> None:
    resp = requests.post(f"{proxy.url}/v1/chat/completions", data=chat_body(3_000_000),
                         headers={"Content-Type": "application/json"}, timeout=10)
    assert resp.status_code == 413
    assert_openai_error(resp.json(), 413)


def test_a_chunked_upload_is_cut_off_at_the_limit(proxy: ProxyProcess) -> None:
    def endless() -> Iterator[bytes]:
        yield b'{"model": "demo", "messages": [{"role": "user", "content": "'
        for _ in range(400):  # 40 MB if nobody stops it
            yield b"x" * 100_000

    resp = requests.post(f"{proxy.url}/v1/chat/completions", data=endless(),
                         headers={"Content-Type": "application/json"}, timeout=10)
    assert resp.status_code == 413
    assert_openai_error(resp.json(), 413)
    assert requests.get(f"{proxy.url}/health/liveliness", timeout=5).status_code == 200


def test_the_anthropic_surface_answers_413_in_its_own_shape(proxy: ProxyProcess) -> None:
    body = orjson.dumps({"model": "demo", "max_tokens": 5, "messages": [{"role": "user", "content": "x" * 2_000_000}]})
    resp = requests.post(f"{proxy.url}/v1/messages", data=body, headers={"Content-Type": "application/json"},
                         timeout=10)
    assert resp.status_code == 413
    assert resp.json()["type"] == "error" and resp.json()["error"]["type"]


def test_admin_routes_share_the_limit(proxy: ProxyProcess) -> None:
    resp = requests.post(f"{proxy.url}/utils/token_counter", data=chat_body(2_000_000),
                         headers={"Content-Type": "application/json"}, timeout=10)
    assert resp.status_code == 413
    assert_openai_error(resp.json(), 413)


def test_headers_over_gunicorns_limit_get_a_clean_431(proxy: ProxyProcess) -> None:
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000
            + b"\r\nContent-Length: 2\r\n\r\n")
    status, headers, body = split(raw_exchange(proxy.port, head, b"{}"))
    assert status == 431 and headers["content-type"] == "application/json"
    assert_openai_error(body, 431)
    too_many = b"".join(b"X-H%d: v\r\n" % i for i in range(200))
    status, _, body = split(raw_exchange(proxy.port, b"GET /health HTTP/1.1\r\nHost: x\r\n" + too_many + b"\r\n"))
    assert status == 431
    assert_openai_error(body, 431)


def test_a_request_line_over_the_limit_gets_a_clean_414(proxy: ProxyProcess) -> None:
    status, _, body = split(raw_exchange(proxy.port, b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert status == 414
    assert_openai_error(body, 414)


def test_a_malformed_request_gets_a_clean_400(proxy: ProxyProcess) -> None:
    status, _, body = split(raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"))
    assert status == 400
    assert_openai_error(body, 400)
