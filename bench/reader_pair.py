"""Two trainings of the plate reader read together: does a pair read more plates than either alone?

Two ways to join two CTC readers of the same network: average their per-step log probabilities and decode greedily
(``averaged``), or of the two readers' greedy texts keep the one both together find more probable, by the sum of
their CTC log likelihoods (``rescored``). ``either`` counts the plates at least one of the two reads: what choosing
the right one of the two texts every time would read, so a bound on ``rescored``. Scored on the golden crops,
3,000 more crops of the golden purpose and the shift split (docs/decisions.md, "Two trainings read together").

    .venv/bin/python bench/reader_pair.py --reader-onnx A.onnx B.onnx [--json out.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import common  # noqa: F401 - first: the repository on sys.path
import numpy as np
from common import machine, write_json
from reader_formats import log_softmax, logits_in_batches, scoring_sets

from alpr_pipelines.edge.reread import most_probable_texts


def read_as_pair(first: np.ndarray, second: np.ndarray, alphabet: str) -> dict[str, list[str]]:
    """Both readers' log probabilities (N, T, C + 1) -> each one's greedy texts and the pair's, both ways."""
    from alpr_pipelines.edge.reader import decode_ctc

    alone = [[r.text for r in decode_ctc(lp, alphabet)] for lp in (first, second)]
    averaged = [r.text for r in decode_ctc((first + second) / 2, alphabet)]
    rescored = most_probable_texts([[first[i], second[i]] for i in range(len(first))],
                                   [[alone[0][i], alone[1][i]] for i in range(len(first))], alphabet)
    return {"first": alone[0], "second": alone[1], "averaged": averaged, "rescored": rescored}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reader-onnx", required=True, type=Path, nargs=2, help="two CTC readers' ONNX files")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args()
    for path in args.reader_onnx:
        if not path.is_file():
            parser.error(f"{path} not found")

    from alpr_pipelines.edge.reader import OnnxPlateReader
    from alpr_pipelines.lib.reader_eval import golden_crops

    readers = [OnnxPlateReader(path, providers=["CPUExecutionProvider"]) for path in args.reader_onnx]
    if any(r.head != "ctc" for r in readers) or readers[0].alphabet != readers[1].alphabet:
        parser.error("both readers must be CTC readers of one alphabet")
    steps = [r.logits([np.full((r.height, r.width), 128, np.uint8)]).shape[1] for r in readers]
    if steps[0] != steps[1]:
        parser.error(f"the readers predict {steps[0]} and {steps[1]} steps a crop: averaging needs the same network")
    rows = {}
    for name, root in scoring_sets().items():
        crops, truth = golden_crops(root)
        first, second = (log_softmax(logits_in_batches(r, crops).astype(np.float64)) for r in readers)
        read = read_as_pair(first, second, readers[0].alphabet)
        rows[name] = {"crops": len(truth), **{k: sum(a == b for a, b in zip(v, truth, strict=True))
                                               for k, v in read.items()},
                      "either": sum(a == t or b == t for a, b, t in zip(read["first"], read["second"], truth,
                                                                         strict=True))}
        print(name, rows[name], flush=True)
    write_json({"figures": [], "machine": machine(), "readers": [str(p) for p in args.reader_onnx], "splits": rows,
                "command": ".venv/bin/python bench/reader_pair.py --reader-onnx A.onnx B.onnx"}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
