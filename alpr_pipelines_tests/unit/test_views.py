"""The plate detector's view of a scene: vehicle crops with their plates, under the stated clip rule."""

import numpy as np
import pytest

from alpr_pipelines.edge.yolo import CROP_MARGIN, crop_region
from alpr_pipelines.lib.synth import Box, Scene, generate_scene
from alpr_pipelines.lib.views import CLOSE_UP_WIDTH, MARGIN_JITTER, MIN_VISIBLE, plates_in, vehicle_crops, view_images


def _inside(box: Box, image: np.ndarray) -> bool:
    h, w = image.shape[:2]
    return 0 <= box.x1 < box.x2 <= w and 0 <= box.y1 < box.y2 <= h


@pytest.mark.parametrize("seed", [0, 1])
def test_every_plate_box_lies_inside_its_crop_and_none_is_lost_beyond_the_clip_rule(seed):
    checked = 0
    for i in range(40):
        scene = generate_scene(seed, "train", i, 640, 384)
        rng = np.random.default_rng(i)
        for item in vehicle_crops(scene, rng):
            assert all(_inside(b, item.image) for b in item.boxes), item.name
            if item.name == "frame":
                assert item.boxes == scene.plates
                continue
            # Recover the crop's place in the frame: the crop is a view of the frame's pixels.
            k = int(item.name[1:])
            vehicle = scene.vehicles[k]
            assert item.image.shape[0] >= (vehicle.y2 - vehicle.y1) * (1 - 2 * MARGIN_JITTER) - 2
            for plate in scene.plates:
                labelled = [b for b in item.boxes if b.text == plate.text]
                # A plate (text is unique per scene, in practice) is labelled at most once per crop.
                assert len(labelled) <= 1
                checked += len(labelled)
    assert checked > 50


def test_clip_rule_labels_plates_mostly_inside_and_hides_the_rest():
    plates = [
        Box("license_plate", 10, 10, 30, 20, "A"),  # wholly inside
        Box("license_plate", 90, 50, 110, 60, "B"),  # half inside: 50% < MIN_VISIBLE
        Box("license_plate", 92, 70, 102, 80, "C"),  # 80% inside
        Box("license_plate", 200, 200, 220, 210, "D"),  # outside
    ]
    labelled, hidden = plates_in((0, 0, 100, 100), plates)
    assert [b.text for b in labelled] == ["A", "C"]
    assert [b.text for b in hidden] == ["B"]
    assert labelled[1].x2 == 100  # cut at the crop's border
    assert MIN_VISIBLE == 0.6


def test_hidden_plates_are_painted_over_so_no_visible_plate_goes_unlabelled():
    image = np.full((100, 400, 3), 200, np.uint8)  # the vehicle is no close-up: one crop, no whole frame
    vehicle = Box("car", 0, 0, 100, 100)
    plate = Box("license_plate", 95, 40, 125, 50, "X")  # a neighbour's plate, mostly outside the crop
    scene = Scene(image, vehicles=[vehicle], plates=[plate])
    (crop,) = vehicle_crops(scene, None)
    assert crop.boxes == []
    x_end = crop.image.shape[1]
    assert (crop.image[40:50, 95:x_end] == 114).all()
    assert (image[40:50, 95:100] == 200).all()  # the frame itself is untouched


def test_without_jitter_a_crop_is_what_the_edge_cuts():
    scene = generate_scene(0, "train", 3, 640, 384)
    for item, vehicle in zip(vehicle_crops(scene, None), scene.vehicles, strict=False):
        x1, y1, x2, y2 = crop_region(vehicle.x1, vehicle.y1, vehicle.x2, vehicle.y2, 640, 384)
        assert item.image.shape[:2] == (y2 - y1, x2 - x1)
    assert CROP_MARGIN > 0


def test_whole_frames_join_the_view_for_close_ups_only():
    seen_close, seen_far = False, False
    for i in range(60):
        scene = generate_scene(2, "train", i, 640, 384)
        names = [v.name for v in vehicle_crops(scene, np.random.default_rng(0))]
        close = any(v.x2 - v.x1 >= CLOSE_UP_WIDTH * 640 for v in scene.vehicles)
        assert ("frame" in names) == close
        seen_close |= close
        seen_far |= not close
    assert seen_close and seen_far


def test_views_are_deterministic_and_frames_view_is_the_frame():
    scene = generate_scene(5, "train", 7, 320, 192)
    a = vehicle_crops(scene, np.random.default_rng(1))
    b = vehicle_crops(scene, np.random.default_rng(1))
    assert [x.boxes for x in a] == [x.boxes for x in b]
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    (frame,) = view_images("frames", scene, ("car", "truck", "bus", "motorcycle"), None)
    assert frame.image is scene.image and frame.boxes == scene.vehicles
    with pytest.raises(ValueError, match="unknown view"):
        view_images("tiles", scene, ("car",), None)
