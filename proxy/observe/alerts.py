"""Slack alerts (``general_settings.alerting: ["slack"]`` with ``SLACK_WEBHOOK_URL``).

Kinds, with LiteLLM's ``alert_types`` names:

- ``llm_requests_hanging``: a request with no answer after ``alerting_threshold`` s (default
  300), sent while it still hangs (a watcher greenlet looks at the requests in flight);
- ``llm_too_slow``: a call that took longer than the threshold;
- ``llm_exceptions``: a call that failed upstream (5xx, 429, timeouts);
- ``cooldown_deployment``: a deployment entering cooldown after repeated failures;
- ``outage_alerts``: a deployment failing its background health check (kept out of routing);
- ``budget_alerts``: a key or team crossing 80% and 100% of its ``max_budget``.

One incident is one message: an alert about the same deployment (or key) and kind is not
repeated within ``alerting_args.outage_alert_ttl`` s (60), budget alerts within
``alerting_args.budget_alert_ttl`` (24 h). Messages go out from a bounded queue, never from the
request path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import gevent

from proxy.observe.exporters import HTTPExporter, SettingMissing, env

if TYPE_CHECKING:
    from proxy.context import RequestContext
    from proxy.deployment import Deployment
    from proxy.keys.limits import Guard

log = logging.getLogger(__name__)

ALERT_TYPES = ("llm_exceptions", "llm_too_slow", "llm_requests_hanging", "budget_alerts", "spend_reports",
               "failed_tracking_spend", "db_exceptions", "daily_reports", "cooldown_deployment",
               "new_model_added", "model_deprecation_warnings", "outage_alerts", "region_outage_alerts",
               "fallback_reports", "new_virtual_key_created", "virtual_key_updated", "virtual_key_deleted",
               "new_team_created", "team_updated", "team_deleted", "new_internal_user_created",
               "internal_user_updated", "internal_user_deleted")
DEFAULT_THRESHOLD = 300.0
BUDGET_LEVELS = (1.0, 0.8)


def slack_url(environ: Mapping[str, str]) -> str | None:
    return env(environ, "SLACK_WEBHOOK_URL") or env(environ, "ALERTING_WEBHOOK_URL")


def alerting_errors(general: Mapping[str, Any], environ: Mapping[str, str]) -> list[str]:
    """Config problems of the alerting settings, each naming its config path."""
    errors: list[str] = []
    channels = general.get("alerting") or []
    for i, channel in enumerate(channels):
        if channel not in ("slack", "webhook", "email"):
            errors.append(f"general_settings.alerting[{i}]: unknown alerting channel {channel!r} (use 'slack')")
    if "slack" in channels and not slack_url(environ):
        log.warning("general_settings.alerting: 'slack' needs the environment variable SLACK_WEBHOOK_URL; "
                    "no alert is sent until it is set")
    types = general.get("alert_types")
    if types is not None:
        if not isinstance(types, list):
            errors.append("general_settings.alert_types: must be a list of alert type names")
        else:
            for i, name in enumerate(types):
                if name not in ALERT_TYPES:
                    errors.append(f"general_settings.alert_types[{i}]: unknown alert type {name!r}")
    threshold = general.get("alerting_threshold")
    if threshold is not None and (not isinstance(threshold, (int, float)) or threshold <= 0):
        errors.append("general_settings.alerting_threshold: must be a number of seconds above 0")
    return errors


class SlackAlerts(HTTPExporter):
    """Deduplicated alert messages POSTed to a Slack incoming webhook, one message per POST."""

    name = "slack"
    batch_size = 20
    interval = 0.2

    def __init__(
        self,
        general: Mapping[str, Any],
        environ: Mapping[str, str],
        guard: Guard | None = None,
        on_drop: Callable[[str, int], None] | None = None,
    ) -> None:
        url = slack_url(environ)
        if not url:
            raise SettingMissing("slack alerting needs the environment variable SLACK_WEBHOOK_URL")
        self.url = url
        self.types = frozenset(general.get("alert_types") or ALERT_TYPES)
        self.threshold = float(general.get("alerting_threshold") or DEFAULT_THRESHOLD)
        args = general.get("alerting_args") or {}
        self.outage_ttl = float(args.get("outage_alert_ttl", 60))
        self.budget_ttl = float(args.get("budget_alert_ttl", 24 * 3600))
        self.guard = guard
        self._sent: dict[tuple[str, str], float] = {}  # (kind, subject) -> when last sent
        self._live: dict[str, RequestContext] = {}
        super().__init__(on_drop, max_queue=1000)
        self._watcher = gevent.spawn(self._watch) if "llm_requests_hanging" in self.types else None

    # -- sending --------------------------------------------------------------------------------

    def alert(self, kind: str, subject: str, text: str, level: str = "Medium", ttl: float | None = None) -> bool:
        """Queue one message unless the same incident was reported within its window."""
        if kind not in self.types:
            return False
        now = time.monotonic()
        key = (kind, subject)
        last = self._sent.get(key)
        if last is not None and now - last < (self.outage_ttl if ttl is None else ttl):
            return False
        self._sent[key] = now
        if len(self._sent) > 10_000:  # forget the oldest windows, never grow without bound
            for old in sorted(self._sent, key=self._sent.__getitem__)[:5_000]:
                del self._sent[old]
        stamp = time.strftime("%H:%M:%S", time.gmtime())
        self.export({"text": f"Level: `{level}`\nTimestamp: `{stamp}`\n\nAlert type: `{kind}`\n{text}"})
        return True

    def send(self, batch: list[dict[str, Any]]) -> None:
        for message in batch:
            self.post(self.url, message, {})

    # -- hooks ------------------------------------------------------------------------------------

    def track(self, ctx: RequestContext) -> None:
        """A request started: watch it until it finishes."""
        self._live[ctx.request_id] = ctx
        ctx.on_finish(self._untrack)

    def _untrack(self, ctx: RequestContext) -> None:
        self._live.pop(ctx.request_id, None)

    def _watch(self) -> None:
        every = max(0.2, min(5.0, self.threshold / 4))
        while True:
            gevent.sleep(every)
            try:
                self.check_hanging()
            except Exception:
                log.exception("hanging-request check failed")

    def check_hanging(self) -> None:
        for ctx in list(self._live.values()):
            waited = ctx.elapsed
            if waited < self.threshold:
                continue
            dep = ctx.deployment
            subject = dep.id if dep is not None else ctx.model
            self.alert("llm_requests_hanging", subject,
                       f"`Requests are hanging - {waited:.0f}s+ request time`\nRequest Model: `{ctx.model}`\n"
                       f"Deployment: `{describe(dep)}`\nRequest id: `{ctx.request_id}`"
                       f"{key_line(ctx.caller)}")

    def on_finish(self, ctx: RequestContext) -> None:
        """A call was answered: did its spend cross a budget's 80% or 100%? Checked as each call
        ends, so that every step of a budget is seen, not only where a batch of calls left it."""
        if "budget_alerts" in self.types and self.guard is not None and ctx.caller.get("key") is not None:
            self.check_budgets(ctx.caller)

    def on_record(self, record: dict[str, Any]) -> None:
        """A call's record: was it slow, or did its upstream fail?"""
        subject = record["model_id"] or record["model_group"]
        deployment = f"{record['custom_llm_provider']}/{record['model']}" if record["model_id"] else "-"
        if record["status"] == "failure":
            code = int(record["status_code"])
            if code >= 500 or code in (408, 429):
                err = record["error_information"] or {}
                self.alert("llm_exceptions", subject,
                           f"LLM API call failed: `{err.get('error_class')}: {record['error_str']}`\n"
                           f"Model: `{record['model_group']}`\nDeployment: `{deployment}`", level="High")
        elif record["response_time"] > self.threshold:
            self.alert("llm_too_slow", subject,
                       f"`Responses are slow - {record['response_time']:.1f}s response time > Alerting "
                       f"threshold: {self.threshold:g}s`\nModel: `{record['model_group']}`\n"
                       f"Deployment: `{deployment}`", level="Low")

    def check_budgets(self, caller: dict[str, Any]) -> None:
        key, team = caller.get("key"), caller.get("team")
        now = time.time()
        subjects = [(f"key {key.key_alias or key.token[:12]}", key)]
        if team is not None:
            subjects.append((f"team {team.team_alias or team.team_id}", team))
        for label, owner in subjects:
            if not owner.max_budget:
                continue
            name = f"{owner.entity}@{owner.period(now)}"
            spent = self.guard.spend([name])[name]
            for level in BUDGET_LEVELS:
                if spent >= owner.max_budget * level:
                    what = "exceeded its budget" if level >= 1 else f"crossed {level:.0%} of its budget"
                    self.alert("budget_alerts", f"{name}:{level}",
                               f"Budget alert: {label} {what}\nSpend: `{spent:.6f}`\nMax budget: "
                               f"`{owner.max_budget}`", level="High" if level >= 1 else "Medium",
                               ttl=self.budget_ttl)
                    break

    def on_cooldown(self, dep: Deployment, error: Any) -> None:
        self.alert("cooldown_deployment", dep.id,
                   f"Deployment cooled down: `{describe(dep)}` (model group `{dep.model_name}`)\n"
                   f"Last error: `{getattr(error, 'message', error)}`", level="High")

    def on_unhealthy(self, result: dict[str, Any]) -> None:
        """A background health check failed (proxy/health.py): the deployment is out of routing."""
        self.alert("outage_alerts", str(result.get("model_id")),
                   f"Deployment failing its health check: `{result.get('model')}` (model group "
                   f"`{result.get('model_name')}`), kept out of routing until it passes\n"
                   f"Error: `{result.get('error')}`", level="High")

    def close(self, timeout: float = 5.0) -> None:
        if self._watcher is not None:
            self._watcher.kill(block=False)
            self._watcher = None
        super().close(timeout)


def describe(dep: Deployment | None) -> str:
    return f"{dep.provider}/{dep.upstream_model} ({dep.id})" if dep is not None else "none chosen yet"


def key_line(caller: dict[str, Any]) -> str:
    alias, team = caller.get("key_alias"), caller.get("team_id")
    return (f"\nKey alias: `{alias}`" if alias else "") + (f"\nTeam: `{team}`" if team else "")
