"""ModelStore: local edits, the change counter, and mirroring rows between hosts."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.store import ModelExists, ModelNotFound, ModelStore
from tests.store.conftest import Backend

AZURE = {"model": "azure/gpt-4o", "api_key": "os.environ/AZURE_API_KEY", "api_base": "https://x.example"}


def test_add_get_list_delete_round_trip(models: ModelStore) -> None:
    row = models.add("gpt-4o", AZURE, {"description": "prod"})
    assert len(row["id"]) == 32  # uuid4 hex
    assert row["litellm_params"] == AZURE  # secrets stay unresolved references
    assert row["version"] == 1 and row["deleted"] is False
    assert row["created_at"] == row["updated_at"]
    assert models.get(row["id"]) == row
    assert models.list() == [row]
    assert models.delete(row["id"]) is True
    assert models.get(row["id"]) is None
    assert models.list() == []
    assert models.delete(row["id"]) is False
    assert models.delete("never-there") is False


def test_id_comes_from_argument_or_model_info(models: ModelStore) -> None:
    assert models.add("a", {"model": "openai/a"}, model_id="fixed")["id"] == "fixed"
    assert models.add("b", {"model": "openai/b"}, {"id": "from-info"})["id"] == "from-info"
    with pytest.raises(ValueError, match="differs"):
        models.add("c", {"model": "openai/c"}, {"id": "x"}, model_id="y")
    with pytest.raises(ModelExists):
        models.add("a2", {"model": "openai/a"}, model_id="fixed")


def test_rejects_bad_input(models: ModelStore) -> None:
    with pytest.raises(ValueError):
        models.add("", {"model": "openai/a"})
    with pytest.raises(ValueError):
        models.add("a", ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="JSON"):
        models.add("a", {"model": object()})
    assert models.list() == []


def test_update_merges_like_litellm(models: ModelStore) -> None:
    row = models.add("gpt-4o", AZURE, {"description": "prod", "tier": "a"})
    new = models.update(
        row["id"],
        litellm_params={"api_base": "https://y.example", "rpm": 60, "api_key": None},
        model_info={"tier": "b"},
    )
    assert new["litellm_params"] == {**AZURE, "api_base": "https://y.example", "rpm": 60}
    assert new["model_info"] == {"description": "prod", "tier": "b"}
    assert new["model_name"] == "gpt-4o"
    assert new["version"] == 2 and new["updated_at"] >= row["updated_at"]
    assert new["created_at"] == row["created_at"]
    assert models.get(row["id"]) == new

    renamed = models.update(row["id"], model_name="gpt-4o-eu")
    assert renamed["model_name"] == "gpt-4o-eu" and renamed["litellm_params"] == new["litellm_params"]

    replaced = models.update(row["id"], litellm_params={"model": "openai/gpt-4o"}, replace=True)
    assert replaced["litellm_params"] == {"model": "openai/gpt-4o"}
    assert replaced["model_info"] == {"description": "prod", "tier": "b"}  # not given: kept


def test_update_that_changes_nothing_keeps_versions(models: ModelStore) -> None:
    row = models.add("m", {"model": "openai/m", "rpm": 1})
    counter = models.models_version()
    assert models.update(row["id"], litellm_params={"rpm": 1}) == row
    assert models.models_version() == counter


def test_update_and_missing_models(models: ModelStore) -> None:
    with pytest.raises(ModelNotFound):
        models.update("nope", model_name="x")
    row = models.add("m", {"model": "openai/m"})
    models.delete(row["id"])
    with pytest.raises(ModelNotFound):
        models.update(row["id"], model_name="x")


def test_models_version_moves_on_every_change_and_is_seen_by_other_stores(
    models: ModelStore, backend: Backend
) -> None:
    other = backend.open()
    watcher = ModelStore(other)
    seen = [watcher.models_version()]
    row = models.add("m", {"model": "openai/m"})
    seen.append(watcher.models_version())
    models.update(row["id"], litellm_params={"rpm": 5})
    seen.append(watcher.models_version())
    models.delete(row["id"])
    seen.append(watcher.models_version())
    assert seen == [0, 1, 2, 3]
    assert watcher.models_version() == models.models_version() == 3  # reads change nothing


def test_readd_after_delete_outranks_the_tombstone(models: ModelStore) -> None:
    models.add("m", {"model": "openai/m"}, model_id="x")
    models.delete("x")
    assert models.get("x", include_deleted=True)["version"] == 2  # type: ignore[index]
    again = models.add("m2", {"model": "openai/m2"}, model_id="x")
    assert again["version"] == 3 and again["deleted"] is False


def test_tombstone_forgets_params(models: ModelStore) -> None:
    models.add("m", {"model": "openai/m", "api_key": "sk-raw"}, {"owner": "me"}, model_id="x")
    models.delete("x")
    tomb = models.get("x", include_deleted=True)
    assert tomb is not None
    assert (tomb["deleted"], tomb["model_name"], tomb["litellm_params"], tomb["model_info"]) == (
        True, "m", {}, {},
    )
    assert [r["id"] for r in models.list(include_deleted=True)] == ["x"]


# -- mirroring between hosts -----------------------------------------------------------------


def remote(
    model_id: str, version: int, *, deleted: bool = False, rpm: int = 1, at: float = 1000.0
) -> dict[str, Any]:
    """A row as another host's ``list(include_deleted=True)`` would send it."""
    return {
        "id": model_id,
        "model_name": "m",
        "litellm_params": {} if deleted else {"model": "openai/m", "rpm": rpm},
        "model_info": {},
        "created_at": 1000.0,
        "updated_at": at,
        "version": version,
        "deleted": deleted,
    }


