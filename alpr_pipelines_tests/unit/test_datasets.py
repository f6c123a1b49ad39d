import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from alpr_pipelines.lib.datasets import (
    DatasetError,
    DatasetValidationError,
    check_disjoint,
    label_path,
    load_data_yaml,
    resolved_data_yaml,
    sample_mosaic,
    split_images,
    validate_dataset,
    write_synthetic_views,
)
from alpr_pipelines.lib.models import DETECTOR_SPECS, PLATE, VEHICLE
from alpr_pipelines_tests.conftest import copy_dataset


@pytest.fixture()
def plate_copy(tiny_views, tmp_path) -> Path:
    """A private copy of the tiny plate dataset that a test may break."""
    return copy_dataset(tiny_views["plate"], tmp_path / "plate")


def test_each_model_gets_its_own_view_of_the_same_scenes(tiny_views):
    v = validate_dataset(tiny_views["vehicle"], VEHICLE.names)
    p = validate_dataset(tiny_views["plate"], PLATE.names)
    assert v.images == {"train": 8, "val": 4}  # the frames
    vehicles = sum(v.instances["train"].values())
    assert vehicles <= p.images["train"] <= vehicles + 8  # a crop per vehicle, and the frame of a close-up
    assert set(v.instances["train"]) == set(VEHICLE.classes)
    assert p.instances["train"]["license_plate"] > 0
    assert v.fingerprint != p.fingerprint
    frames = {f.name for f in (tiny_views["vehicle"].parent / "images" / "train").iterdir()}
    crops = {f.name for f in (tiny_views["plate"].parent / "images" / "train").iterdir()}
    for name in crops & frames:  # a close-up's frame is one file, linked into both views
        a = tiny_views["vehicle"].parent / "images" / "train" / name
        assert a.stat().st_ino == (tiny_views["plate"].parent / "images" / "train" / name).stat().st_ino


def test_fingerprint_is_deterministic_and_content_based(tmp_path, tiny_views):
    again = write_synthetic_views(tmp_path / "again", DETECTOR_SPECS.values(), seed=3, counts={"train": 8, "val": 4},
                                  width=256, height=160)
    assert validate_dataset(again["plate"]).fingerprint == validate_dataset(tiny_views["plate"]).fingerprint
    other = write_synthetic_views(tmp_path / "other", DETECTOR_SPECS.values(), seed=4, counts={"train": 8, "val": 4},
                                  width=256, height=160)
    assert validate_dataset(other["plate"]).fingerprint != validate_dataset(tiny_views["plate"]).fingerprint


def test_fingerprint_changes_when_a_label_changes(plate_copy):
    before = validate_dataset(plate_copy).fingerprint
    lbl = sorted((plate_copy.parent / "labels" / "train").glob("*.txt"))[0]
    lbl.write_text(lbl.read_text() + "0 0.5 0.5 0.1 0.1\n")
    assert validate_dataset(plate_copy).fingerprint != before


def _first(plate_copy: Path, split: str = "train") -> Path:
    return sorted((plate_copy.parent / "images" / split).glob("*.jpg"))[0]


@pytest.mark.parametrize(
    ("breakage", "kind"),
    [
        ("unreadable", "unreadable image"),
        ("out_of_range", "label out of range"),
        ("unknown_class", "unknown class"),
        ("garbage_label", "bad label"),
        ("leak", "leak"),
        ("empty_val", "empty split"),
        ("huge", "image too large"),
    ],
)
def test_bad_datasets_name_the_files(plate_copy, breakage, kind):
    image = _first(plate_copy)
    if breakage == "unreadable":
        image.write_bytes(b"not an image at all")
        culprit = image
    elif breakage == "out_of_range":
        culprit = label_path(image)
        culprit.write_text("0 1.4 0.5 0.2 0.2\n")
    elif breakage == "unknown_class":
        culprit = label_path(image)
        culprit.write_text("7 0.5 0.5 0.2 0.2\n")
    elif breakage == "garbage_label":
        culprit = label_path(image)
        culprit.write_text("zero 0.5 0.5 0.2 0.2\n")
    elif breakage == "huge":  # 8000 x 6000 of one grey: a small file that would decode to 48 MB
        ok, png = cv2.imencode(".png", np.full((6000, 8000), 114, np.uint8))
        culprit = image.with_suffix(".png")
        culprit.write_bytes(png.tobytes())
    elif breakage == "leak":
        culprit = plate_copy.parent / "images" / "val" / "copy_of_train.jpg"
        shutil.copyfile(image, culprit)
    else:
        for f in (plate_copy.parent / "images" / "val").glob("*"):
            f.unlink()
        culprit = Path("images/val")
    with pytest.raises(DatasetValidationError) as info:
        validate_dataset(plate_copy, PLATE.names)
    assert kind in {p.kind for p in info.value.problems}
    assert str(culprit) in str(info.value)
    assert "nothing was trained or registered" in str(info.value)


