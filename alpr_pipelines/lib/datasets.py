"""YOLO-format datasets: writing synthetic ones, reading any Ultralytics data YAML, validating, fingerprinting.

A dataset is described by an Ultralytics data YAML (``path``, ``train``, ``val``, optional ``test``, ``names``).
Split entries may be a folder of images, a ``.txt`` list of image paths, or a list of either. Labels live beside
images with ``/images/`` replaced by ``/labels/`` and a ``.txt`` suffix, as Ultralytics expects.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from alpr_pipelines.edge.integrity import sha256_file
from alpr_pipelines.lib.models import ModelSpec
from alpr_pipelines.lib.plates import machine_fonts_digest
from alpr_pipelines.lib.synth import GENERATOR_VERSION, PURPOSES, Scene, generate_scene
from alpr_pipelines.lib.views import view_images

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
MAX_IMAGE_PIXELS = 40_000_000  # refused from the header, before decoding (a 40 MP frame is past any ALPR camera)
SPLITS = ("train", "val", "test")


class DatasetError(Exception):
    """A dataset cannot be used; the message names the files and what to do."""


@dataclass(frozen=True)
class Problem:
    kind: str
    path: str
    detail: str


@dataclass
class DatasetSummary:
    """What validation learned about a dataset (counts are per split)."""

    data_yaml: Path
    names: dict[int, str]
    images: dict[str, int] = field(default_factory=dict)
    instances: dict[str, dict[str, int]] = field(default_factory=dict)
    fingerprint: str = ""

    def as_dict(self) -> dict:
        return {
            "data_yaml": str(self.data_yaml),
            "names": {str(k): v for k, v in self.names.items()},
            "images": self.images,
            "instances": self.instances,
            "fingerprint": self.fingerprint,
        }


class DatasetValidationError(DatasetError):
    """Validation found problems; ``problems`` lists each with its file."""

    def __init__(self, data_yaml: Path, problems: list[Problem]):
        self.problems = problems
        kinds = Counter(p.kind for p in problems)
        shown = "\n".join(f"  - {p.kind}: {p.path}: {p.detail}" for p in problems[:25])
        more = f"\n  ... and {len(problems) - 25} more" if len(problems) > 25 else ""
        summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        super().__init__(
            f"dataset {data_yaml} failed validation ({summary}); nothing was trained or registered.\n{shown}{more}\n"
            "Fix or remove these files (or their labels) and run again."
        )


# --------------------------------------------------------------------------------------------- writing


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _label_lines(boxes: Iterable, names: dict[int, str], width: int, height: int) -> str:
    ids = {v: k for k, v in names.items()}
    lines = []
    for box in boxes:
        cx, cy, w, h = box.yolo(width, height)
        lines.append(f"{ids[box.cls]} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return "\n".join(lines) + ("\n" if lines else "")


def write_data_yaml(root: Path, names: dict[int, str], splits: Iterable[str]) -> Path:
    data = {"path": str(root), **{s: f"images/{s}" for s in splits}, "names": {int(k): v for k, v in names.items()}}
    path = root / "data.yaml"
    _write_atomic(path, yaml.safe_dump(data, sort_keys=False).encode())
    return path


def synthetic_key(seed: int, train_scenes: int, val_scenes: int, width: int, height: int) -> str:
    """Identity of a synthetic training set: its settings, the generator's version and this machine's fonts (its
    plates are drawn in them too), so a cached set is reused only where it would come out the same."""
    blob = json.dumps({"generator": GENERATOR_VERSION, "fonts": machine_fonts_digest(), "seed": seed,
                       "train_images": train_scenes, "val_images": val_scenes, "width": width, "height": height},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_synthetic_views(
    out_dir: Path,
    specs: Iterable[ModelSpec],
    seed: int,
    counts: dict[str, int],
    width: int = 640,
    height: int = 384,
    purpose: str | None = None,
) -> dict[str, Path]:
    """Render scenes once and write one YOLO dataset per model, each its model's view (``lib.views``) of the scenes,
    under ``out_dir/<key>``.

    Each split draws from the scene stream of the same name unless ``purpose`` names one stream for all splits (the
    golden set uses ``purpose="golden"``, a stream training never draws from). A view's jitter (the crops' margins)
    has a stream of its own per scene, so the same scenes always give the same images. Whole frames are hard-linked
    between the views (copied where links are not possible). The folder is built under a temporary name and renamed
    into place, so a crash never leaves a half-written dataset behind.

    Returns:
        Model key -> path of that view's ``data.yaml``.
    """
    specs = list(specs)
    final = {spec.key: out_dir / spec.key / "data.yaml" for spec in specs}
    if out_dir.exists() and all(p.exists() for p in final.values()):
        return final
    # A private temporary folder: two steps rendering the same scenes at once must not write into each other's.
    tmp = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        for split, n in counts.items():
            stream = purpose or split
            for i in range(n):
                scene: Scene = generate_scene(seed, stream, i, width, height)
                jitter = np.random.default_rng(np.random.SeedSequence([seed, PURPOSES[stream], i, 1]))
                frame_file: Path | None = None  # the scene's whole frame, written once and linked from other views
                for spec in specs:
                    for item in view_images(spec.view, scene, spec.classes, jitter):
                        stem = f"{split}_{i:05d}" + ("" if item.name == "frame" else f"_{item.name}")
                        img_path = tmp / spec.key / "images" / split / f"{stem}.jpg"
                        lbl_path = tmp / spec.key / "labels" / split / f"{stem}.txt"
                        img_path.parent.mkdir(parents=True, exist_ok=True)
                        lbl_path.parent.mkdir(parents=True, exist_ok=True)
                        if item.image is scene.image and frame_file is not None:
                            _link_or_copy(frame_file, img_path)
                        else:
                            _write_jpeg(img_path, item.image)
                            if item.image is scene.image:
                                frame_file = img_path
                        h, w = item.image.shape[:2]
                        lbl_path.write_text(_label_lines(item.boxes, spec.names, w, h))
        # data.yaml names its final location, so it is written after the rename; its absence marks an unfinished set.
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        if out_dir.exists() and not all(p.exists() for p in final.values()):
            shutil.rmtree(out_dir, ignore_errors=True)  # leftovers of a crash before data.yaml was written
        try:
            os.rename(tmp, out_dir)
        except OSError:
            if not out_dir.exists():
                raise
            return final  # a concurrent writer finished first; its scenes are identical
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for spec in specs:
        write_data_yaml(out_dir / spec.key, spec.names, counts)
    return final


def _write_jpeg(path: Path, image: np.ndarray) -> None:
    ok, jpg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise DatasetError(f"could not encode {path.name} as JPEG")
    path.write_bytes(jpg.tobytes())


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


# --------------------------------------------------------------------------------------------- reading


def load_data_yaml(data_yaml: Path) -> dict:
    data_yaml = Path(data_yaml).expanduser().resolve()
    if not data_yaml.is_file():
        raise DatasetError(f"data YAML {data_yaml} does not exist; pass the path to an Ultralytics data YAML")
    try:
        data = yaml.safe_load(data_yaml.read_text())
    except yaml.YAMLError as exc:
        raise DatasetError(f"data YAML {data_yaml} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"data YAML {data_yaml} must be a mapping with train, val and names keys")
    if "download" in data:
        raise DatasetError(f"data YAML {data_yaml} has a 'download' key; Ultralytics would run it when images are "
                           "missing. Remove it and put the images in place before training")
    missing = [k for k in ("val", "names") if k not in data]
    if missing:
        raise DatasetError(f"data YAML {data_yaml} lacks {', '.join(missing)}; an Ultralytics data YAML needs train, val and names")
    names = data["names"]
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict):
        raise DatasetError(f"data YAML {data_yaml}: names must be a list or an id -> name mapping")
    data["names"] = {int(k): str(v) for k, v in names.items()}
    root = Path(data.get("path") or data_yaml.parent)
    if not root.is_absolute():
        root = (data_yaml.parent / root).resolve()
    data["path"] = root
    return data


def header_pixels(raw: bytes) -> int | None:
    """Width x height from the image's header alone (no decoding); None when the header is unreadable."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as im:
            return int(im.size[0]) * int(im.size[1])
    except Image.DecompressionBombError:  # Pillow's own refusal: more than twice its pixel limit
        return sys.maxsize
    except Exception:  # noqa: BLE001 - any failure to read a header (Ultralytics patches Image.open) is "unreadable"
        return None


