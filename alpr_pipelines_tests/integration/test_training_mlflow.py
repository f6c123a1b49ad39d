"""Training against a real `mlflow server`: what gets logged, reuse, crash and resume."""

import pytest

from alpr_pipelines.lib.datasets import validate_dataset
from alpr_pipelines.lib.models import PLATE
from alpr_pipelines.lib.training import (
    DAGSTER_RUN_TAG,
    DATASET_TAG,
    EPOCH_METRICS,
    TrainingError,
    TrainingParams,
    train,
)

TINY = dict(imgsz=64, batch=4, workers=0)


def _artifacts(client, run_id, path=""):
    out = []
    for f in client.list_artifacts(run_id, path):
        out.extend(_artifacts(client, run_id, f.path) if f.is_dir else [f.path])
    return out


def test_one_run_with_the_seeds_params_metrics_and_artifacts(mlflow_client, tiny_views, tmp_path, unique_experiment):
    fp = validate_dataset(tiny_views["plate"]).fingerprint
    seen = []
    result = train(PLATE, tiny_views["plate"], fp, TrainingParams(epochs=2, **TINY), mlflow_client,
                   unique_experiment, tmp_path, dagster_run_id="dagster-run-1", on_epoch=seen.append)
    run = mlflow_client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    for name in ("epochs", "batch_size", "imgsz", "learning_rate", "optimizer", "data_config", "base_model"):
        assert name in params
    assert params["epochs"] == "2" and params["optimizer"] == "AdamW" and params["base_model"] == "yolo11n.yaml"
    assert params["data_config"] == str(tiny_views["plate"])
    assert {"aug_mosaic", "aug_fliplr", "aug_hsv_h"} <= set(params)
    for metric in EPOCH_METRICS:
        history = mlflow_client.get_metric_history(result.run_id, metric)
        assert [m.step for m in history] == [1, 2], metric
    assert [e.epoch for e in seen] == [1, 2]
    files = _artifacts(mlflow_client, result.run_id)
    assert {"model/best.pt", "model/last.pt", "config/args.yaml"} <= set(files)
    assert any(f.startswith("plots/") and f.endswith(".png") for f in files)
    assert "plots/learning_curve.png" in files and result.learning_curve is not None
    assert result.learning_curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run.data.tags[DAGSTER_RUN_TAG] == "dagster-run-1" and run.data.tags[DATASET_TAG] == fp
    # Unchanged dataset and config: nothing is trained and no new run appears.
    again = train(PLATE, tiny_views["plate"], fp, TrainingParams(epochs=2, **TINY), mlflow_client,
                  unique_experiment, tmp_path)
    assert again.reused and again.run_id == result.run_id
    exp = mlflow_client.get_experiment_by_name(unique_experiment)
    assert len(mlflow_client.search_runs([exp.experiment_id])) == 1


def test_reuse_on_a_fresh_home_loads_only_verified_weights(mlflow_server, mlflow_client, tiny_views, tmp_path,
                                                          unique_experiment):
    """A finished training is reused from the artifact store only if its .pt files hash to what the training
    recorded; a pickle planted there is never loaded (its canary never appears) and the model is retrained."""
    import os
    import pickle

    fp = validate_dataset(tiny_views["plate"]).fingerprint
    params = TrainingParams(epochs=1, **TINY)
    first = train(PLATE, tiny_views["plate"], fp, params, mlflow_client, unique_experiment, tmp_path / "a")
    fresh = train(PLATE, tiny_views["plate"], fp, params, mlflow_client, unique_experiment, tmp_path / "b")
    assert fresh.reused and fresh.run_id == first.run_id and fresh.best_pt.read_bytes() == first.best_pt.read_bytes()
    canary = tmp_path / "canary"

    class Planted:
        def __reduce__(self):
            return (os.system, (f"touch {canary}",))

    stored = next(mlflow_server.root.rglob(f"{first.run_id}/artifacts/model/best.pt"))
    stored.write_bytes(pickle.dumps(Planted()))
    again = train(PLATE, tiny_views["plate"], fp, params, mlflow_client, unique_experiment, tmp_path / "c")
    assert not canary.exists()
    assert not again.reused and again.run_id != first.run_id
    assert mlflow_client.get_run(first.run_id).data.tags["alpr_superseded"].startswith("its weights")


