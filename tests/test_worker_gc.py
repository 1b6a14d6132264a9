"""The worker takes what its boot built out of the cyclic collector's sight."""

from __future__ import annotations

import gc
import time

from proxy.worker import freeze_boot_objects


def test_boot_objects_are_frozen_and_full_collections_get_cheaper() -> None:
    boot = [{"n": i, "items": [i]} for i in range(200_000)]  # long-lived objects, as a boot makes
    gc.unfreeze()
    try:
        started = time.perf_counter()
        gc.collect()
        walked = time.perf_counter() - started
        freeze_boot_objects()
        assert gc.get_freeze_count() >= len(boot)
        started = time.perf_counter()
        gc.collect()
        frozen = time.perf_counter() - started
        assert frozen < walked / 2, (walked, frozen)
    finally:
        gc.unfreeze()
