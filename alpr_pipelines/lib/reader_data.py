"""Plate-reader datasets: plate crops with their text, synthetic or the user's, validated and fingerprinted.

On disk a reader dataset is a folder per split (``train``, ``val``; the golden set has ``val`` only), each with its
images and a ``labels.csv`` of ``image,text[,top_line]`` rows (the format plate-OCR tools commonly use), and a
``reader.json`` naming the alphabet and maximum text length. Texts are kept normalized (:func:`normalize_text`):
upper case, separators (spaces, hyphens, dots) dropped, the lines of a two-line plate joined top to bottom. An
optional third column, ``top_line``, names the top text line's characters (the whole text on a one-line plate):
where it is known, training tells the reader which line each character is on (``reader_model``) instead of leaving
it to find out. Synthetic crops always have it.

Sources:
- synthetic: crops of plates as the plate detector hands them to the reader (``synth.plate_close_up``: the scenes'
  formats, character sets, one- and two-line plates, turns, dirt, lighting, blur and noise), cut with detector-like
  jitter around the plate box;
- a folder of crops with a labels CSV (``image,text[,top_line]``);
- whole images with plate boxes and their text: COCO JSON (an annotation's ``text`` or ``attributes.text``; a text
  of two lines names its top line) or YOLO label files whose lines end in the text (``class cx cy w h TEXT``); each
  box is cut out as the edge cuts it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import unicodedata
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from alpr_pipelines.edge.reader import MIN_READ_WIDTH, margin_crop, read_region
from alpr_pipelines.lib.datasets import (
    IMAGE_SUFFIXES,
    MAX_IMAGE_PIXELS,
    DatasetError,
    DatasetValidationError,
    Problem,
    header_pixels,
)
from alpr_pipelines.lib.plates import CYRILLIC, DIGITS, machine_fonts_digest
from alpr_pipelines.lib.synth import CLOSE_UP_VERSION, GENERATOR_VERSION, plate_close_up

LATIN_ALL = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ALPHABET = DIGITS + LATIN_ALL + CYRILLIC  # what the reader can write; the model's metadata carries its own copy
MAX_TEXT_LENGTH = 10
SEPARATORS = " -.\u00b7_\r\n\t"
LABELS = "labels.csv"
LABEL_COLUMNS = ("image", "text", "top_line")  # the third optional (Sample.top_line)
LabelledCrop = tuple[bytes, str] | tuple[bytes, str, str]  # a PNG-encoded crop, its text[, its top line]
MANIFEST = "reader.json"
READER_SPLITS = ("train", "val")
MAX_CROP_PIXELS = 4_000_000  # a plate crop is small; anything larger is not a crop


def normalize_text(text: str) -> str:
    """Upper case, NFC, separators dropped: ``"ab-123 c"`` -> ``"AB123C"``. Other characters are kept as they are, so
    validation can name the ones outside the alphabet."""
    text = unicodedata.normalize("NFC", text).upper()
    return "".join(ch for ch in text if ch not in SEPARATORS)


def text_problems(text: str, alphabet: str = ALPHABET, max_length: int = MAX_TEXT_LENGTH) -> list[str]:
    """Why ``text`` (normalized) cannot be a label: empty, longer than ``max_length``, or characters outside
    ``alphabet``. Empty list: it can."""
    if not text:
        return ["empty text"]
    problems = []
    if len(text) > max_length:
        problems.append(f"{len(text)} characters, over the maximum of {max_length}")
    outside = sorted({ch for ch in text if ch not in alphabet})
    if outside:
        problems.append(f"characters outside the alphabet: {' '.join(repr(c) for c in outside)}")
    return problems


@dataclass(frozen=True)
class Sample:
    image: Path
    text: str
    top_line: str = ""  # the top text line's characters (a prefix of text; all of it on one line); "": not known


@dataclass
class ReaderDataset:
    """A validated reader dataset: where it is, its samples per split, alphabet, maximum length and fingerprint."""

    root: Path
    alphabet: str
    max_length: int
    splits: dict[str, list[Sample]] = field(default_factory=dict)
    fingerprint: str = ""

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.splits.items()}

    def as_dict(self) -> dict:
        return {"root": str(self.root), "alphabet": self.alphabet, "max_length": self.max_length,
                "images": self.counts(), "fingerprint": self.fingerprint}


# --------------------------------------------------------------------------------------------- writing


def _write_labels(split_dir: Path, rows: list[tuple[str, ...]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(LABEL_COLUMNS[: max((len(r) for r in rows), default=2)])
    writer.writerows(rows)
    tmp = split_dir / f".{LABELS}.tmp"
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    os.replace(tmp, split_dir / LABELS)


def _write_manifest(root: Path, alphabet: str, max_length: int, extra: dict | None = None) -> None:
    data = {"alphabet": alphabet, "max_length": max_length, **(extra or {})}
    tmp = root / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(data, ensure_ascii=False, sort_keys=True), encoding="utf-8")
    os.replace(tmp, root / MANIFEST)


def _encode(image: np.ndarray) -> bytes:
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise DatasetError("could not encode a plate crop as PNG")
    return png.tobytes()


def jittered_crop(image: np.ndarray, box, rng: np.random.Generator | None) -> np.ndarray:
    """The plate ``box`` cut out as the edge cuts a detected plate (:func:`edge.reader.read_region`'s margin); with
    ``rng``, each side moves by up to 8% of the plate's size either way, as a detector's box does."""
    x1, y1, x2, y2 = box.x1, box.y1, box.x2, box.y2
    if rng is not None:
        w, h = x2 - x1, y2 - y1
        dx1, dy1, dx2, dy2 = rng.uniform(-0.08, 0.08, 4) * [w, h, w, h]
        x1, y1, x2, y2 = x1 + dx1, y1 + dy1, x2 + dx2, y2 + dy2
    return margin_crop(image, x1, y1, x2, y2)


def _synthetic_chunk(args: tuple[int, str, int, int, bool]) -> list[tuple[bytes, str, str]]:
    seed, purpose, start, stop, jitter = args
    out = []
    for index in range(start, stop):
        scene = plate_close_up(seed, purpose, index)
        plate = scene.plates[0]
        if plate.x2 - plate.x1 < MIN_READ_WIDTH:
            continue  # the edge does not read plates this small
        rng = np.random.default_rng([seed, index, 17]) if jitter else None
        crop = jittered_crop(scene.image, plate, rng)
        out.append((_encode(crop), normalize_text(plate.text), normalize_text(plate.text.split("\n")[0])))
    return out


def synthetic_crops(seed: int, purpose: str, count: int, jitter: bool,
                    workers: int = 0) -> Iterator[tuple[bytes, str, str]]:
    """``count`` PNG-encoded plate crops of the stream ``(seed, purpose)``, their texts and top lines, in index
    order (on ``workers`` processes; 0: one per usable core)."""
    workers = workers or max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    chunk = 100
    # Indices whose plate is too small to read are skipped: a few more are drawn, and the first ``count`` kept.
    planned = count + count // 8 + chunk
    jobs = [(seed, purpose, i, min(i + chunk, planned), jitter) for i in range(0, planned, chunk)]
    made = 0
    if workers == 1 or len(jobs) == 1:
        parts: Iterator[list[tuple[bytes, str, str]]] = map(_synthetic_chunk, jobs)
    else:
        pool = ProcessPoolExecutor(workers)
        parts = pool.map(_synthetic_chunk, jobs)
    try:
        for part in parts:
            for sample in part[: count - made]:
                yield sample
                made += 1
            if made >= count:
                break
    finally:
        if workers != 1 and len(jobs) != 1:
            pool.shutdown(cancel_futures=True)
    if made < count:
        raise DatasetError(f"the synthetic stream gave {made} readable plates of the {count} asked for")


def synthetic_reader_key(seed: int, train: int, val: int, purposes: tuple[str, str] = ("train", "val"),
                         top_lines: bool = True) -> str:
    """Identity of a synthetic reader dataset: its settings, the generator's versions and this machine's fonts."""
    settings = {"generator": f"{GENERATOR_VERSION}.{CLOSE_UP_VERSION}", "fonts": machine_fonts_digest(),
                "seed": seed, "train": train, "val": val, "purposes": purposes, "alphabet": ALPHABET,
                "max_length": MAX_TEXT_LENGTH}
    if top_lines:  # sets written before the column keep their keys (and the golden crops their fingerprint)
        settings["labels"] = list(LABEL_COLUMNS)
    blob = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_reader_split(root: Path, split: str, samples: Iterable[LabelledCrop]) -> int:
    """Write one split (PNG bytes, text[, top line]) into ``root/split`` atomically: a split is complete or
    absent."""
    final = root / split
    tmp = root / f".{split}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rows = []
    for i, (png, *labels) in enumerate(samples):
        name = f"{i:06d}.png"
        (tmp / name).write_bytes(png)
        rows.append((name, *labels))
    _write_labels(tmp, rows)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return len(rows)


def write_synthetic_reader_dataset(out_dir: Path, seed: int, train: int, val: int,
                                   purposes: tuple[str, str] = ("train", "val"), jitter: bool = True,
                                   top_lines: bool = True) -> Path:
    """A synthetic reader dataset under ``out_dir/<key>`` (reused when complete): ``train`` and ``val`` crops of the
    streams ``purposes``, with their top lines when ``top_lines`` (scoring does not need them). Returns its root."""
    root = out_dir / synthetic_reader_key(seed, train, val, purposes, top_lines)
    if (root / MANIFEST).is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    for split, purpose, count in (("train", purposes[0], train), ("val", purposes[1], val)):
        if count:
            crops = synthetic_crops(seed, purpose, count, jitter)
            write_reader_split(root, split, crops if top_lines else (c[:2] for c in crops))
    _write_manifest(root, ALPHABET, MAX_TEXT_LENGTH, {"source": "synthetic", "seed": seed})
    return root


# --------------------------------------------------------------------------------------------- user data


def _read_image(path: Path) -> tuple[np.ndarray | None, str | None]:
    if not path.is_file():
        return None, "listed but not found"
    raw = path.read_bytes()
    pixels = header_pixels(raw)
    if pixels is not None and pixels > MAX_IMAGE_PIXELS:
        return None, f"{pixels:,} pixels (limit {MAX_IMAGE_PIXELS:,}); resize it"
    image = None if pixels is None else cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    return image, None if image is not None else "cannot be decoded as an image"


def _inside(root: Path, name: str) -> Path | None:
    """``root/name`` when it stays inside ``root`` (a labels file is untrusted: no absolute paths, no ``..``)."""
    candidate = (root / name).resolve()
    return candidate if candidate.is_relative_to(root.resolve()) else None


def read_labels_csv(labels: Path) -> list[tuple[int, str, str, str]]:
    """(line, image, text, top line) rows of an ``image,text[,top_line]`` CSV (a header row is optional; the top
    line is "" where the row has no third column).

    Raises:
        DatasetError: the file is missing, not UTF-8, or a row does not have two or three columns.
    """
    if not labels.is_file():
        raise DatasetError(f"labels file {labels} does not exist; a reader dataset needs a CSV of image,text rows")
    try:
        text = labels.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"labels file {labels} is not UTF-8 text: {exc}") from exc
    rows = []
    try:
        for n, row in enumerate(csv.reader(io.StringIO(text)), 1):
            header = n == 1 and len(row) > 1 and tuple(c.strip().lower() for c in row) == LABEL_COLUMNS[: len(row)]
            if not row or header:
                continue
            if len(row) not in (2, 3):
                raise DatasetError(f"{labels}:{n}: expected the columns image,text (and optionally top_line), got "
                                   f"{len(row)}: {row!r}")
            rows.append((n, row[0].strip(), row[1], row[2] if len(row) == 3 else ""))
    except csv.Error as exc:
        raise DatasetError(f"labels file {labels} is not a CSV of image,text rows: {exc}") from exc
    return rows


def top_line_problem(text: str, top_line: str) -> str | None:
    """Why ``top_line`` (normalized) cannot be ``text``'s top line: it must be a non-empty start of the text (all of
    it on a one-line plate). None: it can, or it is "" (not known)."""
    if not top_line or text.startswith(top_line):
        return None
    return f"top_line {top_line!r} is not the start of the text {text!r} (the whole text on a one-line plate)"


def import_labelled_crops(source: Path, labels: Path, out_dir: Path, val_share: float = 0.1,
                          alphabet: str = ALPHABET, max_length: int = MAX_TEXT_LENGTH) -> Path:
    """A reader dataset from a folder of plate crops and an ``image,text[,top_line]`` CSV: validated first (every
    problem listed by file, nothing written), then split by a hash of each image's bytes (``val_share`` to val).
    Returns its root.

    Raises:
        DatasetValidationError: unreadable images, empty or over-long texts, characters outside the alphabet, a top
            line that does not start the text.
    """
    problems: list[Problem] = []
    samples: list[LabelledCrop] = []
    for n, name, raw_text, raw_top in read_labels_csv(labels):
        path = _inside(source, name)
        if path is None:
            problems.append(Problem("bad path", f"{labels}:{n}", f"{name!r} is outside {source}"))
            continue
        image, why = _read_image(path)
        text, top = normalize_text(raw_text), normalize_text(raw_top)
        for p in text_problems(text, alphabet, max_length):
            problems.append(Problem("bad text", str(path), f"{raw_text!r}: {p}"))
        if (bad_top := top_line_problem(text, top)) is not None:
            problems.append(Problem("bad top line", str(path), bad_top))
        if image is None:
            problems.append(Problem("unreadable image", str(path), why or "unreadable"))
            continue
        samples.append((_encode(image), text, top) if top else (_encode(image), text))
    if not samples and not problems:
        problems.append(Problem("empty dataset", str(labels), "no rows"))
    if problems:
        raise DatasetValidationError(labels, problems)
    return _write_user_dataset(out_dir, samples, val_share, alphabet, max_length, {"source": str(labels)})


Boxes = list[tuple[str, list[float], str]]  # (where, box, raw text); a box of 5 numbers is YOLO's normalized one


def _boxes_from_coco(coco_json: Path) -> Iterator[tuple[Path | str, Boxes]]:
    """(image path, its boxes) per COCO image; a file name that leaves the folder comes back as the name itself."""
    try:
        data = json.loads(coco_json.read_text(encoding="utf-8"))
        root = coco_json.parent
        by_image: dict[int, Boxes] = {}
        for ann in data.get("annotations", []):
            text = ann.get("text")
            if text is None and isinstance(ann.get("attributes"), dict):
                text = ann["attributes"].get("text")
            x, y, w, h = (float(v) for v in ann["bbox"])
            by_image.setdefault(ann["image_id"], []).append((f"annotation {ann.get('id')}", [x, y, x + w, y + h],
                                                             "" if text is None else str(text)))
        images = [(str(img["file_name"]), img["id"]) for img in data.get("images", [])]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DatasetError(f"{coco_json} is not a COCO annotation file with images and bbox annotations ({exc!r}); "
                           "each annotation needs image_id, bbox [x, y, w, h] and text (or attributes.text)") from exc
    for name, image_id in images:
        yield _inside(root, name) or name, by_image.get(image_id, [])


def _boxes_from_yolo(images_dir: Path) -> Iterator[tuple[Path | str, Boxes]]:
    """(image path, its boxes) per image under ``images_dir`` with YOLO labels ending in the text; an image that
    leaves the folder, or a label that is a symlink, comes back as the image's name."""
    from alpr_pipelines.lib.datasets import label_path

    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir} is neither a COCO JSON file nor a folder of images with YOLO labels")
    for image in sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        lbl = label_path(image)
        if _inside(images_dir, str(image.relative_to(images_dir))) is None or lbl.is_symlink():
            yield str(image.relative_to(images_dir)), [("path", [], "")]
            continue
        boxes: Boxes = []
        try:
            lines = lbl.read_text(encoding="utf-8").splitlines() if lbl.is_file() else []
        except UnicodeDecodeError:
            lines, boxes = [], [(f"{lbl}", [], "not UTF-8 text")]
        for n, line in enumerate(lines, 1):
            fields = line.split(maxsplit=5)
            if not fields:
                continue
            try:
                cx, cy, w, h = (float(v) for v in fields[1:5])
            except ValueError:
                boxes.append((f"{lbl}:{n}", [], f"expected 'class cx cy w h TEXT', got {line!r}"))
                continue
            boxes.append((f"{lbl}:{n}", [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, -1.0],
                          fields[5] if len(fields) > 5 else ""))
        yield image, boxes


