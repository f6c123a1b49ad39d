"""Which head the plate reader trains with: each candidate trained on the same synthetic crops with the same budget,
then scored on the golden plate crops by the gate's evaluator (docs/decisions.md, "Plate reader").

Heads (``lib.reader_model.build_network``): ``slots`` (a classifier per character position over the flattened
feature map, as fast-plate-ocr does), ``attn`` (one learned query per position attending over the map, one shared
classifier) and ``ctc`` (a prediction per column and text line through a bidirectional GRU, CTC loss, with an
auxiliary per-position loss in training).

    .venv/bin/python bench/reader_heads.py                  # recipe's data and epochs (25-45 min a head, 2 cores)
    .venv/bin/python bench/reader_heads.py --heads ctc slots --epochs 6
    .venv/bin/python bench/reader_heads.py --heads ctc --ctc-stride 8   # the recipe with a CTC step per 8 columns
    .venv/bin/python bench/reader_heads.py --heads ctc --precision fp32  # the recipe in float32 throughout
    .venv/bin/python bench/reader_heads.py --heads ctc --epochs 10 --input-size 48 128   # the previous recipe's input
    .venv/bin/python bench/reader_heads.py --heads ctc --more-crops 3000   # also scored on 3,000 more crops of the
                                                                          # golden purpose (another seed)
    .venv/bin/python bench/reader_heads.py --heads ctc --seed 1          # other starting weights
    .venv/bin/python bench/reader_heads.py --heads ctc --no-top-lines    # the loss over the whole sequence
    .venv/bin/python bench/reader_heads.py --heads ctc --residual-blocks 0 0   # without the residual blocks
    .venv/bin/python bench/reader_heads.py --heads ctc --train-plates 72000 --time-budget 300   # a GPU's budget:
                                        # as many epochs as 300 s of training allow, timed here first
    .venv/bin/python bench/reader_heads.py --train-plates 72000 --data-only   # write the crops, then stop (several
                                        # trainings can then share them)
    .venv/bin/python bench/reader_heads.py --more-crops 3000 --score-onnx DIR/ctc.onnx   # a kept reader, scored
    .venv/bin/python bench/reader_heads.py --heads ctc --reread-below 0   # scores of the network alone: each plate
                                        # read once (by default as the edge reads: the unsure ones again as copies)
    .venv/bin/python bench/reader_heads.py --quick          # smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common  # noqa: F401 - first: the repository on sys.path
from common import machine, reread_below_or_exit, write_json

CALIBRATION_CROPS = 8192  # crops of the two epochs --time-budget starts with (the second is timed)
MORE_CROPS_SEED = 777  # the golden purpose under another seed than the golden set's (lib.golden.GoldenSpec)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--heads", nargs="+", default=["ctc", "slots", "attn"])
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--ctc-stride", type=int, choices=(4, 8), help="input columns per CTC step (recipe: 4)")
    parser.add_argument("--train-plates", type=int, help="synthetic training crops (recipe: lib.recipes)")
    parser.add_argument("--precision", choices=("auto", "fp32"), help="auto (the recipe): bfloat16 autocast where "
                        "the CPU computes it natively; fp32: float32 throughout")
    parser.add_argument("--batch", type=int, help="crops per step (recipe: lib.reader_model.ReaderParams)")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), help="e.g. 48 192")
    parser.add_argument("--channels", type=int, nargs=4, help="the four stages' widths, e.g. 24 48 96 128")
    parser.add_argument("--residual-blocks", type=int, nargs=2, metavar=("THIRD", "FOURTH"),
                        help="residual blocks after the third and the fourth stage (recipe: 1 1)")
    parser.add_argument("--seed", type=int, help="the network's starting weights and the batches' order (recipe: 0)")
    parser.add_argument("--no-top-lines", action="store_true", help="train on crops whose labels do not name their "
                        "top line (the CTC loss over the whole sequence, as a user's image,text CSV trains)")
    parser.add_argument("--more-crops", type=int, default=0, help="also score on this many more crops of the golden "
                        "stream (another seed): two trainings of one recipe differ by a few points on the 600 golden "
                        "crops alone")
    parser.add_argument("--time-budget", type=float, metavar="SECONDS", help="instead of --epochs: as many epochs "
                        "as SECONDS of training allow, from the crops a second of a short timed training here (the "
                        f"second of two epochs on {CALIBRATION_CROPS} crops); loading, the calibration, export and "
                        "scoring come on top")
    parser.add_argument("--threads", type=int, help="CPU threads a training uses (recipe: every core); for trainings "
                        "run side by side")
    parser.add_argument("--data-only", action="store_true", help="write the training crops, the golden sets and the "
                        "more crops, then stop: trainings started side by side afterwards share them")
    parser.add_argument("--keep-onnx", type=Path, metavar="DIR", help="copy each head's ONNX file here "
                        "(<head>.onnx); the work folder is removed")
    parser.add_argument("--reread-below", type=float, metavar="CONFIDENCE", help="score as the edge reads (the "
                        "default: plates read less surely than edge.reread.REREAD_BELOW read again as moved copies); "
                        "0: the network alone, one reading a plate, as trainings before the rereading were scored")
    parser.add_argument("--score-onnx", type=Path, metavar="FILE", help="train nothing: score this reader (e.g. a "
                        "--keep-onnx file) on the golden crops, the shift split and --more-crops as a training is")
    args = parser.parse_args()
    args.reread_below = reread_below_or_exit(parser, args.reread_below)
    if args.more_crops < 0:
        parser.error(f"--more-crops must be 0 or more, got {args.more_crops}")
    if args.time_budget is not None and args.epochs is not None:
        parser.error("--time-budget chooses the epochs: give it or --epochs, not both")
    if args.time_budget is not None and not (math.isfinite(args.time_budget) and args.time_budget > 0):
        parser.error(f"--time-budget must be a positive number of seconds, got {args.time_budget}")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be 1 or more, got {args.epochs}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be 1 or more, got {args.threads}")
    if args.score_onnx is not None and not args.score_onnx.is_file():
        parser.error(f"--score-onnx {args.score_onnx} is not a file; give a reader's ONNX file (e.g. from --keep-onnx)")
    if args.score_onnx is not None:
        training = [flag for flag, given in (("--data-only", args.data_only), ("--keep-onnx", args.keep_onnx),
                                             ("--epochs", args.epochs), ("--time-budget", args.time_budget))
                    if given]
        if training:
            parser.error(f"--score-onnx trains nothing, so {', '.join(training)} would do nothing: leave them out")
    if args.data_only and args.quick:
        parser.error("--data-only keeps the crops for later runs, and --quick writes them to a folder removed at "
                     "its end: give one of them")

    from mlflow import MlflowClient
    from trained_models import cache_dir

    from alpr_pipelines.lib.golden import GoldenSpec, write_golden
    from alpr_pipelines.lib.models import OCR
    from alpr_pipelines.lib.reader_data import validate_reader_dataset, write_synthetic_reader_dataset
    from alpr_pipelines.lib.reader_eval import evaluate_reader_onnx
    from alpr_pipelines.lib.reader_model import PRECISION_TAG, export_reader_onnx, train_reader
    from alpr_pipelines.lib.recipes import READER_DATA, READER_RECIPE

    with tempfile.TemporaryDirectory(prefix="alpr-bench-heads-") as tmp:  # its crops, runs and exports; removed on failure too
        work = Path(tmp)
        if args.quick:
            train, val, golden_spec = 48, 8, GoldenSpec(scenes=2, width=256, height=160, plates=24, shift_plates=24)
            base = dataclasses.replace(READER_RECIPE, epochs=1, channels=(4, 8, 8, 8))
            root = work
        else:
            train, val, golden_spec = READER_DATA.train_plates, READER_DATA.val_plates, GoldenSpec()
            base = READER_RECIPE
            root = cache_dir() / "reader"
        if args.epochs:
            base = dataclasses.replace(base, epochs=args.epochs)
        for name in ("ctc_stride", "precision", "batch", "lr", "input_size", "channels", "residual_blocks", "seed",
                     "threads"):
            if getattr(args, name) is not None:
                value = getattr(args, name)
                base = dataclasses.replace(base, **{name: tuple(value) if isinstance(value, list) else value})
        if args.train_plates:
            train = args.train_plates
        golden = write_golden(root / "golden" if args.quick else cache_dir() / "golden", golden_spec)[OCR.key]
        # The golden crops again with their top lines (the same stream and bytes; the golden set itself is written
        # without them), so the scores by kind know which plates have two lines.
        golden_lines = write_synthetic_reader_dataset(root / "golden-lines", golden_spec.seed, 0, golden_spec.plates,
                                                      ("golden", "golden"))
        more = None
        if args.more_crops:
            more = write_synthetic_reader_dataset(root / "more", MORE_CROPS_SEED, 0, args.more_crops,
                                                  ("golden", "golden"))
        command = ".venv/bin/python bench/reader_heads.py " + " ".join(sys.argv[1:])
        if args.score_onnx:  # a reader trained before: scored as a training's is, nothing trained
            row: dict[str, Any] = {"head": "given", "onnx": str(args.score_onnx)}
            for crops, prefix in ((golden_lines, "golden"), (Path(golden.shift_yaml), "shift"), (more, "more")):
                if crops is not None:
                    row.update(kind_scores(args.score_onnx, crops, prefix, args.reread_below))
            write_json({"figures": [], "machine": machine(), "heads": [row], "reread_below": args.reread_below,
                        "command": command}, args.json)
            return 0
        data_root = write_synthetic_reader_dataset(root / "data", 0, train, val, top_lines=not args.no_top_lines)
        if args.data_only:
            written = [data_root, golden.data_yaml, golden.shift_yaml, golden_lines, *([more] if more else [])]
            print("written:\n" + "\n".join(f"  {path}" for path in written), file=sys.stderr)
            return 0
        data = validate_reader_dataset(data_root)
        client = MlflowClient(f"sqlite:///{work}/mlflow.db")
        rows = []
        for head in args.heads:
            params = dataclasses.replace(base, head=head)
            rate = None
            if args.time_budget is not None:
                epochs, rate = epochs_within(args.time_budget, data, params, client, work / f"calibrate-{head}")
                params = dataclasses.replace(params, epochs=epochs)
            started = time.perf_counter()
            result = train_reader(OCR, data, params, client, "heads", work / "train")
            seconds = time.perf_counter() - started
            onnx = export_reader_onnx(result.best_pt, work / head)
            scores = evaluate_reader_onnx(Path(str(onnx.path)), golden.data_yaml, "bench",
                                          reread_below=args.reread_below)
            curve = [round(e.values.get("exact_match", 0.0), 4) for e in result.epochs]
            rows.append({"head": head, "golden_exact_match": scores.exact_match, "golden_cer": scores.cer,
                         "train_seconds": round(seconds, 1), "epochs": params.epochs, "val_exact_by_epoch": curve,
                         "trained_in": client.get_run(result.run_id).data.tags.get(PRECISION_TAG),
                         "latency_ms_p95": scores.latency_ms_p95,
                         "served_latency_ms_p95": scores.served_latency_ms_p95,
                         "plates_per_second": scores.plates_per_second,
                         "file_mb": scores.file_size_mb})
            if rate is not None:
                rows[-1].update(time_budget_seconds=args.time_budget, calibration_crops_per_second=round(rate, 1))
            if args.keep_onnx:
                args.keep_onnx.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(str(onnx.path), args.keep_onnx / f"{head}.onnx")
            rows[-1].update(kind_scores(Path(str(onnx.path)), golden_lines, "golden", args.reread_below))
            rows[-1].update(kind_scores(Path(str(onnx.path)), Path(golden.shift_yaml), "shift", args.reread_below))
            if more is not None:
                rows[-1].update(kind_scores(Path(str(onnx.path)), more, "more", args.reread_below))
            print(rows[-1], file=sys.stderr, flush=True)  # progress; the JSON report goes to stdout
        write_json({"figures": [], "machine": machine(), "heads": rows, "train_plates": train, "val_plates": val,
                    "golden_plates": golden_spec.plates, "recipe": dataclasses.asdict(base),
                    "top_lines": not args.no_top_lines, "reread_below": args.reread_below,
                    "command": command}, args.json)
    return 0


def epochs_within(seconds: float, data: Any, params: Any, client: Any, work: Path) -> tuple[int, float]:
    """How many epochs of ``data`` ``params`` trains in ``seconds`` here (at least one), and the crops a second that
    says so. Two epochs on CALIBRATION_CROPS of its crops are trained and the second is timed, so the device's
    warm-up is left out; an epoch's validation and checkpoints count, so per epoch the estimate errs short. Loading
    the crops, this calibration, export and scoring come on top of ``seconds``."""
    from alpr_pipelines.lib.models import OCR
    from alpr_pipelines.lib.reader_model import train_reader

    train = data.splits["train"]
    part = dataclasses.replace(data, splits={**data.splits, "train": train[:CALIBRATION_CROPS]},
                               fingerprint=f"{data.fingerprint}-calibration")
    ended: list[float] = []
    train_reader(OCR, part, dataclasses.replace(params, epochs=2), client, "calibration", work,
                 on_epoch=lambda _metrics: ended.append(time.perf_counter()))
    if len(ended) != 2 or not ended[1] > ended[0]:
        raise RuntimeError(f"the calibration's two epochs were not timed (epoch ends at {ended}); train with --epochs")
    rate = len(part.splits["train"]) / (ended[1] - ended[0])
    epochs = max(1, int(seconds * rate / len(train)))
    print(f"{rate:.0f} crops/s here: {epochs} epochs of {len(train)} crops in {seconds:.0f} s", file=sys.stderr,
          flush=True)
    return epochs, rate


def kind_scores(onnx: Path, root: Path, prefix: str, reread_below: float) -> dict[str, Any]:
    """Exact match and CER on the crops under ``root``, overall, by kind (Russian plates: their region number, in
    a small box, is what the reader misreads most; two-line plates: a top line shorter than the text, how the two
    lines' alignment formed; the rest) and by plate width (as the gate reports it). Plates read less surely than
    ``reread_below`` are read again as moved copies, as the edge does (0: none)."""
    from alpr_pipelines.edge.reader import OnnxPlateReader
    from alpr_pipelines.edge.reread import RereadUnsure
    from alpr_pipelines.lib.plates import CYRILLIC
    from alpr_pipelines.lib.reader_data import load_split_crops, validate_reader_dataset
    from alpr_pipelines.lib.reader_eval import (
        exact_match_by_width,
        plate_width,
        read_in_batches,
        text_scores,
        wide_plates_score,
    )

    samples = validate_reader_dataset(root, ("val",)).splits["val"]
    truth = [s.text for s in samples]
    reader = RereadUnsure(OnnxPlateReader(onnx, providers=["CPUExecutionProvider"]), reread_below)
    crops = load_split_crops(samples)
    read = [r.text for r in read_in_batches(reader, crops, 64)]
    bands = exact_match_by_width(read, truth, [plate_width(crop) for crop in crops])
    russian = {i for i, text in enumerate(truth) if set(text) & set(CYRILLIC)}
    two_line = {i for i, s in enumerate(samples) if s.top_line and s.top_line != s.text}
    exact, cer = text_scores(read, truth)
    out: dict[str, Any] = {f"{prefix}_crops": len(truth), f"{prefix}_exact_match": exact, f"{prefix}_cer": cer,
                           f"{prefix}_russian_crops": len(russian), f"{prefix}_two_line_crops": len(two_line),
                           f"{prefix}_by_plate_width": bands,
                           f"{prefix}_exact_match_wide_plates": wide_plates_score(bands)}
    others = set(range(len(truth))) - russian - two_line
    for kind, part in (("russian", russian), ("two_line", two_line), ("other", others)):
        if part:
            out[f"{prefix}_{kind}_exact_match"] = sum(read[i] == truth[i] for i in part) / len(part)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
