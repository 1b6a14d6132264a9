"""Stage base class and the Pipeline built once, at boot, from the config's ``pipeline:`` list.

A stage is an onion layer: ``__call__(ctx, call_next)``. The chain is resolved once (classes,
bound methods, options) so a request pays only for the stages themselves. Each stage declares the
context facts it ``needs`` and ``provides``; the builder rejects an order in which a stage would
run before what it needs exists, naming the config path.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from marshmallow import RAISE, Schema, ValidationError

from proxy import debuglog
from proxy.config import flatten_errors
from proxy.errors import ConfigError

if TYPE_CHECKING:
    from proxy.context import RequestContext
    from proxy.services import Services

Handler = Callable[["RequestContext"], Any]

#: The chain a config without ``pipeline:`` gets, outermost first.
DEFAULT_PIPELINE = (
    "callbacks",
    "auth",
    "environment_filter",
    "retry_fallback",
    "route",
    "drop_params",
    "prompt_template",
)

#: Facts the view puts in the context before the first stage runs.
VIEW_PROVIDES = frozenset({"request"})


class StageOptions(Schema):
    """Base of every stage's options: an unknown option is a boot error, not a silent typo."""

    class Meta:
        unknown = RAISE


class StageNotUsed(Exception):
    """Raised from a stage's __init__ to leave itself out of the chain (nothing to do)."""


class Stage:
    """Base class of pipeline stages (see middleware/)."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[Schema]] = StageOptions
    needs: ClassVar[frozenset[str]] = frozenset({"request"})
    provides: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, options: dict[str, Any], services: Services) -> None:
        self.options = options
        self.services = services

    def __call__(self, ctx: RequestContext, call_next: Handler) -> Any:
        return call_next(ctx)

    def describe(self) -> dict[str, Any]:
        """Options as ``llmrelay pipeline`` prints them."""
        return dict(self.options)

    def close(self) -> None:
        """Release what the stage holds (buffers, greenlets) when its pipeline is replaced or ends."""


def stage_class(name: str) -> type[Stage]:
    """``drop_params`` -> ``middleware.drop_params.DropParams`` (config name = module name)."""
    try:
        module = importlib.import_module(f"middleware.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"middleware.{name}":
            raise LookupError(name) from exc
        raise
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, Stage) and value.name == name:
            return value
    raise LookupError(name)


def timed(name: str, fn: Callable[..., Any], call_next: Handler | None) -> Handler:
    """Wrap a stage (or the handler) so its own time, inner stages excluded, lands in ctx.timings.

    Timings are keyed in the order stages are entered, so Server-Timing reads outermost first.
    """
    perf = time.perf_counter
    args = () if call_next is None else (call_next,)
    if debuglog.enabled():
        fn = debug_layer(name, fn)

    def layer(ctx: RequestContext) -> Any:
        saved = ctx.child_time
        ctx.child_time = 0.0
        timings = ctx.timings
        before = timings.setdefault(name, 0.0)
        t0 = perf()
        try:
            return fn(ctx, *args)
        finally:
            spent = perf() - t0
            timings[name] = before + spent - ctx.child_time
            ctx.child_time = saved + spent

    return layer


def debug_layer(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` plus one debug line with the stage's decision (built only when debug is on)."""

    def logged(ctx: RequestContext, *args: Any) -> Any:
        try:
            result = fn(ctx, *args)
        except BaseException as exc:
            debuglog.stage_decision(name, ctx, exc)
            raise
        debuglog.stage_decision(name, ctx, None)
        return result

    return logged


class Pipeline:
    """The resolved chain; calling it runs one request through every stage and the handler."""

    def __init__(
        self,
        stages: list[Stage],
        handler: Handler,
        handler_needs: frozenset[str],
        skipped: dict[str, str] | None = None,
    ) -> None:
        self.stages = stages
        self.skipped = skipped or {}  # stage name -> why it left itself out
        self.handler = handler
        self.handler_needs = handler_needs
        chain = timed("upstream", handler, None)
        for stage in reversed(stages):
            chain = timed(stage.name, stage, chain)
        self._chain = chain

    def __call__(self, ctx: RequestContext) -> Any:
        return self._chain(ctx)

    @classmethod
    def build(
        cls,
        entries: list[Any] | None,
        services: Services,
        handler: Handler,
        handler_needs: frozenset[str] = frozenset({"request", "deployment"}),
    ) -> Pipeline:
        """Resolve names, validate options and order; raise ConfigError naming config paths."""
        explicit = entries is not None
        entries = list(entries) if explicit else list(DEFAULT_PIPELINE)
        errors: list[str] = []
        stages: list[Stage] = []
        skipped: dict[str, str] = {}
        available = set(VIEW_PROVIDES)
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            path = f"pipeline[{i}]" if explicit else f"pipeline (default)[{i}]"
            name, raw_options = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
            raw_options = raw_options or {}
            if name in seen:
                errors.append(f"{path}: stage {name!r} appears twice")
                continue
            seen.add(name)
            try:
                klass = stage_class(name)
            except LookupError:
                errors.append(f"{path}: unknown stage {name!r}")
                continue
            try:
                options = klass.Options().load(raw_options)
            except ValidationError as exc:
                errors.extend(flatten_errors(exc.messages, f"{path}.{name}"))
                continue
            missing = klass.needs - available
            if missing:
                errors.append(
                    f"{path}: stage {name!r} needs {', '.join(sorted(missing))}, which no earlier "
                    f"stage provides; move it after the stage that does"
                )
            available |= klass.provides
            try:
                stages.append(klass(options, services))
            except StageNotUsed as exc:
                skipped[name] = str(exc) or "nothing to do with this config"
                continue
            except ConfigError as exc:
                errors.extend(f"{path}.{name}: {e}" for e in exc.errors)
        missing = handler_needs - available
        if missing and not errors:
            errors.append(
                f"pipeline: the upstream call needs {', '.join(sorted(missing))}; "
                "add the stage that provides it (e.g. 'route')"
            )
        if errors:
            raise ConfigError(errors)
        return cls(stages, handler, handler_needs, skipped)

    def close(self) -> None:
        for stage in self.stages:
            stage.close()

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "stage": s.name,
                "class": f"{type(s).__module__}.{type(s).__qualname__}",
                "needs": sorted(s.needs),
                "provides": sorted(s.provides),
                "options": s.describe(),
            }
            for s in self.stages
        ]
