"""The pipeline builder: order from the config, boot-time checks, per-stage timings."""

from __future__ import annotations

import pytest

from proxy.errors import AuthenticationError, ConfigError
from proxy.pipeline import DEFAULT_PIPELINE
from tests.helpers import chat_ctx, gateway, mock_model


def names(gw) -> list[str]:
    return [s.name for s in gw.pipeline.stages]


def test_config_without_pipeline_gets_the_default_chain() -> None:
    gw = gateway({"model_list": [mock_model("m")], "general_settings": {"master_key": "sk-1"}})
    # environment_filter leaves itself out when LITELLM_ENVIRONMENT is unset
    assert names(gw) == [n for n in DEFAULT_PIPELINE if n != "environment_filter"]
    assert "environment_filter" in gw.pipeline.skipped


def test_stages_run_in_config_order_and_report_timings() -> None:
    gw = gateway({"model_list": [mock_model("m")], "general_settings": {"master_key": "sk-1"},
                  "pipeline": ["auth", "callbacks", "route", "retry_fallback"]})
    assert names(gw) == ["auth", "callbacks", "route", "retry_fallback"]
    ctx = chat_ctx("m")
    ctx.headers = {"Authorization": "Bearer sk-1"}
    gw.pipeline(ctx)
    assert list(ctx.timings) == ["auth", "callbacks", "route", "retry_fallback", "upstream"]
    header = ctx.server_timing()
    assert header.startswith("auth;dur=") and "upstream;dur=" in header and header.endswith(
        header.split(", ")[-1]) and "total;dur=" in header
    assert all(v >= 0 for v in ctx.timings.values())


def test_stage_options_from_the_pipeline_entry() -> None:
    gw = gateway({"model_list": [mock_model("m")],
                  "pipeline": [{"retry_fallback": {"num_retries": 5}}, "route"]})
    assert gw.pipeline.stages[0].num_retries == 5


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        (["route", "teleport"], "pipeline[1]: unknown stage 'teleport'"),
        ([{"retry_fallback": {"num_retries": "many"}}, "route"],
         "pipeline[0].retry_fallback.num_retries: Not a valid integer."),
        ([{"auth": {"colour": "red"}}, "route"], "pipeline[0].auth.colour: Unknown field."),
        (["drop_params", "route"], "pipeline[0]: stage 'drop_params' needs deployment"),
        (["route", "route"], "pipeline[1]: stage 'route' appears twice"),
        (["callbacks", "auth"], "pipeline: the upstream call needs deployment"),
        ([["route"]], "pipeline[0]: Must be a stage name"),
    ],
)
def test_impossible_pipelines_fail_the_boot_with_the_config_path(pipeline, message) -> None:
    with pytest.raises(ConfigError) as info:
        gateway({"model_list": [mock_model("m")], "general_settings": {"master_key": "k"},
                 "pipeline": pipeline})
    assert any(line.startswith(message) for line in info.value.errors), info.value.errors


def test_reordering_changes_behaviour() -> None:
    """callbacks after auth does not see rejected calls; before auth it does."""
    seen: list[int] = []
    for order in (["callbacks", "auth", "route"], ["auth", "callbacks", "route"]):
        gw = gateway({"model_list": [mock_model("m")], "general_settings": {"master_key": "k"},
                      "pipeline": order})
        ctx = chat_ctx("m")
        ctx.headers = {"Authorization": "Bearer wrong"}
        with pytest.raises(AuthenticationError):
            gw.pipeline(ctx)
        seen.append(len(ctx._finishers))
    assert seen == [1, 0]
