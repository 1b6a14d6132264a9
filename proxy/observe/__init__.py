"""Observability: the standard log record, its exporters, Prometheus metrics and Slack alerts.

The ``callbacks`` stage builds an ``Observer`` (hub.py) from the config; it makes one record per
finished call (record.py) and hands it to the exporters named in ``litellm_settings``. What must
outlive a config reload — the metric objects, exporters still flushing after a reload — hangs off
the worker's ``Telemetry``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent

if TYPE_CHECKING:
    from proxy.observe.prometheus import Metrics

log = logging.getLogger(__name__)


class Telemetry:
    """Per-worker observability state kept across config reloads."""

    def __init__(self, active: bool = True) -> None:
        #: False for a gateway built only to validate a config: nothing is started or sent
        self.active = active
        self.metrics: Metrics | None = None
        self._retiring: list[gevent.Greenlet] = []

    def ensure_metrics(self) -> Metrics:
        if self.metrics is None:
            from proxy.observe.prometheus import Metrics

            self.metrics = Metrics()
        return self.metrics

    def count_drop(self, exporter: str, count: int) -> None:
        if self.metrics is not None:
            self.metrics.count_drop(exporter, count)

    def retire(self, close: Callable[[], Any]) -> None:
        """Run ``close`` (a flush) in the background; ``close()`` of this object waits for it."""
        self._retiring = [g for g in self._retiring if not g.dead]
        self._retiring.append(gevent.spawn(close))

    def close(self, timeout: float) -> None:
        """Wait for the exporters being flushed (SIGTERM, exit), at most ``timeout`` s."""
        if self.metrics is not None:
            self.metrics.flush()  # counters of calls since the last flush; the files outlive the worker
        pending = [g for g in self._retiring if not g.dead]
        if pending:
            gevent.joinall(pending, timeout=timeout)
            if any(not g.dead for g in pending):
                log.warning("callbacks: exporters still flushing after %gs at shutdown", timeout)
