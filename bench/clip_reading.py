"""Where the demo's clip loses plates: each plate read from its true box beside the edge's reading of the detected box.

`make demo` prints "plates read exactly: X (n/m; ...)" for the sample clip. This script reads the same plates again,
cut from the clip's true boxes instead of the plate detector's, with the reader the edge served, and lists every
plate read otherwise with its width, so the detector's share of the misses and the reader's can be told apart
(docs/decisions.md, "Plate reader"). The true boxes are read as the edge reads (unsure plates again as moved copies,
``--reread-below``; the list of plates read otherwise is of these readings) and each once, so what the rereading gains
on the clip shows too. It writes a contact sheet of each distinct plate as the reader sees it.

    .venv/bin/python bench/clip_reading.py --reader-onnx .alpr/exports/ocr/<key>/plate_reader.int8.onnx \\
        [--home .alpr] [--reread-below 0.9] [--sheet /tmp/clip-plates.png]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import common  # noqa: F401 - first: the repository on sys.path
import cv2
import numpy as np
from common import reread_below_or_exit


@dataclass
class ClipReadings:
    """The clip's plates at least ``MIN_READ_WIDTH`` wide, counted: read exactly from their true boxes as the edge
    reads and each once, and by the edge from the detector's boxes; the plates the first reading missed, as (width,
    true text, text read or None where the true box gave no crop); the distinct plates' texts, and one crop of each
    that gave one, by its text."""

    total: int = 0
    from_truth: int = 0
    from_truth_once: int = 0
    from_detector: int = 0
    misses: list[tuple[int, str, str | None]] = field(default_factory=list)
    texts: set[str] = field(default_factory=set)
    distinct: dict[str, np.ndarray] = field(default_factory=dict)


def read_true_boxes(frames: list[np.ndarray], results: list[dict], reader, once) -> ClipReadings:
    """Read each frame's true plate boxes in one batch with ``reader`` (as the edge reads) and with ``once`` (each plate
    once), beside the edge's own ``results`` (one per frame, as ``detections.jsonl`` holds them)."""
    from alpr_pipelines.cli.demo import clip_readings
    from alpr_pipelines.edge.reader import read_region
    from alpr_pipelines.lib.reader_data import normalize_text

    counts = ClipReadings()
    for index, truth, detected in clip_readings(results):
        crops = [read_region(frames[index], b.x1, b.y1, b.x2, b.y2) for b in truth]
        readable = [c for c in crops if c is not None]
        texts_read = iter(r.text for r in reader.read(readable))  # a frame's crops in one batch, as the edge reads
        texts_once = iter(r.text for r in once.read(readable))
        for t, (box, crop) in enumerate(zip(truth, crops, strict=True)):
            text = normalize_text(box.text)
            read = next(texts_read) if crop is not None else None
            counts.total += 1
            counts.texts.add(text)
            counts.from_truth += read == text
            counts.from_truth_once += crop is not None and next(texts_once) == text
            counts.from_detector += detected.get(t) == text
            if crop is not None:
                counts.distinct.setdefault(text, crop)
            if read != text:
                counts.misses.append((round(box.x2 - box.x1), text, read))
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reader-onnx", required=True, type=Path, help="the reader the edge served")
    parser.add_argument("--home", type=Path, default=Path(".alpr"), help="the demo's state folder")
    parser.add_argument("--sheet", type=Path, help="write the distinct plates' crops here (PNG)")
    parser.add_argument("--reread-below", type=float, default=None,
                        help="read again as moved copies the plates read less surely than this (default 0.9, the "
                        "edge's default)")
    args = parser.parse_args()

    from alpr_pipelines.edge.reader import MIN_READ_WIDTH, OnnxPlateReader
    from alpr_pipelines.edge.reread import RereadUnsure
    from alpr_pipelines.lib.plates import CYRILLIC
    from alpr_pipelines.lib.synth import GENERATOR_VERSION

    clip, detections = args.home / "clips" / "sample.avi", args.home / "edge" / "detections.jsonl"
    below = reread_below_or_exit(parser, args.reread_below)
    for path in (clip, detections, args.reader_onnx):
        if not path.is_file():
            parser.error(f"{path} not found: run `make demo` first (it writes the clip and the edge's detections)")
    stamp = clip.with_suffix(".generator")
    if not stamp.is_file() or stamp.read_text() != GENERATOR_VERSION:
        parser.error(f"{clip} was not made by this scene generator, so its true boxes are not known: run `make demo`")
    capture = cv2.VideoCapture(str(clip))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    if not frames:
        parser.error(f"{clip} gave no frames")
    # The edge appends to its detections: the last run's are the last len(frames) lines, one per frame in order.
    results = [json.loads(line) for line in detections.read_text().splitlines()[-len(frames):]]
    if [int(r["frame"]) for r in results] != list(range(len(frames))):
        parser.error(f"the last {len(frames)} lines of {detections} are not one edge run over the whole clip: run "
                     "`make demo` again")
    once = OnnxPlateReader(args.reader_onnx, providers=["CPUExecutionProvider"])
    counts = read_true_boxes(frames, results, RereadUnsure(once, below), once)
    distinct = counts.distinct
    print(f"{counts.total} plates at least {MIN_READ_WIDTH} px wide ({len(counts.texts)} distinct): read exactly "
          f"from the true boxes {counts.from_truth} (unsure plates read again below {below:g}; "
          f"{counts.from_truth_once} each read once), from the detected boxes {counts.from_detector} (the edge's "
          "readings)")
    for width, text, read in sorted(counts.misses, key=lambda m: (m[0], m[1], m[2] or "")):
        print(f"  {width:4d} px  {text:10s} read {read}")
    if args.sheet and not distinct:
        print("no plate crops to draw")
    elif args.sheet:
        latin = str.maketrans(CYRILLIC, "ABEKMHOPCTYX")  # OpenCV draws ASCII: each Cyrillic letter as its look-alike
        tiles = []
        for text, crop in distinct.items():
            scaled = cv2.resize(crop, (min(400, int(crop.shape[1] * 96 / crop.shape[0])), 96),
                                interpolation=cv2.INTER_NEAREST)
            tile = np.full((120, 400, 3), 255, np.uint8)
            tile[:96, : scaled.shape[1]] = scaled
            cv2.putText(tile, text.translate(latin), (2, 115), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (0, 0, 255), 1)
            tiles.append(tile)
        cv2.imwrite(str(args.sheet), np.vstack(tiles))
        print(f"the distinct plates as the reader sees them: {args.sheet}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