def test_class_names_must_match_the_model(tiny_views):
    with pytest.raises(DatasetValidationError, match="differ from the model"):
        validate_dataset(tiny_views["vehicle"], PLATE.names)


def test_missing_or_malformed_yaml(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_data_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: images/train\n")
    with pytest.raises(DatasetError, match="lacks val, names"):
        load_data_yaml(bad)


def test_a_download_key_is_refused(tmp_path):
    """Ultralytics runs a data YAML's ``download`` when it finds no images: a dataset is data, never code."""
    yml = tmp_path / "d.yaml"
    yml.write_text(yaml.safe_dump({"path": "elsewhere", "train": "images/train", "val": "images/val",
                                   "names": ["license_plate"], "download": "import os; os.system('touch x')"}))
    with pytest.raises(DatasetError, match="'download' key"):
        load_data_yaml(yml)


def test_ultralytics_gets_the_paths_validation_checked(plate_copy, tmp_path, monkeypatch):
    """A relative ``path`` means the YAML's folder to the validator; the copy Ultralytics reads says so in full,
    whatever the working directory."""
    data = yaml.safe_load(plate_copy.read_text())
    data["path"] = "."
    plate_copy.write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)
    out = resolved_data_yaml(plate_copy, tmp_path / "run" / "data.yaml")
    written = yaml.safe_load(out.read_text())
    assert written["path"] == str(plate_copy.parent.resolve()) and "download" not in written
    assert Path(written["train"]).is_absolute() and Path(written["val"]).is_dir()
    assert validate_dataset(out, PLATE.names).fingerprint == validate_dataset(plate_copy, PLATE.names).fingerprint


def test_txt_lists_and_relative_paths(tiny_views, tmp_path):
    data = load_data_yaml(tiny_views["plate"])
    listing = tmp_path / "train.txt"
    listing.write_text("\n".join(str(p) for p in split_images(data, "train")))
    yml = tmp_path / "d.yaml"
    yml.write_text(yaml.safe_dump({"train": str(listing), "val": str(data["path"] / "images/val"),
                                   "names": ["license_plate"]}))
    assert validate_dataset(yml, PLATE.names).images == validate_dataset(tiny_views["plate"]).images


def test_golden_set_disjoint_check(tiny_views, tmp_path):
    golden = write_synthetic_views(tmp_path / "g", DETECTOR_SPECS.values(), seed=3, counts={"val": 4}, width=256,
                                   height=160, purpose="golden")
    check_disjoint(tiny_views["plate"], golden["plate"])
    with pytest.raises(DatasetValidationError, match="golden image also in training data"):
        check_disjoint(tiny_views["plate"], tiny_views["plate"])


def test_mosaic_is_a_viewable_image(tiny_views, tmp_path):
    out = sample_mosaic(tiny_views["vehicle"], tmp_path / "m.jpg")
    img = cv2.imread(str(out))
    # 8 train images of 256x160 -> 2 rows of 4 tiles of 192x120: no empty bands
    assert img is not None and img.shape[:2] == (2 * 120, 4 * 192)
    assert np.asarray(img).std() > 10


def test_interrupted_write_leaves_no_dataset(tmp_path, monkeypatch):
    import alpr_pipelines.lib.datasets as ds

    calls = {"n": 0}
    real = ds.generate_scene

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(ds, "generate_scene", flaky)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic_views(tmp_path / "out", DETECTOR_SPECS.values(), 0, {"train": 4, "val": 2}, 128, 96)
    assert not (tmp_path / "out").exists()
