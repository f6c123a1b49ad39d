"""The third stage: reading every detected plate's text, as a component added to the two-stage detector.

``attach_reader(detector, ...)`` adds it: the plate reader (``alpr-plate-ocr``) comes from the registry like the
detectors (then the verified cache, then a local fallback file) and hot-swaps through its own slot and poller. Each
frame's plate crops are read in one batch, in the frame's turn; the plates it is unsure of are read again as moved
copies (``edge.reread``). With no reader anywhere, the detector runs as before
and the log says so; the slot stays empty and its poller swaps the first registered version in when one appears.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from alpr_pipelines.edge.contract import OCR_MODEL
from alpr_pipelines.edge.detector import FrameResult, ModelSlot, PlateText, YOLOv11Detector
from alpr_pipelines.edge.loader import ModelLoadError
from alpr_pipelines.edge.reader import OnnxPlateReader, read_region
from alpr_pipelines.edge.reread import REREAD_BELOW, RereadUnsure

log = logging.getLogger(__name__)


def open_reader(path: str | Path, version: str | None, threads: int | None = None, imgsz: int | None = None,
                optimized: Path | None = None, reread_below: float = REREAD_BELOW) -> RereadUnsure:
    """A reader file as a slot loads it (``ModelSlot.load``'s arguments; a reader has no serving size, and loads
    the file itself: its graph is small enough that a box-optimized copy buys nothing, so its slot asks for none),
    reading again the plates it is less sure of than ``reread_below`` (0: none)."""
    path = Path(path)
    if path.suffix != ".onnx":
        raise ModelLoadError(f"{path}: the plate reader loads only .onnx files, never {path.suffix or 'this'}")
    return RereadUnsure(OnnxPlateReader(path, threads=threads, model_version=version), reread_below)


class PlateReadingStage:
    """Reads the plates of each frame's result (``FrameResult.texts``) with the model in its slot. A reader that
    fails on a frame never takes the frame down: the frame goes out without texts, and ``failures`` counts it."""

    def __init__(self, slot: ModelSlot):
        self.slot = slot
        self.failures = 0

    def slots(self) -> list[ModelSlot]:
        return [self.slot]

    def __call__(self, frame: np.ndarray, result: FrameResult) -> FrameResult:
        reader = self.slot.model  # one version per frame, whatever swaps
        if reader is None:
            return result
        started = time.perf_counter()
        crops = [read_region(frame, p.x1, p.y1, p.x2, p.y2) for p in result.plates]
        readable = [c for c in crops if c is not None]
        try:
            readings = iter(reader.read(readable))
        except Exception as exc:  # noqa: BLE001 - a bad reader must not stop the detectors' output
            self.failures += 1
            if self.failures == 1 or self.failures % 1000 == 0:
                log.error("%s v%s failed to read a frame's plates (%d so far), sent without text: %s",
                          self.slot.name, self.slot.version, self.failures, exc)
            return result
        texts = []
        for crop in crops:
            reading = None if crop is None else next(readings)
            texts.append(PlateText(None, None) if reading is None else PlateText(reading.text, reading.confidence))
        return replace(result, texts=texts, reader_version=reader.model_version,
                       read_ms=(time.perf_counter() - started) * 1000)


def attach_reader(detector: YOLOv11Detector, name: str = OCR_MODEL, fallback: str | None = None,
                  reread_below: float = REREAD_BELOW) -> PlateReadingStage:
    """Add the plate reader to ``detector``: the registry's version of ``name`` (through the detector's loader, so
    with its cache and trust checks), else ``fallback``. Without either it serves nothing until its poller finds
    one, and the log says the edge reports boxes without text. ``reread_below``: see :func:`open_reader`."""
    load = functools.partial(open_reader, reread_below=reread_below)
    slot = ModelSlot(name, load=load, prefetch_optimized_copy=False)
    stage = PlateReadingStage(slot)
    try:
        path, meta = detector.resolve(name, fallback)
        with detector.policy.session_creation(serving=False):
            reader = load(path, meta.get("version"), detector.policy.threads)
            reader.warm_up()
    except Exception as exc:  # noqa: BLE001 - without a usable reader the detectors still serve
        log.warning("%s: no plate reader available (%s); plates are reported without text until one is "
                    "registered", name, exc)
        detector.add_stage(stage)
        return stage
    slot.swap(reader, meta)
    log.info("%s: serving %s (%s)", name, meta.get("version") or path, meta.get("source"))
    detector.add_stage(stage)
    return stage


def reader_status(stage: PlateReadingStage | None) -> dict[str, Any]:
    """For /health: whether plates are read, and by which version."""
    if stage is None:
        return {"enabled": False}
    return {"enabled": True, "loaded": stage.slot.model is not None, "version": stage.slot.version}
