"""Procedural textures for the town: asphalt, paint, pavers, kerb, grass, facades,
foliage, bark, fence boards and speed-limit signs.

Plain numpy (and opencv for resizing, blurring and drawing), deterministic from a seed.
Every texture tiles seamlessly (noise is generated on a wrapped lattice, shapes that
cross an edge are drawn again on the opposite side), is square with a power-of-two
side (Panda3D's tinydisplay renderer takes no other) and is uint8 RGB, rows from the
top of the image. Perception networks are trained on the renders, so the textures aim
at a photographic street (grain, wear, tone variation), not a flat cartoon.

``randomize=True`` perturbs hue, brightness and pattern parameters (domain
randomisation per episode); without it only the noise pattern depends on the seed.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)

ASPHALT = "asphalt"
PAINT_WHITE = "paint_white"
PAINT_YELLOW = "paint_yellow"
SIDEWALK = "sidewalk"
KERB = "kerb"
GRASS = "grass"
ROOF = "roof"
FACADE_BRICK = "facade_brick"
FACADE_CONCRETE = "facade_concrete"
FACADE_GLASS = "facade_glass"
FACADE_PLASTER = "facade_plaster"
FOLIAGE = "foliage"
BARK = "bark"
FENCE_WOOD = "fence_wood"
SPEED_LIMITS_KMH = (20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120)

# Metres of world one texture repeat covers, for meshes that map texture coordinates
# from metric positions.
ASPHALT_REPEAT_M = 8.0
PAINT_REPEAT_M = 3.0  # along a line; across, the texture spans the line's width
SIDEWALK_REPEAT_M = 2.0
KERB_REPEAT_M = 2.0  # two kerb stones
GRASS_REPEAT_M = 4.0
ROOF_REPEAT_M = 8.0
FOLIAGE_REPEAT_M = 2.0
BARK_REPEAT_M = 1.0
FENCE_REPEAT_M = 2.0  # along the fence; up, the texture spans the fence's height


@dataclass(frozen=True)
class FacadeLayout:
    """Window grid of a facade texture: one repeat holds exactly ``bays`` x ``floors``
    windows, so a wall that is a whole number of bays wide and floors high shows whole
    windows (u = metres along / (bays * bay_width_m), v = height / (floors * floor_height_m))."""

    bay_width_m: float
    floor_height_m: float
    bays: int
    floors: int

    @property
    def repeat_m(self) -> tuple[float, float]:
        return self.bay_width_m * self.bays, self.floor_height_m * self.floors


FACADE_LAYOUTS: dict[str, FacadeLayout] = {
    FACADE_BRICK: FacadeLayout(3.0, 3.2, 4, 4),
    FACADE_CONCRETE: FacadeLayout(3.0, 3.2, 4, 4),
    FACADE_GLASS: FacadeLayout(3.0, 3.6, 4, 4),
    FACADE_PLASTER: FacadeLayout(3.0, 3.2, 4, 4),
}
FACADES = tuple(FACADE_LAYOUTS)


def speed_sign(speed_kmh: int) -> str:
    """Texture name of the speed-limit disc for ``speed_kmh`` (one of SPEED_LIMITS_KMH)."""
    return f"sign_speed_{speed_kmh}"


def nearest_speed_sign(speed_mps: float) -> str:
    kmh = speed_mps * 3.6
    return speed_sign(min(SPEED_LIMITS_KMH, key=lambda v: abs(v - kmh)))


TEXTURE_NAMES = (ASPHALT, PAINT_WHITE, PAINT_YELLOW, SIDEWALK, KERB, GRASS, ROOF, *FACADES, FOLIAGE, BARK,
                 FENCE_WOOD, *(speed_sign(v) for v in SPEED_LIMITS_KMH))


# -- public ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def make_textures(seed: int = 0, randomize: bool = False) -> dict[str, np.ndarray]:
    """Every texture by name: (S, S, 3) uint8 RGB, S a power of two, read-only (cached)."""
    rng = np.random.default_rng([seed, 7])
    style = _Style(np.random.default_rng([seed, 8]), randomize)
    textures = {
        ASPHALT: _asphalt(rng, style),
        SIDEWALK: _sidewalk(rng, style),
        KERB: _kerb(rng, style),
        GRASS: _grass(rng, style),
        ROOF: _roof(rng, style),
        FACADE_BRICK: _facade_brick(rng, style),
        FACADE_CONCRETE: _facade_concrete(rng, style),
        FACADE_GLASS: _facade_glass(rng, style),
        FACADE_PLASTER: _facade_plaster(rng, style),
        FOLIAGE: _foliage(rng, style),
        BARK: _bark(rng, style),
        FENCE_WOOD: _fence_wood(rng, style),
    }
    textures[PAINT_WHITE], textures[PAINT_YELLOW] = _paint(rng, style)
    for kmh in SPEED_LIMITS_KMH:
        textures[speed_sign(kmh)] = _speed_sign(rng, kmh)
    out = {}
    for name in TEXTURE_NAMES:
        image = textures[name]
        if randomize and not name.startswith("sign_"):
            image = _jitter_hsv(image, style.rng)
        image = np.ascontiguousarray(image)
        image.setflags(write=False)
        out[name] = image
    return out


class _Style:
    """Pattern parameters: the defaults, or randomly perturbed ones."""

    def __init__(self, rng: np.random.Generator, randomize: bool) -> None:
        self.rng = rng
        self.randomize = randomize

    def scale(self, value: float, spread: float) -> float:
        """``value`` times a random factor in [1 - spread, 1 + spread] when randomising."""
        return value * (1.0 + self.rng.uniform(-spread, spread)) if self.randomize else value

    def count(self, value: int, low: int, high: int) -> int:
        return int(self.rng.integers(low, high + 1)) if self.randomize else value

    def choice(self, default, options):
        return options[int(self.rng.integers(len(options)))] if self.randomize else default


# -- noise and drawing helpers ----------------------------------------------------------


def _noise(rng: np.random.Generator, size: int, cells: int | tuple[int, int], octaves: int = 1,
           persistence: float = 0.5) -> np.ndarray:
    """Tileable smooth noise, zero mean, roughly unit spread: a random lattice of
    ``cells`` (rows, cols) cubically interpolated, summed over octaves."""
    rows, cols = (cells, cells) if isinstance(cells, int) else cells
    total = np.zeros((size, size), np.float32)
    amplitude, norm = 1.0, 0.0
    for _ in range(octaves):
        if rows > size or cols > size:
            break
        lattice = rng.standard_normal((rows, cols)).astype(np.float32)
        if rows == size and cols == size:
            layer = lattice
        else:
            pad = 3
            # Wrap-padding before resizing makes the interpolated field periodic.
            wrapped = np.pad(lattice, pad, mode="wrap")
            sy, sx = size // rows, size // cols
            big = cv2.resize(wrapped, ((cols + 2 * pad) * sx, (rows + 2 * pad) * sy), interpolation=cv2.INTER_CUBIC)
            layer = big[pad * sy:pad * sy + size, pad * sx:pad * sx + size]
        total += amplitude * layer
        norm += amplitude ** 2
        amplitude *= persistence
        rows, cols = rows * 2, cols * 2
    return total / math.sqrt(norm)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur that wraps around the edges (the texture stays tileable)."""
    pad = math.ceil(3 * sigma) + 1
    spec = ((pad, pad), (pad, pad)) + ((0, 0),) * (image.ndim - 2)
    wrapped = np.pad(image, spec, mode="wrap")
    return cv2.GaussianBlur(wrapped, (0, 0), sigma)[pad:-pad, pad:-pad]


