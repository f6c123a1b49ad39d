"""The default recipe: how each model is trained on synthetic data on a CPU, within the demo's budget.

Chosen from measured learning curves (``bench/recipe_curves.py``; the curves and the reasons are in
``docs/recipe.md``):

- each model trains on what it serves (``lib.views``): the vehicle detector on whole frames, the plate detector on
  vehicle crops fitted to a small input, where a plate is a tenth to a third of the image's width;
- a narrower YOLO11 (``architectures/yolo11-narrow.yaml``) than YOLO11n: one or four classes of synthetic scenes
  need less width, and a CPU trains more images a second with it;
- one optimizer step per batch (``nbs`` = ``batch``; Ultralytics' default accumulates four batches of 16 into
  one step) and a one-epoch warm-up: a few minutes of CPU are a few hundred steps, and each one counts.

On a GPU, and on a user's own data, ``alpr train`` keeps the original ALPR registry design's flags
(``--epochs 100 --imgsz 640``, :class:`~alpr_pipelines.lib.training.TrainingParams`' defaults).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from alpr_pipelines.lib.reader_model import ReaderParams
from alpr_pipelines.lib.training import TrainingParams, resolve_device

NARROW_YOLO11 = str(Path(__file__).parent / "architectures" / "yolo11-narrow.yaml")


@dataclass(frozen=True)
class SyntheticData:
    """How many scenes the recipe renders (both models' datasets are views of the same scenes) and their size."""

    train_scenes: int = 1200
    val_scenes: int = 80
    width: int = 640
    height: int = 384


SYNTHETIC_DATA = SyntheticData()

_COMMON = TrainingParams(model=NARROW_YOLO11, batch=16, nbs=16, lr0=0.002, optimizer="AdamW", warmup_epochs=1.0,
                         workers=2, patience=100)
# The box and distribution-focal losses weigh more than Ultralytics' 7.5 and 1.5: on synthetic scenes the class is
# easy and how tight the box is decides mAP50-95.
_LOCALIZE = {"box": 12.0, "dfl": 2.0}
CPU_RECIPES: dict[str, TrainingParams] = {
    # Whole 640x384 frames at 320 (the size the edge serves them at); mosaic until the last two epochs.
    "vehicle": replace(_COMMON, epochs=8, imgsz=320, augmentation={"close_mosaic": 2}, loss_gains=_LOCALIZE),
    # Vehicle crops fitted to 224; mosaic until the last epoch; cosine decay.
    "plate": replace(_COMMON, epochs=6, imgsz=224, cos_lr=True, augmentation={"close_mosaic": 1},
                     loss_gains=_LOCALIZE),
}


@dataclass(frozen=True)
class ReaderData:
    """How many synthetic plate crops the reader's recipe trains and validates on."""

    train_plates: int = 48000
    val_plates: int = 600


READER_DATA = ReaderData()
# The plate reader's recipe (docs/decisions.md, "Plate reader": the head and size were chosen by measurement).
READER_RECIPE = ReaderParams()


def training_defaults(model_key: str, synthetic: bool, device: str) -> TrainingParams:
    """The parameters a training starts from: the CPU recipe for synthetic data on a CPU, else the original flags.

    ``device`` as ``alpr train --device`` takes it ("" picks CUDA 0 when present).
    """
    if synthetic and resolve_device(device) == "cpu":
        return CPU_RECIPES[model_key]
    return TrainingParams()
