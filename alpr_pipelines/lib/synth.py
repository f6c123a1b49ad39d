"""Offline generator of synthetic road scenes with vehicles and licence plates, deterministic by seed.

Each scene is drawn from its own random stream, ``SeedSequence([seed, purpose, index])``: the training splits, the
golden evaluation set and its held-out "shift" split use different ``purpose`` codes, so they never share a stream.
The scene randomises what a real camera varies: traffic from distant to close-up, vehicle shapes and colours,
backgrounds, viewing angle, day, dusk, night and infrared-like grey frames, glare, motion blur, sensor noise, dirt on
plates and partial occlusion. Plates come from :mod:`alpr_pipelines.lib.plates` (regional formats and fonts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from alpr_pipelines.lib.plates import render_plate

# Bump when the generator's output changes, so that neither old synthetic sets nor old golden sets are reused.
GENERATOR_VERSION = "5"
CLOSE_UP_VERSION = "1"  # plate_close_up's own: bump when its pixels change, so cached plate crops are made again
VEHICLE_CLASSES = ("car", "truck", "bus", "motorcycle")
# Stream codes. "golden_shift" draws plates from the held-out domain (plates.PLATE_FORMATS["shift"]).
PURPOSES = {"train": 0, "val": 1, "golden": 2, "clip": 3, "golden_shift": 4}
TRAINING_PURPOSES = ("train", "val")  # streams that draw plates in this machine's fonts too (lib.plates)
CONDITIONS = ("day", "dusk", "night", "infrared")
# A vehicle or plate hidden more than this behind nearer vehicles is not labelled (an annotator could not see it).
MAX_OCCLUDED = 0.6


@dataclass(frozen=True)
class Box:
    """Pixel box ``(x1, y1, x2, y2)`` with a class name (and, for a plate, the text it carries)."""

    cls: str
    x1: float
    y1: float
    x2: float
    y2: float
    text: str = ""

    def clipped(self, width: int, height: int) -> Box | None:
        x1, x2 = max(0.0, self.x1), min(float(width), self.x2)
        y1, y2 = max(0.0, self.y1), min(float(height), self.y2)
        if x2 - x1 < 2 or y2 - y1 < 2:
            return None
        return Box(self.cls, x1, y1, x2, y2, self.text)

    def shifted(self, dx: float, dy: float) -> Box:
        return Box(self.cls, self.x1 + dx, self.y1 + dy, self.x2 + dx, self.y2 + dy, self.text)

    @property
    def area(self) -> float:
        return max(0.0, self.x2 - self.x1) * max(0.0, self.y2 - self.y1)

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
    condition: str = "day"


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A vehicle paint: mostly white, black, grey and silver, as real traffic is, else any hue."""
    if rng.random() < 0.55:
        v = int(rng.choice([25, 45, 120, 170, 200, 235]) + rng.integers(-15, 16))
        return (v, v, v)
    return tuple(int(c) for c in rng.integers(20, 235, 3))  # type: ignore[return-value]


