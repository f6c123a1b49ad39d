"""What each model is trained and judged on: the view of a scene its serving stage feeds it.

- ``frames``: the whole frame, as the vehicle detector sees every camera frame.
- ``vehicle_crops``: what the edge feeds the plate detector. One image per labelled vehicle, cut out of the frame
  around its box with the margin the edge adds (``edge.detector.CROP_MARGIN``), jittered as a real detector's boxes
  are, at the frame's own pixels; plus the whole frame of a close-up (a vehicle wider than
  :data:`CLOSE_UP_WIDTH` of the frame), which the edge feeds it when its vehicle detector finds nothing there.
  Ultralytics and the edge both fit each image to the model's input size, so a plate keeps its size relative to
  its vehicle, whatever the vehicle's distance.

Clip rule: a plate is labelled in a crop when at least :data:`MIN_VISIBLE` of its area lies inside it, with its box
cut at the crop's border. A plate with less inside is painted over in the crop's grey (114, the letterbox colour),
so no visible plate is left unlabelled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alpr_pipelines.edge.yolo import CROP_MARGIN, MIN_CROP_PX, crop_region
from alpr_pipelines.lib.synth import Box, Scene

VIEWS = ("frames", "vehicle_crops")
MIN_VISIBLE = 0.6
CLOSE_UP_WIDTH = 0.6
# A detector's box is off by a few per cent of the vehicle's size on each side: the crop's margin varies this much
# around the edge's margin, per side.
MARGIN_JITTER = 0.06


@dataclass(frozen=True)
class ViewImage:
    """One training or evaluation image of a view: pixels (BGR) and its boxes in those pixels; ``name`` tells the
    images of one scene apart (``frame``, ``v0``, ``v1`` ...)."""

    name: str
    image: np.ndarray
    boxes: list[Box]


def plates_in(region: tuple[int, int, int, int], plates: list[Box]) -> tuple[list[Box], list[Box]]:
    """Plates of the frame as seen in ``region``: (labelled, boxes in region pixels cut at its border) and
    (hidden: too little inside, in region pixels, to be painted over)."""
    x1, y1, x2, y2 = region
    labelled: list[Box] = []
    hidden: list[Box] = []
    for p in plates:
        inside = Box(p.cls, max(p.x1, x1), max(p.y1, y1), min(p.x2, x2), min(p.y2, y2), p.text)
        if inside.x2 <= inside.x1 or inside.y2 <= inside.y1:
            continue
        local = inside.shifted(-x1, -y1)
        (labelled if inside.area >= MIN_VISIBLE * p.area else hidden).append(local)
    return labelled, hidden


def vehicle_crops(scene: Scene, rng: np.random.Generator | None) -> list[ViewImage]:
    """The plate detector's view of ``scene`` (see the module docstring). ``rng`` jitters the margins; None cuts
    every crop with the edge's own margin (no jitter)."""
    h, w = scene.image.shape[:2]
    out: list[ViewImage] = []
    for k, vehicle in enumerate(scene.vehicles):
        jitter = rng.uniform(-MARGIN_JITTER, MARGIN_JITTER, 4) if rng is not None else np.zeros(4)
        margins = tuple(float(m) for m in np.maximum(CROP_MARGIN + jitter, -0.02))
        region = crop_region(vehicle.x1, vehicle.y1, vehicle.x2, vehicle.y2, w, h, margins)  # type: ignore[arg-type]
        x1, y1, x2, y2 = region
        if x2 - x1 < MIN_CROP_PX or y2 - y1 < MIN_CROP_PX:
            continue
        labelled, hidden = plates_in(region, scene.plates)
        crop = scene.image[y1:y2, x1:x2].copy()
        for p in hidden:
            crop[int(p.y1) : int(np.ceil(p.y2)), int(p.x1) : int(np.ceil(p.x2))] = 114
        out.append(ViewImage(f"v{k}", crop, labelled))
    if any(v.x2 - v.x1 >= CLOSE_UP_WIDTH * w for v in scene.vehicles):
        out.append(ViewImage("frame", scene.image, list(scene.plates)))
    return out


def view_images(view: str, scene: Scene, classes: tuple[str, ...], rng: np.random.Generator | None) -> list[ViewImage]:
    """The images ``view`` makes of ``scene``, each with the boxes of ``classes``."""
    if view == "frames":
        boxes = [b for b in scene.vehicles + scene.plates if b.cls in classes]
        return [ViewImage("frame", scene.image, boxes)]
    if view == "vehicle_crops":
        return [ViewImage(v.name, v.image, [b for b in v.boxes if b.cls in classes]) for v in vehicle_crops(scene, rng)]
    raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")
