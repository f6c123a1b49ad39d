"""Scheduled retraining: rematerialize the chain for every model; the sensor takes each new candidate from there.

Training reuses its previous run when the dataset fingerprint and config are unchanged, so a tick with no new data
registers nothing new, unless ``ALPR_RETRAIN_FORCE=1``. Without ``ALPR_RETRAIN_RUN_CONFIG`` a tick trains the default
synthetic recipe, as ``make demo`` does.
"""

from typing import Any

import dagster as dg
import yaml

from alpr_pipelines.defs.presets import recipe_run_config
from alpr_pipelines.lib.models import MODEL_SPECS
from alpr_pipelines.settings import Settings, load_settings


def retrain_run_config(settings: Settings) -> dict[str, Any]:
    """The scheduled run's config: ``ALPR_RETRAIN_RUN_CONFIG`` (YAML) if set, else the default synthetic recipe
    (``defs.presets.recipe_run_config``, what ``make demo`` trains), with ``force`` applied."""
    config: dict[str, Any] = recipe_run_config()
    if settings.retrain_run_config is not None:
        if not settings.retrain_run_config.is_file():
            raise FileNotFoundError(f"ALPR_RETRAIN_RUN_CONFIG={settings.retrain_run_config} does not exist")
        config = yaml.safe_load(settings.retrain_run_config.read_text()) or {"ops": {}}
        config.setdefault("ops", {})
    if settings.retrain_force:
        for key in MODEL_SPECS:
            op = config["ops"].setdefault(f"{key}__weights", {}).setdefault("config", {})
            op["force"] = True
    return config


def build_retraining_schedule(job: Any, settings: Settings) -> dg.ScheduleDefinition:
    """The weekly retraining schedule of ``job``, at the time ``settings`` give (``ALPR_RETRAIN_CRON``)."""

    @dg.schedule(job=job, cron_schedule=settings.retrain_cron, execution_timezone=settings.retrain_timezone,
                 name="retrain_weekly", default_status=dg.DefaultScheduleStatus.STOPPED,
                 description=f"Retrain every model ({settings.retrain_cron}, {settings.retrain_timezone}); a "
                 "changed dataset (or ALPR_RETRAIN_FORCE=1) yields new candidates for the promotion sensor.")
    def retrain_weekly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(run_config=retrain_run_config(load_settings()),
                             tags={"alpr/trigger": "schedule"})

    return retrain_weekly