class Crash(Exception):
    pass


def test_crash_resumes_the_same_run_from_last_pt(mlflow_client, tiny_views, tmp_path, unique_experiment):
    fp = validate_dataset(tiny_views["plate"]).fingerprint
    params = TrainingParams(epochs=3, **TINY)

    def crash_at_2(e):
        if e.epoch == 2:
            raise Crash("power cut")

    with pytest.raises(Crash):
        train(PLATE, tiny_views["plate"], fp, params, mlflow_client, unique_experiment, tmp_path, on_epoch=crash_at_2)
    exp = mlflow_client.get_experiment_by_name(unique_experiment)
    (crashed,) = mlflow_client.search_runs([exp.experiment_id])
    assert crashed.info.status == "FAILED"
    resumed = train(PLATE, tiny_views["plate"], fp, params, mlflow_client, unique_experiment, tmp_path,
                    dagster_run_id="retry")
    assert resumed.run_id == crashed.info.run_id and not resumed.reused
    assert len(mlflow_client.search_runs([exp.experiment_id])) == 1
    steps = [m.step for m in mlflow_client.get_metric_history(resumed.run_id, "mAP50")]
    assert steps == [1, 2, 3]  # epoch 3 continued from the checkpoint, not a restart from epoch 1
    assert mlflow_client.get_run(resumed.run_id).info.status == "FINISHED"


def test_crash_without_checkpoint_fails_loudly(mlflow_client, tiny_views, tmp_path, unique_experiment):
    fp = validate_dataset(tiny_views["plate"]).fingerprint
    params = TrainingParams(epochs=2, **TINY)

    def crash(e):
        raise Crash("boom")

    with pytest.raises(Crash):
        train(PLATE, tiny_views["plate"], fp, params, mlflow_client, unique_experiment, tmp_path, on_epoch=crash)
    for ckpt in tmp_path.rglob("last.pt"):
        ckpt.unlink()
    with pytest.raises(TrainingError, match="cannot resume"):
        train(PLATE, tiny_views["plate"], fp, params, mlflow_client, unique_experiment, tmp_path)
    restarted = train(PLATE, tiny_views["plate"], fp, params, mlflow_client, unique_experiment, tmp_path,
                      restart=True)
    assert mlflow_client.get_run(restarted.run_id).info.status == "FINISHED"


def test_a_training_stopped_before_its_first_epoch_starts_afresh(mlflow_client, tiny_views, tmp_path,
                                                                 unique_experiment, monkeypatch):
    """Ctrl-C while the first epoch runs (here: once its batches are trained, as its validation starts) leaves a
    FAILED run with no epoch and no checkpoint: the next training starts afresh in a new run without `--restart`, and
    the old run's tag says why it was superseded."""
    from ultralytics.engine.trainer import BaseTrainer

    fp = validate_dataset(tiny_views["plate"]).fingerprint
    params = TrainingParams(epochs=1, **TINY)

    def stopped(self, *args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(BaseTrainer, "validate", stopped)
        with pytest.raises(KeyboardInterrupt):
            train(PLATE, tiny_views["plate"], fp, params, mlflow_client, unique_experiment, tmp_path)
    exp = mlflow_client.get_experiment_by_name(unique_experiment)
    (first,) = mlflow_client.search_runs([exp.experiment_id])
    assert first.info.status == "FAILED" and not first.data.metrics
    assert not list(tmp_path.rglob("last.pt"))  # the case this is about: nothing to resume from
    fresh = train(PLATE, tiny_views["plate"], fp, params, mlflow_client, unique_experiment, tmp_path)
    assert fresh.run_id != first.info.run_id and not fresh.reused
    assert mlflow_client.get_run(fresh.run_id).info.status == "FINISHED"
    superseded = mlflow_client.get_run(first.info.run_id).data.tags["alpr_superseded"]
    assert superseded == "stopped before its first epoch ended; started afresh"