def _background(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, int]:
    horizon = int(height * rng.uniform(0.15, 0.5))
    img = np.empty((height, width, 3), np.float32)
    top, bottom = rng.uniform(120, 240, 3), rng.uniform(150, 250, 3)
    t = np.linspace(0, 1, max(horizon, 1))[:, None, None]
    img[:horizon] = (top * (1 - t) + bottom * t)[:horizon]
    kind = rng.integers(3)
    if kind == 0:  # buildings and trees along the horizon
        for _ in range(rng.integers(3, 10)):
            bw = rng.integers(width // 14, width // 3)
            bh = rng.integers(max(1, horizon // 4), horizon + 1)
            bx = rng.integers(-bw // 2, width)
            img[max(0, horizon - bh) : horizon, max(0, bx) : bx + bw] = rng.uniform(30, 210, 3)
    elif kind == 1:  # a wall or fence (parking, gate)
        img[:horizon] = rng.uniform(60, 200, 3)
        step = int(rng.integers(6, 30))
        img[:horizon:step] *= rng.uniform(0.6, 0.9)
    else:  # vegetation: blotches of green
        img[:horizon] = rng.uniform(40, 120, 3) * [0.6, 1.0, 0.6]
        for _ in range(40):
            cx, cy = int(rng.integers(0, width)), int(rng.integers(0, max(horizon, 1)))
            leaf = rng.uniform(20, 140, 3) * [0.5, 1, 0.5]
            cv2.circle(img, (cx, cy), int(rng.integers(3, 25)), tuple(float(c) for c in leaf), -1)
    road = rng.uniform(50, 140)
    img[horizon:] = road + rng.normal(0, rng.uniform(2, 10), (height - horizon, width, 1))
    for _ in range(int(rng.integers(0, 5))):  # patches, shadows, puddles
        x, y = int(rng.integers(0, width)), int(rng.integers(horizon, height))
        axes = (int(rng.integers(10, width // 4)), int(rng.integers(3, 30)))
        shade = float(road * rng.uniform(0.6, 1.3))
        cv2.ellipse(img, (x, y), axes, 0, 0, 360, (shade, shade, shade), -1)
    bgr = np.clip(img, 0, 255).astype(np.uint8)
    vx = int(width * rng.uniform(0.2, 0.8))
    for lane in np.linspace(-1.5, 1.5, int(rng.integers(2, 5))):
        x_bottom = int(vx + lane * width * 0.6)
        for seg in range(0, 10, 2):
            a, b = seg / 10, (seg + 1) / 10
            p1 = (int(vx + (x_bottom - vx) * a), int(horizon + (height - horizon) * a))
            p2 = (int(vx + (x_bottom - vx) * b), int(horizon + (height - horizon) * b))
            cv2.line(bgr, p1, p2, (225, 225, 225), max(1, int(4 * b)))
    return bgr, horizon


# Width and height of each class relative to the scale, with the spread of real shapes (compact car to van).
_DIMS = {"car": ((0.9, 1.1), (0.5, 0.7)), "truck": ((1.15, 1.4), (0.9, 1.1)), "bus": ((1.35, 1.6), (0.85, 1.0)),
         "motorcycle": ((0.38, 0.48), (0.5, 0.62))}


def _draw_vehicle(img: np.ndarray, rng: np.random.Generator, cls: str, x: int, y_bottom: int, scale: float,
                  lamps: list[tuple[int, int, int]]) -> Box:
    """Draw a vehicle, seen from behind or in front, with its bottom-centre at ``(x, y_bottom)``; return its box.
    Its lights are added to ``lamps`` as ``(x, y, radius)`` (they glow at night)."""
    (w_lo, w_hi), (h_lo, h_hi) = _DIMS[cls]
    w, h = int(rng.uniform(w_lo, w_hi) * scale), int(rng.uniform(h_lo, h_hi) * scale)
    w, h = max(w, 4), max(h, 4)
    x1, y1 = x - w // 2, y_bottom - h
    colour = _colour(rng)
    dark = (int(rng.integers(15, 45)),) * 3
    tint = rng.uniform(25, 75)  # tinted glass: dark, slightly blue (BGR)
    glass = (int(tint * 1.25), int(tint * 1.05), int(tint))
    wheel_r = max(2, int(h * (0.13 if cls != "motorcycle" else 0.2)))
    if cls == "car":  # a cabin with a rear window over a lower body
        roof = rng.uniform(0.3, 0.45)  # cabin height share: low saloon to tall SUV
        body_top = y1 + int(h * roof)
        cv2.rectangle(img, (x1, body_top), (x1 + w, y_bottom - wheel_r // 2), colour, -1)
        inset = rng.uniform(0.1, 0.22)
        cabin = np.array([[x1 + w * 0.05, body_top], [x1 + w * inset, y1], [x1 + w * (1 - inset), y1],
                          [x1 + w * 0.95, body_top]])
        cv2.fillPoly(img, [cabin.astype(np.int32)], colour)
        cv2.rectangle(img, (int(x1 + w * (inset + 0.05)), int(y1 + h * 0.05)),
                      (int(x1 + w * (0.95 - inset)), int(body_top - h * 0.03)), glass, -1)
    elif cls == "truck":  # a cargo box on a chassis: two doors, locking bars, a gap, an underride bar
        box_colour = _colour(rng)
        box_bottom = y_bottom - wheel_r - int(h * 0.12)
        cv2.rectangle(img, (x1 + w // 12, box_bottom), (x1 + w - w // 12, y_bottom - wheel_r), dark, -1)  # chassis
        cv2.rectangle(img, (x1, y1), (x1 + w, box_bottom), box_colour, -1)
        edge = tuple(int(c * 0.6) for c in box_colour)
        cv2.rectangle(img, (x1, y1), (x1 + w, box_bottom), edge, max(1, w // 40))
        cv2.line(img, (x, y1), (x, box_bottom), edge, max(1, w // 50))
        for bx in (x1 + w // 4, x1 + 3 * w // 4):  # locking bars
            cv2.line(img, (bx, y1 + h // 10), (bx, box_bottom - h // 20), (150, 150, 150), max(1, w // 90))
        stripe_y = box_bottom - max(2, h // 25)
        for i in range(8):  # red and white reflective tape
            sx = x1 + i * w // 8
            cv2.rectangle(img, (sx, stripe_y), (sx + w // 8, box_bottom), (40, 40, 200) if i % 2 else (230, 230, 230),
                          -1)
        cv2.rectangle(img, (x1 + w // 8, int(y_bottom - h * 0.1)), (x1 + w - w // 8, int(y_bottom - h * 0.07)),
                      (160, 160, 160), -1)  # underride bar
    elif cls == "bus":  # a wide rear window under a destination sign, over an engine grille
        cv2.rectangle(img, (x1, y1), (x1 + w, y_bottom - wheel_r // 2), colour, -1)
        cv2.rectangle(img, (int(x1 + w * 0.05), int(y1 + h * 0.12)), (int(x1 + w * 0.95), int(y1 + h * 0.5)), glass, -1)
        cv2.rectangle(img, (int(x1 + w * 0.2), int(y1 + h * 0.02)), (int(x1 + w * 0.8), int(y1 + h * 0.1)),
                      (15, 15, 15), -1)
        led = (0, int(rng.integers(140, 200)), 255) if rng.random() < 0.7 else (60, 255, 120)  # amber or green
        for i in range(int(rng.integers(4, 9))):  # the sign's lit characters
            lx = int(x1 + w * (0.23 + i * 0.07))
            cv2.rectangle(img, (lx, int(y1 + h * 0.04)), (lx + max(1, w // 30), int(y1 + h * 0.08)), led, -1)
        for i in range(4):  # engine grille
            gy = int(y1 + h * (0.58 + i * 0.04))
            cv2.line(img, (int(x1 + w * 0.25), gy), (int(x1 + w * 0.75), gy), dark, max(1, h // 60))
    else:  # motorcycle with rider, from behind
        cv2.rectangle(img, (x1 + w // 4, y1 + h // 3), (x1 + 3 * w // 4, y_bottom - wheel_r), colour, -1)
        cv2.ellipse(img, (x, y1 + h // 3), (w // 2, h // 6), 0, 0, 360, _colour(rng), -1)  # rider's back
        cv2.circle(img, (x, y1 + h // 10), max(2, w // 4), dark if rng.random() < 0.7 else _colour(rng), -1)
        cv2.rectangle(img, (x - wheel_r // 2, y_bottom - 2 * wheel_r), (x + wheel_r // 2, y_bottom), dark, -1)
        lamps.append((x, y1 + h // 2, max(2, w // 6)))
        return Box(cls, x1, y1, x1 + w, y_bottom)
    # Bumper, lights and wheels below the body.
    cv2.rectangle(img, (x1, int(y_bottom - h * 0.2)), (x1 + w, int(y_bottom - h * 0.13)), dark, -1)
    lights = (40, 40, 210) if rng.random() < 0.6 else (220, 230, 240)  # BGR: tail or head lights
    lw, lh = max(2, int(w * 0.1)), max(2, int(h * 0.07))
    for lx in (x1 + int(w * 0.04), x1 + w - int(w * 0.04) - lw):
        cv2.rectangle(img, (lx, int(y_bottom - h * 0.38)), (lx + lw, int(y_bottom - h * 0.38) + lh), lights, -1)
        lamps.append((lx + lw // 2, int(y_bottom - h * 0.38) + lh // 2, lw))
    for wx in (x1 + wheel_r + 1, x1 + w - wheel_r - 1):
        cv2.circle(img, (wx, y_bottom - wheel_r), wheel_r, dark, -1)
    return Box(cls, x1, y1, x1 + w, y_bottom)


def _paste(img: np.ndarray, patch_bgr: np.ndarray, quad: np.ndarray) -> None:
    """Warp ``patch_bgr`` onto the quadrilateral ``quad`` (4x2, clockwise from top-left) of ``img``, in place.

    Only the quad's bounding rectangle is warped and blended, so a small plate costs little in a large frame.
    """
    h, w = img.shape[:2]
    x0, y0 = max(0, int(np.floor(quad[:, 0].min()))), max(0, int(np.floor(quad[:, 1].min())))
    x1, y1 = min(w, int(np.ceil(quad[:, 0].max())) + 1), min(h, int(np.ceil(quad[:, 1].max())) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    ph, pw = patch_bgr.shape[:2]
    src = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float32)
    matrix = cv2.getPerspectiveTransform(src, (quad - [x0, y0]).astype(np.float32))
    size = (x1 - x0, y1 - y0)
    warped = cv2.warpPerspective(patch_bgr, matrix, size, flags=cv2.INTER_AREA)
    mask = cv2.warpPerspective(np.full((ph, pw), 255, np.uint8), matrix, size, flags=cv2.INTER_AREA)
    alpha = (mask.astype(np.float32) / 255)[..., None]
    roi = img[y0:y1, x0:x1]
    roi[:] = (roi * (1 - alpha) + warped * alpha).astype(np.uint8)


def _weathered(rng: np.random.Generator, plate_rgb: np.ndarray) -> np.ndarray:
    """Dirt, fading and scratches on a face-on plate (BGR out)."""
    out = cv2.cvtColor(plate_rgb, cv2.COLOR_RGB2BGR).astype(np.float32)
    if rng.random() < 0.35:  # dirt blotches
        for _ in range(int(rng.integers(1, 6))):
            cx, cy = int(rng.integers(0, out.shape[1])), int(rng.integers(0, out.shape[0]))
            r = int(rng.integers(2, out.shape[0] // 2))
            blot = np.zeros(out.shape[:2], np.float32)
            cv2.circle(blot, (cx, cy), r, 1.0, -1)
            blot = cv2.GaussianBlur(blot, (0, 0), r / 2)[..., None] * rng.uniform(0.2, 0.6)
            out = out * (1 - blot) + np.array([40, 55, 70], np.float32) * blot
    if rng.random() < 0.3:  # faded
        grey = out.mean(2, keepdims=True)
        out = out * 0.6 + grey * 0.4
    return np.clip(out, 0, 255).astype(np.uint8)


def _place_plate(img: np.ndarray, rng: np.random.Generator, vehicle: Box, yaw: float, domain: str,
                 machine_fonts: bool, infrared: bool, lit: list[np.ndarray]) -> Box | None:
    """Warp a rendered plate onto the lower middle of ``vehicle``, turned by ``yaw``; return the plate's box. Its
    corners are added to ``lit`` (a plate lamp, or its retroreflection under infrared light, keeps it readable)."""
    vw, vh = vehicle.x2 - vehicle.x1, vehicle.y2 - vehicle.y1
    plate = render_plate(rng, height=64, domain=domain, machine_fonts=machine_fonts)
    face = _weathered(rng, plate.image)
    if infrared:  # retroreflective plates glow under IR light: a bright face, dark characters
        grey = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
        if grey.mean() < 128:
            grey = 255 - grey
        face = cv2.cvtColor(cv2.normalize(grey, None, 30, 255, cv2.NORM_MINMAX), cv2.COLOR_GRAY2BGR)
    ph0, pw0 = face.shape[:2]
    target_w = vw * rng.uniform(0.22, 0.34) * (1.9 if vehicle.cls == "motorcycle" else 1.0)
    if pw0 / ph0 < 2.5:  # square and US-size plates are narrower
        target_w *= 0.6 if pw0 / ph0 < 1.9 else 0.75
    target_w *= np.cos(yaw)  # foreshortened when the vehicle is seen at an angle
    target_h = target_w * ph0 / pw0 / np.cos(yaw)
    if target_w < 6 or target_h < 3:
        return None
    cx = (vehicle.x1 + vehicle.x2) / 2 + (rng.uniform(-0.06, 0.06) + 0.25 * np.sin(yaw)) * vw
    cy = vehicle.y2 - vh * (rng.uniform(0.14, 0.24) if vehicle.cls != "motorcycle" else rng.uniform(0.3, 0.4))
    corners = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]) * [target_w, target_h]
    # A rigid rectangle seen in perspective: the far side of a turned plate is shorter, and so is its top edge
    # for a camera looking down on it (pitch); then a small roll of the plate or the camera.
    corners[:, 1] *= 1 - 0.25 * np.sin(yaw) * np.sign(corners[:, 0])
    corners[:, 0] *= 1 + rng.uniform(0.0, 0.12) * np.sign(corners[:, 1])
    roll = rng.normal(0, 0.04)
    rot = np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]])
    quad = corners @ rot.T + [cx, cy]
    _paste(img, face, quad)
    lit.append(quad)
    return Box("license_plate", quad[:, 0].min(), quad[:, 1].min(), quad[:, 0].max(), quad[:, 1].max(), plate.text)


def _covered_fraction(box: Box, covers: list[Box]) -> float:
    """Fraction of ``box`` hidden behind any of ``covers`` (vehicles drawn later, i.e. nearer the camera)."""
    x1, y1 = int(box.x1), int(box.y1)
    mask = np.zeros((max(1, int(box.y2) - y1), max(1, int(box.x2) - x1)), bool)
    for c in covers:
        mask[max(0, int(c.y1) - y1) : max(0, int(c.y2) - y1), max(0, int(c.x1) - x1) : max(0, int(c.x2) - x1)] = True
    return float(mask.mean())


def _lighting(img: np.ndarray, rng: np.random.Generator, condition: str, lamps: list[tuple[int, int, int]],
              lit: list[np.ndarray]) -> np.ndarray:
    """Scene light by condition, then glare, blur (focus or motion at any angle) and sensor noise. At dusk, at night
    and under infrared light the scene darkens while the plates (quads ``lit``) keep most of their light, and at
    night the vehicles' ``lamps`` glow."""
    out: np.ndarray = img.astype(np.float32)
    h, w = img.shape[:2]
    if condition == "day":
        gain = rng.uniform(0.7, 1.3)
    elif condition == "dusk":
        gain = rng.uniform(0.4, 0.7)
        out *= np.array([1.0, 0.95, 1.1], np.float32)  # warm light (BGR)
    else:
        gain = rng.uniform(0.2, 0.4) if condition == "night" else rng.uniform(0.35, 0.6)
    grad = np.linspace(rng.uniform(0.75, 1.0), rng.uniform(0.9, 1.2), w, dtype=np.float32)[None, :, None]
    gains = np.full((h, w), gain, np.float32)
    if condition != "day" and lit:
        plates = np.zeros((h, w), np.float32)
        cv2.fillPoly(plates, [q.astype(np.int32) for q in lit], 1.0)
        gains = gains + plates * np.float32(max(gain, rng.uniform(0.65, 1.0)) - gain)
    out = out * gains[..., None] * grad + rng.uniform(-20, 20)
    if condition == "night" and lamps:
        spots = np.zeros((h, w), np.float32)
        for x, y, r in lamps:
            cv2.circle(spots, (x, y), max(r, 2), 1.0, -1)
        out += cv2.GaussianBlur(spots, (0, 0), max(2.0, w / 150))[..., None] * rng.uniform(60, 140)
    if rng.random() < 0.15:  # glare: a bright bloom somewhere in the frame
        glare = np.zeros((h, w), np.float32)
        cv2.circle(glare, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(h // 20, h // 5)), 1.0, -1)
        out += cv2.GaussianBlur(glare, (0, 0), h / 25)[..., None] * rng.uniform(80, 200)
    if rng.random() < 0.4:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.4, 1.4))
    if rng.random() < 0.25:  # motion blur along any direction
        k = int(rng.integers(3, 7))  # an ALPR camera's short exposure keeps the smear to a few pixels
        line = np.zeros((k, k), np.float32)
        line[k // 2, :] = 1 / k
        rotation = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), float(rng.uniform(0, 180)), 1.0)
        kernel = cv2.warpAffine(line, rotation, (k, k))
        out = cv2.filter2D(out, -1, (kernel / max(float(kernel.sum()), 1e-6)).astype(np.float32))
    out = out + rng.standard_normal(out.shape, dtype=np.float32) * rng.uniform(1, 10 if condition == "day" else 16)
    if condition == "infrared":  # a monochrome sensor
        out = np.repeat(out.mean(2, keepdims=True), 3, axis=2)
    return np.clip(out, 0, 255).astype(np.uint8)


def generate_scene(seed: int, purpose: str, index: int, width: int = 640, height: int = 384) -> Scene:
    """Render scene ``index`` of the stream ``(seed, purpose)``; identical arguments give identical pixels (for the
    training streams, on machines with the same fonts: see ``plates.machine_fonts_digest``)."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r}; expected one of {sorted(PURPOSES)}")
    domain = "shift" if purpose == "golden_shift" else "train"
    machine_fonts = purpose in TRAINING_PURPOSES  # evaluation streams look the same on every machine
    rng = np.random.default_rng(np.random.SeedSequence([seed, PURPOSES[purpose], index]))
    condition = CONDITIONS[int(rng.choice(4, p=[0.62, 0.13, 0.13, 0.12]))]
    img, horizon = _background(rng, width, height)
    scene = Scene(image=img, condition=condition)
    close_up = rng.random() < 0.2
    n_vehicles = int(rng.integers(1, 3)) if close_up else int(rng.integers(1, 6))
    # Far vehicles first so near ones are drawn over them (natural occlusion).
    depths = np.sort(rng.uniform(0.75, 1.0, n_vehicles) if close_up else rng.uniform(0.1, 1.0, n_vehicles))
    drawn: list[tuple[Box, Box | None]] = []
    lamps: list[tuple[int, int, int]] = []
    lit: list[np.ndarray] = []
    for depth in depths:
        cls = VEHICLE_CLASSES[int(rng.choice(4, p=[0.46, 0.2, 0.14, 0.2]))]
        if close_up:
            scale = width * rng.uniform(0.35, 0.8) * (0.6 if cls in ("truck", "bus") else 1.0)
            y_bottom = int(height * rng.uniform(0.85, 1.1))
        else:
            scale = (0.07 + 0.33 * depth) * width * rng.uniform(0.85, 1.15)
            y_bottom = int(horizon + (height - horizon) * depth)
        x = int(rng.uniform(0.08, 0.92) * width)
        vehicle = _draw_vehicle(img, rng, cls, x, y_bottom, scale, lamps)
        yaw = float(rng.uniform(-0.6, 0.6)) if rng.random() < 0.4 else 0.0
        plate = _place_plate(img, rng, vehicle, yaw, domain, machine_fonts, condition == "infrared", lit)
        drawn.append((vehicle, plate))
    for i, (vehicle, plate) in enumerate(drawn):
        nearer = [v for v, _ in drawn[i + 1 :]]
        clipped = vehicle.clipped(width, height)
        if clipped is None or _covered_fraction(clipped, nearer) > MAX_OCCLUDED:
            continue
        # A vehicle cut by the frame's edge is labelled if at least a third of it is in view.
        if clipped.area < vehicle.area / 3:
            continue
        scene.vehicles.append(clipped)
        if plate is not None and (p := plate.clipped(width, height)) is not None:
            if _covered_fraction(p, nearer) <= MAX_OCCLUDED and p.area >= plate.area * 0.6:
                scene.plates.append(p)
    # Occluders (poles, signs) cover parts of the scene; labels keep the full object extent, as annotators do.
    for _ in range(int(rng.integers(0, 3))):
        ox = int(rng.uniform(0, width))
        ow = int(rng.uniform(0.01, 0.04) * width)
        oy = int(rng.uniform(0, horizon + 1))
        cv2.rectangle(img, (ox, oy), (ox + ow, height), tuple(int(c) for c in rng.integers(30, 120, 3)), -1)
    scene.image = _lighting(img, rng, condition, lamps, lit)
    return scene


def clip_scene(seed: int, index: int, width: int = 640, height: int = 384, hold: int = 6) -> Scene:
    """Frame ``index`` of the sample clip and its true boxes: scene ``index // hold`` of the "clip" stream, panned
    2 px per frame. Boxes that the pan pushes out of the frame are dropped or cut as :meth:`Box.clipped` does."""
    scene = generate_scene(seed, "clip", index // hold, width, height)
    dx = -2.0 * (index % hold)
    shift = np.array([[1, 0, dx], [0, 1, 0]], dtype=np.float32)
    image = cv2.warpAffine(scene.image, shift, (width, height), borderMode=cv2.BORDER_REPLICATE)

    def moved(boxes: list[Box]) -> list[Box]:
        return [c for b in boxes if (c := b.shifted(dx, 0).clipped(width, height)) is not None]

    return Scene(image, moved(scene.vehicles), moved(scene.plates), scene.condition)


def plate_close_up(seed: int, purpose: str, index: int, min_width: float = 48, max_width: float = 200) -> Scene:
    """One vehicle's plate as the plate detector hands it to the reader: the lower part of a vehicle drawn, its plate
    placed, lit and blurred by the same code as :func:`generate_scene` (so with the same turns, dirt, lighting
    conditions, blur and noise), at a plate width between ``min_width`` and ``max_width`` pixels. Cheaper than a
    whole scene: only a window around the plate is lit, and the background behind the vehicle is drawn small. ``scene.plates`` holds the plate's box (with its text) in
    the window; identical arguments give identical pixels (see :func:`generate_scene` for fonts)."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown purpose {purpose!r}; expected one of {sorted(PURPOSES)}")
    domain = "shift" if purpose == "golden_shift" else "train"
    rng = np.random.default_rng(np.random.SeedSequence([seed, PURPOSES[purpose], index, 1]))  # not a scene's stream
    condition = CONDITIONS[int(rng.choice(4, p=[0.62, 0.13, 0.13, 0.12]))]
    cls = VEHICLE_CLASSES[int(rng.choice(4, p=[0.46, 0.2, 0.14, 0.2]))]
    plate_width = rng.uniform(min_width, max_width)
    scale = plate_width / 0.28 / (1.9 * 0.45 if cls == "motorcycle" else 1.0)  # the vehicle a plate this wide is on
    canvas_w, canvas_h = int(scale * 1.8) + 8, int(scale * 1.3) + 8
    # Little of the background shows around a close-up's vehicle: drawn at a quarter of the size, then enlarged.
    small, _ = _background(rng, canvas_w // 4 + 1, canvas_h // 4 + 1)
    img = cv2.resize(small, (canvas_w, canvas_h), interpolation=cv2.INTER_LINEAR)
    lamps: list[tuple[int, int, int]] = []
    vehicle = _draw_vehicle(img, rng, cls, canvas_w // 2, int(canvas_h * 0.95), scale, lamps)
    yaw = float(rng.uniform(-0.6, 0.6)) if rng.random() < 0.4 else 0.0
    lit: list[np.ndarray] = []
    plate = _place_plate(img, rng, vehicle, yaw, domain, purpose in TRAINING_PURPOSES, condition == "infrared", lit)
    if plate is None:  # too small to place: a slightly larger one of the same stream
        return plate_close_up(seed, purpose, index + 1_000_000, min_width, max_width)
    pw, ph = plate.x2 - plate.x1, plate.y2 - plate.y1
    # What a crop can take: the plate, a detector's error and the edge's margin around it (edge.reader, READ_MARGIN).
    x0, y0 = max(0, int(plate.x1 - 0.3 * pw)), max(0, int(plate.y1 - 0.6 * ph))
    x1, y1 = min(canvas_w, int(plate.x2 + 0.3 * pw)), min(canvas_h, int(plate.y2 + 0.6 * ph))
    window = np.ascontiguousarray(img[y0:y1, x0:x1])
    lamps_in = [(x - x0, y - y0, r) for x, y, r in lamps]
    image = _lighting(window, rng, condition, lamps_in, [q - [x0, y0] for q in lit])
    return Scene(image, [], [plate.shifted(-x0, -y0)], condition)


def write_sample_clip(path: Path, seed: int = 0, frames: int = 60, fps: int = 10, width: int = 640,
                      height: int = 384, hold: int = 6) -> Path:
    """A short MJPG clip of synthetic traffic (the "clip" stream, see :func:`clip_scene` for its true boxes).

    Written to a temporary name and renamed, so a reader never sees half a clip.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write MJPG video to {tmp}")
    try:
        for i in range(frames):
            writer.write(clip_scene(seed, i, width, height, hold).image)
    finally:
        writer.release()
    tmp.replace(path)
    return path