def import_boxes_with_text(source: Path, out_dir: Path, val_share: float = 0.1, alphabet: str = ALPHABET,
                           max_length: int = MAX_TEXT_LENGTH) -> Path:
    """A reader dataset from whole images with plate boxes and text: a COCO JSON file, or a folder of images with
    YOLO labels ending in the text. Each box is cut out as the edge cuts a detected plate; a COCO text with a line break
    (``"AB12\\n3456"``) gives the crop its top line (its first line with characters). Returns its root.

    Raises:
        DatasetValidationError: unreadable images, boxes without text, bad boxes, texts the reader cannot write.
    """
    entries = _boxes_from_coco(source) if source.suffix.lower() == ".json" else _boxes_from_yolo(source)
    problems: list[Problem] = []
    samples: list[LabelledCrop] = []
    for image_path, boxes in entries:
        if not boxes:
            continue
        if isinstance(image_path, str):  # a name that leaves the source folder
            problems.append(Problem("bad path", image_path, f"outside {source.parent if source.is_file() else source}"))
            continue
        bad_labels = [(where, detail) for where, box, detail in boxes if not box]
        if bad_labels:
            problems.extend(Problem("bad label", where, detail) for where, detail in bad_labels)
            continue
        image, why = _read_image(image_path)
        if image is None:
            problems.append(Problem("unreadable image", str(image_path), why or "unreadable"))
            continue
        fh, fw = image.shape[:2]
        for where, box, raw_text in boxes:
            if len(box) == 5:  # YOLO: normalized
                box = [box[0] * fw, box[1] * fh, box[2] * fw, box[3] * fh]
            text = normalize_text(raw_text)
            bad = text_problems(text, alphabet, max_length)
            if bad:
                problems.extend(Problem("bad text", f"{image_path} ({where})", f"{raw_text!r}: {p}") for p in bad)
                continue
            if len(box) != 4 or not (0 <= box[0] < box[2] <= fw and 0 <= box[1] < box[3] <= fh):
                problems.append(Problem("bad box", f"{image_path} ({where})", f"{box} is not inside the image"))
                continue
            crop = read_region(image, *box)
            if crop is None:
                problems.append(Problem("plate too small", f"{image_path} ({where})",
                                        "narrower than the reader reads (edge.reader.MIN_READ_WIDTH)"))
                continue
            # A COCO text with a line break names its top line: its first line with characters; the rest is the
            # bottom line (a YOLO label line cannot hold a break).
            lines = [line for line in map(normalize_text, raw_text.splitlines()) if line]
            samples.append((_encode(crop), text, lines[0]) if len(lines) > 1 else (_encode(crop), text))
    if not samples and not problems:
        problems.append(Problem("empty dataset", str(source), "no plate boxes with text found"))
    if problems:
        raise DatasetValidationError(source, problems)
    return _write_user_dataset(out_dir, samples, val_share, alphabet, max_length, {"source": str(source)})


