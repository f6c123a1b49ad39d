import json

import cv2
import numpy as np
import pytest

from alpr_pipelines.lib.coco import convert_coco
from alpr_pipelines.lib.datasets import DatasetError, label_path, load_data_yaml, split_images, validate_dataset
from alpr_pipelines.lib.models import VEHICLE


def _coco(tmp_path, n=10):
    images_dir = tmp_path / "imgs"
    images_dir.mkdir()
    images, anns = [], []
    for i in range(n):
        name = f"{i:03d}.jpg"
        cv2.imwrite(str(images_dir / name), np.full((100, 200, 3), i * 20, np.uint8))
        images.append({"id": i, "file_name": name, "width": 200, "height": 100})
        anns.append({"id": 2 * i, "image_id": i, "category_id": 3, "bbox": [10, 10, 50, 40], "iscrowd": 0})
        anns.append({"id": 2 * i + 1, "image_id": i, "category_id": 1, "bbox": [0, 0, 20, 20], "iscrowd": 0})
    cats = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 4, "name": "motorcycle"},
            {"id": 6, "name": "bus"}, {"id": 8, "name": "truck"}]
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return ann_file, images_dir


def test_coco_to_vehicle_classes(tmp_path):
    ann, imgs = _coco(tmp_path)
    data_yaml = convert_coco(ann, imgs, tmp_path / "out", val_fraction=0.3)
    summary = validate_dataset(data_yaml, VEHICLE.names)
    assert sum(summary.images.values()) == 10
    assert sum(c["car"] for c in summary.instances.values()) == 10  # person boxes dropped
    data = load_data_yaml(data_yaml)
    first = split_images(data, "train")[0]
    cls, cx, cy, w, h = label_path(first).read_text().split()
    assert cls == "0" and float(cx) == pytest.approx(35 / 200) and float(h) == pytest.approx(0.4)


def test_coco_errors_are_clear(tmp_path):
    ann, imgs = _coco(tmp_path, n=2)
    with pytest.raises(DatasetError, match="are not under"):
        convert_coco(ann, tmp_path / "elsewhere", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetError, match="no 'annotations' list"):
        convert_coco(bad, imgs, tmp_path / "out")


def test_an_existing_out_folder_is_kept_unless_overwrite(tmp_path):
    ann, imgs = _coco(tmp_path, n=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("a user's file")
    with pytest.raises(DatasetError, match="--overwrite"):
        convert_coco(ann, imgs, out)
    assert (out / "mine.txt").read_text() == "a user's file"
    assert convert_coco(ann, imgs, out, overwrite=True).is_file() and not (out / "mine.txt").exists()


def test_coco_file_names_cannot_leave_the_images_folder(tmp_path):
    ann, imgs = _coco(tmp_path, n=2)
    secret = tmp_path / "secret.jpg"
    secret.write_bytes((imgs / "000.jpg").read_bytes())
    coco = json.loads(ann.read_text())
    coco["images"][0]["file_name"] = "../secret.jpg"
    ann.write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match="points outside"):
        convert_coco(ann, imgs, tmp_path / "out")
    assert not (tmp_path / "out").exists()
