"""Where the plate stage looks: in each vehicle's crop, grown by the crop margin and batched in one call; the whole
frame when no vehicle is found. Plates come back in frame coordinates, once each where crops overlap."""

import numpy as np

from alpr_pipelines.edge.detector import ModelSlot, YOLOv11Detector, dedup
from alpr_pipelines.edge.swap.policy import SwapPolicy
from alpr_pipelines.edge.yolo import CROP_MARGIN, Detection, crop_region


class FakeVehicles:
    names, imgsz, model_version = {0: "car"}, (640, 640), "v1"

    def __init__(self, boxes):
        self.boxes = boxes

    def detect(self, image, conf=0.25, iou=0.7, scaleup=True):
        return [Detection(*b, 0.9, 0, "car", "v1") for b in self.boxes]


class FakePlates:
    """Finds one plate at (10, 10)-(30, 20) of whatever image it is given; records the calls."""

    names, imgsz, model_version = {0: "license_plate"}, (192, 192), "p1"

    def __init__(self, box=(10, 10, 30, 20)):
        self.calls = []
        self.box = box

    def _one(self, image):
        return [Detection(*self.box, 0.8, 0, "license_plate", "p1")]

    def detect(self, image, conf=0.25, iou=0.7, scaleup=True):
        self.calls.append(("detect", image.shape[:2]))
        return self._one(image)

    def detect_many(self, images, conf=0.25, iou=0.7):
        self.calls.append(("many", [im.shape[:2] for im in images]))
        return [self._one(im) for im in images]


def detector(vehicle_boxes, plates=None):
    det = YOLOv11Detector.__new__(YOLOv11Detector)
    det.conf = det.plate_conf = 0.25
    det.vehicle = ModelSlot("v", FakeVehicles(vehicle_boxes))
    det.plate = ModelSlot("p", plates or FakePlates())
    det.policy = SwapPolicy()
    det.stages = []
    return det


def test_vehicles_are_searched_as_grown_crops_in_one_call():
    det = detector([(100, 100, 200, 180), (300, 50, 420, 150)])
    result = det.detect(np.zeros((384, 640, 3), np.uint8))
    assert CROP_MARGIN == 0.05
    # 100x80 grows by 5 px and 4 px a side; 120x100 by 6 and 5.
    assert det.plate.model.calls == [("many", [(88, 110), (110, 132)])]
    assert [(p.x1, p.y1) for p in result.plates] == [(105, 106), (304, 55)]  # offset back into the frame


def test_crops_stay_inside_the_frame():
    assert crop_region(-5, 10, 100, 390, 640, 384) == (0, 0, 106, 384)
    assert crop_region(600, 0, 640, 40, 640, 384) == (598, 0, 640, 42)


def test_a_plate_found_in_two_overlapping_crops_is_reported_once():
    # Two vehicle boxes whose crops overlap; the fake finds a plate at the same frame position in both.
    det = detector([(0, 0, 200, 100), (0, 0, 200, 100)])
    result = det.detect(np.zeros((384, 640, 3), np.uint8))
    assert len(result.plates) == 1


def test_dedup_keeps_the_most_confident_and_other_classes():
    a = Detection(0, 0, 10, 10, 0.9, 0, "license_plate")
    b = Detection(1, 1, 10, 10, 0.5, 0, "license_plate")
    c = Detection(1, 1, 10, 10, 0.4, 1, "other")
    d = Detection(50, 50, 60, 60, 0.3, 0, "license_plate")
    assert dedup([b, c, a, d], 0.5) == [a, c, d]


def test_no_vehicle_searches_the_whole_frame():
    det = detector([])
    result = det.detect(np.zeros((384, 640, 3), np.uint8))
    assert det.plate.model.calls == [("many", [(384, 640)])] and len(result.plates) == 1
