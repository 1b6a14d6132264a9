"""The Observer: exporters named in the config, fed one standard log record per call.

Names are LiteLLM's: ``litellm_settings.success_callback`` (successes), ``failure_callback``
(failures) and ``callbacks`` (both): ``langfuse``, ``generic_api`` (also ``generic``),
``webhook``, ``otel``, ``prometheus``, or ``module.attribute`` for the operator's own object
(loaded from the config's folder). A name LiteLLM knows but llmrelay does not export to is
skipped with a warning; any other name fails the boot, naming the config path, and so does a
custom callback that cannot be imported. An exporter whose environment variables are not set
(LiteLLM's quick start names ``langfuse`` before its keys) is skipped with a warning naming them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gevent

from proxy.observe.alerts import SlackAlerts, alerting_errors, slack_url
from proxy.observe.exporters import (
    Custom,
    Exporter,
    GenericAPI,
    Langfuse,
    SettingMissing,
    Webhook,
    load_custom,
    slices,
    step_aside,
)
from proxy.observe.queue import BatchQueue
from proxy.observe.record import Call, capture, record_of

if TYPE_CHECKING:
    from proxy.context import RequestContext
    from proxy.observe import Telemetry
    from proxy.observe.prometheus import Metrics

log = logging.getLogger(__name__)

#: LiteLLM integrations llmrelay recognises but does not send to: skipped with a warning.
NOT_EXPORTED = frozenset({
    "langsmith", "datadog", "datadog_llm_observability", "s3", "lunary", "helicone", "athina", "braintrust",
    "openmeter", "logfire", "arize", "arize_phoenix", "gcs_bucket", "sentry", "traceloop", "posthog",
    "dynamodb", "supabase", "greenscale", "mlflow", "opik", "literalai", "galileo", "azure_storage",
    "langtrace", "humanloop", "gcs_pubsub", "argilla", "slack", "email", "promptlayer", "weave",
})
HTTP_EXPORTERS: dict[str, type[GenericAPI] | type[Langfuse]] = {
    "langfuse": Langfuse, "generic_api": GenericAPI, "generic": GenericAPI, "webhook": Webhook,
}
BUILTIN = frozenset({*HTTP_EXPORTERS, "otel", "prometheus"})
#: records of finished calls queued for ``Observer.publish``: at most, per batch, and seconds between
#: batches. Batches from 10 to 200 calls cost the same CPU (measured side by side); a short interval
#: keeps Prometheus at most 25 ms behind the calls.
CALLS_QUEUED, CALLS_BATCH, CALLS_INTERVAL = 20_000, 50, 0.025
#: records a step of ``publish`` goes through between two yields to the hub (about a millisecond
#: of CPU for the costliest step, OTLP encoding)
PUBLISH_SLICE = 64
PACKAGES = {"otel": ("opentelemetry.sdk", "opentelemetry.proto"),
            "prometheus": ("prometheus_client",)}


@dataclass
class Wanted:
    """One exporter the config asks for and which outcomes it gets."""

    name: str
    path: str
    success: bool = False
    failure: bool = False
    target: Any = None  # the loaded object of a custom callback


@dataclass
class Plan:
    wanted: dict[str, Wanted] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def plan(lists: Mapping[str, tuple[str, list[Any] | None]], folder: str, environ: Mapping[str, str]) -> Plan:
    """Resolve callback names from ``{"success_callback": (config path, names), ...}``."""
    out = Plan()
    for kind, (path, names) in lists.items():
        for i, name in enumerate(names or ()):
            where = f"{path}[{i}]"
            if not isinstance(name, str):
                out.errors.append(f"{where}: must be a callback name or module.attribute")
                continue
            if name in NOT_EXPORTED:
                log.warning("%s: callback %r has no exporter in llmrelay; it is skipped", where, name)
                continue
            if name not in BUILTIN and "." not in name:
                out.errors.append(f"{where}: unknown callback {name!r}; use one of "
                                  f"{', '.join(sorted(BUILTIN))} or module.attribute for your own")
                continue
            wanted = out.wanted.get(name)
            if wanted is None:
                wanted = out.wanted[name] = Wanted(name, where)
                try:
                    problem = check(wanted, folder, environ)
                except SettingMissing as exc:  # a LiteLLM quick start names exporters before their keys
                    log.warning("%s: %s; %r is skipped until it is set", where, exc, name)
                    del out.wanted[name]
                    continue
                if problem:
                    out.errors.append(f"{where}: {problem}")
                    del out.wanted[name]
                    continue
            wanted.success |= kind in ("success_callback", "callbacks")
            wanted.failure |= kind in ("failure_callback", "callbacks")
    return out


def check(wanted: Wanted, folder: str, environ: Mapping[str, str]) -> str | None:
    """Why this exporter cannot run, or None; SettingMissing when only an environment variable is."""
    name = wanted.name
    try:
        if name in HTTP_EXPORTERS:
            HTTP_EXPORTERS[name].settings(environ)
        elif name in PACKAGES:  # looked up, not imported: prometheus_client reads its env on import
            for package in PACKAGES[name]:
                if importlib.util.find_spec(package) is None:
                    return f"{name} needs the package {package!r}, which is not installed"
        elif "." in name:
            wanted.target = load_custom(name, folder)
    except LookupError as exc:
        return str(exc)
    except ModuleNotFoundError as exc:
        return f"{name} needs the package {exc.name!r}, which is not installed"
    return None


class Observer:
    """Feeds each finished call to the exporters; starts nothing on a validation-only build."""

    def __init__(
        self,
        wanted: dict[str, Wanted],
        general: Mapping[str, Any],
        telemetry: Telemetry,
        *,
        redact: bool = False,
        guard: Any = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        environ = os.environ if environ is None else environ
        self.redact = redact
        self.pid = os.getpid()  # an Observer is made in the worker that uses it
        self.telemetry = telemetry
        drop = telemetry.count_drop
        self.metrics: Metrics | None = telemetry.ensure_metrics() if "prometheus" in wanted else None
        self.exporters: list[Exporter] = []
        self.on_success: list[Exporter] = []
        self.on_failure: list[Exporter] = []
        for name, want in wanted.items():
            if name == "prometheus":
                continue
            if name in HTTP_EXPORTERS:
                exporter: Exporter = HTTP_EXPORTERS[name](environ, drop)
            elif name == "otel":
                from proxy.observe.otel import OTel

                exporter = OTel(environ, drop)
            else:
                exporter = Custom(name, want.target, drop)
            self.exporters.append(exporter)
            if want.success:
                self.on_success.append(exporter)
            if want.failure:
                self.on_failure.append(exporter)
        self.alerts: SlackAlerts | None = None
        if "slack" in (general.get("alerting") or []) and slack_url(environ):
            self.alerts = SlackAlerts(general, environ, guard, drop)
            self.exporters.append(self.alerts)
        #: each exporter that takes records, and whether it takes successes and failures
        self.exporters_taking = [(e, e in self.on_success, e in self.on_failure) for e in self.exporters
                                 if e in self.on_success or e in self.on_failure]
        self.records = bool(self.metrics or self.on_success or self.on_failure or self.alerts)
        #: records of finished calls waiting for ``publish``, which hands them to the exporters'
        #: own queues (and Prometheus) within CALLS_INTERVAL
        self.calls = BatchQueue("observer", self.publish, max_size=CALLS_QUEUED, batch_size=CALLS_BATCH,
                                interval=CALLS_INTERVAL, on_drop=drop) if self.records else None

    # -- per request ------------------------------------------------------------------------------

    def start(self, ctx: RequestContext) -> None:
        if self.metrics is not None:
            self.metrics.start_call()
        if self.alerts is not None:
            self.alerts.track(ctx)

    def finish(self, ctx: RequestContext, cost: float | None) -> None:
        """The call has been answered: queue what its record is made of for ``publish``.

        Not the record itself: built here, between requests, it cost twice what it costs built
        in the batch (record.py ``capture``). Nor the context: queued, it would keep the whole
        request alive (its WSGI environ, headers, body reader, attempts) until the batch.
        """
        if self.metrics is not None:
            self.metrics.end_call()
        if self.alerts is not None:
            self.alerts.on_finish(ctx)
        if self.calls is not None:
            self.calls.put((capture(ctx), cost))

    def publish(self, calls: list[tuple[Call, float | None]]) -> None:
        """Finished calls' records, built, counted for Prometheus and encoded by every exporter.

        Runs in the intake queue's greenlet, a batch at a time, one step after the other over
        the whole batch: all records, then Prometheus, then each exporter's encoding. A loop
        that runs one piece of code over many calls keeps that code and its data hot: in a tight
        loop the same work interleaved call by call (record, count, encode, encode) cost 40%
        more CPU. (In the benchmark's worker, where batches are small and requests run between
        them, the two measured the same.) What stays queued is a few compact byte strings per
        call. The hub serves waiting requests between two slices of a step.
        """
        redact, pid = self.redact, self.pid
        records = []
        for part in slices(calls, step_aside, PUBLISH_SLICE):
            for call, cost in part:
                try:
                    records.append(record_of(call, redact=redact, cost=cost, pid=pid))
                except Exception:  # one odd call must not cost the others their records
                    log.exception("could not record call %s", call[0])
        metrics, alerts = self.metrics, self.alerts
        if metrics is not None or alerts is not None:
            for part in slices(records, step_aside, PUBLISH_SLICE, first=True):
                for record in part:
                    try:
                        if metrics is not None:
                            metrics.observe(record)
                        if alerts is not None:
                            alerts.on_record(record)
                    except Exception:  # one odd call must not cost the others their records
                        log.exception("could not count call %s", record.get("id"))
        if not self.exporters_taking:
            return
        failed = [record for record in records if record["status"] == "failure"]
        succeeded = [record for record in records if record["status"] != "failure"] if failed else records
        for exporter, success, failure in self.exporters_taking:
            taken = records if success and failure else succeeded if success else failed
            encode, items = exporter.encode, []
            for part in slices(taken, step_aside, PUBLISH_SLICE, first=True):
                for record in part:
                    try:
                        items.append(encode(record))
                    except Exception:
                        log.exception("%s could not encode call %s", exporter.name, record["id"])
            if items:
                exporter.queue.put_many(items)

    def on_cooldown(self, dep: Any, error: Any) -> None:
        if self.metrics is not None:
            self.metrics.cooldown(dep, getattr(error, "status", 0))
        if self.alerts is not None:
            self.alerts.on_cooldown(dep, error)

    def on_unhealthy(self, result: dict[str, Any]) -> None:
        if self.alerts is not None:
            self.alerts.on_unhealthy(result)

    def close(self, timeout: float = 10.0) -> None:
        """Publish the calls still queued, then flush every exporter at once, each within ``timeout``."""
        if self.calls is not None:
            self.calls.close(timeout)
        jobs = [gevent.spawn(e.close, timeout) for e in self.exporters]
        gevent.joinall(jobs, timeout=timeout + 1)


def validate_alerting(general: Mapping[str, Any], environ: Mapping[str, str]) -> list[str]:
    """Problems of ``general_settings.alerting`` and its companions, naming the config path."""
    return alerting_errors(general, environ)
