"""Where the plate stage looks: in vehicle crops (batched) when they are small, once in the whole frame when the
crops add up to most of it; plates always come back in frame coordinates, inside a vehicle."""

import numpy as np

from alpr_pipelines.edge.detector import ModelSlot, YOLOv11Detector
from alpr_pipelines.edge.onnx_backend import Detection
from alpr_pipelines.edge.turns import Turns


class FakeVehicles:
    names, imgsz, model_version = {0: "car"}, (640, 640), "v1"

    def __init__(self, boxes):
        self.boxes = boxes

    def detect(self, image, conf=0.25, iou=0.7, scaleup=True):
        return [Detection(*b, 0.9, 0, "car", "v1") for b in self.boxes]


class FakePlates:
    """Finds one plate at (10, 10)-(30, 20) of whatever image it is given; records the calls."""

    names, imgsz, model_version = {0: "license_plate"}, (640, 640), "p1"

    def __init__(self):
        self.calls = []

    def _one(self, image):
        return [Detection(10, 10, 30, 20, 0.8, 0, "license_plate", "p1")]

    def detect(self, image, conf=0.25, iou=0.7, scaleup=True):
        self.calls.append(("detect", image.shape[:2]))
        return self._one(image)

    def detect_many(self, images, conf=0.25, iou=0.7):
        self.calls.append(("many", [im.shape[:2] for im in images]))
        return [self._one(im) for im in images]


def detector(vehicle_boxes):
    det = YOLOv11Detector.__new__(YOLOv11Detector)
    det.conf = det.plate_conf = 0.25
    det.vehicle = ModelSlot("v", FakeVehicles(vehicle_boxes))
    det.plate = ModelSlot("p", FakePlates())
    det.turns = Turns()
    return det


def test_small_vehicles_are_searched_as_crops_in_one_call():
    det = detector([(100, 100, 200, 180), (300, 50, 420, 150)])
    result = det.detect(np.zeros((384, 640, 3), np.uint8))
    assert det.plate.model.calls == [("many", [(80, 100), (100, 120)])]
    assert [(p.x1, p.y1) for p in result.plates] == [(110, 110), (310, 60)]  # offset back into the frame


def test_vehicles_covering_most_of_the_frame_mean_one_full_frame_pass():
    det = detector([(0, 0, 640, 384), (5, 5, 600, 380)])  # overlapping, together far more than 60% of the frame
    result = det.detect(np.zeros((384, 640, 3), np.uint8))
    assert det.plate.model.calls == [("detect", (384, 640))]
    assert len(result.plates) == 1 and result.plates[0].x1 == 10  # centre (20, 15) lies in the first vehicle


def test_no_vehicle_searches_the_whole_frame():
    det = detector([])
    result = det.detect(np.zeros((384, 640, 3), np.uint8))
    assert det.plate.model.calls == [("detect", (384, 640))] and len(result.plates) == 1
