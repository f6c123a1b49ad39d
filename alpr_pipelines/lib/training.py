"""YOLO11 training with Ultralytics, one MLflow run per training, resumable and idempotent.

How this relates to Ultralytics' own MLflow callback: we strip it from our trainer. It logs through the global
``mlflow`` module, starts and ends runs on its own, and names things differently from the original ALPR registry design's contract. We log
through an ``MlflowClient`` with an explicit run id instead, so a retried step continues its run, never a new one.

Identity of a training: ``training_key`` = hash(model, dataset fingerprint, training parameters, base-model bytes).
- a FINISHED MLflow run with that key exists: nothing is trained, its weights are reused;
- an unfinished one exists (crash, kill, failed step): the same MLflow run continues from the local ``last.pt``;
  if that checkpoint is gone, training fails loudly unless ``restart=True`` is given, or the run was stopped or
  crashed before its first epoch ended (no checkpoint was ever written, so starting afresh loses nothing);
- none exists: a new run is started.

Environment: sets ``YOLO_OFFLINE=1`` and ``YOLO_AUTOINSTALL=false`` (unless already set) before importing
Ultralytics, so it never reaches for the network or pip at run time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from alpr_pipelines.edge.integrity import sha256_file
from alpr_pipelines.lib.datasets import resolved_data_yaml
from alpr_pipelines.lib.models import ModelSpec

TRAINING_KEY_TAG = "alpr_training_key"
DATASET_TAG = "alpr_dataset_fingerprint"
DAGSTER_RUN_TAG = "dagster_run_id"  # the tag name dagster-mlflow uses, so its users find our runs the same way
MODEL_TAG = "alpr_model"
COMPLETE_TAG = "alpr_complete"
WEIGHTS_SHA_TAG = "alpr_sha256_{}"  # per weights file, written at the end of training: checked before any reuse
log = logging.getLogger(__name__)
LEARNING_CURVE = "learning_curve.png"  # beside Ultralytics' plots in the run folder; uploaded to plots/
# The original design's "What Gets Logged": metric name -> key in Ultralytics' per-epoch dictionaries.
EPOCH_METRICS = {
    "mAP50": "metrics/mAP50(B)",
    "mAP50-95": "metrics/mAP50-95(B)",
    "precision": "metrics/precision(B)",
    "recall": "metrics/recall(B)",
    "box_loss": "train/box_loss",
    "cls_loss": "train/cls_loss",
    "dfl_loss": "train/dfl_loss",
}
AUGMENTATION_KEYS = (
    "hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective",
    "flipud", "fliplr", "mosaic", "mixup", "copy_paste", "close_mosaic",
)
LOSS_GAIN_KEYS = ("box", "cls", "dfl")  # Ultralytics' weights of its three losses (7.5, 0.5, 1.5 by default)


class TrainingError(Exception):
    """Training cannot go on; the message says why and what to do."""


def offline_ultralytics() -> None:
    """Ultralytics never reaches for the network or pip, and logs little (unless the environment says otherwise)."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_VERBOSE", "false")


