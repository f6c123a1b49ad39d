"""The plate reader's training speed in bfloat16 autocast against float32, on this CPU: crops a second through the
recipe's network and training step (``lib.reader_model.trainable_network`` and ``train_step``: augmentation,
forward, both losses, backward, AdamW), the two precisions interleaved round by round and reported as the median of
the rounds' paired ratios.
Not a figure of issue 18: it measures why the recipe trains in bfloat16 where the CPU computes it natively
(docs/decisions.md, "Plate reader"); accuracy at each precision is `bench/reader_heads.py --precision`.

    .venv/bin/python bench/reader_precision.py --json out.json   # 5 rounds x 60 steps of the recipe's batch
    .venv/bin/python bench/reader_precision.py --batch 32         # at the previous recipe's batch
    .venv/bin/python bench/reader_precision.py --quick            # smoke: 2 rounds x 3 steps
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401 - first: the repository on sys.path
from common import machine, paired, write_json


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch", type=int, help="crops per step (default: the recipe's)")
    args = parser.parse_args()
    runs, steps = args.runs or (2 if args.quick else 5), args.steps or (3 if args.quick else 60)

    import torch

    from alpr_pipelines.lib.reader_data import validate_reader_dataset, write_synthetic_reader_dataset
    from alpr_pipelines.lib.reader_model import (
        augment_batch,
        cpu_trains_bf16,
        encode_targets,
        load_crops,
        top_line_lengths,
        train_step,
        trainable_network,
    )
    from alpr_pipelines.lib.recipes import READER_RECIPE
    from alpr_pipelines.lib.training import usable_cores

    recipe = dataclasses.replace(READER_RECIPE, batch=args.batch or READER_RECIPE.batch)
    threads = usable_cores()
    torch.set_num_threads(threads)
    work = Path(tempfile.mkdtemp(prefix="alpr-bench-bf16-"))
    try:
        data = validate_reader_dataset(write_synthetic_reader_dataset(work, 0, recipe.batch * 8, 1))
        crops = torch.from_numpy(load_crops(data.splits["train"], recipe.input_size))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    targets = torch.from_numpy(encode_targets([s.text for s in data.splits["train"]], data.alphabet, data.max_length))
    tops = torch.from_numpy(top_line_lengths(data.splits["train"]))  # the loss line by line, as the recipe trains
    precisions = ["fp32", "bf16"] if cpu_trains_bf16() else ["fp32"]
    rates: dict[str, list[float]] = {p: [] for p in precisions}
    for _ in range(runs):
        for precision in precisions:
            torch.manual_seed(recipe.seed)
            generator = torch.Generator().manual_seed(recipe.seed)
            model, optimizer = trainable_network(recipe, data.alphabet, data.max_length)
            model.train()

            def step(i: int) -> None:
                idx = torch.arange(i * recipe.batch, (i + 1) * recipe.batch) % len(crops)
                x = augment_batch(crops[idx].float() / 255, generator)  # noqa: B023 - used within the round
                train_step(model, optimizer, x, targets[idx], recipe.head, precision == "bf16",  # noqa: B023
                           tops[idx])

            for i in range(3):  # warm-up: oneDNN picks its kernels on the first calls
                step(i)
            started = time.perf_counter()
            for i in range(steps):
                step(i)
            rates[precision].append(steps * recipe.batch / (time.perf_counter() - started))
    medians = {p: round(statistics.median(v), 1) for p, v in rates.items()}
    ratio = round(paired(rates, "bf16", "fp32"), 2) if "bf16" in rates else None
    write_json({"figures": [], "machine": machine(threads), "crops_per_second": rates, "medians": medians,
                "ratio_bf16_over_fp32": ratio, "runs": runs, "steps": steps, "batch": recipe.batch,
                "bf16_native": "bf16" in rates,
                "command": " ".join([".venv/bin/python bench/reader_precision.py", *sys.argv[1:]])},
               args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
