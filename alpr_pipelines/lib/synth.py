"""Offline generator of synthetic road scenes with vehicles and licence plates, deterministic by seed.

Each scene is drawn from its own random stream, ``SeedSequence([seed, purpose, index])``: the training splits and the
golden evaluation set use different ``purpose`` codes, so the golden set never shares a stream with training.
Plates are rendered in real TrueType fonts (DejaVu, shipped in ``fonts/``) in several regional styles, then warped
in perspective onto the vehicle. Scene effects: scale by depth, blur, sensor noise, lighting, partial occlusion.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

VEHICLE_CLASSES = ("car", "truck", "bus", "motorcycle")
FONTS_DIR = Path(__file__).parent / "fonts"
PURPOSES = {"train": 0, "val": 1, "golden": 2, "clip": 3}
# A vehicle or plate hidden more than this behind nearer vehicles is not labelled (an annotator could not see it).
MAX_OCCLUDED = 0.6


@dataclass(frozen=True)
class Box:
    """Pixel box ``(x1, y1, x2, y2)`` with a class name."""

    cls: str
    x1: float
    y1: float
    x2: float
    y2: float

    def clipped(self, width: int, height: int) -> Box | None:
        x1, x2 = max(0.0, self.x1), min(float(width), self.x2)
        y1, y2 = max(0.0, self.y1), min(float(height), self.y2)
        if x2 - x1 < 2 or y2 - y1 < 2:
            return None
        return Box(self.cls, x1, y1, x2, y2)

    def yolo(self, width: int, height: int) -> tuple[float, float, float, float]:
        """Normalised ``(cx, cy, w, h)``."""
        return (
            (self.x1 + self.x2) / 2 / width,
            (self.y1 + self.y2) / 2 / height,
            (self.x2 - self.x1) / width,
            (self.y2 - self.y1) / height,
        )


@dataclass
class Scene:
    """A rendered BGR image and its annotations."""

    image: np.ndarray
    vehicles: list[Box] = field(default_factory=list)
    plates: list[Box] = field(default_factory=list)


@dataclass(frozen=True)
class PlateStyle:
    name: str
    background: tuple[int, int, int]  # RGB
    text: tuple[int, int, int]
    pattern: str  # L = letter, D = digit, other characters literal
    aspect: float  # width / height
    band: tuple[int, int, int] | None = None  # left band colour (EU)
    header: str | None = None  # small header text (US)


PLATE_STYLES = (
    PlateStyle("eu", (245, 245, 245), (20, 20, 20), "LL-DDD-L", 4.7, band=(0, 51, 153)),
    PlateStyle("uk_rear", (250, 210, 20), (15, 15, 15), "LLDD LLL", 4.6),
    PlateStyle("us", (240, 240, 235), (20, 40, 120), "DLLD DDD", 2.0, header="STATE"),
    PlateStyle("dark", (25, 25, 30), (235, 235, 235), "LLL DDDD", 3.6),
    PlateStyle("square", (240, 240, 240), (10, 10, 10), "LL DD\nDDDD", 1.6),
)


@lru_cache(maxsize=1)
def font_files() -> tuple[Path, ...]:
    fonts = tuple(sorted(FONTS_DIR.glob("*.ttf")))
    if not fonts:
        raise FileNotFoundError(f"no .ttf fonts in {FONTS_DIR}; reinstall alpr-pipelines (package data is missing)")
    return fonts


@lru_cache(maxsize=64)
def _font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size)


def _plate_text(rng: np.random.Generator, pattern: str) -> str:
    letters = string.ascii_uppercase.replace("I", "").replace("O", "").replace("Q", "")
    out = []
    for ch in pattern:
        if ch == "L":
            out.append(letters[rng.integers(len(letters))])
        elif ch == "D":
            out.append(str(rng.integers(10)))
        else:
            out.append(ch)
    return "".join(out)


def render_plate(rng: np.random.Generator, height: int = 64) -> np.ndarray:
    """Render one plate face-on, as an RGB array, in a random style and font."""
    style = PLATE_STYLES[rng.integers(len(PLATE_STYLES))]
    fonts = font_files()
    font_path = fonts[rng.integers(len(fonts))]
    width = int(height * style.aspect)
    img = Image.new("RGB", (width, height), style.background)
    draw = ImageDraw.Draw(img)
    draw.rectangle([1, 1, width - 2, height - 2], outline=style.text, width=max(1, height // 24))
    left = 4
    if style.band is not None:
        band_w = int(height * 0.38)
        draw.rectangle([2, 2, band_w, height - 3], fill=style.band)
        draw.text((band_w * 0.2, height * 0.55), "D", fill=(255, 255, 255), font=_font(fonts[0], height // 4))
        left = band_w + 4
    top = 3
    if style.header is not None:
        draw.text((width * 0.35, 2), style.header, fill=style.text, font=_font(font_path, height // 6))
        top = height // 5
    text = _plate_text(rng, style.pattern)
    lines = text.split("\n")
    avail_h = (height - top - 4) / len(lines)
    avail_w = width - left - 6
    size = int(avail_h * 0.9)
    font = _font(font_path, max(size, 6))
    widest = max(draw.textlength(line, font=font) for line in lines)
    if widest > avail_w:
        font = _font(font_path, max(int(size * avail_w / widest), 6))
    for i, line in enumerate(lines):
        bbox = draw.textbbox((0, 0), line, font=font)
        tw, th = bbox[2] - bbox[0], bbox[3] - bbox[1]
        x = left + (avail_w - tw) / 2 - bbox[0]
        y = top + i * avail_h + (avail_h - th) / 2 - bbox[1]
        draw.text((x, y), line, fill=style.text, font=font)
    return np.asarray(img)


def _background(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, int]:
    horizon = int(height * rng.uniform(0.25, 0.45))
    img = np.empty((height, width, 3), np.float32)
    sky_top = rng.uniform(150, 235, 3)
    sky_bottom = rng.uniform(170, 250, 3)
    t = np.linspace(0, 1, horizon)[:, None, None]
    img[:horizon] = sky_top * (1 - t) + sky_bottom * t
    # Buildings and trees along the horizon.
    for _ in range(rng.integers(3, 9)):
        bw = rng.integers(width // 12, width // 4)
        bh = rng.integers(horizon // 3, horizon + 1)
        bx = rng.integers(-bw // 2, width)
        colour = rng.uniform(40, 200, 3)
        img[max(0, horizon - bh) : horizon, max(0, bx) : bx + bw] = colour
    road = rng.uniform(60, 120)
    img[horizon:] = road + rng.normal(0, 6, (height - horizon, width, 1))
    bgr = np.clip(img, 0, 255).astype(np.uint8)
    # Lane markings converging to a vanishing point.
    vx = int(width * rng.uniform(0.3, 0.7))
    for lane in np.linspace(-1.5, 1.5, int(rng.integers(2, 5))):
        x_bottom = int(vx + lane * width * 0.6)
        for seg in range(0, 10, 2):
            a, b = seg / 10, (seg + 1) / 10
            p1 = (int(vx + (x_bottom - vx) * a), int(horizon + (height - horizon) * a))
            p2 = (int(vx + (x_bottom - vx) * b), int(horizon + (height - horizon) * b))
            cv2.line(bgr, p1, p2, (230, 230, 230), max(1, int(4 * b)))
    return bgr, horizon


def _draw_vehicle(img: np.ndarray, rng: np.random.Generator, cls: str, x: int, y_bottom: int, scale: float) -> Box:
    """Draw a vehicle with its bottom-centre at ``(x, y_bottom)``; return its box."""
    dims = {"car": (1.0, 0.55), "truck": (1.25, 0.95), "bus": (1.45, 0.9), "motorcycle": (0.38, 0.5)}[cls]
    w, h = int(dims[0] * scale), int(dims[1] * scale)
    x1, y1 = x - w // 2, y_bottom - h
    colour = tuple(int(c) for c in rng.integers(20, 235, 3))
    dark = (30, 30, 30)
    glass = tuple(int(c) for c in rng.integers(60, 140, 3))
    wheel_r = max(2, int(h * (0.14 if cls != "motorcycle" else 0.22)))
    if cls == "car":
        cv2.rectangle(img, (x1, y1 + h // 3), (x1 + w, y_bottom - wheel_r // 2), colour, -1)
        cabin = np.array([[x1 + w * 0.18, y1 + h / 3], [x1 + w * 0.3, y1], [x1 + w * 0.7, y1], [x1 + w * 0.82, y1 + h / 3]])
        cv2.fillPoly(img, [cabin.astype(np.int32)], colour)
        cv2.rectangle(img, (int(x1 + w * 0.32), int(y1 + h * 0.06)), (int(x1 + w * 0.68), int(y1 + h * 0.3)), glass, -1)
    elif cls == "truck":
        cab_w = int(w * 0.3)
        cv2.rectangle(img, (x1, y1), (x1 + w - cab_w, y_bottom - wheel_r), tuple(int(c) for c in rng.integers(150, 250, 3)), -1)
        cv2.rectangle(img, (x1 + w - cab_w, y1 + h // 3), (x1 + w, y_bottom - wheel_r // 2), colour, -1)
        cv2.rectangle(img, (x1 + w - cab_w + 3, y1 + h // 3 + 3), (x1 + w - 3, y1 + h // 2), glass, -1)
    elif cls == "bus":
        cv2.rectangle(img, (x1, y1), (x1 + w, y_bottom - wheel_r // 2), colour, -1)
        n_windows = 6
        for i in range(n_windows):
            wx = int(x1 + w * (0.04 + i * 0.16))
            cv2.rectangle(img, (wx, int(y1 + h * 0.12)), (int(wx + w * 0.12), int(y1 + h * 0.42)), glass, -1)
    else:  # motorcycle with rider
        cv2.line(img, (x1 + wheel_r, y_bottom - wheel_r), (x1 + w - wheel_r, y_bottom - wheel_r), colour, max(2, w // 6))
        cv2.rectangle(img, (x1 + w // 3, y1 + h // 6), (x1 + 2 * w // 3, y_bottom - 2 * wheel_r), colour, -1)
        cv2.circle(img, (x, y1 + h // 10), max(2, w // 5), dark, -1)
    for wx in (x1 + wheel_r + 1, x1 + w - wheel_r - 1):
        cv2.circle(img, (wx, y_bottom - wheel_r), wheel_r, dark, -1)
    return Box(cls, x1, y1, x1 + w, y_bottom)


def _place_plate(img: np.ndarray, rng: np.random.Generator, vehicle: Box) -> Box | None:
    """Warp a rendered plate onto the lower middle of ``vehicle``; return the plate's box."""
    vw = vehicle.x2 - vehicle.x1
    plate = render_plate(rng, height=64)
    ph0, pw0 = plate.shape[:2]
    target_w = vw * rng.uniform(0.22, 0.34) * (1.9 if vehicle.cls == "motorcycle" else 1.0)
    if pw0 / ph0 < 2.5:  # square styles are narrower
        target_w *= 0.6
    target_h = target_w * ph0 / pw0
    if target_w < 6 or target_h < 3:
        return None
    cx = (vehicle.x1 + vehicle.x2) / 2 + rng.uniform(-0.08, 0.08) * vw
    cy = vehicle.y2 - (vehicle.y2 - vehicle.y1) * rng.uniform(0.18, 0.3)
    # Perspective: jitter each corner by up to 12% of the plate size.
    jitter = rng.uniform(-0.12, 0.12, (4, 2)) * [target_w, target_h]
    dst = np.array(
        [[cx - target_w / 2, cy - target_h / 2], [cx + target_w / 2, cy - target_h / 2],
         [cx + target_w / 2, cy + target_h / 2], [cx - target_w / 2, cy + target_h / 2]]
    ) + jitter
    src = np.array([[0, 0], [pw0, 0], [pw0, ph0], [0, ph0]], np.float32)
    matrix = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
    h, w = img.shape[:2]
    warped = cv2.warpPerspective(cv2.cvtColor(plate, cv2.COLOR_RGB2BGR), matrix, (w, h), flags=cv2.INTER_AREA)
    mask = cv2.warpPerspective(np.full((ph0, pw0), 255, np.uint8), matrix, (w, h), flags=cv2.INTER_AREA)
    alpha = (mask.astype(np.float32) / 255)[..., None]
    img[:] = (img * (1 - alpha) + warped * alpha).astype(np.uint8)
    return Box("license_plate", dst[:, 0].min(), dst[:, 1].min(), dst[:, 0].max(), dst[:, 1].max())


