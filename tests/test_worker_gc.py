"""The worker sets the cyclic collector up: boot objects frozen, young collections rare."""

from __future__ import annotations

import gc
import time
from collections import deque

import pytest

from proxy.worker import tune_collector


@pytest.fixture
def collector():
    """Restore the collector's thresholds and frozen set after a test."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def young_collections(calls: int) -> int:
    """Young collections while calls finish and their records wait, as in exporter queues, for
    the next batch (a few hundred calls later) before they are sent and freed."""
    waiting: deque[dict[str, object]] = deque()
    before = gc.get_stats()[0]["collections"]
    for i in range(calls):
        garbage = [{"stage": n} for n in range(20)]  # what a request makes and frees
        del garbage
        waiting.append({"id": i, "metadata": {"tags": []}, "messages": [{"role": "user"}], "usage": {}})
        if len(waiting) >= 400:
            waiting.clear()  # a batch sent
    return gc.get_stats()[0]["collections"] - before


def test_boot_objects_are_frozen_and_full_collections_get_cheaper(collector: None) -> None:
    boot = [{"n": i, "items": [i]} for i in range(200_000)]  # long-lived objects, as a boot makes
    gc.unfreeze()
    started = time.perf_counter()
    gc.collect()
    walked = time.perf_counter() - started
    tune_collector()
    assert gc.get_freeze_count() >= len(boot)
    started = time.perf_counter()
    gc.collect()
    frozen = time.perf_counter() - started
    assert frozen < walked / 2, (walked, frozen)


def test_records_waiting_for_a_batch_do_not_keep_the_collector_busy(collector: None) -> None:
    gc.set_threshold(700, 10, 10)  # CPython's default
    default = young_collections(50_000)
    tune_collector()
    tuned = young_collections(50_000)
    assert default > 200, default  # each waiting record outlives a collection and re-arms the next
    assert tuned * 20 < default, (tuned, default)
