"""Training configuration: the original design's ``train_with_mlflow.py`` flags as Dagster run config."""


import dagster as dg
from pydantic import Field

from alpr_pipelines.lib.training import TrainingParams

_DEFAULTS = TrainingParams()


class TrainConfig(dg.Config):
    """Per-run knobs of a training (the original design's flags: --model --epochs --imgsz --batch --device --lr0 --optimizer)."""

    model: str = Field(default=_DEFAULTS.model, description="Base model: yolo11n.yaml (from scratch) or a local .pt")
    epochs: int = Field(default=_DEFAULTS.epochs, description="Number of training epochs")
    imgsz: int = Field(default=_DEFAULTS.imgsz, description="Input image size")
    batch: int = Field(default=_DEFAULTS.batch, description="Batch size")
    device: str = Field(default=_DEFAULTS.device, description="CUDA device id, 'cpu', or '' for CUDA 0 when present")
    lr0: float = Field(default=_DEFAULTS.lr0, description="Initial learning rate")
    optimizer: str = Field(default=_DEFAULTS.optimizer, description="Optimizer (SGD, Adam, AdamW)")
    workers: int = Field(default=_DEFAULTS.workers, description="Data loader workers")
    seed: int = Field(default=_DEFAULTS.seed, description="Training seed")
    patience: int = Field(default=_DEFAULTS.patience, description="Early-stopping patience in epochs")
    augmentation: dict[str, float] = Field(default_factory=dict, description="Ultralytics augmentation overrides")
    nbs: int = Field(default=_DEFAULTS.nbs, description="Nominal batch size: gradients of nbs/batch batches make one "
                     "optimizer step")
    warmup_epochs: float = Field(default=_DEFAULTS.warmup_epochs, description="Learning-rate warm-up, in epochs")
    cos_lr: bool = Field(default=_DEFAULTS.cos_lr, description="Cosine learning-rate decay instead of linear")
    loss_gains: dict[str, float] = Field(default_factory=dict, description="Ultralytics loss weights: box, cls, dfl")
    restart: bool = Field(default=False, description="Start over when a crashed training's checkpoint is gone")
    force: bool = Field(default=False, description="Retrain even when dataset and config are unchanged")

    def to_params(self, run_id: str = "") -> TrainingParams:
        return TrainingParams(
            model=self.model, epochs=self.epochs, imgsz=self.imgsz, batch=self.batch, device=self.device,
            lr0=self.lr0, optimizer=self.optimizer, workers=self.workers, seed=self.seed, patience=self.patience,
            augmentation=dict(self.augmentation), retrain_nonce=run_id if self.force else "", nbs=self.nbs,
            warmup_epochs=self.warmup_epochs, cos_lr=self.cos_lr, loss_gains=dict(self.loss_gains),
        )
