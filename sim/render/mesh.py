"""Triangle meshes as plain numpy arrays: what the world builder and actor models
produce and the renderer uploads. Coordinates are metres in the map frame (REP 103,
z up) for static geometry and in the actor's body frame (x forward, origin at the box
centre on the ground) for actor models.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Mesh:
    """Triangles of one material and one semantic class.

    ``uv`` are texture coordinates (already scaled: 1.0 = one texture repeat);
    ``colour`` is a per-vertex RGBA in [0, 1] that multiplies the texture (or is the
    colour, untextured). Triangles wind counter-clockwise seen from outside.
    ``emissive`` meshes ignore lighting (lamps, lit windows at night).
    """

    vertices: np.ndarray  # (N, 3) float32, metres
    normals: np.ndarray  # (N, 3) float32, unit length
    uv: np.ndarray  # (N, 2) float32
    colour: np.ndarray  # (N, 4) float32 in [0, 1]
    triangles: np.ndarray  # (M, 3) int32 indices into vertices
    semantic_id: int  # a class id of drivestack.schema.SEMANTIC_CLASSES
    texture: str | None = None  # a name of sim.render.textures, None = untextured
    emissive: bool = False

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float32).reshape(-1, 3)
        n = len(self.vertices)
        self.normals = np.ascontiguousarray(self.normals, dtype=np.float32).reshape(n, 3)
        self.uv = np.ascontiguousarray(self.uv, dtype=np.float32).reshape(n, 2)
        self.colour = np.ascontiguousarray(self.colour, dtype=np.float32).reshape(n, 4)
        self.triangles = np.ascontiguousarray(self.triangles, dtype=np.int32).reshape(-1, 3)
        if len(self.triangles) and (self.triangles.min() < 0 or self.triangles.max() >= n):
            raise ValueError("Mesh.triangles index outside the vertex array")
        if not np.isfinite(self.vertices).all():
            raise ValueError("Mesh.vertices has a non-finite value")

    @property
    def key(self) -> tuple[int, str | None, bool]:
        """Meshes with the same key can be merged into one draw call."""
        return self.semantic_id, self.texture, self.emissive


def merge(meshes: Sequence[Mesh]) -> list[Mesh]:
    """One mesh per (semantic class, texture, emissive): fewer, larger draw calls."""
    groups: dict[tuple[int, str | None, bool], list[Mesh]] = {}
    for mesh in meshes:
        if len(mesh.triangles):
            groups.setdefault(mesh.key, []).append(mesh)
    merged = []
    for (semantic_id, texture, emissive), parts in groups.items():
        offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
        merged.append(Mesh(
            np.concatenate([p.vertices for p in parts]), np.concatenate([p.normals for p in parts]),
            np.concatenate([p.uv for p in parts]), np.concatenate([p.colour for p in parts]),
            np.concatenate([p.triangles + o for p, o in zip(parts, offsets)]),
            semantic_id, texture, emissive))
    return merged


# -- primitive builders -------------------------------------------------------------------
# Plain functions returning one Mesh each. Positions are metres, yaw turns about z
# (REP 103); texture coordinates are metric over ``uv_repeat_m`` so neighbouring pieces
# continue one another, with v = 0 at the bottom row of a texture image and v = 1 at its
# top (the OpenGL / Panda3D convention). Large faces are cut into cells no longer than
# ``max_cell_m``: a software rasteriser mishandles big polygons crossing the near plane.

Colour = tuple[float, float, float] | tuple[float, float, float, float]


def _rgba(colour: Colour | np.ndarray, n: int) -> np.ndarray:
    c = np.asarray(colour, dtype=np.float32)
    if c.ndim == 1:
        c = np.broadcast_to(c, (n, len(c)))
    if c.shape[1] == 3:
        c = np.concatenate([c, np.ones((n, 1), np.float32)], axis=1)
    return c


def orient_triangles(vertices: np.ndarray, triangles: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Triangles rewound where needed so they turn counter-clockwise about their vertex normals."""
    v = np.asarray(vertices, dtype=np.float64)
    t = np.asarray(triangles, dtype=np.int64).reshape(-1, 3)
    face = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
    wanted = np.asarray(normals, dtype=np.float64)[t].sum(axis=1)
    flip = (face * wanted).sum(axis=1) < 0
    t = t.copy()
    t[flip] = t[flip][:, ::-1]
    return t


