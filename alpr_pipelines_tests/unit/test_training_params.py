import pytest

from alpr_pipelines.lib.models import PLATE, VEHICLE
from alpr_pipelines.lib.training import TrainingError, TrainingParams, training_key


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (TrainingParams(model="yolo11n.pt"), "not found. Nothing is downloaded"),
        (TrainingParams(imgsz=100), "multiple of 32"),
        (TrainingParams(batch=0), "batch must be positive"),
        (TrainingParams(optimizer="Adagrad"), "optimizer 'Adagrad' unknown"),
        (TrainingParams(augmentation={"rotate": 1.0}), "unknown augmentation"),
        (TrainingParams(model="model.onnx"), "must be a .pt weights file or a model .yaml"),
        (TrainingParams(epochs=-1), "epochs must be >= 0"),
    ],
)
def test_bad_params_are_refused_before_any_work(params, message):
    with pytest.raises(TrainingError, match=message):
        params.validate()


def test_defaults_follow_the_seed_flags():
    p = TrainingParams()
    assert (p.epochs, p.imgsz, p.batch, p.lr0, p.optimizer) == (100, 640, 16, 0.01, "AdamW")
    assert p.model == "yolo11n.yaml"  # nothing can be downloaded: train from the model YAML
    p.validate()


def test_training_key_identity():
    base = training_key(PLATE, "fp1", TrainingParams(epochs=3))
    assert base == training_key(PLATE, "fp1", TrainingParams(epochs=3, device="cpu", workers=8))
    assert base != training_key(PLATE, "fp2", TrainingParams(epochs=3))
    assert base != training_key(PLATE, "fp1", TrainingParams(epochs=4))
    assert base != training_key(VEHICLE, "fp1", TrainingParams(epochs=3))


def test_local_weights_key_on_content(tmp_path):
    w = tmp_path / "base.pt"
    w.write_bytes(b"one")
    k1 = training_key(PLATE, "fp", TrainingParams(model=str(w)))
    w.write_bytes(b"two")
    assert training_key(PLATE, "fp", TrainingParams(model=str(w))) != k1


def test_forcing_changes_the_key_and_not_forcing_keeps_old_keys():
    assert training_key(PLATE, "fp", TrainingParams(retrain_nonce="run-1")) != training_key(PLATE, "fp", TrainingParams())
    # Pinned: a key made by an earlier release must still match, or every upgrade would retrain everything.
    assert training_key(PLATE, "fp", TrainingParams(epochs=3)) == "93b08d883e0295d4a9ce"


def _run(status: str, metrics: dict, tags: dict | None = None):
    from types import SimpleNamespace

    return SimpleNamespace(info=SimpleNamespace(run_id="r1", status=status),
                           data=SimpleNamespace(metrics=metrics, tags=tags or {}))


def test_only_an_ended_run_without_an_epoch_starts_afresh_and_the_others_say_why_they_cannot_resume(tmp_path):
    from alpr_pipelines.lib.training import DAGSTER_RUN_TAG, cannot_resume, stopped_before_its_first_epoch

    assert stopped_before_its_first_epoch(_run("FAILED", {}))
    assert stopped_before_its_first_epoch(_run("KILLED", {}))
    assert not stopped_before_its_first_epoch(_run("FAILED", {"loss": 1.0}))  # an epoch was logged: hours to redo
    assert not stopped_before_its_first_epoch(_run("RUNNING", {}))  # perhaps training now, in another process

    busy = str(cannot_resume(_run("RUNNING", {}, {DAGSTER_RUN_TAG: "d1"}), "reader", tmp_path / "last.pt"))
    assert "still RUNNING and has logged no epoch" in busy and "Dagster run d1" in busy and "--restart" in busy
    lost = str(cannot_resume(_run("FAILED", {"loss": 1.0}), "model", tmp_path / "last.pt"))
    assert "status FAILED" in lost and "is gone, so it cannot resume" in lost and "--restart" in lost
