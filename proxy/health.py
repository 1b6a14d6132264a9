"""Model health checks: call every deployment with the smallest valid request of its kind.

``GET /health`` runs them now (in parallel, each under its own timeout), or — with
``general_settings.background_health_checks`` — serves the latest results of the checks a
background greenlet runs every ``health_check_interval`` seconds. A deployment whose latest
background check failed is kept out of routing (proxy/router) until a later check passes.

Several workers, one run per interval: the run of each interval is a lease in the shared state
(``State.acquire``), so with Redis one process of the whole fleet calls the deployments and every
worker reads the results from the shared hash. Without Redis the state is per worker, so each
worker runs its own checks and routes on its own results (the CLI warns that state is per worker).

What a check reports never holds a key: endpoints are described from the deployment's public
params (proxy/redact.py), and an upstream error message has every secret of the deployment
masked before it is kept.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import gevent
import orjson
from gevent.pool import Pool

from proxy.context import RequestContext
from proxy.deployment import Deployment
from proxy.errors import ProxyError
from proxy.redact import public_params

if TYPE_CHECKING:
    from proxy.gateway import Gateway

log = logging.getLogger(__name__)

HEALTH_HASH = "health"  # shared hash: deployment id -> JSON result of its latest check
DEFAULT_INTERVAL = 300.0  # LiteLLM's health_check_interval default
DEFAULT_TIMEOUT = 60.0  # LiteLLM's HEALTH_CHECK_TIMEOUT_SECONDS; model_info.health_check_timeout overrides
PARALLEL = 32
PROMPT = "ping"

#: model_info.mode -> (request kind, smallest valid body)
REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("chat", {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 1}),
    "completion": ("completion", {"prompt": PROMPT, "max_tokens": 1}),
    "embedding": ("embedding", {"input": [PROMPT]}),
    "moderation": ("moderation", {"input": PROMPT}),
}


def mask(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret (longer than 3 characters) replaced by ``***``."""
    for secret in sorted({s for s in secrets if isinstance(s, str) and len(s) > 3}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def endpoint(dep: Deployment) -> dict[str, Any]:
    """How a deployment is named in a health answer: LiteLLM's ``model`` and ``api_base``, no secret."""
    public = public_params(dep.params, dep.supplied)
    out: dict[str, Any] = {"model": public.get("model"), "model_name": dep.model_name, "model_id": dep.id}
    if public.get("api_base") or public.get("base_url"):
        out["api_base"] = public.get("api_base") or public.get("base_url")
    return out


class HealthChecker:
    """Runs the checks through the gateway's own dispatcher (adapter + transport), no pipeline."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def checkable(self, deployments: Iterable[Deployment]) -> list[Deployment]:
        """Deployments a check can call: a wildcard needs ``model_info.health_check_model``."""
        out = []
        for dep in deployments:
            if "*" in dep.model_name or "*" in str(dep.params.get("model")):
                target = dep.model_info.get("health_check_model")
                if not target:
                    continue
                entry = {"model_name": dep.model_name, "litellm_params": {**dep.params, "model": target},
                         "model_info": dict(dep.model_info)}
                try:
                    dep = Deployment.from_entry(entry, self.gateway.providers, source=dep.source,
                                                supplied=dep.supplied)
                except Exception as exc:  # an unusable health_check_model is that deployment's failure
                    log.warning("health check: %s: health_check_model %r unusable: %s", dep.label, target, exc)
                    continue
            mode = dep.model_info.get("mode") or "chat"
            if mode in REQUESTS:
                out.append(dep)
        return out

    def check(self, dep: Deployment) -> dict[str, Any]:
        """One call; the result record kept and shown (no secret in it)."""
        kind, body = REQUESTS[dep.model_info.get("mode") or "chat"]
        timeout = float(dep.model_info.get("health_check_timeout") or DEFAULT_TIMEOUT)
        ctx = RequestContext(kind, {"model": dep.model_name, **body}, request_id=f"health-{uuid.uuid4().hex[:12]}")
        ctx.deployment = dep
        ctx.extra["timeout"] = timeout
        started = time.perf_counter()
        error: str | None = None
        try:
            with gevent.Timeout(timeout, ProxyError(f"no answer within the health check timeout ({timeout:g}s)")):
                self.gateway.dispatcher(ctx)
        except ProxyError as exc:
            error = f"{exc.status} {exc.message}"
        except Exception as exc:  # a check must report, never raise
            error = f"{type(exc).__name__}: {exc}"
        record = {**endpoint(dep), "healthy": error is None, "checked_at": round(time.time(), 3),
                  "latency_ms": round((time.perf_counter() - started) * 1000, 1)}
        if error is not None:
            record["error"] = mask(error, [dep.api_key, *dep.supplied, *map(str, dep.headers.values())])[:1000]
        return record

    def run(self, deployments: Iterable[Deployment]) -> dict[str, dict[str, Any]]:
        """Check every deployment in parallel; deployment id -> result."""
        targets = self.checkable(deployments)
        if not targets:
            return {}
        pool = Pool(min(PARALLEL, len(targets)))
        results = pool.map(self.check, targets)
        return {dep.id: result for dep, result in zip(targets, results, strict=True)}


def answer(results: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """LiteLLM's ``/health`` shape: healthy and unhealthy endpoints and their counts."""
    healthy, unhealthy = [], []
    for record in results:
        shown = {k: v for k, v in record.items() if k != "healthy"}
        (healthy if record["healthy"] else unhealthy).append(shown)
    return {"healthy_endpoints": healthy, "unhealthy_endpoints": unhealthy,
            "healthy_count": len(healthy), "unhealthy_count": len(unhealthy)}


class HealthBoard:
    """This worker's copy of the latest background results, kept in step with the shared state.

    The router reads ``unhealthy`` on every request: a plain dict, no I/O. ``refresh`` re-reads
    the shared hash when its version moved (once a second from the monitor greenlet).
    """

    def __init__(self, state: Any) -> None:
        self.state = state
        self.results: dict[str, dict[str, Any]] = {}
        self.unhealthy: dict[str, str] = {}  # deployment id -> error
        self.version = -1

    def publish(self, results: dict[str, dict[str, Any]]) -> None:
        """Replace the shared results with one run's (deployments not checked any more are dropped)."""
        gone = [dep_id for dep_id in self.state.hgetall(HEALTH_HASH) if dep_id not in results]
        if gone:
            self.state.hdel(HEALTH_HASH, *gone)
        for dep_id, record in results.items():
            self.state.hset(HEALTH_HASH, dep_id, orjson.dumps(record).decode())
        self.version = self.state.incr_version(HEALTH_HASH)
        self._set(results)

    def refresh(self) -> None:
        version = self.state.get_version(HEALTH_HASH)
        if version == self.version:
            return
        results = {}
        for dep_id, raw in self.state.hgetall(HEALTH_HASH).items():
            try:
                results[dep_id] = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
        self.version = version
        self._set(results)

    def _set(self, results: dict[str, dict[str, Any]]) -> None:
        self.results = results
        self.unhealthy = {k: str(r.get("error") or "unhealthy") for k, r in results.items() if not r.get("healthy")}


def interval_of(settings: dict[str, Any]) -> float:
    return float(settings.get("health_check_interval") or DEFAULT_INTERVAL)


class HealthMonitor:
    """The background checks of one worker: each interval, the worker holding that interval's
    lease checks every visible deployment and publishes; every worker refreshes its board."""

    def __init__(self, gateway: Gateway, poll: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.gateway = gateway
        self.poll = poll
        self.clock = clock
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.checker = HealthChecker(gateway)
        self._last_period = -1
        self._greenlet: gevent.Greenlet | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.gateway.config.general_settings.get("background_health_checks"))

    def tick(self) -> bool:
        """Refresh the board; run this interval's checks if no one has. True when this ran them."""
        board = self.gateway.health
        board.refresh()
        if not self.enabled:
            return False
        interval = interval_of(self.gateway.config.general_settings)
        period = int(self.clock() // interval)
        if period == self._last_period:
            return False
        self._last_period = period
        if not self.gateway.state.acquire(f"health:{period}", self.owner, interval):
            return False
        deployments = self.gateway.services.visible_deployments()
        results = self.checker.run(deployments)
        board.publish(results)
        bad = [r for r in results.values() if not r["healthy"]]
        for hook in self.gateway.services.extra.get("on_unhealthy", ()):  # alerts (proxy/observe)
            for result in bad:
                hook(result)
        if bad:
            log.warning("background health checks: %d of %d deployment(s) unhealthy, kept out of routing: %s",
                        len(bad), len(results), "; ".join(f"{r['model_name']} ({r['model_id']}): {r.get('error')}"
                                                          for r in bad))
        else:
            log.info("background health checks: %d deployment(s) healthy", len(results))
        return True

    def _run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:
                log.exception("background health checks failed")
            gevent.sleep(self.poll)

    def start(self) -> None:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None