def _wrapped_copies(size: int, points: np.ndarray, reach: float) -> list[np.ndarray]:
    """``points`` plus copies shifted by a texture side wherever the shape, extending
    ``reach`` pixels around them, crosses an edge."""
    copies = []
    lo, hi = points.min(axis=0) - reach, points.max(axis=0) + reach
    for dx in (-size, 0, size):
        for dy in (-size, 0, size):
            if hi[0] + dx >= 0 and lo[0] + dx < size and hi[1] + dy >= 0 and lo[1] + dy < size:
                copies.append(points + np.array([dx, dy]))
    return copies


def _polyline(canvas: np.ndarray, points: np.ndarray, value, thickness: int) -> None:
    for pts in _wrapped_copies(canvas.shape[0], points, thickness):
        cv2.polylines(canvas, [np.round(pts).astype(np.int32)], False, value, thickness, cv2.LINE_AA)


def _ellipse(canvas: np.ndarray, centre: np.ndarray, axes: tuple[int, int], angle: float, value) -> None:
    for c in _wrapped_copies(canvas.shape[0], centre[None], max(axes)):
        cv2.ellipse(canvas, (int(c[0, 0]), int(c[0, 1])), axes, angle, 0, 360, value, -1, cv2.LINE_AA)


def _random_walk(rng: np.random.Generator, size: int, steps: int, step_px: float, wiggle: float) -> np.ndarray:
    heading = rng.uniform(0, 2 * math.pi)
    turns = np.cumsum(rng.normal(0.0, wiggle, steps)) + heading
    moves = step_px * np.column_stack([np.cos(turns), np.sin(turns)])
    return rng.uniform(0, size, 2) + np.cumsum(moves, axis=0)


