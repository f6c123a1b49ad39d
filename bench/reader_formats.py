"""Reading in the plate formats: does a CTC reading constrained to the layouts training draws read more plates?

The synthetic plates follow a few layouts (``lib.plates.PLATE_FORMATS``: ``LLDDDD``, a Russian ``CDDDCCDD``, ...). A
reader's greedy reading that fits none of them (``J`` read as ``3`` where the layout wants a letter, a dropped digit)
can give way to the most probable reading that fits one: a Viterbi over the layouts' positions on the reader's CTC
probabilities, taken when it is at most MARGIN nats less probable than the greedy reading, so a confident reading of
an unknown layout stands. This script scores a reader's ONNX file that way at several margins on the golden crops,
3,000 more crops of the golden purpose, the held-out shift split (layouts training never draws) and the training
stream's validation crops; and, on the validation crops, each layout in turn left out of the list, which prices
unknown layouts without looking at the shift split. It also counts how many of the greedy misreadings fit a layout
(those no constraint can fix). Tried and not taken: docs/decisions.md, "Reading in the plate formats".

    .venv/bin/python bench/reader_formats.py --reader-onnx plate_reader.onnx [--json out.json]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common  # noqa: F401 - first: the repository on sys.path
import numpy as np
from common import machine, write_json

from alpr_pipelines.edge.reader import log_softmax

MARGINS = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, float("inf"))
MORE_CROPS = 3000
_NEG = -1e30


@dataclass(frozen=True)
class PlateFormats:
    """Layouts as patterns over character classes, e.g. ``LLDDDD`` with ``L`` the letters and ``D`` the digits."""

    classes: dict[str, str]  # class name (one character) -> the characters it stands for
    patterns: tuple[str, ...]

    def matches(self, text: str) -> bool:
        return any(len(text) == len(p) and all(ch in self.classes[c] for ch, c in zip(text, p, strict=True))
                   for p in self.patterns)

    def without(self, pattern: str) -> PlateFormats:
        return PlateFormats(self.classes, tuple(p for p in self.patterns if p != pattern))

    def slots(self, alphabet: str) -> tuple[np.ndarray, np.ndarray]:
        """Each pattern position's characters as alphabet indices, (patterns, positions, widest class), padded with
        ``len(alphabet)`` (no character); and the patterns' lengths."""
        index = {ch: i for i, ch in enumerate(alphabet)}
        widest = max(len(chars) for chars in self.classes.values())
        out = np.full((len(self.patterns), max(map(len, self.patterns)), widest), len(alphabet), np.int64)
        for k, pattern in enumerate(self.patterns):
            for i, name in enumerate(pattern):
                chars = [index[ch] for ch in self.classes[name]]
                out[k, i, : len(chars)] = chars
        return out, np.array([len(p) for p in self.patterns])


def training_formats() -> PlateFormats:
    """The layouts of the training domain's plates as a reader reads them: separators and line breaks gone, a
    Russian plate with its two- or three-digit region number; ``L`` Latin letters, ``C`` Cyrillic, ``D`` digits."""
    from alpr_pipelines.lib.plates import CYRILLIC, DIGITS, LATIN, PLATE_FORMATS

    patterns: set[str] = set()
    for fmt in PLATE_FORMATS["train"]:
        letter = "C" if fmt.letters == CYRILLIC else "L"
        for pattern in fmt.patterns:
            text = "".join(letter if ch == "L" else ch for ch in pattern if ch in "LD")
            patterns.update((text + "DD", text + "DDD") if fmt.region_box else (text,))
    return PlateFormats({"L": LATIN, "C": CYRILLIC, "D": DIGITS}, tuple(sorted(patterns)))