def _covered_fraction(box: Box, covers: list[Box]) -> float:
    """Fraction of ``box`` hidden behind any of ``covers`` (vehicles drawn later, i.e. nearer the camera)."""
    x1, y1 = int(box.x1), int(box.y1)
    mask = np.zeros((max(1, int(box.y2) - y1), max(1, int(box.x2) - x1)), bool)
    for c in covers:
        mask[max(0, int(c.y1) - y1) : max(0, int(c.y2) - y1), max(0, int(c.x1) - x1) : max(0, int(c.x2) - x1)] = True
    return float(mask.mean())


def _effects(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out: np.ndarray = img.astype(np.float32)
    # Lighting: gain, offset and a horizontal gradient (sun, shadow).
    gain = rng.uniform(0.55, 1.3)
    grad = np.linspace(rng.uniform(0.75, 1.0), rng.uniform(0.9, 1.2), img.shape[1])[None, :, None]
    out = out * gain * grad + rng.uniform(-25, 25)
    if rng.random() < 0.5:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 1.6))
    if rng.random() < 0.25:
        k = int(rng.integers(3, 8))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1 / k
        out = cv2.filter2D(out, -1, kernel)
    out += rng.normal(0, rng.uniform(1, 9), out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def generate_scene(seed: int, purpose: str, index: int, width: int = 640, height: int = 384) -> Scene:
    """Render scene ``index`` of the stream ``(seed, purpose)``; identical arguments give identical pixels."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r}; expected one of {sorted(PURPOSES)}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, PURPOSES[purpose], index]))
    img, horizon = _background(rng, width, height)
    scene = Scene(image=img)
    n_vehicles = int(rng.integers(1, 5))
    # Far vehicles first so near ones are drawn over them (natural occlusion).
    depths = np.sort(rng.uniform(0.15, 1.0, n_vehicles))
    drawn: list[tuple[Box, Box | None]] = []
    for depth in depths:
        cls = VEHICLE_CLASSES[int(rng.choice(4, p=[0.5, 0.2, 0.12, 0.18]))]
        y_bottom = int(horizon + (height - horizon) * depth)
        scale = (0.08 + 0.32 * depth) * width * rng.uniform(0.85, 1.15)
        x = int(rng.uniform(0.1, 0.9) * width)
        vehicle = _draw_vehicle(img, rng, cls, x, y_bottom, scale)
        drawn.append((vehicle, _place_plate(img, rng, vehicle)))
    for i, (vehicle, plate) in enumerate(drawn):
        nearer = [v for v, _ in drawn[i + 1 :]]
        clipped = vehicle.clipped(width, height)
        if clipped is None or _covered_fraction(clipped, nearer) > MAX_OCCLUDED:
            continue
        scene.vehicles.append(clipped)
        if plate is not None and (p := plate.clipped(width, height)) is not None:
            if _covered_fraction(p, nearer) <= MAX_OCCLUDED:
                scene.plates.append(p)
    # Occluders (poles, signs) cover parts of the scene; labels keep the full object extent, as annotators do.
    for _ in range(int(rng.integers(0, 3))):
        ox = int(rng.uniform(0, width))
        ow = int(rng.uniform(0.01, 0.05) * width)
        oy = int(rng.uniform(0, horizon))
        colour = tuple(int(c) for c in rng.integers(30, 120, 3))
        cv2.rectangle(img, (ox, oy), (ox + ow, height), colour, -1)
    scene.image = _effects(img, rng)
    return scene


def write_sample_clip(path: Path, seed: int = 0, frames: int = 60, fps: int = 10, width: int = 640,
                      height: int = 384, hold: int = 6) -> Path:
    """A short MJPG clip of synthetic traffic (the "clip" stream): each scene pans slowly for ``hold`` frames.

    Written to a temporary name and renamed, so a reader never sees half a clip.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MJPG video to {tmp}")
    try:
        scene = None
        for i in range(frames):
            if i % hold == 0:
                scene = generate_scene(seed, "clip", i // hold, width, height).image
            assert scene is not None
            shift = np.array([[1, 0, -2.0 * (i % hold)], [0, 1, 0]], dtype=np.float32)
            writer.write(cv2.warpAffine(scene, shift, (width, height), borderMode=cv2.BORDER_REPLICATE))
    finally:
        writer.release()
    tmp.replace(path)
    return path
