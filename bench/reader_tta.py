"""One reader, each crop read several ways: do moved and scaled copies of a crop read more plates than the crop alone?

Test-time augmentation for a CTC reader: each crop is read as it is and as copies moved by a few percent of its size
or scaled about its centre (the border repeated). A moved copy moves the reader's character spikes along its steps, so
the copies' per-step probabilities cannot be averaged (blanks win where the spikes disagree); the copies are joined
by their texts instead: ``vote`` keeps the text most copies read (the plain crop's when it ties), ``rescored`` the one of
their texts all copies together find most probable (the sum of each copy's CTC log likelihood of it, over every
path). ``gated`` reads the copies only for crops whose plain reading is less sure than ``--gate`` (the product of its
characters' probabilities), so most plates cost one reading. Scored on the golden crops (by plate width too), 3,000
more crops of the golden purpose and the shift split (docs/decisions.md, "One reader, each crop read several ways").

    .venv/bin/python bench/reader_tta.py --reader-onnx READER.onnx [--gate 0.9] [--json out.json]
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import common  # noqa: F401 - first: the repository on sys.path
import numpy as np
from common import machine, write_json
from reader_formats import logits_in_batches, scoring_sets

from alpr_pipelines.edge.reader import log_softmax
from alpr_pipelines.edge.reread import (
    COPIES,
    REREAD_BELOW,
    RereadUnsure,
    check_reread_below,
    most_probable_texts,
    moved,
)

COPY_SETS = {"three": 3, "seven": 7}  # the first so many of COPIES: three the crop moved left and right


def copies_log_probs(reader, crops: list[np.ndarray], copies: tuple[tuple[float, float, float], ...]) -> list:
    """Per copy, every crop's per-step log probabilities (N, T, C + 1)."""
    return [log_softmax(logits_in_batches(reader, [moved(c, *copy) for c in crops]).astype(np.float64))
            for copy in copies]


def read_with_copies(per_copy: list[np.ndarray], alphabet: str, max_length: int | None = None) -> dict[str, list[str]]:
    """The copies' log probabilities (the plain crop's first) -> the texts their greedy readings (cut to
    ``max_length`` as the edge's reader cuts them) give when joined by vote and by rescoring. A tie in the vote keeps
    the plain crop's text when it is among the most read, else the first such copy's."""
    from alpr_pipelines.edge.reader import decode_ctc

    greedy = [[r.text[:max_length] for r in decode_ctc(lp, alphabet)] for lp in per_copy]
    vote = []
    for i in range(len(per_copy[0])):
        texts = [g[i] for g in greedy]
        counts = Counter(texts)
        most = max(counts.values())
        vote.append(next(t for t in texts if counts[t] == most))  # the plain crop's text is the first
    rescored = most_probable_texts([[lp[i] for lp in per_copy] for i in range(len(per_copy[0]))],
                                   [[g[i] for g in greedy] for i in range(len(per_copy[0]))], alphabet)
    return {"vote": vote, "rescored": rescored}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reader-onnx", required=True, type=Path, help="a CTC plate reader's ONNX file")
    parser.add_argument("--gate", type=float, default=REREAD_BELOW,
                        help="gated: read the copies only below this confidence of the plain reading (0 to 1)")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args()
    if not args.reader_onnx.is_file():
        parser.error(f"{args.reader_onnx} not found")
    try:
        check_reread_below(args.gate)
    except ValueError as exc:
        parser.error(f"--gate {exc}")

    from alpr_pipelines.edge.reader import OnnxPlateReader
    from alpr_pipelines.lib.reader_eval import exact_match_by_width, golden_crops, plate_width, read_in_batches

    reader = OnnxPlateReader(args.reader_onnx, providers=["CPUExecutionProvider"])
    if reader.head != "ctc":
        parser.error(f"{args.reader_onnx} is a {reader.head!r} reader: joining copies needs a CTC reader")
    rows = {}
    for name, root in scoring_sets().items():
        crops, truth = golden_crops(root)
        per_copy = copies_log_probs(reader, crops, COPIES)  # each copy read once, the plain crop first
        plain = reader.decode(per_copy[0])  # the crop as it is: the edge's first reading of it
        texts = {"plain": [r.text for r in plain]}
        for label, count in COPY_SETS.items():
            joined = read_with_copies(per_copy[:count], reader.alphabet, reader.max_length)
            texts.update({f"{label} {way}": read for way, read in joined.items()})
        unsure = [i for i, r in enumerate(plain) if r.confidence < args.gate]
        for way in ("vote", "rescored"):
            gated = list(texts["plain"])
            for i in unsure:
                gated[i] = texts[f"seven {way}"][i]
            texts[f"gated {args.gate:g}, seven {way}"] = gated
        edge = RereadUnsure(reader, args.gate)
        texts["edge (RereadUnsure)"] = [r.text for r in read_in_batches(edge, crops, 64)]
        widths = [plate_width(c) for c in crops]
        rows[name] = {
            "crops": len(truth), "unsure": len(unsure),
            "read": {k: sum(a == b for a, b in zip(v, truth, strict=True)) for k, v in texts.items()},
            "by_plate_width": {k: exact_match_by_width(v, truth, widths) for k, v in texts.items()},
        }
        print(name, rows[name]["crops"], rows[name]["read"], f"unsure {len(unsure)}", flush=True)
    write_json({"figures": [], "machine": machine(), "reader": str(args.reader_onnx), "copies": COPIES,
                "copy_sets": COPY_SETS,
                "gate": args.gate, "splits": rows,
                "command": f".venv/bin/python bench/reader_tta.py --reader-onnx READER.onnx --gate {args.gate:g}"},
               args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
