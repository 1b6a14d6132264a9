"""Durable data in one SQLite file through sqlite-utils: runtime models and the spend log.

``Store`` owns the file (pool, pragmas, migrations); ``ModelStore`` and ``SpendWriter`` work on
it. One ``Store`` per worker process, built by ``create_app``; every worker on a host may open
the same file.
"""

from proxy.store.db import SCHEMA_VERSION, Store, StoreBusy, StoreError
from proxy.store.models import ModelExists, ModelNotFound, ModelStore
from proxy.store.spend import SpendWriter, spend_logs, total_spend

__all__ = [
    "SCHEMA_VERSION",
    "ModelExists",
    "ModelNotFound",
    "ModelStore",
    "SpendWriter",
    "Store",
    "StoreBusy",
    "StoreError",
    "spend_logs",
    "total_spend",
]