def _cracks(rng: np.random.Generator, size: int, count: int, length_px: float, thickness: int,
            branch_prob: float = 0.3) -> np.ndarray:
    """A mask (0..1) of thin dark cracks, some with branches."""
    mask = np.zeros((size, size), np.float32)
    for _ in range(count):
        steps = max(int(length_px / 4), 3)
        walk = _random_walk(rng, size, steps, 4.0, 0.35)
        _polyline(mask, walk, 1.0, thickness)
        if rng.random() < branch_prob:
            start = walk[rng.integers(len(walk))]
            branch = start + np.cumsum(rng.normal(0, 3.0, (steps // 2, 2)) + rng.normal(0, 2.5, 2), axis=0)
            _polyline(mask, branch, 0.8, 1)
    return mask


def _rgb(base: tuple[float, float, float], shade: np.ndarray) -> np.ndarray:
    """A colour modulated by a per-pixel brightness offset (0 = base), float32."""
    return np.asarray(base, np.float32)[None, None, :] + shade[..., None]


def _to_u8(image: np.ndarray) -> np.ndarray:
    return np.clip(image, 0, 255).astype(np.uint8)


def _jitter_hsv(image: np.ndarray, rng: np.random.Generator, hue_deg: float = 6.0, saturation: float = 0.15,
                value: float = 0.12) -> np.ndarray:
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-hue_deg, hue_deg) / 2.0) % 180.0  # opencv hue is degrees / 2
    hsv[..., 1] *= 1.0 + rng.uniform(-saturation, saturation)
    hsv[..., 2] *= 1.0 + rng.uniform(-value, value)
    hsv[..., 1:] = np.clip(hsv[..., 1:], 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def _speckle(rng: np.random.Generator, size: int, density: float, blur_px: float = 0.6) -> np.ndarray:
    """Sparse bright (+1) and dark (-1) grains: the aggregate in concrete and asphalt."""
    u = rng.random((size, size))
    dots = (u < density / 2).astype(np.float32) - (u > 1.0 - density / 2).astype(np.float32)
    return _blur(dots, blur_px) * (2.0 * blur_px + 1.0)


# -- ground ------------------------------------------------------------------------------


def _asphalt(rng: np.random.Generator, style: _Style, size: int = 512) -> np.ndarray:
    grey = style.scale(84.0, 0.18)
    tint = np.array([0.0, 0.5, 2.5]) if not style.randomize else rng.normal(0.0, 2.0, 3)
    shade = 9.0 * _noise(rng, size, 4, octaves=4) + 7.0 * rng.standard_normal((size, size)).astype(np.float32)
    shade += 20.0 * _speckle(rng, size, 0.12) + 4.0 * _noise(rng, size, 128)
    # Repair patches: slightly different tone, a dark seam around them.
    for _ in range(style.count(3, 1, 6)):
        w, h = rng.integers(50, 190, 2)
        x, y = rng.integers(0, size, 2)
        corners = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], float)
        patch = np.zeros((size, size), np.float32)
        seam = np.zeros((size, size), np.float32)
        for c in _wrapped_copies(size, corners, 2):
            cv2.fillPoly(patch, [np.round(c).astype(np.int32)], 1.0)
            cv2.polylines(seam, [np.round(c).astype(np.int32)], True, 1.0, 2, cv2.LINE_AA)
        shade += rng.choice([-1.0, 1.0]) * rng.uniform(4, 8) * _blur(patch, 1.5) - 9.0 * seam
    shade -= 30.0 * _cracks(rng, size, style.count(5, 2, 9), 150, 1)
    # Sealed cracks: wide, smooth, glossy-black tar lines.
    tar = np.zeros((size, size), np.float32)
    for _ in range(style.count(1, 0, 3)):
        _polyline(tar, _random_walk(rng, size, 50, 5.0, 0.15), 1.0, int(rng.integers(2, 5)))
    shade -= 26.0 * _blur(tar, 0.8)
    # Oil and rubber: darker smudges at a large scale.
    shade -= 10.0 * np.clip(_noise(rng, size, 8, octaves=2) - 0.6, 0, None)
    return _to_u8(_rgb(tuple(grey + tint), shade))


