"""Reading plate text: the plate reader (``alpr-plate-ocr``) through ONNX Runtime, and its decoders.

Everything the reader needs travels in the ONNX file's ``metadata_props`` (written by ``lib.reader_model``): the
alphabet, the maximum text length, the input size and the head (``ctc``: a prediction per 4 or 8 columns and text line,
top line first, collapsed; ``slots`` and ``attn``: one prediction per character position, padding included). All
plate crops of a frame are read in one batch. Framework-free: numpy, OpenCV and ONNX Runtime only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from alpr_pipelines.edge.backends.box_optimized import available_providers
from alpr_pipelines.edge.backends.onnx import read_metadata, session_options

READER_TASK = "plate_reader"  # metadata_props "alpr_task" of a plate reader's ONNX file
HEADS = ("slots", "attn", "ctc")
READ_MARGIN = 0.08  # a plate box grows by this share of its size on each side before it is read (training did too)
MIN_READ_WIDTH = 40  # plates narrower than this (pixels in the frame) are not read: too few pixels per character


@dataclass(frozen=True)
class Reading:
    """A plate's text, and the reader's confidence in all of it (the product of its characters' probabilities; for a
    plate read again as copies, ``edge.reread``, its readings' mean)."""

    text: str
    confidence: float


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def decode_slots(logits: np.ndarray, alphabet: str) -> list[Reading]:
    """Slot decoding: ``logits`` (N, max_length, len(alphabet) + 1), class 0 the padding. Each position takes its
    most probable class; padding ends nothing early (a character after a pad is kept), so the text is the
    non-pad characters in order. Confidence: the product of every position's probability, pads included."""
    probs = softmax(logits.astype(np.float64), axis=-1)
    best = probs.argmax(-1)
    out = []
    for row, p in zip(best, probs, strict=True):
        text = "".join(alphabet[c - 1] for c in row if c > 0)
        out.append(Reading(text, float(np.prod(p[np.arange(len(row)), row]))))
    return out


def decode_ctc(logits: np.ndarray, alphabet: str) -> list[Reading]:
    """Greedy CTC decoding: ``logits`` (N, T, len(alphabet) + 1), class 0 the blank. Repeats collapse, then blanks
    go ("AA-A" reads "AA"). Confidence: the product of the kept steps' probabilities."""
    probs = softmax(logits.astype(np.float64), axis=-1)
    best = probs.argmax(-1)
    out = []
    for row, p in zip(best, probs, strict=True):
        chars, conf, previous = [], 1.0, 0
        for t, c in enumerate(row):
            if c != 0 and c != previous:
                chars.append(alphabet[c - 1])
                conf *= float(p[t, c])
            previous = c
        out.append(Reading("".join(chars), conf if chars else 0.0))
    return out


DECODERS = {"slots": decode_slots, "attn": decode_slots, "ctc": decode_ctc}


def plate_tensor(crops: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """BGR (or grey) crops -> (N, 1, height, width) float32 in [0, 1]: grey, stretched to the input size (a plate's
    aspect varies from 1.6 to 4.7; the reader learnt them stretched), contrast normalized per crop."""
    batch = np.empty((len(crops), 1, height, width), np.float32)
    for i, crop in enumerate(crops):
        grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
        resized = cv2.resize(grey, (width, height), interpolation=cv2.INTER_AREA if grey.shape[1] > width
                             else cv2.INTER_LINEAR).astype(np.float32)
        lo, hi = np.percentile(resized, (1, 99))
        batch[i, 0] = np.clip((resized - lo) / max(hi - lo, 8.0), 0, 1)
    return batch


def read_region(frame: np.ndarray, x1: float, y1: float, x2: float, y2: float) -> np.ndarray | None:
    """The crop of a plate box the reader reads (the box grown by :data:`READ_MARGIN`), or None when the plate is
    narrower than :data:`MIN_READ_WIDTH` or empty."""
    if x2 - x1 < MIN_READ_WIDTH or y2 - y1 < 4:
        return None
    crop = margin_crop(frame, x1, y1, x2, y2)
    return crop if crop.size else None


def margin_crop(frame: np.ndarray, x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    """The box grown by :data:`READ_MARGIN` a side and clipped to the frame (what training crops are cut as)."""
    w, h = x2 - x1, y2 - y1
    fh, fw = frame.shape[:2]
    a, b = max(0, int(x1 - w * READ_MARGIN)), max(0, int(y1 - h * READ_MARGIN))
    c, d = min(fw, int(np.ceil(x2 + w * READ_MARGIN))), min(fh, int(np.ceil(y2 + h * READ_MARGIN)))
    return frame[b:max(b, d), a:max(a, c)]


class OnnxPlateReader:
    """A plate reader's ONNX model ready to read; alphabet, length, input size and head come from its metadata,
    checked against the network's output (a file is untrusted until it loads: ``ValueError`` says what is wrong).
    Its first run is cheap on the CPU (dynamic batch), costly on a GPU provider (``first_run_costly``)."""


    def __init__(self, path: str | Path, threads: int | None = None, model_version: str | None = None,
                 providers: list[str] | None = None):
        self.path = Path(path)
        self.model_version = model_version
        self.session = ort.InferenceSession(str(self.path), session_options(threads),
                                            providers=providers or available_providers())
        meta = read_metadata(self.session)
        fix = "export it with alpr_pipelines.lib.reader_model (the ocr/onnx asset)"
        if meta.get("alpr_task") != READER_TASK:
            raise ValueError(f"{self.path} is not a plate reader (metadata alpr_task={meta.get('alpr_task')!r}); {fix}")
        try:
            self.alphabet = str(meta["alphabet"])
            self.max_length = int(meta["max_length"])
            self.head = str(meta["head"])
            self.height, self.width = int(meta["input_height"]), int(meta["input_width"])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{self.path}: the reader's metadata lacks or garbles {exc}; {fix}") from exc
        if self.head not in DECODERS:
            raise ValueError(f"{self.path}: unknown reader head {self.head!r}; expected one of {HEADS}")
        if not self.alphabet or len(set(self.alphabet)) != len(self.alphabet):
            raise ValueError(f"{self.path}: the reader's alphabet is empty or repeats characters; {fix}")
        if not (1 <= self.max_length <= 32 and 8 <= self.height <= 512 and 8 <= self.width <= 1024):
            raise ValueError(f"{self.path}: max_length {self.max_length} or input {self.height}x{self.width} is out "
                             f"of range; {fix}")
        self.input_name = self.session.get_inputs()[0].name
        shape = self.logits([np.full((self.height, self.width), 128, np.uint8)]).shape  # its output, as it runs
        if len(shape) != 3 or shape[-1] != len(self.alphabet) + 1:
            raise ValueError(f"{self.path}: the network's output {tuple(shape)} does not score the {len(self.alphabet)} "
                             f"characters of its alphabet (+1 blank) per position; {fix}")
        self.first_run_costly = self.session.get_providers()[0] != "CPUExecutionProvider"

    def logits(self, crops: list[np.ndarray]) -> np.ndarray:
        return self.session.run(None, {self.input_name: plate_tensor(crops, self.height, self.width)})[0]

    def decode(self, logits: np.ndarray) -> list[Reading]:
        """The readings of :meth:`logits` (or their log softmax), each text cut to the model's maximum length."""
        return [Reading(r.text[: self.max_length], r.confidence) for r in DECODERS[self.head](logits, self.alphabet)]

    def read(self, crops: list[np.ndarray]) -> list[Reading]:
        """The text of each crop, all in one batch."""
        return self.decode(self.logits(crops)) if crops else []

    def smoke_run(self) -> None:
        self.read([np.full((self.height, self.width), 128, np.uint8)])

    def warm_up(self, runs: int = 2) -> None:
        crops = [np.full((self.height, self.width, 3), 128, np.uint8)] * 4
        for _ in range(runs):
            self.read(crops)
