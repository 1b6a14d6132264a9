"""open_store: which backend a config gets, with what pool settings, and the config keys for it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from proxy.config import load_config
from proxy.errors import ConfigError
from proxy.gateway import open_store as gateway_open_store
from proxy.store import ModelStore, Store, StoreError, open_store
from proxy.store.postgres import PostgresStore, redact, to_psycopg
from tests.pg_server import free_port
from tests.store.conftest import Backend


def test_backend_follows_the_settings(backend: Backend, tmp_path: Path) -> None:
    settings = {"database_connection_pool_limit": 3, "database_connection_timeout": 1.5}
    if backend.sqlite:
        store = open_store(settings, environ={}, default_path=backend.target)
        assert isinstance(store, Store)
    else:
        store = open_store({**settings, "database_url": backend.target}, environ={}, default_path=tmp_path / "x.db")
        assert isinstance(store, PostgresStore)
        assert not (tmp_path / "x.db").exists()  # the SQLite path is not touched
    assert store is not None
    try:
        assert (store.pool_limit, store.timeout) == (3, 1.5)
        assert store.dialect == backend.name
        ModelStore(store).add("m", {"model": "openai/m"})
        assert ModelStore(backend.open()).list()[0]["model_name"] == "m"  # the same database
    finally:
        store.close()


def test_database_url_from_the_environment_and_its_precedence(backend: Backend, tmp_path: Path) -> None:
    if backend.sqlite:
        # No URL anywhere: the SQLite file; nothing at all: no store.
        assert isinstance(open_store({}, environ={}, default_path=backend.target), Store)
        assert open_store({}, environ={}, default_path=None) is None
        return
    store = open_store({}, environ={"DATABASE_URL": backend.target}, default_path=tmp_path / "x.db")
    assert isinstance(store, PostgresStore)
    store.close()
    # general_settings.database_url wins over the environment, as in LiteLLM.
    store = open_store({"database_url": backend.target}, environ={"DATABASE_URL": "postgresql://nowhere.invalid/x"})
    assert isinstance(store, PostgresStore) and store.url == backend.target
    store.close()


def test_config_accepts_database_url_from_os_environ(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "model_list": [],
        "general_settings": {"database_url": "os.environ/DATABASE_URL", "database_connection_pool_limit": 2},
    }))
    if backend.sqlite:
        monkeypatch.delenv("DATABASE_URL", raising=False)
    else:
        monkeypatch.setenv("DATABASE_URL", backend.target)
    config = load_config(path)
    store = gateway_open_store(config)
    assert store is not None
    try:
        assert store.dialect == backend.name
        assert store.pool_limit == 2
        if backend.sqlite:
            # no URL: the file in the state directory, never beside the config
            assert Path(store.path) == Path(os.environ["LLMRELAY_STATE_DIR"]) / "llmrelay.db"
    finally:
        store.close()


def test_bad_or_unreachable_database_url(backend: Backend) -> None:
    with pytest.raises(ConfigError, match=r"general_settings\.database_url"):
        open_store({"database_url": "mysql://db/x"}, environ={})
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        open_store({}, environ={"DATABASE_URL": "sqlite:///x.db"})
    if not backend.sqlite:
        url = f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/nothing"
        with pytest.raises(StoreError, match="cannot connect") as caught:
            open_store({"database_url": url, "database_connection_timeout": 1}, environ={})
        assert "s3cret" not in str(caught.value)


def test_placeholders_and_redaction() -> None:
    assert to_psycopg("SELECT a FROM t WHERE b = ? AND c = ?") == "SELECT a FROM t WHERE b = %s AND c = %s"
    assert to_psycopg("SELECT '?', 'it''s ?', \"q?\" FROM t WHERE x LIKE '5%' AND y = ?") == (
        "SELECT '?', 'it''s ?', \"q?\" FROM t WHERE x LIKE '5%%' AND y = %s"
    )
    assert to_psycopg("SELECT 1 -- why?\nWHERE a = ? /* ? */") == "SELECT 1 -- why?\nWHERE a = %s /* ? */"
    assert redact("postgresql://u:pw@h:5432/db?sslmode=require") == "postgresql://u:***@h:5432/db?sslmode=require"
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"
