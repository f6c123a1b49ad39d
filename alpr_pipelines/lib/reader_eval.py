"""Score a plate reader's ONNX file on the frozen golden plate crops, through the edge's own reading code (the
plates it is unsure of read again as moved copies, as the edge reads them: ``edge.reread``).

Plate-level exact match (every character right, none extra), the character error rate (edit distance over the
truth's characters), and the latency of one plate read alone (p50, p95): by the network once, the model's cost and
what the gate's budget judges, and as the edge reads it, where an unsure plate costs seven readings (the share of
plates read again is given too). Exact match is also given by the plate's width in pixels, since ALPR vendors state
the plate width a camera must give: a plate of a few pixels per stroke is misread by eye too, so the overall score
mixes the reader with the camera's resolution (docs/decisions.md, "How wide a plate must be"). A reader that cannot
be loaded or run raises: never a score of 0.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from alpr_pipelines.edge.reader import READ_MARGIN, OnnxPlateReader
from alpr_pipelines.edge.reread import REREAD_BELOW, RereadUnsure
from alpr_pipelines.lib.datasets import DatasetError
from alpr_pipelines.lib.evaluation import EvaluationError, ModelUnusable
from alpr_pipelines.lib.reader_data import load_split_crops, validate_reader_dataset

READER_EVALUATOR_VERSION = "5"  # bump when scoring changes, so cached scores are recomputed (3: by plate width;
# 4: unsure plates read again as moved copies; 5: the latency of the network alone, and as served beside it)
LATENCY_WARMUP = 3
WIDE_PLATE = 130  # px: Milestone XProtect LPR's minimum for single-line US plates (docs/decisions.md)
PLATE_WIDTH_BANDS = (60, 100, WIDE_PLATE)  # px, the bands' edges: the last band holds the wide plates


class WidthBand(TypedDict):
    """Exact match on the plates of one width band."""

    band: str
    plates: int
    read: int
    exact_match: float


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def text_scores(predicted: list[str], truth: list[str]) -> tuple[float, float]:
    """(exact-match accuracy, character error rate: edit distances over the truth's characters)."""
    if not truth:
        raise ValueError("no texts to score")
    exact = sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)
    chars = sum(len(t) for t in truth)
    cer = sum(edit_distance(p, t) for p, t in zip(predicted, truth, strict=True)) / max(chars, 1)
    return exact, cer


@dataclass(frozen=True)
class ReaderEvaluation:
    """A reader's scores on the golden crops (overall and by plate width), and on the held-out shift crops (formats
    training never sees). ``latency_ms_*``: one plate read once by the network; ``served_latency_ms_*``: one plate
    read as the edge reads it (an unsure one again as copies; ``reread_share`` of them); ``plates_per_second``:
    batches read as the edge reads."""

    exact_match: float
    cer: float
    latency_ms_p50: float
    latency_ms_p95: float
    plates_per_second: float
    file_size_mb: float
    images: int
    golden_fingerprint: str
    evaluator_version: str = READER_EVALUATOR_VERSION
    shift_exact_match: float | None = None
    shift_cer: float | None = None
    mean_confidence: float = 0.0
    # Exact match by plate width, narrowest band first (a list: it keeps its order through the JSON tag it is cached
    # in), and on the plates at least WIDE_PLATE px wide (None: there are none).
    by_plate_width: list[WidthBand] = field(default_factory=list)
    exact_match_wide_plates: float | None = None
    served_latency_ms_p50: float | None = None
    served_latency_ms_p95: float | None = None
    reread_share: float | None = None  # the golden plates read again as copies, as the edge would

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def headline(self) -> dict[str, float]:
        """The numbers the gate reads, with the shift split's and the wide plates' beside them."""
        out = {"exact_match": self.exact_match, "cer": self.cer, "latency_ms_p95": self.latency_ms_p95,
               "plates_per_second": self.plates_per_second}
        if self.shift_exact_match is not None and self.shift_cer is not None:
            out.update({"shift_exact_match": self.shift_exact_match, "shift_cer": self.shift_cer})
        if self.exact_match_wide_plates is not None:
            out["exact_match_wide_plates"] = self.exact_match_wide_plates
        if self.served_latency_ms_p95 is not None:
            out["served_latency_ms_p95"] = self.served_latency_ms_p95
        if self.reread_share is not None:
            out["reread_share"] = self.reread_share
        return out


def plate_width(crop: np.ndarray) -> float:
    """The width in pixels of the plate in ``crop``, taking the crop as the edge cuts one: the plate box grown by
    ``READ_MARGIN`` a side. A looser crop gives a wider estimate; the golden crops' detector-like jitter (up to 8% a
    side) puts most within about 10% of the true width."""
    return crop.shape[1] / (1 + 2 * READ_MARGIN)


def width_band(width: float, edges: tuple[int, ...] = PLATE_WIDTH_BANDS) -> str:
    """The band of a plate ``width`` px wide: "under 60 px", "60-100 px", ..., "130 px and over"."""
    if width < edges[0]:
        return f"under {edges[0]} px"
    for low, high in itertools.pairwise(edges):
        if width < high:
            return f"{low}-{high} px"
    return f"{edges[-1]} px and over"


def width_groups(widths: list[float], edges: tuple[int, ...] = PLATE_WIDTH_BANDS) -> dict[str, list[int]]:
    """Band -> the indices of the plates in it, narrowest band first; bands without plates are left out."""
    groups: dict[str, list[int]] = {}
    for i, width in sorted(enumerate(widths), key=lambda item: item[1]):
        groups.setdefault(width_band(width, edges), []).append(i)
    return groups


