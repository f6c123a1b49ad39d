"""Convert a COCO detection annotation file to a YOLO dataset of the vehicle classes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import defaultdict
from pathlib import Path

from alpr_pipelines.lib.datasets import DatasetError, write_data_yaml
from alpr_pipelines.lib.models import VEHICLE

# COCO category names that map onto our vehicle classes; everything else is dropped.
COCO_TO_VEHICLE = {"car": "car", "truck": "truck", "bus": "bus", "motorcycle": "motorcycle", "motorbike": "motorcycle"}


def convert_coco(annotations: Path, images_dir: Path, out_dir: Path, val_fraction: float = 0.2,
                 overwrite: bool = False) -> Path:
    """Write ``out_dir/data.yaml`` and its images/labels from a COCO ``instances_*.json``.

    Images are assigned to train or val by a hash of their file name, so the split is stable across runs. Images
    with no vehicle annotation are kept as background images. Crowd annotations are skipped.

    ``out_dir`` is replaced only when it is empty or ``overwrite`` is set, and only once the new dataset is complete.
    COCO file names are data: one that points outside ``images_dir`` is refused.

    Returns:
        The path of the written data YAML.
    """
    if not 0 < val_fraction < 1:
        raise DatasetError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    annotations, images_dir, out_dir = Path(annotations), Path(images_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise DatasetError(f"{out_dir} exists and is not empty; pass --overwrite to replace it, or choose another --out")
    try:
        coco = json.loads(annotations.read_text())
    except FileNotFoundError as exc:
        raise DatasetError(f"COCO annotation file {annotations} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise DatasetError(f"COCO annotation file {annotations} is not valid JSON: {exc}") from exc
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            raise DatasetError(f"{annotations} is not a COCO detection file: it has no '{key}' list")
    ids = {name: i for i, name in VEHICLE.names.items()}
    cat_to_cls = {
        c["id"]: ids[COCO_TO_VEHICLE[c["name"]]] for c in coco["categories"] if c["name"] in COCO_TO_VEHICLE
    }
    if not cat_to_cls:
        raise DatasetError(f"{annotations} has none of the categories {sorted(COCO_TO_VEHICLE)}")
    by_image: dict[int, list[dict]] = defaultdict(list)
    for ann in coco["annotations"]:
        if ann.get("category_id") in cat_to_cls and not ann.get("iscrowd", 0):
            by_image[ann["image_id"]].append(ann)
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    missing = []
    root = images_dir.resolve()
    for img in coco["images"]:
        src = images_dir / str(img.get("file_name", ""))
        if not src.resolve().is_relative_to(root):
            shutil.rmtree(tmp, ignore_errors=True)
            raise DatasetError(f"{annotations}: image file name {str(img.get('file_name'))[:80]!r} points outside "
                               f"{images_dir}; COCO file names must be paths under the images folder")
        if not src.is_file():
            missing.append(str(src))
            continue
        bucket = int(hashlib.sha256(img["file_name"].encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        split = "val" if bucket < val_fraction else "train"
        dst = tmp / "images" / split / Path(img["file_name"]).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
        w, h = float(img["width"]), float(img["height"])
        lines = []
        for ann in by_image.get(img["id"], []):
            x, y, bw, bh = ann["bbox"]
            x1, y1, x2, y2 = max(0.0, x), max(0.0, y), min(w, x + bw), min(h, y + bh)
            if x2 - x1 < 1 or y2 - y1 < 1:
                continue
            cx, cy = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h
            lines.append(f"{cat_to_cls[ann['category_id']]} {cx:.6f} {cy:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
        lbl = tmp / "labels" / split / (Path(img["file_name"]).stem + ".txt")
        lbl.parent.mkdir(parents=True, exist_ok=True)
        lbl.write_text("\n".join(lines) + ("\n" if lines else ""))
    if missing:
        shutil.rmtree(tmp, ignore_errors=True)
        shown = "\n  ".join(missing[:10])
        raise DatasetError(
            f"{len(missing)} images named in {annotations} are not under {images_dir}:\n  {shown}\n"
            "Pass the folder that holds the COCO images with --images."
        )
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out_dir)
    return write_data_yaml(out_dir, VEHICLE.names, ("train", "val"))
