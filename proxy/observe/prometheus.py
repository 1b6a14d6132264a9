"""``prometheus``: LiteLLM's metric names, served on ``GET /metrics`` through prometheus_client.

Under gunicorn the master points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before any
worker starts (proxy/master.py), so each worker writes its values to files there and
``/metrics``, whichever worker answers, adds up every worker's counters: with N workers each
request is counted once. prometheus_client reads that variable when it is first imported, so
this module imports it lazily, never at the package's import time.
"""

from __future__ import annotations

import bisect
import logging
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import gevent

if TYPE_CHECKING:
    from proxy.services import Services

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: LiteLLM's latency buckets (seconds).
LATENCY_BUCKETS = (0.005, 0.00625, 0.0125, 0.025, 0.05, 0.1, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0,
                   5.5, 6.0, 6.5, 7.0, 7.5, 8.0, 8.5, 9.0, 9.5, 10.0, 15.0, 20.0, 25.0, 30.0, 60.0, 120.0,
                   180.0, 240.0, 300.0, float("inf"))
KEY_LABELS = ("end_user", "hashed_api_key", "api_key_alias", "requested_model", "team", "team_alias", "user")
DEPLOYMENT_LABELS = ("litellm_model_name", "model_id", "api_base", "api_provider")
#: seconds between moving per-call sums into the shared metric files: how stale a scrape can be
FLUSH_INTERVAL = 0.5


def multiprocess_dir() -> str | None:
    folder = os.environ.get(MULTIPROC_ENV)
    return folder if folder and os.path.isdir(folder) else None


