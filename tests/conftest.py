"""Shared fixtures: the mock OpenAI upstream (one process for the session), Redis, PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.mock_upstream import MockOpenAI


@pytest.fixture(scope="session")
def upstream() -> Iterator[MockOpenAI]:
    with MockOpenAI(api_key="sk-upstream") as server:
        yield server


from tests.pg_server import pg_url  # noqa: E402,F401 - shared fixtures
from tests.redis_server import private_redis, redis_url  # noqa: E402,F401 - shared fixtures


@pytest.fixture(autouse=True)
def _state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Apps built in a test keep their state in a folder of the test run, never in the user's."""
    monkeypatch.setenv("LLMRELAY_STATE_DIR", str(tmp_path_factory.mktemp("state")))
    for name in ("LLMRELAY_INSTANCE", "LLMRELAY_DATABASE"):
        monkeypatch.delenv(name, raising=False)