def resolved_data_yaml(data_yaml: Path, dest: Path) -> Path:
    """Write ``dest``: ``data_yaml`` as validation read it (root and splits absolute, no ``download``), so that
    Ultralytics, which resolves relative paths against the working directory, trains on the validated images."""
    data = load_data_yaml(data_yaml)
    root: Path = data["path"]
    out: dict = {"path": str(root), "names": data["names"]}
    for split in SPLITS:
        entries = data.get(split)
        if entries is None:
            continue
        absolute = [str(Path(e) if Path(e).is_absolute() else root / e) for e in
                    (entries if isinstance(entries, list) else [entries])]
        out[split] = absolute if isinstance(entries, list) else absolute[0]
    dest.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(dest, yaml.safe_dump(out, sort_keys=False).encode())
    return dest


def split_images(data: dict, split: str) -> list[Path]:
    """Image files of ``split`` in a loaded data YAML, sorted."""
    entries = data.get(split)
    if entries is None:
        return []
    root: Path = data["path"]
    images: list[Path] = []
    for entry in entries if isinstance(entries, list) else [entries]:
        p = Path(entry)
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            images.extend(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.suffix == ".txt" and p.is_file():
            for line in p.read_text().splitlines():
                if line.strip():
                    q = Path(line.strip())
                    images.append(q if q.is_absolute() else (p.parent / q).resolve())
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            images.append(p)
        else:
            raise DatasetError(f"{split} entry {p} is neither a folder of images, a .txt list nor an image")
    return sorted(set(images))


def label_path(image: Path) -> Path:
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def validate_dataset(
    data_yaml: Path,
    expected_names: dict[int, str] | None = None,
    required_splits: tuple[str, ...] = ("train", "val"),
) -> DatasetSummary:
    """Check every image and label of a dataset; return counts and the content fingerprint.

    Checks: the class names match ``expected_names`` (the model's contract), train and val are not empty, every image
    decodes, every label line has five numbers with a known class id and coordinates in [0, 1], and no image appears
    in more than one split (by content hash). ``required_splits`` must not be empty (the golden set has only val).

    Raises:
        DatasetValidationError: listing every problem found, with its file.
    """
    data = load_data_yaml(data_yaml)
    names: dict[int, str] = data["names"]
    summary = DatasetSummary(data_yaml=Path(data_yaml).resolve(), names=names)
    problems: list[Problem] = []
    if expected_names is not None and names != expected_names:
        problems.append(
            Problem("class names", str(data_yaml), f"dataset names {names} differ from the model's {expected_names}")
        )
    seen: dict[str, tuple[str, Path]] = {}
    digest = hashlib.sha256(json.dumps(names, sort_keys=True).encode())
    for split in SPLITS:
        images = split_images(data, split)
        if split in required_splits and not images:
            problems.append(Problem("empty split", str(data.get(split)), f"the {split} split has no images"))
        counter: Counter[str] = Counter()
        for image in images:
            rel = os.path.relpath(image, data["path"])
            if not image.is_file():
                problems.append(Problem("missing image", str(image), "listed but not found"))
                continue
            raw = image.read_bytes()
            content = hashlib.sha256(raw).hexdigest()
            pixels = header_pixels(raw)
            if pixels is not None and pixels > MAX_IMAGE_PIXELS:
                problems.append(Problem("image too large", str(image), f"{pixels:,} pixels (limit "
                                        f"{MAX_IMAGE_PIXELS:,}); resize it"))
                continue
            if pixels is None or cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR) is None:
                problems.append(Problem("unreadable image", str(image), "cannot be decoded as an image"))
            if content in seen and seen[content][0] != split:
                other_split, other = seen[content]
                problems.append(
                    Problem("leak", str(image), f"the same image is in {other_split} as {other} (sha256 {content[:12]})")
                )
            seen.setdefault(content, (split, image))
            lbl = label_path(image)
            label_text = lbl.read_text() if lbl.is_file() else ""
            for n, line in enumerate(label_text.splitlines(), 1):
                if not line.strip():
                    continue
                fields = line.split()
                try:
                    cls_id = int(fields[0])
                    coords = [float(v) for v in fields[1:]]
                except ValueError:
                    problems.append(Problem("bad label", f"{lbl}:{n}", f"not numbers: {line!r}"))
                    continue
                if len(coords) != 4:
                    problems.append(Problem("bad label", f"{lbl}:{n}", f"expected 'class cx cy w h', got {line!r}"))
                    continue
                if cls_id not in names:
                    problems.append(Problem("unknown class", f"{lbl}:{n}", f"class id {cls_id} not in {sorted(names)}"))
                    continue
                if not all(0.0 <= v <= 1.0 for v in coords):
                    problems.append(Problem("label out of range", f"{lbl}:{n}", f"coordinates {coords} not in [0, 1]"))
                    continue
                counter[names[cls_id]] += 1
            digest.update(f"{split}\0{rel}\0{content}\0".encode())
            digest.update(hashlib.sha256(label_text.encode()).digest())
        if images:
            summary.images[split] = len(images)
            summary.instances[split] = {name: counter.get(name, 0) for name in names.values()}
    if problems:
        raise DatasetValidationError(Path(data_yaml), problems)
    summary.fingerprint = digest.hexdigest()
    return summary


