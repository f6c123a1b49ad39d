import os

import numpy as np
import pytest

from alpr_pipelines.edge.swap.policy import pin_to_first_core
from alpr_pipelines.edge.yolo import Letterbox, decode, letterbox, to_tensor


@pytest.mark.parametrize("shape", [(160, 256), (384, 640), (100, 100), (641, 333)])
def test_letterbox_matches_ultralytics(shape):
    from ultralytics.data.augment import LetterBox

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (*shape, 3), dtype=np.uint8)
    ours, box = letterbox(image, (320, 320))
    theirs = LetterBox((320, 320), auto=False, scale_fill=False, scaleup=True, center=True)(image=image)
    assert ours.shape == theirs.shape == (320, 320, 3)
    assert np.array_equal(ours, theirs)
    assert 0 < box.gain


def test_to_tensor_is_rgb_chw_unit_range():
    img = np.zeros((2, 3, 3), np.uint8)
    img[..., 0] = 255  # blue in BGR
    t = to_tensor(img)
    assert t.shape == (1, 3, 2, 3) and t.dtype == np.float32
    assert t[0, 2].max() == 1.0 and t[0, 0].max() == 0.0


def _raw(boxes_xywh, scores):
    """Build a raw (4 + nc, anchors) output from per-anchor boxes and class scores."""
    return np.concatenate([np.asarray(boxes_xywh, np.float32).T, np.asarray(scores, np.float32).T])


def test_decode_filters_nms_and_unletterboxes():
    raw = _raw(
        [[100, 100, 40, 20], [101, 100, 40, 20], [200, 150, 30, 30], [50, 50, 10, 10]],
        [[0.9, 0.0], [0.8, 0.0], [0.0, 0.7], [0.1, 0.0]],
    )
    dets = decode(raw, Letterbox(gain=0.5, pad_x=10, pad_y=20), (1000, 1000), {0: "car", 1: "truck"}, conf=0.25)
    assert [d.class_name for d in dets] == ["car", "truck"]  # duplicate suppressed, low score dropped
    car = dets[0]
    assert car.confidence == pytest.approx(0.9)
    assert (car.x1, car.y1, car.x2, car.y2) == pytest.approx(((80 - 10) / 0.5, (90 - 20) / 0.5, (120 - 10) / 0.5,
                                                            (110 - 20) / 0.5))


def test_decode_keeps_overlapping_boxes_of_different_classes():
    raw = _raw([[100, 100, 40, 20], [100, 100, 40, 20]], [[0.9, 0.0], [0.0, 0.8]])
    dets = decode(raw, Letterbox(1.0, 0, 0), (640, 640), {0: "a", 1: "b"})
    assert sorted(d.class_id for d in dets) == [0, 1]


def test_decode_nothing_above_threshold():
    raw = _raw([[10, 10, 5, 5]], [[0.01]])
    assert decode(raw, Letterbox(1.0, 0, 0), (64, 64), {0: "license_plate"}) == []


@pytest.mark.parametrize("shape", [(384, 640), (100, 333), (641, 333), (48, 200)])
@pytest.mark.parametrize("scaleup", [True, False])
def test_rectangular_letterbox_matches_ultralytics(shape, scaleup):
    """auto=True (dynamic-shape models) pads only to a stride multiple, exactly as Ultralytics' predict does."""
    from ultralytics.data.augment import LetterBox

    image = np.random.default_rng(1).integers(0, 255, (*shape, 3), dtype=np.uint8)
    ours, box = letterbox(image, (640, 640), 32, auto=True, scaleup=scaleup)
    theirs = LetterBox((640, 640), auto=True, stride=32, scaleup=scaleup, center=True)(image=image)
    assert ours.shape == theirs.shape and ours.shape[0] % 32 == 0 and ours.shape[1] % 32 == 0
    assert np.array_equal(ours, theirs)
    if not scaleup:
        assert box.gain <= 1.0


def test_a_640x384_frame_is_not_padded_to_a_square():
    image = np.zeros((384, 640, 3), np.uint8)
    assert letterbox(image, (640, 640), 32, auto=True)[0].shape == (384, 640, 3)
    assert letterbox(image, (640, 640), 32, auto=False)[0].shape == (640, 640, 3)


def test_a_session_is_created_on_the_core_its_pool_threads_leave_free_then_the_thread_gets_its_cores_back():

    before = os.sched_getaffinity(0)
    with pin_to_first_core(None):
        inside = os.sched_getaffinity(0)
    assert os.sched_getaffinity(0) == before
    assert inside == ({min(before)} if len(before) > 1 else before)
    with pin_to_first_core(2):  # an explicit thread count: ONNX Runtime pins nothing, nor does this
        assert os.sched_getaffinity(0) == before


def test_first_run_of_a_backend_that_must_warm_up_is_one_run_at_the_frame_shape():
    """A backend whose first run is costly (not a dynamic ONNX model on the CPU) makes one warm-up run at the
    frames' shape in the session's piece and reports it is not ready yet; the caller makes the second."""
    from alpr_pipelines.edge.swap.poller import first_run

    class Engine:
        imgsz = (64, 64)
        shapes: list = []

        def detect(self, image, conf=0.25, iou=0.7):
            self.shapes.append(image.shape)
            return []

    engine = Engine()
    assert first_run(engine, frame_shape=(48, 80, 3)) is False
    assert engine.shapes == [(48, 80, 3)]
    assert first_run(engine) is False and engine.shapes[-1] == (64, 64, 3)
