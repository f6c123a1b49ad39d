import json

import dagster as dg
import pytest
import yaml

from alpr_pipelines.definitions import defs, train_and_register
from alpr_pipelines.defs.presets import recipe_run_config
from alpr_pipelines.defs.promotion.ops import PROMOTION_POOL
from alpr_pipelines.defs.promotion.schedules import build_retraining_schedule, retrain_run_config
from alpr_pipelines.settings import load_settings
from alpr_pipelines.stack.embedded import DAGSTER_YAML


def test_schedule_defaults_weekly_utc_and_targets_the_whole_chain():
    schedule = defs().get_schedule_def("retrain_weekly")
    assert schedule.cron_schedule == "0 3 * * 1" and schedule.execution_timezone == "UTC"
    assert schedule.job_name == "train_and_register"


def test_schedule_cron_and_timezone_come_from_settings(tmp_path):
    settings = load_settings({"ALPR_RETRAIN_CRON": "30 1 * * *", "ALPR_RETRAIN_TIMEZONE": "Europe/Berlin"})
    schedule = build_retraining_schedule(train_and_register, settings)
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 1 * * *", "Europe/Berlin")


def test_scheduled_run_config_retrains_only_when_forced(tmp_path):
    # The demo's recipe: unchanged data and config reuse the previous training.
    assert retrain_run_config(load_settings({})) == recipe_run_config()
    forced = retrain_run_config(load_settings({"ALPR_RETRAIN_FORCE": "1"}))
    assert forced["ops"]["plate__weights"]["config"]["force"] is True
    assert forced["ops"]["vehicle__weights"]["config"]["force"] is True
    custom = tmp_path / "retrain.yaml"
    custom.write_text(yaml.safe_dump({"ops": {"plate__weights": {"config": {"epochs": 50}}}}))
    cfg = retrain_run_config(load_settings({"ALPR_RETRAIN_RUN_CONFIG": str(custom), "ALPR_RETRAIN_FORCE": "true"}))
    assert cfg["ops"]["plate__weights"]["config"] == {"epochs": 50, "force": True}
    with pytest.raises(FileNotFoundError, match="ALPR_RETRAIN_RUN_CONFIG"):
        retrain_run_config(load_settings({"ALPR_RETRAIN_RUN_CONFIG": str(tmp_path / "missing.yaml")}))


def test_schedule_tick_requests_a_run():
    schedule = defs().get_schedule_def("retrain_weekly")
    request = schedule(dg.build_schedule_context())
    assert isinstance(request, dg.RunRequest) and request.tags["alpr/trigger"] == "schedule"


def test_promotions_and_trainings_are_serialized_by_pools():
    job = defs().get_job_def("promote_version")
    assert job.graph.node_dict["gate_and_promote"].definition.pool == PROMOTION_POOL
    assert defs().get_job_def("rollback_model").graph.node_dict["rollback_production"].definition.pool == PROMOTION_POOL
    assert yaml.safe_load(DAGSTER_YAML)["concurrency"]["pools"]["default_limit"] == 1


def test_gpu_steps_carry_their_k8s_config_and_the_executor_is_selectable():
    from alpr_pipelines.definitions import executor_for
    from alpr_pipelines.lib.models import GPU_STEP_K8S_CONFIG

    for key in (["plate", "weights"], ["vehicle", "tensorrt"]):
        tags = defs().get_assets_def(dg.AssetKey(key)).op.tags
        assert json.loads(tags["dagster-k8s/config"]) == GPU_STEP_K8S_CONFIG  # Dagster stores op tags as JSON
    assert "dagster-k8s/config" not in defs().get_assets_def(dg.AssetKey(["plate", "evaluation"])).op.tags
    assert executor_for(load_settings({})) is None
    with pytest.raises(ValueError, match="ALPR_EXECUTOR='slurm' is unknown"):
        executor_for(load_settings({"ALPR_EXECUTOR": "slurm"}))
    try:
        import dagster_k8s  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pip install 'alpr-pipelines\[k8s\]'"):
            executor_for(load_settings({"ALPR_EXECUTOR": "k8s"}))
    else:
        assert executor_for(load_settings({"ALPR_EXECUTOR": "k8s"})).name == "k8s"