class Metrics:
    """The metric objects of one worker; they outlive config reloads (names register once)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess = multiprocess_dir() is not None
        # In multiprocess mode values live in files and /metrics reads the folder; the objects
        # still need a registry, a private one, so nothing global is touched.
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        keys = (*KEY_LABELS, "model")
        self.requests = Counter("litellm_requests_metric", "Requests made, per key, team, user and model",
                                keys, registry=reg)
        self.proxy_total = Counter("litellm_proxy_total_requests_metric", "Requests answered by the proxy",
                                   (*KEY_LABELS, "status_code"), registry=reg)
        self.proxy_failed = Counter("litellm_proxy_failed_requests_metric",
                                    "Requests the proxy answered with an error",
                                    (*KEY_LABELS, "exception_status", "exception_class"), registry=reg)
        self.spend = Counter("litellm_spend_metric", "Spend (USD), per key, team, user and model", keys,
                             registry=reg)
        self.total_tokens = Counter("litellm_total_tokens", "Input + output tokens", keys, registry=reg)
        self.input_tokens = Counter("litellm_input_tokens_metric", "Input tokens", keys, registry=reg)
        self.output_tokens = Counter("litellm_output_tokens_metric", "Output tokens", keys, registry=reg)
        self.dep_success = Counter("litellm_deployment_success_responses", "Successful upstream calls",
                                   (*DEPLOYMENT_LABELS, "requested_model", "hashed_api_key", "api_key_alias",
                                    "team", "team_alias"), registry=reg)
        self.dep_failure = Counter("litellm_deployment_failure_responses", "Failed upstream calls",
                                   (*DEPLOYMENT_LABELS, "requested_model", "exception_status",
                                    "exception_class", "hashed_api_key", "api_key_alias", "team",
                                    "team_alias"), registry=reg)
        self.dep_total = Counter("litellm_deployment_total_requests", "Upstream calls, failed or not",
                                 (*DEPLOYMENT_LABELS, "requested_model", "hashed_api_key", "api_key_alias",
                                  "team", "team_alias"), registry=reg)
        self.total_latency = Histogram("litellm_request_total_latency_metric",
                                       "Whole request, as the client saw it (seconds)",
                                       (*KEY_LABELS, "model"), buckets=LATENCY_BUCKETS, registry=reg)
        self.api_latency = Histogram("litellm_llm_api_latency_metric", "The upstream call alone (seconds)",
                                     (*KEY_LABELS, "model"), buckets=LATENCY_BUCKETS, registry=reg)
        self.ttft = Histogram("litellm_llm_api_time_to_first_token_metric",
                              "Time to the first streamed token (seconds)",
                              ("model", "hashed_api_key", "api_key_alias", "team", "team_alias"),
                              buckets=LATENCY_BUCKETS, registry=reg)
        self.in_flight = Gauge("litellm_in_flight_requests", "LLM requests being served now", (),
                               registry=reg, multiprocess_mode="livesum")
        self.deployment_state = Gauge("litellm_deployment_state",
                                      "0 healthy, 2 cooling down after failures", DEPLOYMENT_LABELS,
                                      registry=reg, multiprocess_mode="mostrecent")
        self.cooled_down = Counter("litellm_deployment_cooled_down", "Times a deployment entered cooldown",
                                   (*DEPLOYMENT_LABELS, "exception_status"), registry=reg)
        dep_group = ("model_group", "api_provider", "api_base", "litellm_model_name")
        self.remaining_requests = Gauge("litellm_remaining_requests_metric",
                                        "Requests left this minute (the deployment's rpm)", dep_group,
                                        registry=reg, multiprocess_mode="mostrecent")
        self.remaining_tokens = Gauge("litellm_remaining_tokens_metric",
                                      "Tokens left this minute (the deployment's tpm)", dep_group,
                                      registry=reg, multiprocess_mode="mostrecent")
        self.active = 0  # calls being served by this worker (the in-flight gauge, set at flush)
        self._tally: dict[tuple[Any, ...], list[Any]] = {}
        self._flusher: gevent.Greenlet | None = None
        self.dropped = Counter("llmrelay_callback_dropped_records",
                               "Log records an exporter dropped: its queue was full", ("exporter",),
                               registry=reg)

    # -- per call -------------------------------------------------------------------------------
    #
    # A prometheus_client update in multiprocess mode takes a lock and writes a file-backed value;
    # a call touches about fifteen of them. So a call only adds to a plain dict keyed by its
    # labels, and ``flush`` (twice a second, before a scrape, at shutdown) moves the sums into
    # the metric objects: one update per label set instead of one per call.

    def start_call(self) -> None:
        self.active += 1
        self._wake()

    def end_call(self) -> None:
        self.active -= 1

    def observe(self, record: dict[str, Any]) -> None:
        """Count one finished call. The labels are kept as the record has them (None included)
        and made strings at ``flush``, once per label set."""
        meta = record["metadata"]
        error = record["error_information"]
        key = (record["end_user"], meta["user_api_key_hash"], meta["user_api_key_alias"], record["model_group"],
               meta["user_api_key_team_id"], meta["user_api_key_user_id"], record["model"], record["status_code"],
               error["error_code"] if error else "", error["error_class"] if error else "", record["model_id"],
               record["api_base"], record["custom_llm_provider"])
        tally = self._tally.get(key)
        if tally is None:
            tally = self._tally[key] = [0, 0, 0, 0, 0.0, [], [], []]
            self._wake()
        tally[0] += 1
        tally[1] += record["prompt_tokens"]
        tally[2] += record["completion_tokens"]
        tally[3] += record["total_tokens"]
        cost = record["response_cost"]
        if cost:
            tally[4] += cost
        tally[5].append(record["response_time"])
        upstream = record["upstream_latency"]
        if upstream is not None and record["model_id"] is not None:
            tally[6].append(upstream)
        ttft = record["time_to_first_token"]
        if ttft is not None:
            tally[7].append(ttft)

    def flush(self) -> None:
        """Move what calls added since the last flush into the metric objects."""
        self.in_flight.set(self.active)
        tally, self._tally = self._tally, {}
        for key, (calls, prompt, completion, tokens, cost, latencies, upstream, ttfts) in tally.items():
            (end_user, hashed, alias, group, team, user, model, status, err_code, err_class, model_id, api_base,
             provider) = key
            failed = bool(err_code)
            end_user, hashed, alias, group, team, user, model, api_base, provider = (
                end_user or "", hashed or "", alias or "", group or "", team or "", user or "", model or "",
                api_base or "", provider or "")
            labels = (end_user, hashed, alias, group, team, "", user)
            self.requests.labels(*labels, model).inc(calls)
            self.proxy_total.labels(*labels, str(status)).inc(calls)
            if failed:
                self.proxy_failed.labels(*labels, err_code, err_class).inc(calls)
            add_samples(self.total_latency.labels(*labels, model), latencies)
            if model_id is not None:
                dep = (model, model_id, api_base, provider, group)
                who = (hashed, alias, team, "")
                self.dep_total.labels(*dep, *who).inc(calls)
                if failed:
                    self.dep_failure.labels(*dep, err_code, err_class, *who).inc(calls)
                else:
                    self.dep_success.labels(*dep, *who).inc(calls)
            if upstream:
                add_samples(self.api_latency.labels(*labels, model), upstream)
            if ttfts:
                add_samples(self.ttft.labels(model, hashed, alias, team, ""), ttfts)
            if tokens:
                self.total_tokens.labels(*labels, model).inc(tokens)
                self.input_tokens.labels(*labels, model).inc(prompt)
                self.output_tokens.labels(*labels, model).inc(completion)
            if cost:
                self.spend.labels(*labels, model).inc(cost)

    def _wake(self) -> None:
        if self._flusher is None:
            self._flusher = gevent.spawn_later(FLUSH_INTERVAL, self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flusher = None
        try:
            self.flush()
        except Exception:  # metrics must never take the worker down
            log.exception("metrics: flush failed")
        if self.active:
            self._wake()  # keep the in-flight gauge current while calls run

    def count_drop(self, exporter: str, count: int) -> None:
        self.dropped.labels(exporter).inc(count)

    def cooldown(self, dep: Any, status: int) -> None:
        self.cooled_down.labels(dep.upstream_model, dep.id, dep.api_base or "", dep.provider, str(status)).inc()

    # -- at scrape time ---------------------------------------------------------------------------

    def refresh(self, services: Services) -> None:
        """Gauges read from the shared state when scraped: cooldowns and rpm/tpm headroom."""
        models = services.models.deployments
        state = services.state
        ids = [d.id for d in models]
        try:
            cooling = state.cooldowns(ids)
            usage = state.usage(ids)
        except Exception as exc:  # a state hiccup leaves the gauges as they were
            log.warning("metrics: reading cooldowns and usage failed: %s", exc)
            return
        now = time.time()
        for dep in models:
            labels = (dep.upstream_model, dep.id, dep.api_base or "", dep.provider)
            self.deployment_state.labels(*labels).set(2 if cooling.get(dep.id, 0) > now else 0)
            used_requests, used_tokens = usage.get(dep.id, (0, 0))
            group = (dep.model_name, dep.provider, dep.api_base or "", dep.upstream_model)
            if dep.rpm is not None:
                self.remaining_requests.labels(*group).set(max(0, dep.rpm - used_requests))
            if dep.tpm is not None:
                self.remaining_tokens.labels(*group).set(max(0, dep.tpm - used_tokens))

    def render(self) -> tuple[bytes, str]:
        """The text exposition: every worker's values in multiprocess mode, else this worker's."""
        self.flush()
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if self.multiprocess and multiprocess_dir() is not None:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def add_samples(histogram: Any, samples: Sequence[float]) -> None:
    """Observe many values with one update per bucket (prometheus_client has no bulk observe)."""
    buckets, total, bounds = (getattr(histogram, "_buckets", None), getattr(histogram, "_sum", None),
                              getattr(histogram, "_upper_bounds", None))
    if buckets is None or total is None or bounds is None:  # another layout: one observe per value
        for value in samples:
            histogram.observe(value)
        return
    counts = [0] * len(bounds)
    for value in samples:
        counts[bisect.bisect_left(bounds, value)] += 1
    for bucket, count in zip(buckets, counts, strict=True):
        if count:
            bucket.inc(count)
    total.inc(sum(samples))


def mark_dead(pid: int) -> None:
    """gunicorn ``child_exit``: a dead worker's live gauges (in-flight) stop counting."""
    if multiprocess_dir() is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)
