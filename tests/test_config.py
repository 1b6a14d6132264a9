"""Config loading: LiteLLM files load unchanged, errors name the config path."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import load_config
from proxy.errors import ConfigError
from proxy.gateway import Gateway

ROOT = Path(__file__).resolve().parent.parent
SEEDS = sorted((ROOT / "tests" / "fixtures" / "seed_configs").glob("*.yaml"))


def test_default_config_loads_and_builds() -> None:
    config = load_config(ROOT / "conf" / "config.yaml")
    gw = Gateway(config, preload=False)
    assert gw.services.visible_model_names() == ["demo"]
    assert [s.name for s in gw.pipeline.stages][:2] == ["callbacks", "auth"]


@pytest.mark.parametrize("path", SEEDS, ids=[p.name for p in SEEDS])
def test_every_seed_config_loads_and_builds(path: Path, monkeypatch) -> None:
    for var in ("OPENAI_API_KEY", "AZURE_API_KEY", "AZURE_API_BASE", "HUGGINGFACE_API_KEY"):
        monkeypatch.setenv(var, f"test-{var.lower()}")
    if path.name.endswith("_not_a_config.yaml"):
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert "must be a mapping" in str(info.value)
        return
    config = load_config(path)
    gateway = Gateway(config, preload=False, store=False, shared_state=False)  # every seed's provider is served
    assert len(gateway.services.models.deployments) >= len(config.model_list)


def test_bare_star_from_the_docs_is_read_as_wildcard() -> None:
    path = ROOT / "tests/fixtures/seed_configs/seed001_multiple_openai_orgs_invalid_alias.yaml"
    config = load_config(path)
    assert config.model_list[0]["model_name"] == "*"
    gw = Gateway(config, preload=False)
    orgs = sorted(d.params["organization"] for d in gw.services.models.deployments)
    assert orgs == ["org-1", "org-2", "org-3"]


def test_environment_variables_exported_before_os_environ_resolution(monkeypatch) -> None:
    monkeypatch.delenv("LLMRELAY_T_KEY", raising=False)
    config = load_config({
        "environment_variables": {"LLMRELAY_T_KEY": "sk-from-env-section"},
        "model_list": [{"model_name": "a", "litellm_params": {
            "model": "openai/a", "api_key": "os.environ/LLMRELAY_T_KEY",
            "extra_headers": {"X-Team": "os.environ/LLMRELAY_T_KEY"}}}],
    })
    params = config.model_list[0]["litellm_params"]
    assert params["api_key"] == "sk-from-env-section"
    assert params["extra_headers"]["X-Team"] == "sk-from-env-section"
    assert "model_list[0].litellm_params.api_key" in config.env_paths


def test_missing_environment_variable_is_a_warning_not_a_crash(monkeypatch) -> None:
    monkeypatch.delenv("LLMRELAY_NOPE", raising=False)
    config = load_config({"model_list": [{"model_name": "a", "litellm_params": {
        "model": "openai/a", "api_key": "os.environ/LLMRELAY_NOPE"}}]})
    assert config.model_list[0]["litellm_params"]["api_key"] is None
    assert any("LLMRELAY_NOPE" in w for w in config.warnings)


def test_credentials_are_merged_and_explicit_params_win(monkeypatch) -> None:
    monkeypatch.setenv("LLMRELAY_CRED_KEY", "sk-cred")
    config = load_config({
        "model_list": [{"model_name": "a", "litellm_params": {
            "model": "openai/a", "litellm_credential_name": "c1", "api_base": "http://explicit/v1"}}],
        "credential_list": [{"credential_name": "c1", "credential_values": {
            "api_key": "os.environ/LLMRELAY_CRED_KEY", "api_base": "http://cred/v1"},
            "credential_info": {"description": "x"}}],
    })
    params = config.model_list[0]["litellm_params"]
    assert params["api_key"] == "sk-cred"
    assert params["api_base"] == "http://explicit/v1"


def test_unknown_credential_names_the_path() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"model_list": [{"model_name": "a", "litellm_params": {
            "model": "openai/a", "litellm_credential_name": "missing"}}]})
    assert info.value.errors[0].startswith("model_list[0].litellm_params.litellm_credential_name:")


def test_validation_errors_name_every_config_path() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({
            "model_list": [
                {"model_name": "ok", "litellm_params": {"model": "openai/x"}},
                {"model_name": "ok", "litellm_params": {"model": "openai/x"}},
                {"model_name": "bad", "litellm_params": {"api_base": "http://x"}},
                {"model_name": "bad2", "litellm_params": {"model": "openai/x", "rpm": "lots"}},
            ],
            "router_settings": {"routing_strategy": "fastest"},
        })
    errors = "\n".join(info.value.errors)
    assert "model_list[2].litellm_params.model: Missing data for required field." in errors
    assert "model_list[3].litellm_params.rpm: Not a valid integer." in errors
    assert "router_settings.routing_strategy:" in errors


def test_unknown_provider_params_pass_through_as_request_defaults() -> None:
    gw = Gateway(load_config({"model_list": [{"model_name": "a", "litellm_params": {
        "model": "openai/a", "api_key": "k", "seed": 12, "max_tokens": 20, "top_k": 3}}]}), preload=False)
    dep = gw.services.models.group("a")[0]
    assert dep.defaults == {"seed": 12, "max_tokens": 20, "top_k": 3}
    assert dep.api_key == "k"


def test_invalid_yaml_is_reported_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("model_list:\n  - model_name: a\n    litellm_params: {model: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert "invalid YAML (line" in info.value.errors[0]


def test_config_file_path_env(monkeypatch, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model_list:\n  - model_name: a\n    litellm_params:\n      model: openai/a\n")
    monkeypatch.setenv("CONFIG_FILE_PATH", str(path))
    assert load_config().model_list[0]["model_name"] == "a"


def test_unsupported_provider_is_a_clear_boot_error() -> None:
    with pytest.raises(ConfigError) as info:
        Gateway(load_config({"model_list": [
            {"model_name": "a", "litellm_params": {"model": "openai/a"}},
            {"model_name": "b", "litellm_params": {"model": "replicate/x"}},
        ]}), preload=False)
    assert info.value.errors == [
        "model_list[1].litellm_params.model: provider 'replicate' is not supported yet (model 'replicate/x')"
    ]