def exact_match_by_width(predicted: list[str], truth: list[str], widths: list[float],
                         edges: tuple[int, ...] = PLATE_WIDTH_BANDS) -> list[WidthBand]:
    """Each band's plates, those read exactly and their share, narrowest band first."""
    if not len(predicted) == len(truth) == len(widths):
        raise ValueError(f"{len(predicted)} texts, {len(truth)} truths and {len(widths)} widths: one per plate each")
    bands = []
    for band, ids in width_groups(widths, edges).items():
        read = sum(predicted[i] == truth[i] for i in ids)
        bands.append(WidthBand(band=band, plates=len(ids), read=read, exact_match=read / len(ids)))
    return bands


def wide_plates_score(bands: list[WidthBand]) -> float | None:
    """Exact match on the plates at least ``WIDE_PLATE`` px wide (the last band); None when there are none."""
    wide = width_band(WIDE_PLATE)
    return next((row["exact_match"] for row in bands if row["band"] == wide), None)


def golden_crops(root: Path, max_images: int | None = None) -> tuple[list[np.ndarray], list[str]]:
    """The crops and texts of a golden reader set (its ``val`` split), validated.

    Raises:
        EvaluationError: the set does not validate, is empty, or a crop cannot be read.
    """
    try:
        dataset = validate_reader_dataset(root, required_splits=("val",))
    except Exception as exc:
        raise EvaluationError(f"golden plate crops {root}: {exc}") from exc
    samples = dataset.splits["val"][:max_images]
    try:
        crops = load_split_crops(samples)
    except DatasetError as exc:
        raise EvaluationError(f"golden plate crops {root}: {exc}") from exc
    if not crops:
        raise EvaluationError(f"golden plate crops {root} are empty")
    return crops, [s.text for s in samples]


def read_in_batches(reader: Any, crops: list[np.ndarray], batch: int = 16) -> list[Any]:
    """``reader.read`` (an edge reader: crops -> readings) over ``crops`` a batch at a time, readings in order."""
    return [r for i in range(0, len(crops), batch) for r in reader.read(crops[i: i + batch])]


def evaluate_reader_onnx(onnx_path: Path, golden_root: Path, golden_fingerprint: str, threads: int | None = None,
                         max_images: int | None = None, shift_root: Path | None = None,
                         reread_below: float = REREAD_BELOW) -> ReaderEvaluation:
    """Score ``onnx_path`` on the golden crops (and the shift crops when given), reading again the plates it is less
    sure of than ``reread_below`` as the edge does (0: none; the gate scores the edge's default). Latency is timed
    per plate both ways: the network reading it once (``latency_ms_*``, the model's cost, comparable between
    versions and what the gate's budget judges) and as the edge reads it (``served_latency_ms_*``).

    Raises:
        ModelUnusable: the file is not a plate reader, or fails to load or run.
        EvaluationError: the golden crops are unusable.
    """
    try:
        network = OnnxPlateReader(onnx_path, threads=threads, providers=["CPUExecutionProvider"])
        reader = RereadUnsure(network, reread_below)
    except Exception as exc:
        raise ModelUnusable(f"cannot load {onnx_path} as a plate reader: {exc}") from exc
    crops, truth = golden_crops(golden_root, max_images)

    def guarded(read: Callable[[list[np.ndarray]], list[Any]]) -> Callable[[list[np.ndarray]], list[Any]]:
        def run(images: list[np.ndarray]) -> list[Any]:
            try:
                return read(images)
            except Exception as exc:  # a reader that fails is unusable: never a score of 0
                raise ModelUnusable(f"the reader failed on the golden crops: {exc}") from exc
        return run

    read_all = guarded(lambda images: read_in_batches(reader, images))

    def per_plate_ms(read: Callable[[list[np.ndarray]], list[Any]]) -> tuple[np.ndarray, list[Any]]:
        for _ in range(LATENCY_WARMUP):
            read(crops[:1])
        latencies, readings = [], []
        for crop in crops:
            started = time.perf_counter()
            readings += read([crop])
            latencies.append((time.perf_counter() - started) * 1000)
        return np.asarray(latencies), readings

    (lat, once), (served, _) = per_plate_ms(guarded(network.read)), per_plate_ms(read_all)
    reread_share = float(np.mean([r.confidence < reader.below for r in once])) if reader.rereads else 0.0
    started = time.perf_counter()
    readings = read_all(crops)
    rate = len(crops) / max(time.perf_counter() - started, 1e-9)
    texts = [r.text for r in readings]
    exact, cer = text_scores(texts, truth)
    bands = exact_match_by_width(texts, truth, [plate_width(crop) for crop in crops])
    shift_exact = shift_cer = None
    if shift_root is not None:
        shift_crops, shift_truth = golden_crops(shift_root, max_images)
        shift_exact, shift_cer = text_scores([r.text for r in read_all(shift_crops)], shift_truth)
    return ReaderEvaluation(
        exact_match=exact, cer=cer, latency_ms_p50=float(np.percentile(lat, 50)),
        latency_ms_p95=float(np.percentile(lat, 95)), plates_per_second=rate,
        file_size_mb=Path(onnx_path).stat().st_size / 1e6, images=len(crops), golden_fingerprint=golden_fingerprint,
        shift_exact_match=shift_exact, shift_cer=shift_cer,
        mean_confidence=float(np.mean([r.confidence for r in readings])),
        by_plate_width=bands, exact_match_wide_plates=wide_plates_score(bands),
        served_latency_ms_p50=float(np.percentile(served, 50)), served_latency_ms_p95=float(np.percentile(served, 95)),
        reread_share=reread_share)
