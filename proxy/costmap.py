"""Per-model prices and context windows: the cost map.

The proxy needs, for the model behind a call, its price per token (spend tracking, budgets,
cost-based routing), its context window (the pre-call check, ``context_window_fallbacks``) and
its capability flags (``/model/info``, ``drop_params``). These come from ``data/model_prices.json``,
a slim copy of LiteLLM's public price map (see ``data/build_model_prices.py``), optionally
merged with an operator's JSON file of the same shape.

The map is read once at boot into a ``CostMap`` that hangs off the app; lookups are memoised per
``(model, provider)`` in a bounded cache, so the request path does a dict hit.

Lookup order for ``lookup(model, provider)`` — the first key present wins:

1. ``model`` exactly as given (``"gpt-4o"``, ``"azure/gpt-4o"``, ``"ollama/llama3"``);
2. ``provider/model`` (``model="llama3-8b-8192", provider="groq"`` → ``"groq/llama3-8b-8192"``);
3. ``model`` without its provider prefix (``"openai/gpt-4o"`` → ``"gpt-4o"``,
   ``"bedrock/anthropic.claude-v2:1"`` → ``"anthropic.claude-v2:1"``);
4. the same three names with a date suffix removed, for dated releases the map does not list
   yet (``"gpt-4o-2031-01-01"`` → ``"gpt-4o"``, ``"claude-3-opus-20310101"`` →
   ``"claude-3-opus"``, ``"gpt-4-0314"`` → ``"gpt-4"``).

Nothing found gives ``{}``, which costs 0.0.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from proxy.errors import ConfigError

log = logging.getLogger(__name__)

BUNDLED_PATH = Path(__file__).with_name("data") / "model_prices.json"

# Distinct (model, provider) pairs remembered; bounded because model names can come from
# callers (wildcard routes), and memory must stay flat.
LOOKUP_CACHE_SIZE = 4096

# Fields a user file may set, with the types they must have.
_NUMBER_FIELDS = frozenset(
    {
        "max_tokens",
        "max_input_tokens",
        "max_output_tokens",
        "input_cost_per_token",
        "output_cost_per_token",
        "output_vector_size",
    }
)
_STRING_FIELDS = frozenset({"litellm_provider", "mode"})

# -YYYY-MM-DD (OpenAI), -YYYYMMDD (Anthropic), -MMDD (older OpenAI: gpt-4-0613, -0125).
_DATE_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4})$")


class CostMap(Mapping[str, dict[str, Any]]):
    """Model name → price/context entry, read-only after boot."""

    def __init__(self, prices: Mapping[str, Mapping[str, Any]]) -> None:
        self._prices: dict[str, dict[str, Any]] = {k: dict(v) for k, v in prices.items()}
        # Per-instance memo: no module-level state, dropped with the instance.
        self._find = functools.lru_cache(maxsize=LOOKUP_CACHE_SIZE)(self._find_uncached)

    @classmethod
    def load(cls, extra_path: str | Path | None = None) -> CostMap:
        """The bundled map, with ``extra_path`` (same JSON shape) merged over it.

        A model in both keeps the bundled fields the user file does not set, so an operator can
        correct one price without restating the context window. A bad file fails the boot.
        """
        prices = _read_json(BUNDLED_PATH)
        if extra_path is not None:
            extra = _read_json(Path(extra_path))
            _validate(extra, str(extra_path))
            for model, entry in extra.items():
                prices[model] = {**prices.get(model, {}), **entry}
            log.info("cost map: merged %d models from %s", len(extra), extra_path)
        return cls(prices)

    # Mapping protocol: lets /model/info and tests read the map like a dict.
    def __getitem__(self, model: str) -> dict[str, Any]:
        return self._prices[model]

    def __iter__(self) -> Iterator[str]:
        return iter(self._prices)

    def __len__(self) -> int:
        return len(self._prices)

    def lookup(self, model: str, provider: str | None = None) -> dict[str, Any]:
        """The entry for ``model`` (see the module docstring for the order), or ``{}``.

        Returns a copy, so a caller that edits it cannot change the map for everyone.
        """
        entry = self._find(model, provider)
        return dict(entry) if entry is not None else {}

    def cost(
        self,
        model: str,
        provider: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        overrides: Mapping[str, Any] | None = None,
    ) -> float:
        """Cost of a call in USD.

        ``overrides`` is a deployment's ``model_info``: its ``input_cost_per_token`` and
        ``output_cost_per_token`` win over the map, each on its own (negotiated prices,
        self-hosted models). An unknown price counts as 0.0.
        """
        entry = self._find(model, provider) or {}
        input_price = _price("input_cost_per_token", overrides, entry)
        output_price = _price("output_cost_per_token", overrides, entry)
        return prompt_tokens * input_price + completion_tokens * output_price

    def _find_uncached(self, model: str, provider: str | None) -> dict[str, Any] | None:
        for name in _candidates(model, provider):
            entry = self._prices.get(name)
            if entry is not None:
                return entry
        log.debug("cost map: no entry for model=%r provider=%r", model, provider)
        return None


def _candidates(model: str, provider: str | None) -> list[str]:
    """Names to try, in lookup order, without repeats."""
    names = [model]
    if provider and not model.startswith(provider + "/"):
        names.append(f"{provider}/{model}")
    if "/" in model:
        names.append(model.split("/", 1)[1])
    for name in list(names):
        undated = _DATE_SUFFIX.sub("", name)
        if undated != name:
            names.append(undated)
    return list(dict.fromkeys(names))


def _price(field: str, overrides: Mapping[str, Any] | None, entry: Mapping[str, Any]) -> float:
    if overrides:
        value = overrides.get(field)
        if value is not None:
            return float(value)
    return float(entry.get(field) or 0.0)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read cost map: {exc.strerror or exc}"]) from exc
    except ValueError as exc:
        raise ConfigError([f"{path}: cost map is not valid JSON: {exc}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: cost map must be a JSON object of model entries"])
    return data


def _validate(prices: dict[str, Any], source: str) -> None:
    """Check a user file at boot so a typo never reaches cost accounting."""
    errors: list[str] = []
    for model, entry in prices.items():
        if not isinstance(entry, dict):
            errors.append(f"{source}: {model}: must be an object")
            continue
        for field, value in entry.items():
            if field in _NUMBER_FIELDS and not _is_number(value):
                errors.append(f"{source}: {model}.{field}: must be a non-negative number")
            elif field in _STRING_FIELDS and not isinstance(value, str):
                errors.append(f"{source}: {model}.{field}: must be a string")
            elif field.startswith("supports_") and not isinstance(value, bool):
                errors.append(f"{source}: {model}.{field}: must be true or false")
    if errors:
        raise ConfigError(errors)


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )
