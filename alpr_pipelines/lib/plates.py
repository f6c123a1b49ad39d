"""Licence plates drawn face-on: regional formats, character sets, colours, borders and fonts, deterministic by seed.

A plate is drawn from one of two disjoint *domains*. ``train`` is what training datasets draw from; ``shift`` holds
formats, colour schemes and a font that training never sees, so a golden "shift" split measures generalisation
rather than memorisation. Fonts are the ones shipped in ``fonts/`` plus, for the training domain only, TrueType fonts
found on this machine (never a held-out family).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONTS_DIR = Path(__file__).parent / "fonts"
# System font folders searched for extra training fonts (Linux, macOS).
SYSTEM_FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".fonts",
                    Path("/Library/Fonts"))
# The shipped font the shift domain uses and training never draws (its family is excluded from system fonts too).
SHIFT_FONT = "LiberationMono-Bold.ttf"
SHIFT_FONT_FAMILIES = ("liberationmono", "cousine")  # the same glyph design under its other name
# Small print on every plate (EU country codes) and the font of last resort: shipped, and never the held-out one.
PLAIN_FONT = "DejaVuSansCondensed-Bold.ttf"
DOMAINS = ("train", "shift")

RGB = tuple[int, int, int]
LATIN = "ABCDEFGHJKLMNPRSTUVWXYZ"  # no I, O, Q: most regions leave them out, they read as 1 and 0
CYRILLIC = "АВЕКМНОРСТУХ"  # the twelve letters Russian plates use (they have Latin look-alikes)
DIGITS = "0123456789"


@dataclass(frozen=True)
class PlateFormat:
    """One region's plate: text patterns (``L`` letter, ``D`` digit, ``\\n`` a second line, anything else literal),
    its letters, width/height ratio, colour schemes (background, text), and optional decorations."""

    name: str
    patterns: tuple[str, ...]
    aspect: float
    colours: tuple[tuple[RGB, RGB], ...]
    letters: str = LATIN
    band: RGB | None = None  # a left band (EU) with a country code in it
    band_codes: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()  # a small line above the text (US states)
    region_box: bool = False  # a right box with a region number (RU)


PLATE_FORMATS: dict[str, tuple[PlateFormat, ...]] = {
    "train": (
        PlateFormat("eu", ("LL-DDD-L", "LLL-DDD", "L-DDDD-LL", "LL DDDD"), 4.7,
                    (((245, 245, 245), (20, 20, 20)),), band=(0, 51, 153),
                    band_codes=("D", "F", "NL", "B", "I", "E", "PL", "CZ")),
        PlateFormat("uk", ("LLDD LLL",), 4.6, (((250, 210, 20), (15, 15, 15)), ((246, 246, 240), (15, 15, 15)))),
        PlateFormat("us", ("DLLD DDD", "LLL DDDD", "DDD LLL"), 2.0,
                    (((240, 240, 235), (20, 40, 120)), ((250, 248, 230), (20, 20, 20)),
                     ((235, 240, 250), (150, 20, 30))),
                    headers=("STATE", "CALIFORNIA", "TEXAS", "OHIO", "NEVADA", "OREGON")),
        PlateFormat("dark", ("LLL DDDD", "LL DDDD"), 3.6, (((25, 25, 30), (235, 235, 235)), ((20, 30, 80), (230, 230, 230)))),
        PlateFormat("square", ("LL DD\nDDDD", "LLL\nDDDD"), 1.6,
                    (((240, 240, 240), (10, 10, 10)), ((250, 210, 20), (10, 10, 10)))),
        PlateFormat("ru", ("LDDDLL",), 4.6, (((245, 245, 245), (15, 15, 15)),), letters=CYRILLIC, region_box=True),
    ),
    # Held out of training: colour schemes and layouts no training plate has.
    "shift": (
        PlateFormat("ev_green", ("LDDDDD", "LL DDDD"), 4.0, (((20, 140, 80), (245, 245, 245)),)),
        PlateFormat("red_text", ("DLLL DDD", "DDD DLL"), 2.4, (((245, 245, 245), (180, 20, 20)),)),
    ),
}


@dataclass(frozen=True)
class RenderedPlate:
    """A plate face-on as an RGB array, with the text it carries (a two-line plate's lines joined by a line break)."""

    image: np.ndarray
    text: str
    format: str
    font: str


@lru_cache(maxsize=1)
def shipped_fonts() -> tuple[Path, ...]:
    fonts = tuple(sorted(FONTS_DIR.glob("*.ttf")))
    if not fonts:
        raise FileNotFoundError(f"no .ttf fonts in {FONTS_DIR}; reinstall alpr-pipelines (package data is missing)")
    return fonts


def _family_key(path: Path) -> str:
    return path.stem.split("-")[0].lower().replace(" ", "").replace("_", "")


@lru_cache(maxsize=1)
def system_fonts() -> tuple[Path, ...]:
    """TrueType fonts installed on this machine that can draw plate text, held-out families excluded; none where
    ``ALPR_SYSTEM_FONTS=0`` (``settings``): training then draws from the shipped fonts alone."""
    from alpr_pipelines.settings import load_settings

    if not load_settings().system_fonts:
        return ()
    shipped = {p.name for p in shipped_fonts()}
    found = []
    for folder in SYSTEM_FONT_DIRS:
        if not folder.is_dir():
            continue
        for path in folder.rglob("*.ttf"):
            if path.name in shipped or any(_family_key(path).startswith(f) for f in SHIFT_FONT_FAMILIES):
                continue
            if _draws(path, LATIN + DIGITS):
                found.append(path)
    return tuple(sorted(found))


def fonts_for(domain: str, machine_fonts: bool = True) -> tuple[Path, ...]:
    """The fonts plates of ``domain`` are drawn in; ``machine_fonts`` adds this machine's to the training domain's
    (training data wants them; evaluation sets must be the same on every machine, so they leave them out)."""
    shipped = shipped_fonts()
    if domain == "shift":
        return tuple(p for p in shipped if p.name == SHIFT_FONT)
    if domain == "train":
        return tuple(p for p in shipped if p.name != SHIFT_FONT) + (system_fonts() if machine_fonts else ())
    raise ValueError(f"unknown plate domain {domain!r}; expected one of {DOMAINS}")


def machine_fonts_digest() -> str:
    """This machine's extra training fonts, by name: part of a synthetic training set's identity."""
    return hashlib.sha256(",".join(p.name for p in system_fonts()).encode()).hexdigest()[:12]


@lru_cache(maxsize=256)
def _font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size)


@lru_cache(maxsize=128)
def _glyphs(path: Path) -> frozenset[str]:
    """The plate characters (letters of every format, digits) the font has a glyph of its own for."""
    try:
        font = _font(path, 24)
    except OSError:
        return frozenset()

    def glyph(ch: str) -> bytes:
        img = Image.new("L", (40, 40))
        ImageDraw.Draw(img).text((4, 4), ch, fill=255, font=font)
        return img.tobytes()

    missing = glyph("\uffff")  # what the font draws for a character it lacks
    return frozenset(c for c in LATIN + CYRILLIC + DIGITS if glyph(c) != missing)


def _draws(path: Path, chars: str) -> bool:
    """Whether the font draws every plate character of ``chars`` (others, like spaces and dashes, are not checked)."""
    wanted = {c for c in chars if c in LATIN or c in CYRILLIC or c in DIGITS}
    return wanted <= _glyphs(path)


def _text(rng: np.random.Generator, pattern: str, letters: str) -> str:
    out = []
    for ch in pattern:
        if ch == "L":
            out.append(letters[rng.integers(len(letters))])
        elif ch == "D":
            out.append(DIGITS[rng.integers(10)])
        else:
            out.append(ch)
    return "".join(out)


def _jitter(rng: np.random.Generator, colour: RGB, amount: int = 18) -> RGB:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)  # type: ignore[return-value]


def _fit(draw: ImageDraw.ImageDraw, font_path: Path, lines: list[str], width: float, height: float):
    size = max(int(height / len(lines) * 0.9), 6)
    font = _font(font_path, size)
    widest = max(draw.textlength(line, font=font) for line in lines)
    if widest > width:
        font = _font(font_path, max(int(size * width / widest), 6))
    return font


def _draw_lines(draw: ImageDraw.ImageDraw, font, lines: list[str], box: tuple[float, float, float, float],
                fill: RGB) -> None:
    left, top, right, bottom = box
    line_h = (bottom - top) / len(lines)
    for i, line in enumerate(lines):
        x1, y1, x2, y2 = draw.textbbox((0, 0), line, font=font)
        x = left + (right - left - (x2 - x1)) / 2 - x1
        y = top + i * line_h + (line_h - (y2 - y1)) / 2 - y1
        draw.text((x, y), line, fill=fill, font=font)


def render_plate(rng: np.random.Generator, height: int = 64, domain: str = "train",
                 machine_fonts: bool = True) -> RenderedPlate:
    """Draw one plate of ``domain`` face-on: a random format, pattern, colour scheme, font, border and text
    (``machine_fonts``: see :func:`fonts_for`)."""
    formats = PLATE_FORMATS.get(domain)
    if formats is None:
        raise ValueError(f"unknown plate domain {domain!r}; expected one of {DOMAINS}")
    fmt = formats[rng.integers(len(formats))]
    pattern = fmt.patterns[rng.integers(len(fmt.patterns))]
    text = _text(rng, pattern, fmt.letters)
    usable = [p for p in fonts_for(domain, machine_fonts) if _draws(p, text.replace("\n", "").replace(" ", ""))]
    font_path = usable[rng.integers(len(usable))] if usable else FONTS_DIR / PLAIN_FONT
    background, ink = (_jitter(rng, c) for c in fmt.colours[rng.integers(len(fmt.colours))])
    width = int(height * fmt.aspect * rng.uniform(0.95, 1.05))
    img = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(img)
    border = int(rng.integers(0, max(2, height // 16)))
    if border:
        radius = int(rng.integers(0, height // 6 + 1))
        draw.rounded_rectangle([1, 1, width - 2, height - 2], radius=radius, outline=ink, width=border)
    left, right, top = 3 + border, width - 3 - border, 3 + border
    if fmt.band is not None:
        band_w = int(height * 0.38)
        draw.rectangle([2, 2, band_w, height - 3], fill=_jitter(rng, fmt.band, 10))
        code = fmt.band_codes[rng.integers(len(fmt.band_codes))] if fmt.band_codes else ""
        if code:
            small = _font(FONTS_DIR / PLAIN_FONT, max(6, height // 4))
            _draw_lines(draw, small, [code], (2, height * 0.5, band_w, height - 4), (255, 255, 255))
        left = band_w + 4
    if fmt.region_box:
        box_w = int(height * 0.9)
        draw.line([(width - box_w, 3), (width - box_w, height - 4)], fill=ink, width=max(1, height // 24))
        region = _text(rng, "DD" if rng.random() < 0.6 else "DDD", fmt.letters)
        _draw_lines(draw, _fit(draw, font_path, [region], box_w - 6, height * 0.55), [region],
                    (width - box_w + 2, 2, width - 3, height * 0.62), ink)
        text = f"{text} {region}"
        right = width - box_w - 2
    if fmt.headers:
        header = fmt.headers[rng.integers(len(fmt.headers))]
        _draw_lines(draw, _fit(draw, font_path, [header], (right - left) * 0.6, height * 0.16), [header],
                    (left, 2, right, height * 0.2), ink)
        top = int(height * 0.22)
    lines = text.split("\n") if not fmt.region_box else [text.rsplit(" ", 1)[0]]
    font = _fit(draw, font_path, lines, right - left, height - top - 4 - border)
    _draw_lines(draw, font, lines, (left, top, right, height - 3 - border), ink)
    if rng.random() < 0.3:  # screws or rivets
        r = max(1, height // 20)
        for x in (width * 0.25, width * 0.75):
            draw.ellipse([x - r, height * 0.12 - r, x + r, height * 0.12 + r], fill=_jitter(rng, (160, 160, 160)))
    return RenderedPlate(np.asarray(img), text, fmt.name, font_path.name)
