"""Run configurations for the whole graph: the README demo and the tests' tiny run."""

from typing import Any

from alpr_pipelines.lib.models import MODEL_SPECS


def graph_run_config(
    *,
    train_images: int,
    val_images: int,
    golden_images: int,
    epochs: int,
    imgsz: int,
    batch: int = 16,
    seed: int = 0,
    initial_stage: str = "Staging",
    scene_size: tuple[int, int] = (640, 384),
    models: tuple[str, ...] = tuple(MODEL_SPECS),
    train_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run config for ``train_and_register`` (op names are asset keys joined by ``__``)."""
    width, height = scene_size
    ops: dict[str, Any] = {
        "datasets__golden_set": {"config": {"images": golden_images, "width": width, "height": height}},
    }
    for key in models:
        ops[f"{key}__dataset"] = {"config": {"source": "synthetic", "seed": seed, "train_images": train_images,
                                             "val_images": val_images, "width": width, "height": height}}
        ops[f"{key}__weights"] = {"config": {"epochs": epochs, "imgsz": imgsz, "batch": batch, "seed": seed,
                                             **(train_overrides or {})}}
        ops[f"{key}__registered_version"] = {"config": {"initial_stage": initial_stage}}
    return {"ops": ops}


def demo_run_config() -> dict[str, Any]:
    """Small enough for about 10 minutes on 2 CPU cores for both models, big enough to learn something."""
    config = graph_run_config(train_images=160, val_images=40, golden_images=100, epochs=12, imgsz=320, batch=16,
                              scene_size=(512, 320))
    # The golden set keeps its defaults: the promotion sensor's runs evaluate on the same frozen set.
    config["ops"]["datasets__golden_set"] = {"config": {}}
    return config


def tiny_run_config(**overrides: Any) -> dict[str, Any]:
    """Seconds per model: for tests of the wiring, not of model quality."""
    kwargs: dict[str, Any] = dict(train_images=8, val_images=4, golden_images=4, epochs=1, imgsz=64, batch=4,
                                  scene_size=(256, 160))
    kwargs.update(overrides)
    return graph_run_config(**kwargs)