@dataclass(frozen=True)
class TrainingParams:
    """The original ALPR registry design's training flags (``train_with_mlflow.py``), with defaults that work offline.

    ``model`` defaults to ``yolo11n.yaml`` (train from scratch) because nothing may be downloaded; pass a local
    ``.pt`` file to fine-tune. ``device`` "" picks CUDA device 0 when present, else the CPU.
    """

    model: str = "yolo11n.yaml"
    epochs: int = 100
    imgsz: int = 640
    batch: int = 16
    device: str = ""
    lr0: float = 0.01
    optimizer: str = "AdamW"
    workers: int = 2
    seed: int = 0
    patience: int = 100
    augmentation: dict[str, float] = field(default_factory=dict)
    # Non-empty forces a new training even when data and config are unchanged (scheduled "force" retrains).
    retrain_nonce: str = ""
    # Ultralytics' schedule knobs, at its defaults. ``nbs`` is the nominal batch: it accumulates the gradients of
    # nbs/batch batches into one optimizer step, so a short CPU training with batch 16 and nbs 64 takes a quarter of
    # the steps it seems to (lib.recipes sets nbs to the batch).
    nbs: int = 64
    warmup_epochs: float = 3.0
    cos_lr: bool = False
    loss_gains: dict[str, float] = field(default_factory=dict)

    def validate(self) -> None:
        if self.epochs < 0:
            raise TrainingError(f"epochs must be >= 0, got {self.epochs}")
        if self.imgsz < 32 or self.imgsz % 32:
            raise TrainingError(f"imgsz must be a multiple of 32 and at least 32, got {self.imgsz}")
        if self.batch < 1 and self.batch != -1:
            raise TrainingError(f"batch must be positive (or -1 for auto), got {self.batch}")
        if self.nbs < 1 or self.warmup_epochs < 0:
            raise TrainingError(f"nbs must be positive and warmup_epochs >= 0, got {self.nbs} and {self.warmup_epochs}")
        if self.optimizer not in {"SGD", "Adam", "AdamW", "NAdam", "RAdam", "RMSProp", "MuSGD", "auto"}:
            raise TrainingError(f"optimizer {self.optimizer!r} unknown; use SGD, Adam or AdamW")
        unknown = set(self.augmentation) - set(AUGMENTATION_KEYS)
        if unknown:
            raise TrainingError(f"unknown augmentation settings {sorted(unknown)}; known: {', '.join(AUGMENTATION_KEYS)}")
        unknown = set(self.loss_gains) - set(LOSS_GAIN_KEYS)
        if unknown or any(v <= 0 for v in self.loss_gains.values()):
            raise TrainingError(f"loss gains must be positive and among {', '.join(LOSS_GAIN_KEYS)}; got "
                                f"{self.loss_gains}")
        model = Path(self.model)
        if model.suffix == ".pt" and not model.is_file():
            raise TrainingError(
                f"base weights {self.model} not found. Nothing is downloaded at run time: pass a local .pt file, or "
                "a model YAML such as yolo11n.yaml to train from scratch."
            )
        if model.suffix not in {".pt", ".yaml", ".yml"}:
            raise TrainingError(f"model {self.model!r} must be a .pt weights file or a model .yaml")


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    values: dict[str, float]


class EpochProgress:
    """A training's log line per epoch: its metrics, its pace and about how long the remaining epochs will take at
    that pace. The same training takes several times longer on one 2-core CPU than on another (docs/decisions.md,
    "How long the reader trains"), so its own pace, not a fixed figure, tells a user what to expect. The first
    epoch's time includes loading the data; from the second on, the pace is of the epochs after the first."""

    def __init__(self, name: str, epochs: int, clock: Callable[[], float] = time.monotonic):
        self.name, self.epochs, self.clock = name, epochs, clock
        self.started, self.seen = clock(), 0
        self.first_done = self.started

    def line(self, e: EpochMetrics) -> str:
        now = self.clock()
        self.seen += 1
        if self.seen == 1:
            self.first_done = now
            pace = now - self.started
        else:
            pace = (now - self.first_done) / (self.seen - 1)
        remaining = max(self.epochs - e.epoch, 0)
        shown = f"{duration_text(pace)} an epoch"
        if remaining:
            shown += f", about {duration_text(remaining * pace)} to go"
        values = ", ".join(f"{k}={v:.4f}" for k, v in e.values.items())
        return f"{self.name} epoch {e.epoch}/{self.epochs} ({shown}): {values}"


def duration_text(seconds: float) -> str:
    """``90`` -> "1.5 min", ``4500`` -> "1 h 15 min" (whole minutes from an hour on)."""
    if seconds < 3570:  # 59.5 min and more round to an hour
        return f"{seconds / 60:.1f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes} min"


@dataclass
class TrainingResult:
    run_id: str
    experiment_id: str
    training_key: str
    best_pt: Path
    last_pt: Path
    save_dir: Path
    reused: bool
    epochs: list[EpochMetrics]
    final_metrics: dict[str, float]
    images_per_second: float | None = None
    learning_curve: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("best_pt", "last_pt", "save_dir", "learning_curve"):
            d[k] = None if d[k] is None else str(d[k])
        return d


_LATER_FIELDS = {name: getattr(TrainingParams(), name)
                 for name in ("retrain_nonce", "nbs", "warmup_epochs", "cos_lr", "loss_gains")}


