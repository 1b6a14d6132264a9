"""The key and team records and the running spend totals, on both store backends."""

from __future__ import annotations

import time

import pytest

from proxy.errors import AuthenticationError, PermissionDenied
from proxy.keys import KeyChecker
from proxy.keys.cache import KeyCache
from proxy.keys.records import hash_key
from proxy.store import SpendWriter, StoreAPI
from proxy.store.keys import KeyStore


@pytest.fixture
def keys(store: StoreAPI) -> KeyStore:
    return KeyStore(store)


def put(keys: KeyStore, key: str, **fields) -> str:
    now = time.time()
    keys.put_key({"token": hash_key(key), "created_at": now, "updated_at": now, "budget_anchor": now, **fields})
    return hash_key(key)


def test_cache_reloads_only_when_the_version_moves_and_sees_new_keys_at_once(keys: KeyStore) -> None:
    cache = KeyCache(keys)
    assert cache.refresh() is True and cache.refresh() is False
    token = put(keys, "sk-new", models=["m"])
    assert cache.key(token).models == ["m"]  # a miss reads the store once: a fresh key works at once
    assert cache.key(hash_key("sk-wrong")) is None
    assert hash_key("sk-wrong") in cache.misses
    keys.delete_keys([token])
    assert cache.key(token) is not None  # until the next poll
    assert cache.refresh() is True and cache.key(token) is None


def test_spend_totals_are_written_with_their_rows_and_never_twice(store: StoreAPI) -> None:
    writer = SpendWriter(store, flush_interval=60)
    try:
        writer.record({"request_id": "r1", "spend": 0.25}, [("key:k", 0, 0.25), ("team:t", 0, 0.25)])
        writer.record({"request_id": "r2", "spend": 0.5}, [("key:k", 0, 0.5)])
        writer.flush()
        writer.record({"request_id": "r1", "spend": 0.25}, [("key:k", 0, 0.25)])  # re-sent
        writer.flush()
    finally:
        writer.close()
    keys = KeyStore(store)
    assert keys.spend_total("key:k", 0) == pytest.approx(0.75)
    assert keys.spend_total("team:t", 0) == pytest.approx(0.25)
    cache = KeyCache(keys)
    cache.refresh_spend()
    assert cache.durable["key:k@0"] == pytest.approx(0.75)


def test_checker_accepts_master_and_virtual_keys_and_refuses_expired_and_unknown(keys: KeyStore) -> None:
    put(keys, "sk-live", models=["m"])
    put(keys, "sk-old", expires=time.time() - 1)
    put(keys, "sk-admin", allowed_routes=["management_routes"])
    checker = KeyChecker("sk-master", KeyCache(keys))
    assert checker.caller({"Authorization": "Bearer sk-master"})["role"] == "admin"
    caller = checker.caller({"Authorization": "Bearer sk-live"})
    assert caller["role"] == "key" and caller["models"] == ["m"] and caller["token"] == hash_key("sk-live")
    with pytest.raises(AuthenticationError) as info:
        checker.caller({"Authorization": "Bearer sk-old"})
    assert info.value.code == "expired_key"
    with pytest.raises(AuthenticationError):
        checker.caller({"Authorization": "Bearer sk-unknown"})
    with pytest.raises(PermissionDenied):
        checker.require_admin({"Authorization": "Bearer sk-live"}, "/key/list")
    assert checker.require_admin({"Authorization": "Bearer sk-admin"}, "/key/list")["role"] == "key"