def best_paths_in_formats(log_probs: np.ndarray, slots: np.ndarray, lengths: np.ndarray,
                          ) -> list[tuple[float, list[tuple[int, int]]]]:
    """The most probable CTC path of each crop whose collapsed text fits one of the patterns: a Viterbi over every
    pattern's positions at once, each position over its class's characters. ``log_probs`` (N, T, C + 1), class 0
    the blank; ``slots`` and ``lengths`` from :meth:`PlateFormats.slots`. Per crop: (the path's log probability, its
    characters as (step, alphabet index)); -inf and no characters when no path fits (too few steps)."""
    n, steps, classes = log_probs.shape
    k, positions, width = slots.shape
    lp = log_probs.astype(np.float32)
    blank = lp[:, :, 0]
    emit = np.concatenate([lp[:, :, 1:], np.full((n, steps, 1), _NEG, np.float32)], axis=2)  # + "no character"
    # in_char[n, k, i, j]: best path so far that is on the i-th character of pattern k, as its j-th choice
    in_char = np.full((n, k, positions, width), _NEG, np.float32)
    in_char[:, :, 0] = emit[:, 0][:, slots[:, 0]]
    after = np.full((n, k, positions + 1), _NEG, np.float32)  # on a blank after i characters
    after[:, :, 0] = blank[:, 0, None]
    came = np.zeros((steps, n, k, positions, width), np.int8)  # 0 stayed, 1 from a blank, 2 from the char before
    left = np.zeros((steps, n, k, positions + 1), bool)  # a blank entered from the character before it
    best1 = np.zeros((steps, n, k, positions), np.int16)
    best2 = np.zeros((steps, n, k, positions), np.int16)
    for t in range(1, steps):
        top = in_char.argmax(-1)
        top_value = np.take_along_axis(in_char, top[..., None], -1)[..., 0]
        rest = in_char.copy()
        np.put_along_axis(rest, top[..., None], _NEG, -1)
        second = rest.argmax(-1)
        second_value = np.take_along_axis(rest, second[..., None], -1)[..., 0]
        best1[t], best2[t] = top, second
        # into the i-th character from the (i-1)-th: from its best, or its second best where the best is the same
        # character (two equal characters need a blank between them)
        top_char = np.take_along_axis(np.broadcast_to(slots, in_char.shape), top[..., None], -1)[..., 0]
        from_char = np.full_like(in_char, _NEG)
        from_char[:, :, 1:] = np.where(top_char[:, :, :-1, None] == slots[None, :, 1:],
                                       second_value[:, :, :-1, None], top_value[:, :, :-1, None])
        sources = np.stack([in_char, np.broadcast_to(after[:, :, :positions, None], in_char.shape), from_char])
        came[t] = sources.argmax(0)
        in_char = sources.max(0) + emit[:, t][:, slots]
        from_char_end = np.full_like(after, _NEG)
        from_char_end[:, :, 1:] = top_value
        left[t] = from_char_end > after
        after = np.maximum(after, from_char_end) + blank[:, t, None, None]
    out: list[tuple[float, list[tuple[int, int]]]] = []
    patterns = np.arange(k)
    for row in range(n):
        end_blank = after[row, patterns, lengths]
        end_char = in_char[row, patterns, lengths - 1]
        scores = np.maximum(end_blank, end_char.max(-1))
        best = int(scores.argmax())
        if scores[best] <= _NEG / 2:
            out.append((float("-inf"), []))
            continue
        i = int(lengths[best])
        state = (True, i, 0) if end_blank[best] >= end_char[best].max() else (False, i - 1, int(end_char[best].argmax()))
        path: list[tuple[int, int]] = []
        for t in range(steps - 1, -1, -1):
            on_blank, i, j = state
            if on_blank:
                if t and left[t, row, best, i]:
                    state = (False, i - 1, int(best1[t, row, best, i - 1]))
                continue
            char = int(slots[best, i, j])
            if t == 0:
                path.append((t, char))
            elif (source := came[t, row, best, i, j]) == 1:
                path.append((t, char))
                state = (True, i, 0)
            elif source == 2:
                path.append((t, char))
                top, second = best1[t, row, best, i - 1], best2[t, row, best, i - 1]
                state = (False, i - 1, int(second if slots[best, i - 1, top] == char else top))
        out.append((float(scores[best]), path[::-1]))
    return out


def read_in_formats(logits: np.ndarray, alphabet: str, formats: PlateFormats, margin: float) -> list[str]:
    """Greedy CTC readings (``edge.reader.decode_ctc``), each that fits none of ``formats`` replaced by the most
    probable reading that fits one when its best path is at most ``margin`` nats less probable than the greedy one."""
    from alpr_pipelines.edge.reader import decode_ctc

    readings = [r.text for r in decode_ctc(logits, alphabet)]
    outside = [i for i, text in enumerate(readings) if not formats.matches(text)]
    if not outside:
        return readings
    log_probs = log_softmax(logits[outside].astype(np.float64))
    greedy = log_probs.max(-1).sum(-1)
    steps = [sure_blanks_merged(lp, margin) for lp in log_probs]
    lattice = np.full((len(steps), max(map(len, steps)), log_probs.shape[2]), _NEG)
    lattice[:, :, 0] = 0.0  # padding: a blank that costs nothing
    for row, kept in enumerate(steps):
        lattice[row, : len(kept)] = kept
    slots, lengths = formats.slots(alphabet)
    for start in range(0, len(outside), 32):  # bounds the back pointers' memory
        best = best_paths_in_formats(lattice[start: start + 32], slots, lengths)
        for j, (score, path) in enumerate(best, start):
            if path and greedy[j] - score <= margin:
                readings[outside[j]] = "".join(alphabet[c] for _, c in path)
    return readings


def sure_blanks_merged(log_probs: np.ndarray, margin: float) -> np.ndarray:
    """``log_probs`` (T, C + 1) with each run of steps where every character is over ``margin`` nats less probable
    than the most probable class merged into one step that only a blank can take (its log probability the run's).
    A path with a character there would lose more than ``margin`` to the greedy one and be refused anyway, so the
    decision is the same; the Viterbi then walks a few dozen steps instead of every column of both lines."""
    possible = log_probs[:, 1:].max(1) >= log_probs.max(1) - margin
    out: list[np.ndarray] = []
    for t in range(len(log_probs)):
        if possible[t]:
            out.append(log_probs[t])
        elif out and out[-1][1] <= _NEG / 2:  # the run goes on
            out[-1][0] += log_probs[t, 0]
        else:
            out.append(np.r_[log_probs[t, 0], np.full(log_probs.shape[1] - 1, _NEG)])
    return np.asarray(out)


