import hashlib

import numpy as np
import pytest

from alpr_pipelines.lib.synth import PLATE_STYLES, VEHICLE_CLASSES, font_files, generate_scene, render_plate


def test_same_seed_same_pixels_and_labels():
    a, b = generate_scene(11, "train", 5), generate_scene(11, "train", 5)
    assert np.array_equal(a.image, b.image)
    assert a.vehicles == b.vehicles and a.plates == b.plates


def test_purposes_are_disjoint_streams():
    train = {hashlib.sha256(generate_scene(0, "train", i, 128, 96).image.tobytes()).hexdigest() for i in range(20)}
    golden = {hashlib.sha256(generate_scene(0, "golden", i, 128, 96).image.tobytes()).hexdigest() for i in range(20)}
    assert not train & golden


def test_labels_inside_image_and_all_vehicle_classes_appear():
    seen = set()
    for i in range(60):
        s = generate_scene(1, "train", i, 320, 192)
        for box in s.vehicles + s.plates:
            assert 0 <= box.x1 < box.x2 <= 320 and 0 <= box.y1 < box.y2 <= 192
            cx, cy, w, h = box.yolo(320, 192)
            assert all(0 <= v <= 1 for v in (cx, cy, w, h))
        seen |= {v.cls for v in s.vehicles}
        assert s.image.shape == (192, 320, 3) and s.image.dtype == np.uint8
    assert seen == set(VEHICLE_CLASSES)


def test_plates_render_in_real_fonts_and_several_styles():
    assert len(font_files()) >= 3 and all(f.suffix == ".ttf" for f in font_files())
    assert len(PLATE_STYLES) >= 4
    plate = render_plate(np.random.default_rng(0), height=64)
    assert plate.shape[0] == 64 and plate.shape[1] > 64
    assert plate.std() > 20  # text drawn, not a blank rectangle


def test_unknown_purpose_is_rejected():
    with pytest.raises(ValueError, match="unknown purpose"):
        generate_scene(0, "holdout", 0)