def check_disjoint(data_yaml: Path, other_yaml: Path) -> None:
    """Raise if any image of ``other_yaml`` (e.g. the golden set) also appears in ``data_yaml`` (by content)."""
    ours = {sha256_file(p): p for s in SPLITS for p in split_images(load_data_yaml(data_yaml), s)}
    problems = [
        Problem("leak", str(p), f"golden image also in training data as {ours[h]}")
        for s in SPLITS
        for p in split_images(load_data_yaml(other_yaml), s)
        if (h := sha256_file(p)) in ours
    ]
    if problems:
        raise DatasetValidationError(Path(data_yaml), problems)


# --------------------------------------------------------------------------------------------- mosaic


def sample_mosaic(data_yaml: Path, out_path: Path, n: int = 16, tile: int = 192) -> Path:
    """Draw the first ``n`` training images with their boxes into one JPEG a person can look at."""
    data = load_data_yaml(data_yaml)
    names = data["names"]
    images = split_images(data, "train")[:n]
    cols = 4
    rows = max(1, (len(images) + cols - 1) // cols)
    first = cv2.imread(str(images[0])) if images else None
    # Tiles take the images' aspect ratio (wide road scenes), so the mosaic has no empty bands.
    tile_h = tile if first is None else max(1, round(tile * first.shape[0] / first.shape[1]))
    canvas = np.full((rows * tile_h, cols * tile, 3), 40, np.uint8)
    palette = [(0, 200, 0), (0, 128, 255), (255, 128, 0), (200, 0, 200), (0, 0, 255)]
    for i, image in enumerate(images):
        img = cv2.imread(str(image))
        if img is None:
            continue
        h, w = img.shape[:2]
        lbl = label_path(image)
        for line in lbl.read_text().splitlines() if lbl.is_file() else []:
            c, cx, cy, bw, bh = line.split()
            x1, y1 = int((float(cx) - float(bw) / 2) * w), int((float(cy) - float(bh) / 2) * h)
            x2, y2 = int((float(cx) + float(bw) / 2) * w), int((float(cy) + float(bh) / 2) * h)
            colour = palette[int(c) % len(palette)]
            cv2.rectangle(img, (x1, y1), (x2, y2), colour, 2)
            cv2.putText(img, names.get(int(c), c), (x1, max(10, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1)
        scale = min(tile / w, tile_h / h)
        small = cv2.resize(img, (int(w * scale), int(h * scale)))
        row, col = divmod(i, cols)
        canvas[row * tile_h : row * tile_h + small.shape[0], col * tile : col * tile + small.shape[1]] = small
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ok, jpg = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        raise DatasetError(f"could not encode the mosaic for {data_yaml}")
    _write_atomic(out_path, jpg.tobytes())
    return out_path