def planar_grid(origin: Sequence[float], u_axis: Sequence[float], v_axis: Sequence[float], size_u_m: float,
                size_v_m: float, *, semantic_id: int, texture: str | None = None, colour: Colour = (1, 1, 1, 1),
                uv_repeat_m: tuple[float, float] = (1.0, 1.0), uv_origin: tuple[float, float] = (0.0, 0.0),
                max_cell_m: float = 5.0) -> Mesh:
    """A rectangle ``origin + a u_axis + b v_axis`` (a, b in [0, size]) facing u x v."""
    o, u, w = (np.asarray(a, dtype=np.float64) for a in (origin, u_axis, v_axis))
    nu, nv = max(1, math.ceil(size_u_m / max_cell_m)), max(1, math.ceil(size_v_m / max_cell_m))
    aa = np.tile(np.arange(nu + 1) * (size_u_m / nu), nv + 1)
    bb = np.repeat(np.arange(nv + 1) * (size_v_m / nv), nu + 1)
    vertices = o + aa[:, None] * u + bb[:, None] * w
    normal = np.array([u[1] * w[2] - u[2] * w[1], u[2] * w[0] - u[0] * w[2], u[0] * w[1] - u[1] * w[0]])
    normal /= math.sqrt(normal @ normal)
    uv = np.empty((len(aa), 2))
    uv[:, 0] = uv_origin[0] + aa / uv_repeat_m[0]
    uv[:, 1] = uv_origin[1] + bb / uv_repeat_m[1]
    i = (np.arange(nv)[:, None] * (nu + 1) + np.arange(nu)[None, :]).ravel()
    tris = np.concatenate([np.column_stack([i, i + 1, i + nu + 2]), np.column_stack([i, i + nu + 2, i + nu + 1])])
    n = len(vertices)
    return Mesh(vertices, np.broadcast_to(normal, (n, 3)), uv, _rgba(colour, n), tris, semantic_id, texture)


def box(centre_x_m: float, centre_y_m: float, base_z_m: float, yaw_rad: float, length_m: float, width_m: float,
        height_m: float, *, semantic_id: int, texture: str | None = None, colour: Colour = (1, 1, 1, 1),
        uv_repeat_m: tuple[float, float] = (1.0, 1.0), max_cell_m: float = 5.0, top: bool = True,
        bottom: bool = False) -> Mesh:
    """An upright box, ``length_m`` along ``yaw_rad``; each side face's u runs along it
    (counter-clockwise seen from above) from 0, its v up from the base."""
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    if max(length_m, width_m, height_m) <= max_cell_m:
        return _small_box(centre_x_m, centre_y_m, base_z_m, c, s, length_m, width_m, height_m, semantic_id, texture,
                          colour, uv_repeat_m, top, bottom)
    fwd, left, up = np.array([c, s, 0.0]), np.array([-s, c, 0.0]), np.array([0.0, 0.0, 1.0])
    centre = np.array([centre_x_m, centre_y_m, base_z_m])
    hl, hw = length_m / 2, width_m / 2
    # Corners counter-clockwise from above; each side runs from one corner to the next.
    corners = [centre + fwd * hl - left * hw, centre + fwd * hl + left * hw,
               centre - fwd * hl + left * hw, centre - fwd * hl - left * hw]
    edges = [(left, width_m), (-fwd, length_m), (-left, width_m), (fwd, length_m)]
    parts = [planar_grid(corner, axis, up, size, height_m, semantic_id=semantic_id, texture=texture, colour=colour,
                         uv_repeat_m=uv_repeat_m, max_cell_m=max_cell_m)
             for corner, (axis, size) in zip(corners, edges)]
    if top:
        parts.append(planar_grid(corners[3] + up * height_m, fwd, left, length_m, width_m, semantic_id=semantic_id,
                                 texture=texture, colour=colour, uv_repeat_m=uv_repeat_m, max_cell_m=max_cell_m))
    if bottom:
        parts.append(planar_grid(corners[3], left, fwd, width_m, length_m, semantic_id=semantic_id,
                                 texture=texture, colour=colour, uv_repeat_m=uv_repeat_m, max_cell_m=max_cell_m))
    return concatenate(parts)


