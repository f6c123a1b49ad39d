"""The MLflow pyfunc flavour of a registered detector: boxes from images through ONNX Runtime.

``mlflow.pyfunc.load_model("models:/alpr-plate-detector/1").predict(df)`` takes a DataFrame with an ``image`` column
(encoded image bytes, base64 text as ``mlflow models serve`` sends it, or a file path) and returns one row per box:
``image_index, x1, y1, x2, y2, confidence, class_id, class_name``.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from alpr_pipelines.edge.backends.onnx import OnnxDetector

OUTPUT_COLUMNS = ["image_index", "x1", "y1", "x2", "y2", "confidence", "class_id", "class_name"]


def decode_image(value: Any) -> np.ndarray:
    """Bytes, base64 text, a path, or an HxWx3 uint8 array -> BGR array."""
    if isinstance(value, np.ndarray) and value.ndim == 3:
        return value
    if isinstance(value, str):
        if Path(value).is_file():
            value = Path(value).read_bytes()
        else:
            try:
                value = base64.b64decode(value, validate=True)
            except binascii.Error as exc:
                raise ValueError("image is neither an existing file path nor base64-encoded image bytes") from exc
    if isinstance(value, (bytes, bytearray)):
        image = cv2.imdecode(np.frombuffer(value, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError("image bytes could not be decoded (expected JPEG, PNG, BMP or WebP)")
        return image
    raise ValueError(f"unsupported image value of type {type(value).__name__}")


class AlprDetectorModel(PythonModel):
    """Runs the version's ``model.onnx`` artifact; params ``conf`` (0.25) and ``iou`` (0.7) tune decoding."""

    def load_context(self, context) -> None:
        self.detector = OnnxDetector(context.artifacts["onnx"])

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> pd.DataFrame:
        params = params or {}
        conf, iou = float(params.get("conf", 0.25)), float(params.get("iou", 0.7))
        if isinstance(model_input, pd.DataFrame):
            if "image" not in model_input.columns:
                raise ValueError(f"input needs an 'image' column; got columns {list(model_input.columns)}")
            images = list(model_input["image"])
        elif isinstance(model_input, np.ndarray) and model_input.ndim == 3:
            images = [model_input]
        else:
            images = list(model_input)
        rows = []
        for i, value in enumerate(images):
            for d in self.detector.detect(decode_image(value), conf=conf, iou=iou):
                rows.append([i, d.x1, d.y1, d.x2, d.y2, d.confidence, d.class_id, d.class_name])
        return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)