def _write_user_dataset(out_dir: Path, samples: list[LabelledCrop], val_share: float,
                        alphabet: str, max_length: int, extra: dict) -> Path:
    """Split validated samples into train and val by content and write them; the same crop twice with two texts, or
    two top lines, is refused (which is right cannot be known; a top line given once and not the other time is
    not a contradiction)."""
    crop_digests = [hashlib.sha256(png).digest() for png, *_ in samples]  # each crop's bytes hashed once
    texts: dict[bytes, set[str]] = {}
    tops: dict[bytes, set[str]] = {}
    for digest_of_crop, (_, text, *top) in zip(crop_digests, samples, strict=True):
        texts.setdefault(digest_of_crop, set()).add(text)
        tops.setdefault(digest_of_crop, set()).update(top)
    conflicts = [Problem("conflicting labels", extra["source"], f"one crop is labelled {sorted(texts[crop])}"
                         + (f" with the top lines {sorted(tops[crop])}" if len(tops[crop]) > 1 else ""))
                 for crop in texts if len(texts[crop]) > 1 or len(tops[crop]) > 1]
    if conflicts:
        raise DatasetValidationError(Path(extra["source"]), conflicts)
    digest = hashlib.sha256()
    for digest_of_crop, (_, text, *top) in zip(crop_digests, samples, strict=True):
        digest.update(digest_of_crop + text.encode() + (f"\0{top[0]}".encode() if top else b""))
    digest.update(f"{val_share}".encode())
    if len(samples) < 2:  # refused before its folder exists: nothing left half-written
        raise DatasetError(f"{extra['source']}: {len(samples)} usable crop; a reader needs at least one to train on "
                           "and one to validate with")
    root = out_dir / digest.hexdigest()[:16]
    root.mkdir(parents=True, exist_ok=True)
    to_val = [int.from_bytes(d[:4], "big") / 2**32 < val_share for d in crop_digests]
    if not any(to_val) or all(to_val):  # a small import still trains on one crop and validates on another
        to_val = [i == len(samples) - 1 for i in range(len(samples))]
    write_reader_split(root, "train", (x for x, v in zip(samples, to_val, strict=True) if not v))
    write_reader_split(root, "val", (x for x, v in zip(samples, to_val, strict=True) if v))
    _write_manifest(root, alphabet, max_length, extra)
    return root