# One cell per face: the unit box's faces as (corner, u axis, v axis, size index u, v),
# in the box frame (x forward, y left, z up; corners at +-0.5, z in [0, 1]).
_BOX_FACES = (
    ((0.5, -0.5, 0.0), (0, 1, 0), (0, 0, 1)), ((0.5, 0.5, 0.0), (-1, 0, 0), (0, 0, 1)),
    ((-0.5, 0.5, 0.0), (0, -1, 0), (0, 0, 1)), ((-0.5, -0.5, 0.0), (1, 0, 0), (0, 0, 1)),
    ((-0.5, -0.5, 1.0), (1, 0, 0), (0, 1, 0)), ((-0.5, -0.5, 0.0), (0, 1, 0), (1, 0, 0)),
)


def _small_box(x: float, y: float, z: float, c: float, s: float, length: float, width: float, height: float,
               semantic_id: int, texture: str | None, colour: Colour, uv_repeat_m: tuple[float, float], top: bool,
               bottom: bool) -> Mesh:
    faces = _BOX_FACES[:4] + ((_BOX_FACES[4],) if top else ()) + ((_BOX_FACES[5],) if bottom else ())
    corner = np.array([f[0] for f in faces], dtype=np.float64)
    u_axis = np.array([f[1] for f in faces], dtype=np.float64)
    v_axis = np.array([f[2] for f in faces], dtype=np.float64)
    square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    local = corner[:, None, :] + square[None, :, :1] * u_axis[:, None, :] + square[None, :, 1:] * v_axis[:, None, :]
    size = np.array([length, width, height])
    local = (local * size).reshape(-1, 3)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    vertices = local @ rotation.T + [x, y, z]
    normal = np.cross(u_axis, v_axis) @ rotation.T
    normals = np.repeat(normal, 4, axis=0)
    extent_u, extent_v = np.abs(u_axis) @ size, np.abs(v_axis) @ size
    uv = np.column_stack([(square[None, :, 0] * extent_u[:, None]).ravel() / uv_repeat_m[0],
                          (square[None, :, 1] * extent_v[:, None]).ravel() / uv_repeat_m[1]])
    base = 4 * np.arange(len(faces))[:, None]
    tris = np.concatenate([base + [0, 1, 2], base + [0, 2, 3]])
    n = len(vertices)
    return Mesh(vertices, normals, uv, _rgba(colour, n), tris, semantic_id, texture)


def prism(x_m: float, y_m: float, base_z_m: float, radius_m: float, height_m: float, *, semantic_id: int,
          sides: int = 8, top_radius_m: float | None = None, texture: str | None = None,
          colour: Colour = (1, 1, 1, 1), uv_repeat_m: tuple[float, float] = (1.0, 1.0), cap: bool = True,
          max_cell_m: float = 5.0) -> Mesh:
    """An upright cylinder, cone or frustum with smooth side normals and a flat top cap."""
    top_r = radius_m if top_radius_m is None else top_radius_m
    levels = max(1, math.ceil(height_m / max_cell_m))
    angle, f, cos_a, sin_a, tris = _prism_template(sides, levels)
    rr = radius_m + (top_r - radius_m) * f
    vertices = np.column_stack([x_m + rr * cos_a, y_m + rr * sin_a, base_z_m + height_m * f])
    slope = (radius_m - top_r) / max(height_m, 1e-9)
    normals = np.column_stack([cos_a, sin_a, np.full(len(f), slope)]) / math.sqrt(1.0 + slope * slope)
    circumference = 2 * math.pi * max(radius_m, 1e-3)
    uv = np.column_stack([angle / (2 * math.pi) * circumference / uv_repeat_m[0], height_m * f / uv_repeat_m[1]])
    n = len(vertices)
    parts = [Mesh(vertices, normals, uv, _rgba(colour, n), tris, semantic_id, texture)]
    if cap and top_r > 0:
        ring = np.column_stack([x_m + top_r * cos_a[-sides - 1:-1], y_m + top_r * sin_a[-sides - 1:-1],
                                np.full(sides, base_z_m + height_m)])
        cap_vertices = np.vstack([[x_m, y_m, base_z_m + height_m], ring])
        j = np.arange(sides)
        cap_tris = np.column_stack([np.zeros(sides, int), 1 + j, 1 + (j + 1) % sides])
        parts.append(Mesh(cap_vertices, np.broadcast_to([0.0, 0.0, 1.0], (sides + 1, 3)),
                          (cap_vertices[:, :2] - [x_m, y_m]) / uv_repeat_m[0], _rgba(colour, sides + 1), cap_tris,
                          semantic_id, texture))
    return concatenate(parts)