def _paint(rng: np.random.Generator, style: _Style, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Worn road paint. u runs along the line (PAINT_REPEAT_M), v across its width; worn
    spots show the asphalt through."""
    along = _noise(rng, size, (32, 4), octaves=3)  # rows = v across, cols = u along
    wear = style.scale(0.2, 0.5)
    v = np.abs(np.linspace(-1.0, 1.0, size, dtype=np.float32))[:, None]
    # Edges wear first; the tyre-polished middle of the line less so.
    worn_score = along + 1.2 * v ** 4 + 0.5 * _noise(rng, size, 64)
    holes = _blur((worn_score > 1.6 - wear).astype(np.float32), 0.7)
    grain = 6.0 * rng.standard_normal((size, size)).astype(np.float32) + 10.0 * _speckle(rng, size, 0.05)
    asphalt = _rgb((86, 86, 89), grain * 1.5)
    dirt = 14.0 * _noise(rng, size, 8, octaves=2)
    images = []
    for base in ((232, 232, 226), (226, 178, 52)):
        paint = _rgb(tuple(np.array(base) * style.scale(1.0, 0.06)), grain - np.abs(dirt))
        images.append(_to_u8(paint * (1 - holes[..., None]) + asphalt * holes[..., None]))
    return images[0], images[1]


def _sidewalk(rng: np.random.Generator, style: _Style, size: int = 512) -> np.ndarray:
    """Concrete slabs (0.5 m) or small brick pavers, with joints, tone variation, stains."""
    pattern = style.choice("slabs", ("slabs", "slabs", "pavers"))
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    if pattern == "slabs":
        n = style.choice(4, (4, 4, 5, 6))
        cell = size / n
        ix, iy = np.floor(x / cell), np.floor(y / cell)
        jx, jy = x - ix * cell, y - iy * cell
        joint = np.minimum(np.minimum(jx, cell - jx), np.minimum(jy, cell - jy))
        base = np.array(style.choice((158, 155, 148), ((158, 155, 148), (170, 168, 160), (140, 138, 134))), float)
        tone = rng.normal(0.0, 7.0, (n, n))[iy.astype(int) % n, ix.astype(int) % n]
    else:
        rows, cols = 20, 10  # 0.1 x 0.2 m bricks in running bond over 2 m
        ch, cw = size / rows, size / cols
        iy = np.floor(y / ch)
        shifted = x + (iy % 2) * cw / 2
        ix = np.floor(shifted / cw)
        jx, jy = shifted - ix * cw, y - iy * ch
        joint = np.minimum(np.minimum(jx, cw - jx), np.minimum(jy, ch - jy))
        base = np.array(style.choice((150, 120, 110), ((150, 120, 110), (140, 138, 132), (128, 100, 92))), float)
        tone = rng.normal(0.0, 9.0, (rows, cols + 1))[iy.astype(int) % rows, ix.astype(int) % (cols + 1)]
    joints = np.clip(1.6 - joint, 0.0, 1.0)
    shade = tone + 5.0 * rng.standard_normal((size, size)).astype(np.float32) + 10.0 * _speckle(rng, size, 0.06)
    shade += 6.0 * _noise(rng, size, 4, octaves=3)
    shade -= 14.0 * np.clip(_noise(rng, size, 8, octaves=3) - 0.7, 0, None)  # stains
    shade -= 22.0 * _cracks(rng, size, style.count(2, 0, 4), 60, 1, branch_prob=0.0)
    shade = shade * (1 - joints) - 45.0 * joints
    return _to_u8(_rgb(tuple(base), shade.astype(np.float32)))


def _kerb(rng: np.random.Generator, style: _Style, size: int = 256) -> np.ndarray:
    """Granite kerb stones, 1 m each; u along the kerb, v across the face."""
    x = np.arange(size, dtype=np.float32)[None, :].repeat(size, 0)
    stone = np.floor(x / (size / 2)).astype(int)
    jx = x - stone * (size / 2)
    joint = np.clip(2.0 - np.minimum(jx, size / 2 - jx), 0, 1)
    base = style.scale(168.0, 0.12)
    shade = rng.normal(0, 6.0, 2)[stone] + 6.0 * rng.standard_normal((size, size)).astype(np.float32)
    shade += 18.0 * _speckle(rng, size, 0.12, 0.5) + 5.0 * _noise(rng, size, 4, octaves=2)
    # Tyre scuffs and dirt along the bottom of the face (v near 1).
    v = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None]
    shade -= 25.0 * v ** 3 * (0.6 + 0.4 * _noise(rng, size, (4, 16)))
    shade = shade * (1 - joint) - 50.0 * joint
    return _to_u8(_rgb((base, base - 2, base - 6), shade))


def _grass(rng: np.random.Generator, style: _Style, size: int = 512) -> np.ndarray:
    green = np.array(style.choice((62, 96, 40), ((62, 96, 40), (74, 100, 44), (70, 92, 48), (84, 98, 52))), float)
    dry = np.array((128, 116, 70), float)
    dirt = np.array((104, 86, 62), float)
    dryness = np.clip(style.scale(0.2, 0.8) + 0.45 * _noise(rng, size, 4, octaves=3), 0, 1)
    base = green[None, None] * (1 - dryness[..., None] * 0.6) + dry[None, None] * dryness[..., None] * 0.6
    blades = 16.0 * _noise(rng, size, 256) + 10.0 * _noise(rng, size, 128) + 8.0 * rng.standard_normal(
        (size, size)).astype(np.float32)
    clumps = 10.0 * _noise(rng, size, 32, octaves=2)
    image = base + (blades + clumps)[..., None] * np.array([0.8, 1.0, 0.6], np.float32)
    bare = _blur((_noise(rng, size, 8, octaves=3) > style.scale(1.45, 0.15)).astype(np.float32), 3.0)
    soil = _rgb(tuple(dirt), 10.0 * rng.standard_normal((size, size)).astype(np.float32))
    image = image * (1 - bare[..., None]) + soil * bare[..., None]
    # Bright blade tips catching the light.
    tips = (rng.random((size, size)) < 0.02).astype(np.float32)
    image += 40.0 * _blur(tips, 0.5)[..., None] * np.array([0.7, 1.0, 0.4], np.float32)
    return _to_u8(image)


def _roof(rng: np.random.Generator, style: _Style, size: int = 256) -> np.ndarray:
    grey = style.scale(96.0, 0.2)
    shade = 10.0 * rng.standard_normal((size, size)).astype(np.float32) + 14.0 * _speckle(rng, size, 0.15, 0.5)
    shade += 10.0 * _noise(rng, size, 4, octaves=3)
    seams = np.zeros((size, size), np.float32)
    for k in range(4):
        seams[:, k * size // 4:k * size // 4 + 2] = 1.0
    shade -= 20.0 * seams + 12.0 * np.clip(_noise(rng, size, 8, octaves=2) - 0.5, 0, None)
    return _to_u8(_rgb((grey, grey, grey + 3), shade))


# -- facades -----------------------------------------------------------------------------


def _glass(rng: np.random.Generator, h: int, w: int, sky: float = 1.0) -> np.ndarray:
    """A pane: sky reflected at the top fading to a dark interior, with a blurred
    reflection of whatever is across the street."""
    v = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    top = np.array((120, 138, 156), np.float32) * sky
    bottom = np.array((34, 40, 48), np.float32)
    pane = top * (1 - v) ** 1.5 + bottom * (1 - (1 - v) ** 1.5)
    reflection = cv2.resize(rng.normal(0, 12.0, (3, 2)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    return pane + reflection[..., None] + rng.normal(0, 2.0, (h, w, 1)).astype(np.float32)


def _windows(rng: np.random.Generator, image: np.ndarray, layout: FacadeLayout, *, width_frac: float,
             height_frac: float, frame: tuple[int, int, int], sill: bool, mullion: bool,
             shutters: tuple[int, int, int] | None = None) -> None:
    """One window per bay and floor, centred in the cell; curtains, blinds and lit
    rooms vary from window to window."""
    size = image.shape[0]
    cw, ch = size // layout.bays, size // layout.floors
    w, h = int(cw * width_frac), int(ch * height_frac)
    for row in range(layout.floors):
        for col in range(layout.bays):
            x0 = col * cw + (cw - w) // 2
            y0 = row * ch + int(ch * 0.22)
            pane = _glass(rng, h, w, sky=rng.uniform(0.8, 1.15))
            kind = rng.random()
            if kind < 0.25:  # curtains half drawn
                side = int(w * rng.uniform(0.2, 0.45))
                pane[:, :side] = pane[:, :side] * 0.3 + np.array((185, 170, 150), np.float32) * 0.7
            elif kind < 0.4:  # blinds
                blinds = int(h * rng.uniform(0.2, 0.9))
                slats = (np.arange(blinds) % 4 == 0)[:, None, None]
                pane[:blinds] = np.array((200, 198, 190), np.float32) - 25.0 * slats
            elif kind < 0.47:  # a lit room
                pane = pane * 0.5 + np.array((230, 205, 150), np.float32) * 0.5
            image[y0:y0 + h, x0:x0 + w] = pane
            border = max(2, w // 16)
            cv2.rectangle(image, (x0, y0), (x0 + w - 1, y0 + h - 1), frame, border)
            if mullion:
                cv2.line(image, (x0 + w // 2, y0), (x0 + w // 2, y0 + h - 1), frame, max(1, border - 1))
                cv2.line(image, (x0, y0 + h // 3), (x0 + w - 1, y0 + h // 3), frame, max(1, border - 1))
            if sill:
                cv2.rectangle(image, (x0 - 3, y0 + h), (x0 + w + 2, y0 + h + 4), (178, 176, 170), -1)
                image[y0 + h + 5:y0 + h + 9, x0 - 3:x0 + w + 3] *= 0.8  # its shadow
            if shutters is not None and rng.random() < 0.7:
                sw = w // 3
                for sx in (x0 - sw - 1, x0 + w + 1):
                    cv2.rectangle(image, (sx, y0), (sx + sw - 1, y0 + h - 1), shutters, -1)
                    for yy in range(y0 + 3, y0 + h - 2, 5):
                        cv2.line(image, (sx + 1, yy), (sx + sw - 2, yy), tuple(c * 0.75 for c in shutters), 1)


def _weathering(rng: np.random.Generator, size: int, layout: FacadeLayout, strength: float) -> np.ndarray:
    """Rain streaks below the windows and grime towards the bottom of each floor."""
    streaks = np.clip(_noise(rng, size, (2, 64), octaves=2), 0, None)
    v = (np.arange(size) % (size // layout.floors)) / (size // layout.floors)
    return -strength * (streaks * 0.7 + 0.5 * v[:, None] ** 3)


def _facade_brick(rng: np.random.Generator, style: _Style, size: int = 512) -> np.ndarray:
    layout = FACADE_LAYOUTS[FACADE_BRICK]
    courses, bricks = 128, 48  # 0.1 m courses, 0.25 m bricks over the 12 m x 12.8 m repeat
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    ch, cw = size / courses, size / bricks
    iy = np.floor(y / ch)
    shifted = x + (iy % 2) * cw / 2
    ix = np.floor(shifted / cw)
    mortar = ((y - iy * ch) < 1.0) | ((shifted - ix * cw) < 1.0)
    palette = style.choice(((146, 72, 52), (120, 58, 44), (160, 96, 70)),
                           (((146, 72, 52), (120, 58, 44), (160, 96, 70)),
                            ((170, 140, 100), (150, 120, 86), (186, 160, 120)),
                            ((110, 60, 50), (96, 52, 46), (132, 74, 58))))
    pick = rng.integers(0, len(palette), (courses, bricks + 1))
    tone = rng.normal(0, 9.0, (courses, bricks + 1))
    iyi, ixi = iy.astype(int) % courses, ix.astype(int) % (bricks + 1)
    colour = np.array(palette, np.float32)[pick[iyi, ixi]] + tone[iyi, ixi][..., None]
    colour += (6.0 * rng.standard_normal((size, size)).astype(np.float32))[..., None]
    colour[mortar] = np.array((168, 162, 150), np.float32) + rng.normal(0, 6, (int(mortar.sum()), 1))
    colour += _weathering(rng, size, layout, 14.0)[..., None]
    image = colour.astype(np.float32)
    _windows(rng, image, layout, width_frac=0.46, height_frac=0.55, frame=(226, 224, 216), sill=True,
             mullion=style.choice(True, (True, False)))
    return _to_u8(image)


def _facade_concrete(rng: np.random.Generator, style: _Style, size: int = 512) -> np.ndarray:
    layout = FACADE_LAYOUTS[FACADE_CONCRETE]
    base = style.scale(150.0, 0.15)
    shade = 6.0 * _noise(rng, size, 16, octaves=3) + 5.0 * rng.standard_normal((size, size)).astype(np.float32)
    shade += 8.0 * _speckle(rng, size, 0.04) + _weathering(rng, size, layout, 22.0)
    cw, ch = size // layout.bays, size // layout.floors
    # Precast panels, one per bay and floor, each cast a little differently.
    panel_tone = rng.normal(0, 5.0, (layout.floors, layout.bays))
    yy, xx = np.mgrid[0:size, 0:size]
    shade += panel_tone[yy // ch, xx // cw]
    joints = ((yy % ch) < 2) | ((xx % cw) < 2)
    shade[joints] -= 35.0
    image = _rgb((base, base - 2, base - 8), shade.astype(np.float32))
    _windows(rng, image, layout, width_frac=style.choice(0.72, (0.6, 0.72, 0.85)), height_frac=0.5,
             frame=(70, 72, 76), sill=False, mullion=True)
    return _to_u8(image)


def _facade_glass(rng: np.random.Generator, style: _Style, size: int = 512) -> np.ndarray:
    """A curtain wall: tinted panes between aluminium mullions, opaque spandrels at the
    floor slabs."""
    layout = FACADE_LAYOUTS[FACADE_GLASS]
    cw, ch = size // layout.bays, size // layout.floors
    tint = np.array(style.choice((70, 100, 120), ((70, 100, 120), (60, 90, 84), (96, 100, 108), (58, 74, 100))),
                    np.float32)
    v = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    sky = 0.6 + 0.5 * np.clip(_noise(rng, size, (4, 2), octaves=2), -1, 1)[..., None]
    image = tint[None, None] * (0.7 + 0.6 * sky * (1.1 - v))
    # Reflections of the street: blurred blocks of colour, per pane a different gain.
    # (mostly grey: the sky and the buildings opposite).
    blocks = rng.normal(0, 16.0, (8, 16, 1)) + rng.normal(0, 3.0, (8, 16, 3))
    reflection = cv2.resize(blocks.astype(np.float32), (size, size), interpolation=cv2.INTER_NEAREST)
    image += _blur(reflection, 2.0)
    pane_gain = rng.uniform(0.85, 1.15, (layout.floors, layout.bays * 2))
    yy, xx = np.mgrid[0:size, 0:size]
    image *= pane_gain[yy // ch, xx // (cw // 2)][..., None]
    spandrel = (yy % ch) > ch * 0.82
    image[spandrel] = np.array((48, 52, 58), np.float32) + rng.normal(0, 3.0, (int(spandrel.sum()), 1))
    frame = np.array((168, 172, 178), np.float32)
    mullions = ((xx % (cw // 2)) < 3) | ((yy % ch) < 3) | (np.abs((yy % ch) - ch * 0.82) < 1.5)
    image[mullions] = frame
    return _to_u8(image)


def _facade_plaster(rng: np.random.Generator, style: _Style, size: int = 512) -> np.ndarray:
    layout = FACADE_LAYOUTS[FACADE_PLASTER]
    colour = style.choice((214, 200, 172), ((214, 200, 172), (206, 176, 150), (196, 196, 186), (222, 208, 150),
                                            (180, 196, 190)))
    shade = 7.0 * _noise(rng, size, 8, octaves=4) + 4.0 * rng.standard_normal((size, size)).astype(np.float32)
    shade += _weathering(rng, size, layout, 26.0)
    image = _rgb(colour, shade)
    # A cornice line under each floor's windows.
    ch = size // layout.floors
    for row in range(layout.floors):
        image[row * ch + ch - 6:row * ch + ch - 2] *= 0.88
    shutters = style.choice((58, 88, 62), ((58, 88, 62), (110, 70, 46), (70, 80, 96), None))
    _windows(rng, image, layout, width_frac=0.36, height_frac=0.55, frame=(236, 234, 228), sill=True,
             mullion=True, shutters=shutters)
    return _to_u8(image)


# -- vegetation and street furniture ------------------------------------------------------


def _foliage(rng: np.random.Generator, style: _Style, size: int = 256) -> np.ndarray:
    """Leaf clusters: many small overlapping blobs of varied greens over dark gaps."""
    image = np.zeros((size, size, 3), np.float32) + np.array((30, 46, 22), np.float32)
    hue_shift = style.scale(1.0, 0.12)
    for _ in range(900):
        centre = rng.uniform(0, size, 2)
        axes = (int(rng.integers(3, 8)), int(rng.integers(2, 5)))
        light = rng.uniform(0.6, 1.45)
        green = np.array((62 * hue_shift, 104, 40)) * light + rng.normal(0, 6, 3)
        _ellipse(image, centre, axes, float(rng.uniform(0, 180)), tuple(float(c) for c in green))
    image += (6.0 * rng.standard_normal((size, size))).astype(np.float32)[..., None]
    return _to_u8(image)


def _bark(rng: np.random.Generator, style: _Style, size: int = 256) -> np.ndarray:
    ridges = _noise(rng, size, (4, 32), octaves=3)  # long along v (up the trunk)
    shade = 22.0 * ridges + 6.0 * rng.standard_normal((size, size)).astype(np.float32)
    shade -= 30.0 * np.clip(-ridges - 0.8, 0, None)  # deep furrows
    base = style.choice((92, 78, 64), ((92, 78, 64), (110, 104, 96), (80, 66, 52)))
    return _to_u8(_rgb(base, shade))


def _fence_wood(rng: np.random.Generator, style: _Style, size: int = 256) -> np.ndarray:
    """Vertical boards (16 per 2 m) with grain and gaps; u along the fence, v up it."""
    boards = 16
    bw = size // boards
    x = np.arange(size)
    board = x // bw
    base = np.array(style.choice((128, 94, 62), ((128, 94, 62), (150, 120, 84), (96, 84, 70), (110, 110, 104))),
                    np.float32)
    grain = 12.0 * _noise(rng, size, (4, 64), octaves=2) + 5.0 * rng.standard_normal((size, size)).astype(np.float32)
    shade = grain + rng.normal(0, 10.0, boards)[board][None, :]
    gap = (x % bw) < 2
    shade[:, gap] = -70.0
    v = np.linspace(0, 1, size)[:, None]  # image rows from the top: the fence's top first
    shade = shade - 20.0 * (v < 0.04)  # weathered top edge
    return _to_u8(_rgb(tuple(base), shade.astype(np.float32)))


def _speed_sign(rng: np.random.Generator, speed_kmh: int, size: int = 128) -> np.ndarray:
    """A speed-limit disc filling the texture: white face, red ring, black figures."""
    image = np.full((size, size, 3), 200, np.uint8)
    c = (size // 2, size // 2)
    cv2.circle(image, c, size // 2 - 1, (205, 30, 36), -1, cv2.LINE_AA)
    cv2.circle(image, c, int(size * 0.36), (238, 238, 234), -1, cv2.LINE_AA)
    text = str(speed_kmh)
    font = cv2.FONT_HERSHEY_DUPLEX
    scale = 1.0
    (tw, th), _ = cv2.getTextSize(text, font, scale, 3)
    scale *= min(size * 0.5 / tw, size * 0.34 / th)
    (tw, th), _ = cv2.getTextSize(text, font, scale, 3)
    cv2.putText(image, text, (c[0] - tw // 2, c[1] + th // 2), font, scale, (20, 20, 20), 3, cv2.LINE_AA)
    return _to_u8(image + rng.normal(0, 4.0, (size, size, 1)))
