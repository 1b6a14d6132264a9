"""Fixtures for the store tests: a fresh SQLite file per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.store import ModelStore, Store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = Store(db_path, timeout=2.0)
    yield s
    s.close()


@pytest.fixture
def models(store: Store) -> ModelStore:
    return ModelStore(store)
