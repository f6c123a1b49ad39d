"""Reading unsure plates again: a CTC plate reader's unsure readings settled by moved copies of the crop.

A plate the reader is unsure of (its reading's confidence under ``below``) is read again as copies moved by a few
percent of its size and scaled about its centre, as a detector's box a little off would cut it. A moved copy moves
the character spikes along the reader's steps, so the copies cannot be averaged step by step; of the texts the
copies read, the plate gets the one all copies together find most probable: the sum of each copy's CTC log
likelihood of it, over every path. Sure plates (most of them) cost one reading. Measured in docs/decisions.md ("One
reader, each crop read several ways"). Framework-free: numpy and OpenCV.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from alpr_pipelines.edge.reader import Reading, log_softmax

# (shift right, shift down, scale), shifts as shares of the crop's width and height; the crop as it is comes first.
# Changing COPIES or REREAD_BELOW changes the gate's scores: bump lib.reader_eval.READER_EVALUATOR_VERSION with them.
COPIES = ((0.0, 0.0, 1.0), (0.03, 0.0, 1.0), (-0.03, 0.0, 1.0), (0.0, 0.05, 1.0), (0.0, -0.05, 1.0),
          (0.0, 0.0, 0.94), (0.0, 0.0, 1.06))
REREAD_BELOW = 0.9  # readings less sure than this are read again as COPIES


def check_reread_below(value: object) -> float:
    """``value`` as a rereading threshold, or ValueError naming what a threshold is."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"must be a confidence from 0 to 1 (0 rereads no plate), got {value!r}")
    return float(value)