def training_key(spec: ModelSpec, dataset_fingerprint: str, params: TrainingParams) -> str:
    """Identity of a training: same model, data and parameters give the same key (device excluded)."""
    p = asdict(params)
    p.pop("device")
    p.pop("workers")
    # Fields added after keys were first made are left out at their defaults, so those keys stay valid.
    for name, default in _LATER_FIELDS.items():
        if p[name] == default:
            p.pop(name)
    base = Path(params.model)
    # Weights, and a model YAML of the user's (or ours, lib/architectures), are known by their content; a name
    # Ultralytics resolves itself (yolo11n.yaml) by its name.
    p["model"] = sha256_file(base) if base.suffix == ".pt" or base.is_file() else base.name
    blob = json.dumps({"model": spec.key, "data": dataset_fingerprint, "params": p}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def resolve_device(device: str) -> str:
    if device:
        return device
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    return client.create_experiment(name)


def find_training_run(client: MlflowClient, experiment_id: str, key: str):
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.{TRAINING_KEY_TAG} = '{key}'", order_by=["attributes.start_time DESC"]
    )
    return runs[0] if runs else None


def stopped_before_its_first_epoch(run) -> bool:
    """A training run that ended without logging an epoch: FAILED (this module marks a run FAILED when its training
    raises: Ctrl-C, SIGTERM, a crash) or KILLED (set from outside, e.g. by a person in MLflow). It wrote no
    checkpoint, so it is started afresh without ``restart``. A RUNNING one is left alone: it may still be training."""
    return run.info.status in ("FAILED", "KILLED") and not run.data.metrics


def starts_afresh(run, has_checkpoint: bool, restart: bool, what: str, last_pt: Path) -> bool:
    """Whether a new run replaces the unfinished ``run`` of ``what`` ("model", "reader"): False where there is none or
    it resumes from its checkpoint; True where it has none and ``restart`` asks for it, or it stopped before its first
    epoch ended.

    Raises:
        TrainingError: it has no checkpoint and may not be replaced (:func:`cannot_resume`).
    """
    if run is None or has_checkpoint:
        return False
    if restart or stopped_before_its_first_epoch(run):
        return True
    raise cannot_resume(run, what, last_pt)


def superseded_reason(restart: bool) -> str:
    """The ``alpr_superseded`` tag of a run that a new one replaces because it cannot resume."""
    return "restarted from scratch on request" if restart else "stopped before its first epoch ended; started afresh"


def cannot_resume(run, what: str, last_pt: Path) -> TrainingError:
    """The error for an unfinished ``run`` of ``what`` ("model", "reader") with no checkpoint to resume from."""
    if run.info.status == "RUNNING" and not run.data.metrics:
        owner = run.data.tags.get(DAGSTER_RUN_TAG)
        return TrainingError(
            f"MLflow run {run.info.run_id} for this {what}, dataset and config is still RUNNING and has logged no "
            f"epoch: another process may be training it now{f' (Dagster run {owner})' if owner else ''}. Wait for it, "
            "or, if its process was killed outright, restart from scratch explicitly (config restart=True, "
            "`alpr train --restart`).")
    return TrainingError(
        f"MLflow run {run.info.run_id} for this {what}, dataset and config did not finish (status "
        f"{run.info.status}) after logging an epoch, and its checkpoint {last_pt} is gone, so it cannot resume. "
        "Restore the checkpoint, or restart from scratch explicitly (config restart=True, `alpr train --restart`).")


def ultralytics_args(params: TrainingParams) -> dict[str, Any]:
    """What a training of ``params`` asks of Ultralytics' ``model.train``, but the data, device and output folder."""
    return {"epochs": params.epochs, "imgsz": params.imgsz, "batch": params.batch, "lr0": params.lr0,
            "optimizer": params.optimizer, "workers": params.workers, "seed": params.seed, "deterministic": True,
            "patience": params.patience, "nbs": params.nbs, "warmup_epochs": params.warmup_epochs,
            "cos_lr": params.cos_lr, "pretrained": Path(params.model).suffix == ".pt", **params.augmentation,
            **params.loss_gains}