# --------------------------------------------------------------------------------------------- validation


def validate_reader_dataset(root: Path, required_splits: tuple[str, ...] = READER_SPLITS) -> ReaderDataset:
    """Check every crop and label of a reader dataset; return its samples and content fingerprint.

    Checks, listed by file: the labels CSV parses; every image exists inside the split folder, decodes, and is a
    crop (not over :data:`MAX_CROP_PIXELS`); every text is non-empty, at most the maximum length, in the alphabet;
    required splits are not empty; no image is in two splits.

    Raises:
        DatasetError: no ``reader.json``, or it is malformed.
        DatasetValidationError: listing every problem found, with its file.
    """
    root = Path(root).resolve()
    try:
        meta = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
        alphabet, max_length = str(meta["alphabet"]), int(meta["max_length"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{root} is not a reader dataset: its {MANIFEST} is missing or malformed ({exc}); the "
                           "ocr/dataset asset makes one (or `alpr train --name ocr --data labels.csv`)") from exc
    if not alphabet or len(set(alphabet)) != len(alphabet) or not 1 <= max_length <= 32:
        raise DatasetError(f"{root / MANIFEST}: the alphabet must be non-empty without repeats and max_length "
                           f"between 1 and 32 (got {len(alphabet)} characters, {max_length})")
    dataset = ReaderDataset(root, alphabet, max_length)
    problems: list[Problem] = []
    digest = hashlib.sha256(json.dumps({"alphabet": alphabet, "max_length": max_length}).encode())
    seen: dict[str, str] = {}
    for split in READER_SPLITS:
        split_dir = root / split
        if not (split_dir / LABELS).is_file():
            if split in required_splits:
                problems.append(Problem("empty split", str(split_dir), f"the {split} split has no {LABELS}"))
            continue
        try:
            rows = read_labels_csv(split_dir / LABELS)
        except DatasetError as exc:
            problems.append(Problem("bad labels", str(split_dir / LABELS), str(exc)))
            continue
        samples = []
        for n, name, text, top in rows:
            path = _inside(split_dir, name)
            if path is None:
                problems.append(Problem("bad path", f"{split_dir / LABELS}:{n}", f"{name!r} is outside {split_dir}"))
                continue
            for p in text_problems(text, alphabet, max_length):
                problems.append(Problem("bad text", str(path), f"{text!r}: {p}"))
            if (bad_top := top_line_problem(text, top)) is not None:
                problems.append(Problem("bad top line", str(path), bad_top))
            if not path.is_file():
                problems.append(Problem("missing image", str(path), "listed but not found"))
                continue
            raw = path.read_bytes()
            pixels = header_pixels(raw)
            if pixels is None or cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR) is None:
                problems.append(Problem("unreadable image", str(path), "cannot be decoded as an image"))
                continue
            if pixels > MAX_CROP_PIXELS:
                problems.append(Problem("not a crop", str(path), f"{pixels:,} pixels; a plate crop has at most "
                                        f"{MAX_CROP_PIXELS:,}"))
                continue
            content = hashlib.sha256(raw).hexdigest()
            if seen.get(content, split) != split:
                problems.append(Problem("leak", str(path), f"the same crop is in {seen[content]}"))
            seen.setdefault(content, split)
            digest.update(f"{split}\0{name}\0{content}\0{text}\0".encode())
            if top:  # datasets without the column keep their fingerprints
                digest.update(f"top\0{top}\0".encode())
            samples.append(Sample(path, text, top))
        if split in required_splits and not samples and not any(p.path.startswith(str(split_dir)) for p in problems):
            problems.append(Problem("empty split", str(split_dir), f"the {split} split has no crops"))
        dataset.splits[split] = samples
    if problems:
        raise DatasetValidationError(root, problems)
    dataset.fingerprint = digest.hexdigest()
    return dataset


def check_reader_disjoint(dataset: ReaderDataset, golden_root: Path) -> None:
    """No crop of ``dataset`` may be a golden crop (same bytes): the golden set measures what training never saw.

    Raises:
        DatasetValidationError: listing each training crop that is also golden.
    """
    golden = {hashlib.sha256(p.read_bytes()).hexdigest(): p for p in sorted((golden_root / "val").glob("*.png"))}
    problems = [Problem("leak", str(s.image), f"the same crop is golden: {golden[h]}")
                for samples in dataset.splits.values() for s in samples
                if (h := hashlib.sha256(s.image.read_bytes()).hexdigest()) in golden]
    if problems:
        raise DatasetValidationError(dataset.root, problems)


def load_split_crops(samples: list[Sample]) -> list[np.ndarray]:
    """The crops of ``samples`` as BGR arrays.

    Raises:
        DatasetError: a crop cannot be read (validate the dataset again).
    """
    crops = []
    for s in samples:
        image = cv2.imread(str(s.image), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"{s.image} cannot be read; validate the dataset again")
        crops.append(image)
    return crops