@functools.lru_cache(maxsize=64)
def _prism_template(sides: int, levels: int) -> tuple[np.ndarray, ...]:
    """Per side vertex (level-major, the seam repeated): angle, height fraction, cos,
    sin; and the side triangles."""
    ring = np.linspace(0.0, 2 * math.pi, sides + 1)  # the seam vertex repeats for the texture
    angle = np.tile(ring, levels + 1)
    f = np.repeat(np.linspace(0.0, 1.0, levels + 1), sides + 1)
    k = sides + 1
    i = (np.arange(levels)[:, None] * k + np.arange(sides)[None, :]).ravel()
    tris = np.concatenate([np.column_stack([i, i + 1, i + k + 1]), np.column_stack([i, i + k + 1, i + k])])
    out = (angle, f, np.cos(angle), np.sin(angle), tris)
    for a in out:
        a.setflags(write=False)
    return out


@functools.lru_cache(maxsize=4)
def _icosphere(subdivisions: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit-sphere vertices and outward-wound faces (read-only, shared)."""
    t = (1.0 + math.sqrt(5.0)) / 2.0
    v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
                  [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], dtype=np.float64)
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
                  [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
                  [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    for _ in range(subdivisions):
        edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
        unique, inverse = np.unique(edges, axis=0, return_inverse=True)
        mid = len(v) + inverse.reshape(3, -1).T  # midpoints of edges 01, 12, 20 per face
        v = np.vstack([v, (v[unique[:, 0]] + v[unique[:, 1]]) / 2])
        a, b, c = f.T
        ab, bc, ca = mid.T
        f = np.concatenate([np.column_stack(x) for x in ((a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca))])
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    f = orient_triangles(v, f, v)
    v.setflags(write=False)
    f.setflags(write=False)
    return v, f


def ellipsoid(x_m: float, y_m: float, z_m: float, radii_m: tuple[float, float, float], *, semantic_id: int,
              subdivisions: int = 1, jitter: float = 0.0, rng: np.random.Generator | None = None,
              texture: str | None = None, colour: Colour = (1, 1, 1, 1), uv_repeat_m: float = 1.0) -> Mesh:
    """A low-poly ellipsoid (an icosphere), its radius jittered by up to ``jitter`` (a
    fraction) for irregular shapes such as tree crowns; texture mapped from the sides."""
    unit, tris = _icosphere(subdivisions)
    if jitter > 0:
        unit = unit * (1.0 + jitter * (rng or np.random.default_rng(0)).uniform(-1, 1, (len(unit), 1)))
    r = np.asarray(radii_m, dtype=np.float64)
    vertices = unit * r + [x_m, y_m, z_m]
    normals = unit / r
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    local = unit * r
    uv = np.column_stack([(local[:, 0] + 0.7 * local[:, 1]) / uv_repeat_m, local[:, 2] / uv_repeat_m])
    n = len(vertices)
    # Positive radii and a radial jitter keep the unit sphere's outward winding.
    return Mesh(vertices, normals, uv, _rgba(colour, n), tris, semantic_id, texture)


def disc(x_m: float, y_m: float, z_m: float, facing_yaw_rad: float, radius_m: float, *, semantic_id: int,
         sides: int = 16, texture: str | None = None, colour: Colour = (1, 1, 1, 1)) -> Mesh:
    """An upright disc facing ``facing_yaw_rad``; the texture's square is fitted to it the
    right way round for someone looking at its face."""
    facing = np.array([math.cos(facing_yaw_rad), math.sin(facing_yaw_rad), 0.0])
    right = np.array([-facing[1], facing[0], 0.0])  # the viewer's right, looking at the face
    angle = np.linspace(0.0, 2 * math.pi, sides, endpoint=False)
    ring = np.cos(angle)[:, None] * right + np.sin(angle)[:, None] * [0.0, 0.0, 1.0]
    vertices = np.vstack([[0.0, 0.0, 0.0], ring]) * radius_m + [x_m, y_m, z_m]
    uv = np.vstack([[0.5, 0.5], 0.5 + 0.5 * np.column_stack([np.cos(angle), np.sin(angle)])])
    j = np.arange(sides)
    tris = np.column_stack([np.zeros(sides, int), 1 + j, 1 + (j + 1) % sides])
    n = sides + 1
    return Mesh(vertices, np.broadcast_to(facing, (n, 3)), uv, _rgba(colour, n), tris, semantic_id, texture)


def strip(left: np.ndarray, right: np.ndarray, *, semantic_id: int, normal: Sequence[float] | np.ndarray,
          uv_left: np.ndarray, uv_right: np.ndarray, texture: str | None = None,
          colour: Colour | np.ndarray = (1, 1, 1, 1)) -> Mesh:
    """Quads between two polylines of equal length (N, 3), facing ``normal`` (3,) or (N, 3).
    A per-vertex ``colour`` is (2N, 4): the left vertices, then the right ones."""
    left, right = np.asarray(left, dtype=np.float64), np.asarray(right, dtype=np.float64)
    n = len(left)
    vertices = np.vstack([left, right])
    normals = np.broadcast_to(np.asarray(normal, dtype=np.float64), (n, 3))
    normals = np.vstack([normals, normals])
    i = np.arange(n - 1)
    tris = np.concatenate([np.column_stack([n + i, n + i + 1, i + 1]), np.column_stack([n + i, i + 1, i])])
    return Mesh(vertices, normals, np.vstack([uv_left, uv_right]), _rgba(colour, 2 * n),
                orient_triangles(vertices, tris, normals), semantic_id, texture)


def flat_quads(x0_m: np.ndarray, y0_m: np.ndarray, x1_m: np.ndarray, y1_m: np.ndarray, z_m: float, *,
               semantic_id: int, texture: str | None = None, uv_repeat_m: float = 1.0,
               colour: Colour | Callable[[np.ndarray], np.ndarray] = (1, 1, 1, 1)) -> Mesh:
    """Axis-aligned horizontal rectangles facing up, texture mapped from map x, y.
    ``colour`` may be a function of the (N, 2) vertex positions returning (N, 4)."""
    x0, y0, x1, y1 = (np.asarray(a, dtype=np.float64).ravel() for a in (x0_m, y0_m, x1_m, y1_m))
    k = len(x0)
    xy = np.stack([np.column_stack([x0, y0]), np.column_stack([x1, y0]), np.column_stack([x1, y1]),
                   np.column_stack([x0, y1])], axis=1).reshape(-1, 2)
    vertices = np.column_stack([xy, np.full(4 * k, z_m)])
    base = 4 * np.arange(k)[:, None]
    tris = np.concatenate([base + [0, 1, 2], base + [0, 2, 3]])
    rgba = colour(xy) if callable(colour) else _rgba(colour, 4 * k)
    return Mesh(vertices, np.broadcast_to([0.0, 0.0, 1.0], (4 * k, 3)), xy / uv_repeat_m, rgba, tris, semantic_id,
                texture)


def concatenate(parts: Sequence[Mesh]) -> Mesh:
    """One mesh from several of the same (semantic class, texture, emissive)."""
    if len({p.key for p in parts}) != 1:
        raise ValueError("concatenate() takes meshes of one semantic class, texture and emissive flag")
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
    first = parts[0]
    return Mesh(np.concatenate([p.vertices for p in parts]), np.concatenate([p.normals for p in parts]),
                np.concatenate([p.uv for p in parts]), np.concatenate([p.colour for p in parts]),
                np.concatenate([p.triangles + o for p, o in zip(parts, offsets)]), first.semantic_id,
                first.texture, first.emissive)
