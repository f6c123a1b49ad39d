"""How much of the golden plate crops can be read by eye, to set the reader's 0.95 target against.

Someone reads a random sample of the golden crops by eye, without their labels, from numbered contact sheets (or,
with ``--tiles``, each sheet tile on its own at three times its size); the script scores those readings against the
truth and, given a reader's ONNX file, the reader on the same crops (docs/decisions.md, "Plate reader"). Several
readings of one sample are scored side by side, with the crops any of them and all of them read. A reader types
Latin look-alikes for the Cyrillic letters of Russian plates, so those count as the letter they look like; "?"
marks a crop that cannot be read. What the readers of the committed readings were told: reader_by_eye.brief.md.

    .venv/bin/python bench/reader_by_eye.py sheets /tmp/sheets            # sheet-0.png ... and readings.txt to fill
    .venv/bin/python bench/reader_by_eye.py score bench/reader_by_eye.readings.txt [--reader-onnx plate_reader.onnx]
    .venv/bin/python bench/reader_by_eye.py score --count 600 bench/reader_by_eye.600-*.txt [--reader-onnx ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import common  # noqa: F401 - first: the repository on sys.path
import cv2
import numpy as np

from alpr_pipelines.lib.plates import CYRILLIC

SAMPLE_SEED = 7
TILE_W, TILE_H, PER_ROW, PER_SHEET = 330, 150, 5, 25
LOOK_ALIKES = str.maketrans("ABEKMHOPCTYX", CYRILLIC)  # Latin -> the Cyrillic plate letter it looks like


def golden_sample(count: int) -> tuple[list[np.ndarray], list[str], str]:
    """``count`` golden crops and texts drawn at random (``SAMPLE_SEED``), in the golden set's order, and the
    sample's header line: the golden crops' fingerprint, the seed and the count, which the readings must carry."""
    from trained_models import cache_dir

    from alpr_pipelines.lib.golden import write_golden
    from alpr_pipelines.lib.models import OCR
    from alpr_pipelines.lib.reader_eval import golden_crops

    golden = write_golden(cache_dir() / "golden")[OCR.key]
    crops, truth = golden_crops(Path(golden.data_yaml))
    if not 0 < count <= len(crops):
        raise SystemExit(f"--count must be between 1 and {len(crops)}, the golden crops there are")
    pick = sorted(np.random.default_rng(SAMPLE_SEED).choice(len(crops), count, replace=False).tolist())
    header = f"# golden crops {golden.fingerprint[:16]}, sample seed {SAMPLE_SEED}, {count} crops"
    return [crops[i] for i in pick], [truth[i] for i in pick], header


def write_sheets(crops: list[np.ndarray], out: Path, header: str, tiles_too: bool = False) -> None:
    """Numbered contact sheets of the crops, each enlarged to fill its tile, and an empty readings file (never over
    one that holds readings); with ``tiles_too`` also each numbered tile on its own, three times larger
    (``tile-N.png``), for a reading crop by crop."""
    readings = out / "readings.txt"
    if readings.is_file() and any(line.split()[1:] for line in readings.read_text(encoding="utf-8").splitlines()
                                  if line.startswith("#") and not line.startswith("# ")):
        raise SystemExit(f"{readings} already holds readings; write the sheets to a new folder")
    out.mkdir(parents=True, exist_ok=True)
    tiles = []
    for n, crop in enumerate(crops):
        scale = min((TILE_H - 28) / crop.shape[0], TILE_W / crop.shape[1])
        big = cv2.resize(crop, (int(crop.shape[1] * scale), int(crop.shape[0] * scale)), interpolation=cv2.INTER_CUBIC)
        tile = np.full((TILE_H, TILE_W, 3), 255, np.uint8)
        tile[: big.shape[0], : big.shape[1]] = big
        cv2.putText(tile, f"#{n}", (3, TILE_H - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 0, 0), 2)
        tiles.append(tile)
        if tiles_too:
            cv2.imwrite(str(out / f"tile-{n}.png"), cv2.resize(tile, (3 * TILE_W, 3 * TILE_H),
                                                               interpolation=cv2.INTER_LANCZOS4))
    blank = np.full((TILE_H, TILE_W, 3), 255, np.uint8)
    for sheet, start in enumerate(range(0, len(tiles), PER_SHEET)):
        page = tiles[start: start + PER_SHEET]
        page += [blank] * (-len(page) % PER_ROW)
        rows = [np.hstack(page[r: r + PER_ROW]) for r in range(0, len(page), PER_ROW)]
        cv2.imwrite(str(out / f"sheet-{sheet}.png"), np.vstack(rows))
    readings.write_text(header + "\n" + "".join(f"#{n} \n" for n in range(len(crops))), encoding="utf-8")


def read_readings(path: Path, count: int, header: str) -> list[str]:
    """The sample's ``header`` line (the readings are of these crops), then a line ``#n TEXT`` per crop, in order
    (as ``sheets`` writes them); ``#n ?`` or ``#n`` alone where the crop cannot be read. Spaces and dashes inside
    TEXT are dropped, letters upper-cased."""
    texts = []
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].strip() != header:
        raise SystemExit(f"{path} reads another sample than this machine's ({header!r}; the file starts "
                         f"{(lines or [''])[0]!r}): the golden crops or the sample changed; read new sheets")
    for line_no, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        number, text = (line.split(maxsplit=1) + [""])[:2]
        if number != f"#{len(texts)}":
            raise SystemExit(f"{path}:{line_no}: expected the reading of crop #{len(texts)} (a line '#{len(texts)} "
                             f"TEXT'), got {line.strip()!r}")
        text = "".join(text.split()).replace("-", "").upper()
        texts.append("" if text == "?" else text)
    if len(texts) != count:
        raise SystemExit(f"{path} has {len(texts)} readings; the sample has {count} crops (--count)")
    return texts


def read_as(reading: str, truth: str) -> bool:
    """A reading by eye is right when it is the truth, Cyrillic letters typed as their Latin look-alikes."""
    return reading == truth or reading.translate(LOOK_ALIKES) == truth


def by_eye_scores(truth: list[str], readings: dict[str, list[str]], machine: list[str] | None = None,
                  widths: list[float] | None = None) -> dict:
    """Each reading by eye (by file) scored against ``truth``, and the crops any and all of them read; with the
    reader's texts (``machine``), what it reads of those, the crops every reading reads and it misses, and the crops
    it reads and no reading does; with the plates' ``widths`` (px), the same counts by the gate's width bands."""
    if not readings:
        raise ValueError("no readings to score: give at least one readings file")
    by_eye = {name: [read_as(r, t) for r, t in zip(texts, truth, strict=True)] for name, texts in readings.items()}
    anyone = [any(hits) for hits in zip(*by_eye.values(), strict=True)]
    everyone = [all(hits) for hits in zip(*by_eye.values(), strict=True)]

    def listed(keep: list[bool]) -> list[str]:
        """The crops kept, as ``#n TEXT``: the number finds a crop on the sheets."""
        return [f"#{n} {t}" for n, (t, k) in enumerate(zip(truth, keep, strict=True)) if k]

    result: dict[str, object] = {"crops": len(truth),
                                 "read_by_each": {name: sum(hits) for name, hits in by_eye.items()},
                                 "read_by_any": sum(anyone), "read_by_all": sum(everyone),
                                 "unread_by_any": listed([not ok for ok in anyone])}
    if machine is not None:
        hit = [m == t for m, t in zip(machine, truth, strict=True)]
        result.update({"read_by_reader": sum(hit),
                       "read_by_reader_and_any": sum(a and b for a, b in zip(anyone, hit, strict=True)),
                       "read_by_reader_and_all": sum(a and b for a, b in zip(everyone, hit, strict=True)),
                       "read_by_all_missed_by_reader": listed([a and not b for a, b in zip(everyone, hit,
                                                                                            strict=True)]),
                       "read_by_reader_alone": listed([b and not a for a, b in zip(anyone, hit, strict=True)])})
    if widths is not None:
        from alpr_pipelines.lib.reader_eval import width_groups

        if len(widths) != len(truth):
            raise ValueError(f"{len(widths)} widths for {len(truth)} crops: give one per crop")
        columns = {"read_by_any": anyone, "read_by_all": everyone,
                   **({"read_by_reader": hit} if machine is not None else {})}
        result["by_plate_width"] = [{"band": band, "crops": len(ids),
                                     **{name: sum(hits[i] for i in ids) for name, hits in columns.items()}}
                                    for band, ids in width_groups(widths).items()]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sheets = sub.add_parser("sheets", help="write the contact sheets and an empty readings file")
    sheets.add_argument("out", type=Path)
    sheets.add_argument("--tiles", action="store_true", help="also each crop on its own, enlarged (tile-N.png)")
    score = sub.add_parser("score", help="score readings by eye (and a reader) on the sample")
    score.add_argument("readings", type=Path, nargs="+", help="one file per reading of the sample")
    score.add_argument("--reader-onnx", type=Path, help="also read the sample with this plate reader")
    for p in (sheets, score):
        p.add_argument("--count", type=int, default=100, help="crops in the sample (default 100)")
    args = parser.parse_args()

    if args.command == "score" and len(set(args.readings)) < len(args.readings):
        raise SystemExit("a readings file is named twice; name each reading once")
    crops, truth, header = golden_sample(args.count)
    if args.command == "sheets":
        write_sheets(crops, args.out, header, tiles_too=args.tiles)
        print(f"{len(crops)} crops on {(len(crops) + PER_SHEET - 1) // PER_SHEET} sheets in {args.out}; "
              f"write each crop's text after its number in {args.out / 'readings.txt'}")
        return 0
    readings = {str(path): read_readings(path, len(truth), header) for path in args.readings}
    machine = None
    if args.reader_onnx:
        from alpr_pipelines.edge.reader import OnnxPlateReader

        reader = OnnxPlateReader(args.reader_onnx, providers=["CPUExecutionProvider"])
        machine = [r.text for r in reader.read(crops)]
    from alpr_pipelines.lib.reader_eval import plate_width

    result = by_eye_scores(truth, readings, machine, [plate_width(crop) for crop in crops])
    print(json.dumps(result, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