def test_upsert_keeps_id_and_version_and_ignores_older(models: ModelStore) -> None:
    assert models.upsert(remote("x", 3)) is True
    assert models.get("x") == remote("x", 3)
    counter = models.models_version()
    assert models.upsert(remote("x", 2, rpm=99)) is False  # older
    assert models.upsert(remote("x", 3)) is False  # the same row again
    assert models.models_version() == counter
    assert models.upsert(remote("x", 4, rpm=7)) is True
    assert models.get("x")["litellm_params"]["rpm"] == 7  # type: ignore[index]
    assert models.models_version() == counter + 1


def test_late_upsert_cannot_resurrect_a_deleted_model(models: ModelStore) -> None:
    models.upsert(remote("x", 1))
    models.upsert(remote("x", 2, rpm=2))
    models.upsert(remote("x", 3, deleted=True))  # deleted on another host
    assert models.upsert(remote("x", 2, rpm=2)) is False  # a message that arrived late
    assert models.get("x") is None
    # Deleted here, then an edit made elsewhere before it saw the delete arrives:
    models.upsert(remote("y", 1))
    models.delete("y")  # local tombstone, version 2
    assert models.upsert(remote("y", 2, rpm=5, at=9e9)) is False  # equal version: delete wins
    assert models.get("y") is None


def test_upsert_order_does_not_matter(backend: Backend) -> None:
    """Two hosts receiving the same rows in opposite orders end up with the same table."""
    rows = [
        remote("x", 1),
        remote("x", 2, rpm=2, at=1001.0),
        remote("x", 2, rpm=3, at=1002.0),  # concurrent edits on two hosts, same version
        remote("x", 3, deleted=True, at=1003.0),
        remote("y", 1),
        remote("y", 2, rpm=9, at=1001.0),
        remote("y", 2, deleted=True, at=1001.0),
        remote("z", 1, rpm=1, at=1000.0),
        remote("z", 1, rpm=2, at=1000.0),  # same version and time: content digest decides
    ]
    a, b = backend.open(), backend.open(backend.another())
    for row in rows:
        ModelStore(a).upsert(row)
    assert ModelStore(b).upsert_many(reversed(rows)) >= 3
    assert ModelStore(a).list(include_deleted=True) == ModelStore(b).list(include_deleted=True)
    assert [r["id"] for r in ModelStore(a).list()] == ["z"]


def test_upsert_rejects_rows_without_id_or_version(models: ModelStore) -> None:
    with pytest.raises(ValueError):
        models.upsert({"id": "x", "model_name": "m", "litellm_params": {}})
    with pytest.raises(ValueError):
        models.upsert({**remote("x", 1), "version": 0})
    with pytest.raises(ValueError):
        models.upsert({**remote("x", 1), "model_name": ""})


def test_replace_all_mirrors_a_snapshot(models: ModelStore) -> None:
    models.add("local", {"model": "openai/local"}, model_id="local")
    models.upsert(remote("keep", 2))
    snapshot = [remote("keep", 2), remote("new", 5), remote("gone", 4, deleted=True)]
    counter = models.models_version()
    assert models.replace_all(snapshot) == 3  # "local" removed, "new" and "gone" written
    assert models.models_version() == counter + 1
    assert models.list(include_deleted=True) == sorted(snapshot, key=lambda r: (r["created_at"], r["id"]))
    assert models.replace_all(snapshot) == 0
    assert models.models_version() == counter + 1
    with pytest.raises(ValueError, match="duplicate"):
        models.replace_all([remote("a", 1), remote("a", 2)])


def test_purge_tombstones(models: ModelStore) -> None:
    models.upsert(remote("old", 2, deleted=True, at=1000.0))
    models.add("m", {"model": "openai/m"}, model_id="fresh")
    models.delete("fresh")
    assert models.purge_tombstones(older_than=3600) == 1
    assert [r["id"] for r in models.list(include_deleted=True)] == ["fresh"]
