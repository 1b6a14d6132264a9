"""Regenerate ``model_prices.json``, the cost map bundled with the proxy.

The source is LiteLLM's public price map (``model_prices_and_context_window.json``, MIT
license), which covers ~2,000 models and ~80 fields. The proxy serves chat, completion,
embedding and moderation calls for a known set of providers and reads a dozen fields, so the
bundled file keeps only those: a fraction of the size, the same figures.

Run by hand when prices change, then review the diff::

    python proxy/data/build_model_prices.py path/to/model_prices_and_context_window.json
    python proxy/data/build_model_prices.py SOURCE -o proxy/data/model_prices.json

The output has one model per line so a price change is a one-line diff.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# Fields the proxy reads (cost accounting, context-window checks, /model/info, drop_params).
FIELDS: tuple[str, ...] = (
    "max_tokens",
    "max_input_tokens",
    "max_output_tokens",
    "input_cost_per_token",
    "output_cost_per_token",
    "litellm_provider",
    "mode",
    "supports_function_calling",
    "supports_parallel_function_calling",
    "supports_vision",
    "supports_response_schema",
    "supports_tool_choice",
    "supports_system_messages",
    "output_vector_size",
)

# Providers the proxy has adapters for, or that are cheap to carry along.
PROVIDERS: frozenset[str] = frozenset(
    {
        "openai",
        "text-completion-openai",
        "azure",
        "azure_text",
        "anthropic",
        "bedrock",
        "bedrock_converse",
        "ollama",
        "huggingface",
        "mistral",
        "codestral",
        "text-completion-codestral",
        "groq",
        "deepseek",
        "cohere",
        "cohere_chat",
        "xai",
        "perplexity",
        "together_ai",
        "fireworks_ai",
        "cerebras",
        "gemini",
    }
)

# Endpoint kinds the proxy serves; image, audio, rerank, search, video entries are left out.
MODES: frozenset[str] = frozenset({"chat", "completion", "embedding", "moderation", "responses"})


def keep(key: str, entry: Any) -> bool:
    """Whether a source entry belongs in the bundled map."""
    if not isinstance(entry, dict) or key == "sample_spec":
        return False
    if entry.get("litellm_provider") not in PROVIDERS or entry.get("mode") not in MODES:
        return False
    # Provisioned-throughput prices need a commitment the proxy never knows about.
    return "commitment" not in key


def slim(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry reduced to FIELDS, in FIELDS order."""
    return {field: entry[field] for field in FIELDS if entry.get(field) is not None}


def build(source: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {key: slim(entry) for key, entry in sorted(source.items()) if keep(key, entry)}


def render(prices: dict[str, dict[str, Any]]) -> str:
    """JSON with one model per line: compact, and diffs stay readable."""
    lines = [
        f"{json.dumps(key)}: {json.dumps(entry, separators=(',', ':'))}"
        for key, entry in prices.items()
    ]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="model_prices_and_context_window.json")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path(__file__).with_name("model_prices.json"),
        help="where to write (default: model_prices.json beside this script)",
    )
    args = parser.parse_args(argv)
    prices = build(json.loads(args.source.read_text(encoding="utf-8")))
    text = render(prices)
    args.output.write_text(text, encoding="utf-8")
    sys.stderr.write(f"wrote {len(prices)} models, {len(text.encode()):,} bytes to {args.output}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
