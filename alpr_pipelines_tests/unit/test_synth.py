import hashlib

import numpy as np
import pytest

from alpr_pipelines.lib.plates import (
    PLATE_FORMATS,
    SHIFT_FONT,
    fonts_for,
    render_plate,
    shipped_fonts,
    system_fonts,
)
from alpr_pipelines.lib.synth import CONDITIONS, VEHICLE_CLASSES, clip_scene, generate_scene


def test_same_seed_same_pixels_and_labels():
    a, b = generate_scene(11, "train", 5), generate_scene(11, "train", 5)
    assert np.array_equal(a.image, b.image)
    assert a.vehicles == b.vehicles and a.plates == b.plates


def test_purposes_are_disjoint_streams():
    def hashes(purpose: str) -> set[str]:
        return {hashlib.sha256(generate_scene(0, purpose, i, 128, 96).image.tobytes()).hexdigest() for i in range(20)}

    train, golden, shift = hashes("train"), hashes("golden"), hashes("golden_shift")
    assert not train & golden and not train & shift and not golden & shift


def test_labels_inside_image_and_all_vehicle_classes_and_conditions_appear():
    seen, conditions = set(), set()
    for i in range(80):
        s = generate_scene(1, "train", i, 320, 192)
        for box in s.vehicles + s.plates:
            assert 0 <= box.x1 < box.x2 <= 320 and 0 <= box.y1 < box.y2 <= 192
            cx, cy, w, h = box.yolo(320, 192)
            assert all(0 <= v <= 1 for v in (cx, cy, w, h))
        assert all(p.text for p in s.plates)
        seen |= {v.cls for v in s.vehicles}
        conditions.add(s.condition)
        assert s.image.shape == (192, 320, 3) and s.image.dtype == np.uint8
    assert seen == set(VEHICLE_CLASSES)
    assert conditions == set(CONDITIONS)


def test_infrared_frames_are_grey():
    scene = next(s for i in range(200) if (s := generate_scene(0, "train", i, 160, 96)).condition == "infrared")
    assert np.abs(scene.image.astype(int) - scene.image[..., :1].astype(int)).max() <= 1


def test_scale_ranges_from_distant_to_close_up():
    widths = [v.x2 - v.x1 for i in range(120) for v in generate_scene(4, "train", i, 640, 384).vehicles]
    assert min(widths) < 0.1 * 640 and max(widths) > 0.5 * 640


def test_plates_render_in_real_fonts_many_formats_and_colours():
    assert len(shipped_fonts()) >= 5 and all(f.suffix == ".ttf" for f in shipped_fonts())
    assert len(PLATE_FORMATS["train"]) >= 5
    rng = np.random.default_rng(0)
    plates = [render_plate(rng, height=64) for _ in range(200)]
    assert {p.format for p in plates} == {f.name for f in PLATE_FORMATS["train"]}
    assert len({p.font for p in plates}) >= 4
    assert any(any("А" <= c <= "я" for c in p.text) for p in plates)  # a Cyrillic character set
    backgrounds = {tuple(int(c) // 40 for c in p.image[32, 3 * p.image.shape[1] // 4]) for p in plates}
    assert len(backgrounds) >= 3
    for p in plates[:20]:
        assert p.image.shape[0] == 64 and p.image.std() > 20  # text drawn, not a blank rectangle


def test_the_shift_domain_is_held_out_of_training():
    train_formats = {f.name for f in PLATE_FORMATS["train"]}
    assert not train_formats & {f.name for f in PLATE_FORMATS["shift"]}
    train_colours = {c for f in PLATE_FORMATS["train"] for c in f.colours}
    assert not train_colours & {c for f in PLATE_FORMATS["shift"] for c in f.colours}
    assert SHIFT_FONT not in {p.name for p in fonts_for("train")}
    assert [p.name for p in fonts_for("shift")] == [SHIFT_FONT]
    assert all("liberationmono" not in p.name.lower() for p in system_fonts())
    rng = np.random.default_rng(3)
    assert {render_plate(rng, domain="shift").font for _ in range(20)} == {SHIFT_FONT}
    shift_scene = generate_scene(0, "golden_shift", 0)
    assert shift_scene.plates  # scenes are as usual; only the plates come from the held-out domain


def test_system_fonts_can_be_left_out(monkeypatch):
    system_fonts.cache_clear()
    monkeypatch.setenv("ALPR_SYSTEM_FONTS", "0")
    try:
        assert system_fonts() == ()
        assert set(fonts_for("train")) == {p for p in shipped_fonts() if p.name != SHIFT_FONT}
    finally:
        system_fonts.cache_clear()


def test_clip_frames_know_their_boxes():
    first, later = clip_scene(0, 0), clip_scene(0, 3)
    assert first.vehicles and len(later.vehicles) <= len(first.vehicles)
    for a, b in zip(first.vehicles, later.vehicles, strict=False):
        if a.x1 >= 6 and b.x1 > 0:
            assert b.x1 == pytest.approx(a.x1 - 6)  # panned 2 px a frame


def test_unknown_purpose_or_domain_is_rejected():
    with pytest.raises(ValueError, match="unknown purpose"):
        generate_scene(0, "holdout", 0)
    with pytest.raises(ValueError, match="unknown plate domain"):
        render_plate(np.random.default_rng(0), domain="moon")
