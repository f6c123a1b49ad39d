"""The MLflow pyfunc flavour of a registered model: a detector's boxes, or the plate reader's text, through ONNX
Runtime.

``mlflow.pyfunc.load_model("models:/alpr-plate-detector/1").predict(df)`` takes a DataFrame with an ``image`` column
(encoded image bytes, base64 text as ``mlflow models serve`` sends it, or a file path) and returns one row per box:
``image_index, x1, y1, x2, y2, confidence, class_id, class_name``. The plate reader's
(``models:/alpr-plate-ocr/1``) takes plate crops the same way and returns ``image_index, text, confidence``.

Loading checks the files as the edge does (``edge.trust``): the shipped manifest must be one the registry recorded for
its model (a version whose ``alpr_manifest_sha256`` tag is its hash, found through the tracking URI), signed by a key
of ``ALPR_EDGE_TRUSTED_KEYS`` when that is set, and every file must hash to it. Anything else refuses to load.
``ALPR_PYFUNC_UNVERIFIED=1`` loads a copy with no registry to ask (offline, a folder you trust), with a warning.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from alpr_pipelines.edge.backends.onnx import OnnxDetector
from alpr_pipelines.edge.integrity import sha256_file
from alpr_pipelines.edge.loader import MODEL_NAME
from alpr_pipelines.edge.trust import MANIFEST_SHA_TAG, TrustedKeys, UntrustedVersion, verify_manifest

log = logging.getLogger(__name__)

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


def verify_against_registry(artifacts: dict[str, str]) -> None:
    """Raise :class:`UntrustedVersion` unless the artifacts are a version the registry recorded (module docstring)."""
    if os.environ.get("ALPR_PYFUNC_UNVERIFIED") == "1":
        log.warning("ALPR_PYFUNC_UNVERIFIED=1: loading %s without checking it against the registry",
                    artifacts.get("manifest"))
        return
    from mlflow import MlflowClient

    body = Path(artifacts["manifest"]).read_bytes()
    try:
        name = json.loads(body).get("model")
    except (ValueError, AttributeError) as exc:
        raise UntrustedVersion(f"the model's manifest is not JSON: {exc}") from exc
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
        raise UntrustedVersion(f"the model's manifest names no registered model ({str(name)[:60]!r})")
    digest = hashlib.sha256(body).hexdigest()
    try:
        found = MlflowClient().search_model_versions(f"name = '{name}' and tags.{MANIFEST_SHA_TAG} = '{digest}'")
    except Exception as exc:  # noqa: BLE001 - fail closed, saying how to proceed
        raise UntrustedVersion(f"cannot ask the registry whether this {name} manifest was registered ({exc}); set "
                               "MLFLOW_TRACKING_URI, or ALPR_PYFUNC_UNVERIFIED=1 for a copy you trust") from exc
    if not found:
        raise UntrustedVersion(f"no version of {name} in the registry has manifest sha256 {digest[:12]}: these files "
                               "were not registered by the pipeline")
    manifest = verify_manifest(body, dict(found[0].tags), name, TrustedKeys.from_env())
    for role, path in artifacts.items():
        if role == "manifest":
            continue
        entry = manifest["files"].get(role)
        if entry is None or sha256_file(Path(path)) != entry["sha256"]:
            raise UntrustedVersion(f"{name}: the {role} file {Path(path).name} does not match the registered "
                                   "manifest")


def input_images(model_input: Any) -> list[Any]:
    """The images of a pyfunc input: a DataFrame's ``image`` column, one HxWx3 array, or a list of images."""
    if isinstance(model_input, pd.DataFrame):
        if "image" not in model_input.columns:
            raise ValueError(f"input needs an 'image' column; got columns {list(model_input.columns)}")
        return list(model_input["image"])
    if isinstance(model_input, np.ndarray) and model_input.ndim == 3:
        return [model_input]
    return list(model_input)


class AlprDetectorModel(PythonModel):
    """Runs the version's ``model.onnx`` artifact; params ``conf`` (0.25) and ``iou`` (0.7) tune decoding."""

    def load_context(self, context) -> None:
        verify_against_registry(dict(context.artifacts))
        self.detector = OnnxDetector(context.artifacts["onnx"])

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> pd.DataFrame:
        params = params or {}
        conf, iou = float(params.get("conf", 0.25)), float(params.get("iou", 0.7))
        images = input_images(model_input)
        rows = []
        for i, value in enumerate(images):
            for d in self.detector.detect(decode_image(value), conf=conf, iou=iou):
                rows.append([i, d.x1, d.y1, d.x2, d.y2, d.confidence, d.class_id, d.class_name])
        return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)


READER_OUTPUT_COLUMNS = ["image_index", "text", "confidence"]


class AlprPlateReaderModel(PythonModel):
    """Reads the version's plate-reader ONNX artifact as the edge does: one row per input plate crop,
    ``image_index, text, confidence`` (all crops in one batch, the unsure ones read again as moved copies)."""

    def load_context(self, context) -> None:
        from alpr_pipelines.edge.reader import OnnxPlateReader
        from alpr_pipelines.edge.reread import RereadUnsure

        verify_against_registry(dict(context.artifacts))
        self.reader = RereadUnsure(OnnxPlateReader(context.artifacts["onnx"]))  # as the edge reads

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> pd.DataFrame:
        images = input_images(model_input)
        readings = self.reader.read([decode_image(v) for v in images])
        return pd.DataFrame([[i, r.text, r.confidence] for i, r in enumerate(readings)],
                            columns=READER_OUTPUT_COLUMNS)