def left_out_layout_scores(logits: np.ndarray, truth: list[str], alphabet: str, formats: PlateFormats,
                           margin: float) -> dict[str, int]:
    """Each layout in turn left out of ``formats``, the crops whose text carries it read in the rest: how many of
    them are read exactly (``right``) of how many were so read (``crops``). What an unknown layout costs, priced on
    crops of the training's colours and fonts rather than on the shift split."""
    right = scored = 0
    for pattern in formats.patterns:
        rest = formats.without(pattern)
        idx = [i for i, text in enumerate(truth) if not rest.matches(text)]
        if idx:
            read = read_in_formats(logits[idx], alphabet, rest, margin)
            right += sum(text == truth[i] for text, i in zip(read, idx, strict=True))
            scored += len(idx)
    return {"right": right, "crops": scored}


def scoring_sets(validation: bool = False) -> dict[str, Path]:
    """Where the crops a reader is scored on live, written when missing: the golden crops, 3,000 more of the golden
    purpose (``bench/reader_heads.py --more-crops``' seed), the shift split and, with ``validation``, the recipe's
    own validation crops of the training stream."""
    from reader_heads import MORE_CROPS_SEED
    from trained_models import cache_dir

    from alpr_pipelines.lib.golden import write_golden
    from alpr_pipelines.lib.models import OCR
    from alpr_pipelines.lib.reader_data import write_synthetic_reader_dataset
    from alpr_pipelines.lib.recipes import READER_DATA

    golden = write_golden(cache_dir() / "golden")[OCR.key]
    root = cache_dir() / "reader"
    sets = {"golden": Path(golden.data_yaml),
            "more": write_synthetic_reader_dataset(root / "more", MORE_CROPS_SEED, 0, MORE_CROPS, ("golden", "golden")),
            "shift": Path(golden.shift_yaml)}
    if validation:
        sets["val"] = write_synthetic_reader_dataset(root / "val", 0, 0, READER_DATA.val_plates)
    return sets


def logits_in_batches(reader: Any, crops: list[np.ndarray], batch: int = 64) -> np.ndarray:
    """An ``edge.reader.OnnxPlateReader``'s logits (N, T, C + 1) for ``crops``, ``batch`` crops a run."""
    return np.concatenate([reader.logits(crops[i: i + batch]) for i in range(0, len(crops), batch)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reader-onnx", required=True, type=Path, help="a CTC plate reader's ONNX file")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args()
    if not args.reader_onnx.is_file():
        parser.error(f"{args.reader_onnx} not found")

    from alpr_pipelines.edge.reader import OnnxPlateReader, decode_ctc
    from alpr_pipelines.lib.reader_eval import golden_crops

    reader = OnnxPlateReader(args.reader_onnx, providers=["CPUExecutionProvider"])
    if reader.head != "ctc":
        parser.error(f"{args.reader_onnx} has a {reader.head!r} head; this reads CTC readers")
    formats = training_formats()
    rows = {}
    for name, root in scoring_sets(validation=True).items():
        crops, truth = golden_crops(root)
        logits = logits_in_batches(reader, crops)
        greedy = [r.text for r in decode_ctc(logits, reader.alphabet)]
        wrong = [i for i, text in enumerate(greedy) if text != truth[i]]
        row: dict = {"crops": len(truth), "greedy": sum(a == b for a, b in zip(greedy, truth, strict=True)),
                     "misread": len(wrong), "misread_fitting_a_format": sum(formats.matches(greedy[i]) for i in wrong),
                     "misread_fitting_one_character_off": sum(
                         formats.matches(greedy[i]) and len(greedy[i]) == len(truth[i])
                         and sum(a != b for a, b in zip(greedy[i], truth[i], strict=True)) == 1 for i in wrong),
                     "truth_fitting_a_format": sum(formats.matches(t) for t in truth), "in_formats": {}}
        for margin in MARGINS:
            read = read_in_formats(logits, reader.alphabet, formats, margin)
            row["in_formats"][f"{margin:g}"] = sum(a == b for a, b in zip(read, truth, strict=True))
        if name == "val":
            row["one_layout_left_out"] = {f"{margin:g}": left_out_layout_scores(logits, truth, reader.alphabet, formats,
                                                                                margin) for margin in MARGINS}
        rows[name] = row
        print(name, row, flush=True)
    write_json({"figures": [], "machine": machine(), "reader": str(args.reader_onnx),
                "margins_nats": [f"{m:g}" for m in MARGINS],
                "formats": list(formats.patterns), "splits": rows,
                "command": ".venv/bin/python bench/reader_formats.py --reader-onnx FILE"}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