def _log_params(client: MlflowClient, run_id: str, spec: ModelSpec, params: TrainingParams, data_yaml: Path,
                resolved_aug: dict[str, Any]) -> None:
    values: dict[str, Any] = {
        "epochs": params.epochs,
        "batch_size": params.batch,
        "imgsz": params.imgsz,
        "learning_rate": params.lr0,
        "optimizer": params.optimizer,
        "data_config": str(data_yaml),
        "base_model": params.model,
        "device": params.device or "auto",
        "seed": params.seed,
        "nbs": params.nbs,
        "warmup_epochs": params.warmup_epochs,
        "cos_lr": params.cos_lr,
        **{f"loss_{k}": v for k, v in params.loss_gains.items()},
        "model_name": spec.registered_name,
        **{f"aug_{k}": v for k, v in resolved_aug.items()},
    }
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in values.items()])


def _epoch_values(trainer) -> dict[str, float]:
    merged = {**trainer.label_loss_items(trainer.tloss, prefix="train"), **(trainer.metrics or {})}
    return {name: float(merged[src]) for name, src in EPOCH_METRICS.items() if src in merged}


def alpr_trainer(all_cores: bool = True):
    """Ultralytics' detection trainer, minus its MLflow callback and on every core (``all_cores=False`` keeps
    Ultralytics' own thread count, for comparisons).

    - Its MLflow callback logs through the global ``mlflow`` module and starts and ends runs on its own; our runs
      are logged through an explicit client (see the module docstring).
    - On a CPU it trains on ``cpu_count - 1`` threads (one, on a 2-core box) and loads data in the training thread;
      this trainer gives the network every core this process may use while it trains (docs/recipe.md), and puts
      the thread count back when training ends.
    """
    import torch
    from ultralytics.models.yolo.detect import DetectionTrainer

    class AlprDetectionTrainer(DetectionTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            for event, funcs in self.callbacks.items():
                self.callbacks[event] = [
                    f for f in funcs if not getattr(f, "__module__", "").startswith("ultralytics.utils.callbacks.mlflow")
                ]
            if all_cores and self.device.type == "cpu":
                before = torch.get_num_threads()
                self.add_callback("on_train_start", lambda trainer: torch.set_num_threads(usable_cores()))
                self.add_callback("on_train_end", lambda trainer: torch.set_num_threads(before))

    return AlprDetectionTrainer


def usable_cores() -> int:
    """The cores this process may run on (its affinity; all of them off Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _checkpoint_state(path: Path) -> str:
    """'resumable' (mid-training), 'complete' (optimizer stripped at the end) or 'missing'."""
    if not path.is_file():
        return "missing"
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt.get("optimizer") is not None and ckpt.get("epoch", -1) >= 0:
        return "resumable"
    return "complete"


def learning_curve_png(epochs: list[EpochMetrics], path: Path, title: str,
                       scores_shown: tuple[str, ...] = ("mAP50", "mAP50-95", "precision", "recall"),
                       losses_shown: tuple[str, ...] = ("box_loss", "cls_loss", "dfl_loss")) -> Path:
    """Plot the validation scores (a detector's mAP50, mAP50-95, precision, recall by default) and the losses
    against the epoch, as a PNG at ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    scores, losses = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    x = [e.epoch for e in epochs]
    for name in scores_shown:
        scores.plot(x, [e.values.get(name, float("nan")) for e in epochs], marker="o", ms=3, label=name)
    for name in losses_shown:
        losses.plot(x, [e.values.get(name, float("nan")) for e in epochs], marker="o", ms=3, label=name)
    scores.set(title=f"{title}: validation", xlabel="epoch", ylim=(0, 1))
    losses.set(title="losses", xlabel="epoch")
    for ax in (scores, losses):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _upload_artifacts(client: MlflowClient, run_id: str, save_dir: Path) -> None:
    weights = save_dir / "weights"
    for name in ("best.pt", "last.pt"):
        client.set_tag(run_id, WEIGHTS_SHA_TAG.format(name), sha256_file(weights / name))
        client.log_artifact(run_id, str(weights / name), "model")
    for f in sorted(save_dir.iterdir()):
        if f.is_file() and f.suffix in {".png", ".jpg", ".csv"}:
            client.log_artifact(run_id, str(f), "plots")
    if (save_dir / "args.yaml").is_file():
        client.log_artifact(run_id, str(save_dir / "args.yaml"), "config")


def fetch_verified_weights(client: MlflowClient, run: Any, weights_dir: Path, scratch: Path) -> bool:
    """Download a finished run's ``best.pt`` and ``last.pt`` into ``weights_dir`` if each has the sha256 the training
    recorded (a ``.pt`` is a pickle: loading one runs code, so unverified bytes are never loaded). False, with
    nothing written, when a hash is missing or differs."""
    try:
        fetched = {}
        for name in ("best.pt", "last.pt"):
            expected = run.data.tags.get(WEIGHTS_SHA_TAG.format(name))
            if not expected:
                log.warning("run %s recorded no sha256 for %s; retraining", run.info.run_id, name)
                return False
            scratch.mkdir(parents=True, exist_ok=True)
            local = Path(client.download_artifacts(run.info.run_id, f"model/{name}", str(scratch)))
            actual = sha256_file(local)
            if actual != expected:
                log.warning("run %s: model/%s in the artifact store is not what the training wrote (sha256 %s, "
                            "recorded %s); retraining", run.info.run_id, name, actual[:12], expected[:12])
                return False
            fetched[name] = local
        weights_dir.mkdir(parents=True, exist_ok=True)
        for name, local in fetched.items():
            os.replace(local, weights_dir / name)
        return True
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def metric_history(client: MlflowClient, run_id: str, names: Iterable[str] = tuple(EPOCH_METRICS)) -> list[EpochMetrics]:
    """The run's per-epoch metrics ``names``, by epoch (the step they were logged at)."""
    by_epoch: dict[int, dict[str, float]] = {}
    for name in names:
        for m in client.get_metric_history(run_id, name):
            by_epoch.setdefault(m.step, {})[name] = m.value
    return [EpochMetrics(epoch=e, values=v) for e, v in sorted(by_epoch.items())]


def train(
    spec: ModelSpec,
    data_yaml: Path,
    dataset_fingerprint: str,
    params: TrainingParams,
    client: MlflowClient,
    experiment: str,
    work_dir: Path,
    dagster_run_id: str | None = None,
    restart: bool = False,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    extra_tags: dict[str, str] | None = None,
) -> TrainingResult:
    """Train ``spec`` on ``data_yaml`` (or reuse/resume, see the module docstring) and log it to MLflow.

    Raises:
        TrainingError: bad parameters, or an unfinished training that cannot resume (``cannot_resume``: it logged an
            epoch and its checkpoint is gone, or it is still RUNNING with none) and ``restart`` is False.
    """
    params.validate()
    offline_ultralytics()
    key = training_key(spec, dataset_fingerprint, params)
    experiment_id = get_or_create_experiment(client, experiment)
    run_dir = (work_dir / spec.key / key).resolve()  # absolute: Ultralytics puts relative projects under its runs/
    save_dir = run_dir / "train"
    last_pt, best_pt = save_dir / "weights" / "last.pt", save_dir / "weights" / "best.pt"
    existing = find_training_run(client, experiment_id, key)
    if existing is None and save_dir.exists():
        # Local leftovers that no MLflow run knows of (e.g. the tracking store was reset): never resume into them.
        shutil.rmtree(save_dir)

    if existing is not None and existing.info.status == "FINISHED" and existing.data.tags.get(COMPLETE_TAG) == "true":
        run_id = existing.info.run_id
        if best_pt.is_file() or fetch_verified_weights(client, existing, save_dir / "weights", run_dir / "download"):
            return _result_from_run(client, run_id, experiment_id, key, save_dir, reused=True)
        client.set_tag(run_id, "alpr_superseded", "its weights in the artifact store could not be verified; retrained")
        existing = None
        if save_dir.exists():
            shutil.rmtree(save_dir)

    state = _checkpoint_state(last_pt)
    afresh = starts_afresh(existing, state != "missing", restart, "model", last_pt)
    tags = {
        TRAINING_KEY_TAG: key,
        DATASET_TAG: dataset_fingerprint,
        MODEL_TAG: spec.registered_name,
        "mlflow.runName": f"{spec.key}-{key[:8]}",
        **({DAGSTER_RUN_TAG: dagster_run_id} if dagster_run_id else {}),
        **(extra_tags or {}),
    }
    if existing is None or afresh:
        if existing is not None:
            client.set_tag(existing.info.run_id, "alpr_superseded", superseded_reason(restart))
        run_id = client.create_run(experiment_id, tags=tags).info.run_id
        from ultralytics.cfg import DEFAULT_CFG_DICT

        aug = {k: params.augmentation.get(k, DEFAULT_CFG_DICT.get(k)) for k in AUGMENTATION_KEYS}
        _log_params(client, run_id, spec, params, data_yaml, aug)
    else:
        run_id = existing.info.run_id
        client.update_run(run_id, status="RUNNING")
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items() if k != "mlflow.runName"])

    images_per_second: float | None = None
    try:
        if state != "complete":
            from ultralytics import YOLO

            def on_train_epoch_start(trainer) -> None:
                in_epoch["open"] = True

            def on_fit_epoch_end(trainer) -> None:
                # Ultralytics' final validation of best.pt fires this event too, outside any epoch: not an epoch.
                if not in_epoch["open"]:
                    return
                in_epoch["open"] = False
                epoch = int(trainer.epoch) + 1
                values = _epoch_values(trainer)
                now = int(time.time() * 1000)
                client.log_batch(run_id, metrics=[Metric(k, v, now, epoch) for k, v in values.items()])
                if on_epoch is not None:
                    on_epoch(EpochMetrics(epoch, values))

            in_epoch = {"open": False}
            if state == "resumable":
                model = YOLO(str(last_pt))
                train_args: dict[str, Any] = {"resume": str(last_pt), "device": resolve_device(params.device)}
            else:
                model = YOLO(params.model)
                train_args = {
                    # The paths validation checked, absolute: Ultralytics resolves relative ones elsewhere.
                    "data": str(resolved_data_yaml(data_yaml, run_dir / "data.yaml")),
                    "device": resolve_device(params.device), **ultralytics_args(params),
                    "project": str(run_dir), "name": "train", "exist_ok": True, "plots": True, "verbose": False,
                    "amp": True,
                }
            model.add_callback("on_train_epoch_start", on_train_epoch_start)
            model.add_callback("on_fit_epoch_end", on_fit_epoch_end)
            started = time.perf_counter()
            model.train(trainer=alpr_trainer(), **train_args)
            elapsed = time.perf_counter() - started
            trainer = model.trainer
            if trainer is not None and elapsed > 0:
                n_train = len(trainer.train_loader.dataset) if getattr(trainer, "train_loader", None) else 0
                images_per_second = n_train * (trainer.epochs - trainer.start_epoch) / elapsed
        if not best_pt.is_file():
            raise TrainingError(f"training finished but {best_pt} was not written; see the log above")
        learning_curve_png(metric_history(client, run_id), save_dir / LEARNING_CURVE, spec.registered_name)
        _upload_artifacts(client, run_id, save_dir)
        client.set_tag(run_id, COMPLETE_TAG, "true")
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    return _result_from_run(client, run_id, experiment_id, key, save_dir, reused=False,
                            images_per_second=images_per_second)


def _result_from_run(client: MlflowClient, run_id: str, experiment_id: str, key: str, save_dir: Path, reused: bool,
                     images_per_second: float | None = None) -> TrainingResult:
    """The metrics of the weights in ``best.pt`` come from the best epoch (by mAP50-95, as Ultralytics picks it)."""
    epochs = metric_history(client, run_id)
    best = max(epochs, key=lambda e: e.values.get("mAP50-95", 0.0), default=None)
    weights = save_dir / "weights"
    curve = save_dir / LEARNING_CURVE
    if not curve.is_file() and epochs:  # a reused training on a fresh state folder: drawn again from MLflow's history
        learning_curve_png(epochs, curve, client.get_run(run_id).data.tags.get(MODEL_TAG, key))
    return TrainingResult(run_id, experiment_id, key, weights / "best.pt", weights / "last.pt", save_dir, reused,
                          epochs, best.values if best else {}, images_per_second,
                          curve if curve.is_file() else None)
