"""Run configurations for the whole graph: the default synthetic recipe (``make demo``), and the tests' tiny run."""

from dataclasses import asdict
from typing import Any

from alpr_pipelines.lib.models import MODEL_SPECS
from alpr_pipelines.lib.reader_model import ReaderParams
from alpr_pipelines.lib.recipes import CPU_RECIPES, READER_DATA, READER_RECIPE, SYNTHETIC_DATA
from alpr_pipelines.lib.training import TrainingParams


def train_config(params: TrainingParams) -> dict[str, Any]:
    """``params`` as the weights assets' run config (``TrainConfig``)."""
    config = asdict(params)
    config.pop("retrain_nonce")
    return config


def reader_train_config(params: ReaderParams) -> dict[str, Any]:
    """``params`` as the reader's weights asset's run config (``ReaderTrainConfig``)."""
    config = asdict(params)
    for name in ("channels", "input_size", "residual_blocks"):
        config[name] = list(config[name])
    return config


def graph_run_config(
    *,
    train_images: int,
    val_images: int,
    epochs: int,
    imgsz: int,
    batch: int = 16,
    seed: int = 0,
    initial_stage: str = "Staging",
    scene_size: tuple[int, int] = (640, 384),
    models: tuple[str, ...] = tuple(MODEL_SPECS),
    train_overrides: dict[str, Any] | None = None,
    golden_scenes: int | None = None,
    reader: tuple[int, int, ReaderParams] | None = None,
    golden_plates: int | None = None,
) -> dict[str, Any]:
    """Run config for ``train_and_register`` (op names are asset keys joined by ``__``).

    ``golden_scenes`` None keeps the golden set's defaults, the set the promotion sensor's runs evaluate on; a
    number makes a smaller one of ``scene_size`` (tests), which promotion runs must then name too; so does
    ``golden_plates`` (the reader's golden and shift crops). ``reader``: the plate reader's (train plates, val
    plates, params); None: its recipe's.
    """
    width, height = scene_size
    golden = {} if golden_scenes is None else {"scenes": golden_scenes, "width": width, "height": height}
    if golden_plates is not None:
        golden.update({"plates": golden_plates, "shift_plates": golden_plates})
    ops: dict[str, Any] = {"datasets__golden_set": {"config": golden}}
    for key in models:
        ops[f"{key}__registered_version"] = {"config": {"initial_stage": initial_stage}}
        if MODEL_SPECS[key].task == "read":
            train, val, params = reader or (READER_DATA.train_plates, READER_DATA.val_plates, READER_RECIPE)
            ops[f"{key}__dataset"] = {"config": {"source": "synthetic", "seed": seed, "train_plates": train,
                                                 "val_plates": val}}
            ops[f"{key}__weights"] = {"config": reader_train_config(params)}
            continue
        ops[f"{key}__dataset"] = {"config": {"source": "synthetic", "seed": seed, "train_images": train_images,
                                             "val_images": val_images, "width": width, "height": height}}
        ops[f"{key}__weights"] = {"config": {"epochs": epochs, "imgsz": imgsz, "batch": batch, "seed": seed,
                                             **(train_overrides or {})}}
    return {"ops": ops}


def recipe_run_config(initial_stage: str = "Staging") -> dict[str, Any]:
    """The default synthetic recipe for every model (``lib.recipes``): what ``make demo`` runs, and scheduled
    retraining when no run config is given."""
    data = SYNTHETIC_DATA
    ops: dict[str, Any] = {"datasets__golden_set": {"config": {}}}
    for key, spec in MODEL_SPECS.items():
        if spec.task == "read":
            ops[f"{key}__dataset"] = {"config": {"source": "synthetic", "seed": 0,
                                                 "train_plates": READER_DATA.train_plates,
                                                 "val_plates": READER_DATA.val_plates}}
            ops[f"{key}__weights"] = {"config": reader_train_config(READER_RECIPE)}
        else:
            ops[f"{key}__dataset"] = {"config": {"source": "synthetic", "seed": 0, "train_images": data.train_scenes,
                                                 "val_images": data.val_scenes, "width": data.width,
                                                 "height": data.height}}
            ops[f"{key}__weights"] = {"config": train_config(CPU_RECIPES[key])}
        ops[f"{key}__registered_version"] = {"config": {"initial_stage": initial_stage}}
    return {"ops": ops}


def tiny_run_config(**overrides: Any) -> dict[str, Any]:
    """Seconds per model: for tests of the wiring, not of model quality."""
    kwargs: dict[str, Any] = dict(train_images=8, val_images=4, golden_scenes=4, epochs=1, imgsz=64, batch=4,
                                  scene_size=(256, 160), golden_plates=16,
                                  reader=(32, 8, ReaderParams(epochs=1, batch=8, channels=(4, 8, 8, 8))))
    kwargs.update(overrides)
    return graph_run_config(**kwargs)