def moved(crop: np.ndarray, dx: float, dy: float, scale: float) -> np.ndarray:
    """``crop`` scaled by ``scale`` about its centre and moved by (dx, dy) shares of its size, same shape, the border
    repeated."""
    if (dx, dy, scale) == (0.0, 0.0, 1.0):
        return crop
    h, w = crop.shape[:2]
    matrix = np.array([[scale, 0.0, (1 - scale) * w / 2 + dx * w], [0.0, scale, (1 - scale) * h / 2 + dy * h]])
    return cv2.warpAffine(crop, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def ctc_log_likelihoods(log_probs: np.ndarray, labels: list[list[int]]) -> np.ndarray:
    """log P(labels[b] | log_probs[b]) summed over every CTC path (the forward algorithm), for a batch at once.

    ``log_probs`` (B, T, C + 1) per-step log probabilities, class 0 the blank; ``labels`` B sequences of classes
    1..C (empty: the all-blank path). -inf where no path fits in T steps."""
    batch, steps, _ = log_probs.shape
    lengths = np.array([len(label) for label in labels], np.int64)
    states = 2 * int(lengths.max(initial=0)) + 1
    ext = np.zeros((batch, states), np.int64)  # blank, l1, blank, l2, ..., blank; padded with blanks
    for b, label in enumerate(labels):
        ext[b, 1: 2 * len(label): 2] = label
    used = np.arange(states)[None, :] < (2 * lengths + 1)[:, None]
    skip = np.zeros((batch, states), bool)  # a path may jump from s-2 to s: a character unlike the one before it
    skip[:, 2:] = (ext[:, 2:] != 0) & (ext[:, 2:] != ext[:, :-2])
    emit = np.take_along_axis(log_probs.astype(np.float64), np.broadcast_to(ext[:, None, :], (batch, steps, states)),
                              axis=2)
    alpha = np.full((batch, states), -np.inf)
    alpha[:, 0] = emit[:, 0, 0]
    if states > 1:
        alpha[:, 1] = np.where(lengths > 0, emit[:, 0, 1], -np.inf)
    none = np.full((batch, 2), -np.inf)
    for t in range(1, steps):
        stay_or_step = np.logaddexp(alpha, np.concatenate([none[:, :1], alpha[:, :-1]], axis=1))
        jump = np.where(skip, np.concatenate([none, alpha[:, :-2]], axis=1), -np.inf)
        alpha = np.where(used, np.logaddexp(stay_or_step, jump) + emit[:, t], -np.inf)
    rows = np.arange(batch)
    last = alpha[rows, 2 * lengths]
    before = np.where(lengths > 0, alpha[rows, np.maximum(2 * lengths - 1, 0)], -np.inf)
    return np.logaddexp(last, before)


def most_probable_texts(log_probs: list[list[np.ndarray]], texts: list[list[str]], alphabet: str) -> list[str]:
    """Per plate, of its readings' ``texts``, the one its readings' per-step log probabilities (each (T, C + 1))
    together find most probable: the sum of their CTC log likelihoods (the first of equals). All plates' candidates
    are scored in one batch; a plate whose readings agree costs nothing."""
    rows, labels, owners = [], [], []
    candidates = [list(dict.fromkeys(plate)) for plate in texts]
    for k, (plate, options) in enumerate(zip(log_probs, candidates, strict=True)):
        if len(options) > 1:
            for c, text in enumerate(options):
                rows += plate
                labels += [[alphabet.index(ch) + 1 for ch in text]] * len(plate)
                owners += [(k, c)] * len(plate)
    totals: dict[tuple[int, int], float] = {}
    if rows:
        for owner, score in zip(owners, ctc_log_likelihoods(np.stack(rows), labels), strict=True):
            totals[owner] = totals.get(owner, 0.0) + float(score)
    return [options[int(np.argmax([totals.get((k, c), 0.0) for c in range(len(options))]))]
            for k, options in enumerate(candidates)]


class RereadUnsure:
    """A CTC plate reader (``edge.reader.OnnxPlateReader``: ``logits``, ``decode``, ``alphabet``, ``head``,
    ``max_length``) whose unsure readings are settled by :data:`COPIES` of the crop (see the module). Reads like the
    reader it wraps and has its attributes; a slots or attention reader reads as it is. A reread plate's confidence
    is the seven readings' mean confidence in its text, a reading of another text counting 0: all seven agreeing keep
    their confidence, disagreement lowers it."""

    def __init__(self, reader: Any, below: float = REREAD_BELOW):
        self.reader = reader
        self.below = check_reread_below(below)

    def __getattr__(self, name: str) -> Any:
        if name == "reader":  # not set yet (a copy being made)
            raise AttributeError(name)
        return getattr(self.reader, name)

    @property
    def rereads(self) -> bool:
        """Whether any plate is read again: a CTC reader and a threshold above 0."""
        return self.below > 0.0 and self.reader.head == "ctc"

    def read(self, crops: list[np.ndarray]) -> list[Reading]:
        """The text of each crop: all crops in one batch, then the copies of the unsure ones in one more."""
        if not self.rereads or not crops:
            return self.reader.read(crops)
        plain = log_softmax(self.reader.logits(crops).astype(np.float64))
        readings = self.reader.decode(plain)
        unsure = [i for i, r in enumerate(readings) if r.confidence < self.below]
        if not unsure:
            return readings
        extra = len(COPIES) - 1
        again = log_softmax(self.reader.logits(
            [moved(crops[i], *copy) for i in unsure for copy in COPIES[1:]]).astype(np.float64))
        again_readings = self.reader.decode(again)
        per_plate = [[readings[i], *again_readings[k * extra: (k + 1) * extra]] for k, i in enumerate(unsure)]
        chosen = most_probable_texts([[plain[i], *again[k * extra: (k + 1) * extra]] for k, i in enumerate(unsure)],
                                     [[r.text for r in plate] for plate in per_plate], self.reader.alphabet)
        for i, text, plate in zip(unsure, chosen, per_plate, strict=True):
            readings[i] = Reading(text, sum(r.confidence for r in plate if r.text == text) / len(plate))
        return readings

    def smoke_run(self) -> None:
        """One grey crop: it reads nothing, surely not, so the copies and their scoring run too."""
        self.read([np.full((self.reader.height, self.reader.width), 128, np.uint8)])

    def warm_up(self, runs: int = 2) -> None:
        crops = [np.full((self.reader.height, self.reader.width, 3), 128, np.uint8)] * 4
        for _ in range(runs):
            self.read(crops)
