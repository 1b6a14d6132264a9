"""The cost map: bundled data, lookup order, overrides, a user file merged over it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.costmap import BUNDLED_PATH, CostMap
from proxy.errors import ConfigError


@pytest.fixture(scope="module")
def costmap() -> CostMap:
    return CostMap.load()


def test_bundled_file_is_small_and_slim() -> None:
    assert BUNDLED_PATH.stat().st_size < 400_000
    allowed = {
        "max_tokens",
        "max_input_tokens",
        "max_output_tokens",
        "input_cost_per_token",
        "output_cost_per_token",
        "litellm_provider",
        "mode",
        "supports_function_calling",
        "supports_vision",
        "supports_parallel_function_calling",
        "supports_response_schema",
        "supports_tool_choice",
        "supports_system_messages",
        "output_vector_size",
    }
    data = json.loads(BUNDLED_PATH.read_text())
    assert all(set(entry) <= allowed for entry in data.values())


@pytest.mark.parametrize(
    "model",
    [
        "gpt-3.5-turbo",
        "gpt-3.5-turbo-0125",
        "gpt-4",
        "gpt-4-turbo",
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-nano",
        "o1",
        "o3-mini",
        "o4-mini",
        "text-embedding-3-small",
        "text-embedding-ada-002",
        "text-moderation-latest",
        "omni-moderation-latest",
        "davinci-002",
        "babbage-002",
        "gpt-3.5-turbo-instruct",
        "azure/gpt-4o",
        "azure/gpt-35-turbo",
        "claude-3-5-sonnet-20240620",
        "claude-3-haiku-20240307",
        "anthropic.claude-instant-v1",
        "anthropic.claude-3-sonnet-20240229-v1:0",
        "amazon.titan-text-express-v1",
        "amazon.titan-embed-text-v1",
        "cohere.command-text-v14",
        "meta.llama3-8b-instruct-v1:0",
        "mistral.mistral-7b-instruct-v0:2",
        "ollama/llama3",
        "ollama/mistral",
        "mistral/mistral-large-latest",
        "groq/llama-3.1-8b-instant",
        "deepseek-chat",
    ],
)
def test_main_models_are_covered(costmap: CostMap, model: str) -> None:
    entry = costmap.lookup(model)
    assert entry, model
    assert "input_cost_per_token" in entry
    assert entry["mode"] in {"chat", "completion", "embedding", "moderation", "responses"}


def test_openai_entry_fields(costmap: CostMap) -> None:
    entry = costmap.lookup("gpt-4o-2024-08-06")
    assert entry["litellm_provider"] == "openai"
    assert entry["input_cost_per_token"] == 2.5e-06
    assert entry["output_cost_per_token"] == 1e-05
    assert entry["max_input_tokens"] == 128000
    assert entry["supports_function_calling"] is True
    assert entry["supports_vision"] is True


def test_embedding_entry_has_vector_size(costmap: CostMap) -> None:
    entry = costmap.lookup("text-embedding-3-small")
    assert entry["mode"] == "embedding"
    assert entry["output_vector_size"] == 1536


def test_lookup_by_provider_prefix(costmap: CostMap) -> None:
    # Step 2: provider/model, for providers whose keys carry the prefix.
    assert costmap.lookup("llama3", provider="ollama")["litellm_provider"] == "ollama"
    assert costmap.lookup("llama-3.1-8b-instant", "groq")["litellm_provider"] == "groq"
    assert costmap.lookup("gpt-35-turbo", "azure")["litellm_provider"] == "azure"
    # An exact key wins over provider/model: pass the deployment's full model string.
    assert costmap.lookup("gpt-4o", "azure")["litellm_provider"] == "openai"
    assert costmap.lookup("azure/gpt-4o", "azure")["litellm_provider"] == "azure"


def test_lookup_strips_provider_prefix(costmap: CostMap) -> None:
    # Step 3: keys of OpenAI, Anthropic and Bedrock models carry no prefix.
    assert costmap.lookup("openai/gpt-4o") == costmap.lookup("gpt-4o")
    assert costmap.lookup("anthropic/claude-3-haiku-20240307")["litellm_provider"] == "anthropic"
    bedrock = costmap.lookup("bedrock/anthropic.claude-instant-v1")
    assert bedrock["litellm_provider"] == "bedrock"


def test_lookup_dated_suffix_fallback(costmap: CostMap) -> None:
    assert "gpt-4o-2031-01-01" not in costmap
    assert costmap.lookup("gpt-4o-2031-01-01") == costmap.lookup("gpt-4o")
    assert costmap.lookup("openai/gpt-4o-mini-2031-01-01") == costmap.lookup("gpt-4o-mini")
    assert "claude-3-5-haiku-20311231" not in costmap
    assert costmap.lookup("claude-3-5-haiku-20311231") == {}  # no undated key to fall to
    assert costmap.lookup("gpt-4-0999") == costmap.lookup("gpt-4")


def test_fallback_order_prefers_earlier_steps() -> None:
    prices = {
        "m": {"input_cost_per_token": 1.0},
        "p/m": {"input_cost_per_token": 2.0},
        "m-2024-01-01": {"input_cost_per_token": 3.0},
    }
    cm = CostMap(prices)
    assert cm.lookup("m", "p")["input_cost_per_token"] == 1.0  # exact beats provider/model
    assert cm.lookup("x/m", "p")["input_cost_per_token"] == 1.0  # bare model found
    assert cm.lookup("m-2024-01-01", "p")["input_cost_per_token"] == 3.0  # exact dated
    assert cm.lookup("m-2025-01-01", "p")["input_cost_per_token"] == 1.0  # undated exact
    del prices["m"]
    cm = CostMap(prices)
    assert cm.lookup("m", "p")["input_cost_per_token"] == 2.0  # then provider/model
    assert cm.lookup("m-2025-01-01", "p")["input_cost_per_token"] == 2.0


def test_lookup_unknown_is_empty(costmap: CostMap) -> None:
    assert costmap.lookup("no-such-model") == {}
    assert costmap.lookup("custom/my-model", "custom") == {}


def test_lookup_returns_a_copy(costmap: CostMap) -> None:
    costmap.lookup("gpt-4o")["input_cost_per_token"] = 99.0
    assert costmap.lookup("gpt-4o")["input_cost_per_token"] == 2.5e-06


def test_lookup_is_memoised(costmap: CostMap) -> None:
    costmap.lookup("gpt-4", "openai")
    hits = costmap._find.cache_info().hits
    costmap.lookup("gpt-4", "openai")
    assert costmap._find.cache_info().hits == hits + 1


def test_cost_arithmetic(costmap: CostMap) -> None:
    # gpt-4o: $2.50 / 1M input, $10 / 1M output.
    assert costmap.cost("gpt-4o", "openai", 1_000_000, 0) == pytest.approx(2.5)
    assert costmap.cost("gpt-4o", "openai", 1000, 500) == pytest.approx(0.0025 + 0.005)
    # claude-3-haiku: $0.25 / 1M input, $1.25 / 1M output.
    assert costmap.cost("anthropic/claude-3-haiku-20240307", "anthropic", 2000, 1000) == (
        pytest.approx(2000 * 2.5e-07 + 1000 * 1.25e-06)
    )
    # Embeddings price only the input.
    assert costmap.cost("text-embedding-3-small", None, 1_000_000, 0) == pytest.approx(0.02)
    assert costmap.cost("ollama/llama3", "ollama", 1000, 1000) == 0.0
    assert costmap.cost("no-such-model", None, 1000, 1000) == 0.0


def test_cost_overrides_win(costmap: CostMap) -> None:
    overrides = {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}
    assert costmap.cost("gpt-4o", "openai", 1000, 1000, overrides) == pytest.approx(0.003)
    # Each override stands alone; the other price still comes from the map.
    only_input = {"input_cost_per_token": 0.0}
    assert costmap.cost("gpt-4o", "openai", 1000, 1000, only_input) == pytest.approx(0.01)
    # Overrides price models the map does not know (self-hosted, custom/).
    assert costmap.cost("custom/mine", "custom", 10, 10, overrides) == pytest.approx(3e-05)
    # None means "not set", not zero.
    unset = {"input_cost_per_token": None, "output_cost_per_token": None}
    assert costmap.cost("gpt-4o", "openai", 1000, 0, unset) == pytest.approx(0.0025)


def test_user_file_merges_over_bundled(tmp_path: Path) -> None:
    extra = tmp_path / "prices.json"
    extra.write_text(
        json.dumps(
            {
                "gpt-4o": {"input_cost_per_token": 1e-06},
                "my-llama": {
                    "input_cost_per_token": 1e-07,
                    "output_cost_per_token": 2e-07,
                    "max_input_tokens": 8192,
                    "litellm_provider": "openai",
                    "mode": "chat",
                },
            }
        )
    )
    cm = CostMap.load(extra)
    gpt4o = cm.lookup("gpt-4o")
    assert gpt4o["input_cost_per_token"] == 1e-06  # user value wins
    assert gpt4o["output_cost_per_token"] == 1e-05  # bundled fields kept
    assert gpt4o["max_input_tokens"] == 128000
    assert cm.lookup("openai/my-llama")["max_input_tokens"] == 8192
    assert cm.cost("my-llama", None, 10, 10) == pytest.approx(3e-06)
    assert len(cm) == len(CostMap.load()) + 1


def test_user_file_errors_name_the_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"m": {"input_cost_per_token": "cheap", "supports_vision": 1}}))
    with pytest.raises(ConfigError) as info:
        CostMap.load(bad)
    assert f"{bad}: m.input_cost_per_token" in str(info.value)
    assert f"{bad}: m.supports_vision" in str(info.value)

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        CostMap.load(broken)
    with pytest.raises(ConfigError, match="cannot read"):
        CostMap.load(tmp_path / "missing.json")
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    with pytest.raises(ConfigError, match="JSON object"):
        CostMap.load(listed)


def test_instances_are_independent(tmp_path: Path) -> None:
    extra = tmp_path / "prices.json"
    extra.write_text(json.dumps({"gpt-4o": {"input_cost_per_token": 5e-06}}))
    custom = CostMap.load(extra)
    default = CostMap.load()
    assert custom.lookup("gpt-4o")["input_cost_per_token"] == 5e-06
    assert default.lookup("gpt-4o")["input_cost_per_token"] == 2.5e-06
