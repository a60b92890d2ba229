"""The static town as triangle meshes, LiDAR boxes and a ground label grid.

Built once per (town, seed, randomize) from the lane graph; pure numpy (opencv draws
the rasters). The road network is first rasterised into a label grid (road, sidewalk,
road line, terrain; 0.2 m cells): that grid is the LiDAR's ground truth, and the
meshes follow it:

- road: one strip per lane outside junctions, tiles over each junction (whatever its
  connectors leave uncovered included); both reach a little under the kerb, so the
  raised sidewalk hides every edge and the camera never sees a gap;
- kerbs: the smoothed outline of the road grid; the sidewalk (0.15 m high) runs
  ``SIDEWALK_WIDTH_M`` beyond it, where ``sim.pedestrians`` walks its pedestrians;
- lane markings from each lane's marking types, stop lines at the signals, zebra
  crossings where the pedestrians cross;
- terrain tiles over the map bounds plus ``GROUND_MARGIN_M``, 3 cm below the road;
- buildings on plots along the streets and inside the blocks, trees, street lamps,
  fences, benches, bins, bus shelters, speed-limit signs and traffic-light poles.
  The three lamps of a light are the renderer's (their colour follows the light):
  :class:`LightHead` gives it the pose of each housing.

Everything random comes from the seed; ``randomize`` also perturbs the style (building
heights, facade mix, tree density, colours). Frames: map frame, REP 103, metres, z up.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import logging
import math
import time
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.spatial import cKDTree

from drivestack.schema import SEMANTIC_CLASSES, SEMANTIC_ID
from sim.lane_arrays import LaneArrays
from sim.pedestrians import SIDEWALK_OFFSET_M, PedestrianManager
from sim.render import mesh as M
from sim.render import textures as T
from sim.render.mesh import Mesh
from sim.road_map import STOP_LINE_SETBACK_M, LaneSegment, RoadMap
from sim.sensors.lidar import OrientedBoxes

log = logging.getLogger(__name__)

ROAD, ROAD_LINE, SIDEWALK = SEMANTIC_ID["road"], SEMANTIC_ID["road_line"], SEMANTIC_ID["sidewalk"]
BUILDING, FENCE, POLE = SEMANTIC_ID["building"], SEMANTIC_ID["fence"], SEMANTIC_ID["pole"]
TRAFFIC_LIGHT, TRAFFIC_SIGN = SEMANTIC_ID["traffic_light"], SEMANTIC_ID["traffic_sign"]
VEGETATION, TERRAIN, STATIC = SEMANTIC_ID["vegetation"], SEMANTIC_ID["terrain"], SEMANTIC_ID["static"]

# Pedestrians walk SIDEWALK_OFFSET_M beyond the kerb: the middle of the sidewalk.
SIDEWALK_WIDTH_M = 2.0 * SIDEWALK_OFFSET_M
KERB_HEIGHT_M = 0.15
KERB_STONE_WIDTH_M = 0.2
KERB_OUTSET_M = 0.05  # the kerb face stands this far outside the lane edge
MARKING_Z_M = 0.015  # paint floats above the asphalt so the two never z-fight
TERRAIN_Z_M = -0.03  # grass runs under the road edges, just below them
GROUND_MARGIN_M = 60.0
LABEL_CELL_M = 0.2
MAX_EDGE_M = 5.0
# Road pieces overlap their neighbours and reach under the kerb by this much: no cracks.
ROAD_OVERLAP_M = 0.3
JUNCTION_TILE_M = 1.0
JUNCTION_RUN_M = 4.0
TERRAIN_TILE_M = 3.2
TERRAIN_FAR_TILE_M = 12.8
TERRAIN_FAR_M = 25.0  # big terrain tiles only this far from any road (never near a camera)
# Enclosed non-road pockets smaller than this (between junction connectors) are road.
JUNCTION_HOLE_MAX_M2 = 300.0
LINE_WIDTH_M = 0.14
EDGE_LINE_INSET_M = 0.03  # between an edge line and the kerb
DOUBLE_LINE_GAP_M = 0.12
DASH_M, DASH_GAP_M = 3.0, 6.0  # CARLA's broken lines
STOP_LINE_WIDTH_M = 0.4
# Lines stop short of a junction mouth: the crosswalk and the stop line are there.
MARKING_CLEAR_M = STOP_LINE_SETBACK_M + STOP_LINE_WIDTH_M / 2
# Zebra stripes, centred where sim.pedestrians crosses (2.5 m from the junction mouth):
# 1 m to 4 m from it, clear of the stop line.
CROSSWALK_STRIPE_M, CROSSWALK_GAP_M, CROSSWALK_LENGTH_M = 0.5, 0.55, 3.0
LIGHT_HOUSING_M = (0.35, 1.0, 0.3)  # width, height, depth
LIGHT_CENTRE_Z_M = 3.0
LIGHT_POLE_RADIUS_M = 0.1
FLOOR_HEIGHT_RANGE = (2, 12)
TREE_STRETCH_M = 60.0
STREET_TREE_SETBACK_M = 4.5  # of the buildings behind a row of street trees

_METAL = (0.42, 0.43, 0.45, 1.0)
_DARK_METAL = (0.16, 0.17, 0.18, 1.0)
_HOUSING = (0.07, 0.07, 0.08, 1.0)
_UP = (0.0, 0.0, 1.0)


# -- public types --------------------------------------------------------------------------


@dataclass(frozen=True)
class LightHead:
    """A traffic light's lamp housing: the renderer puts the lamps on its front face
    (the one facing ``yaw_rad``), ground truth boxes it. Map frame; ``z_m`` is the centre."""

    light_id: int
    x_m: float
    y_m: float
    z_m: float
    yaw_rad: float
    width_m: float
    height_m: float
    depth_m: float


@dataclass(frozen=True, eq=False)
class GroundLabels:
    """The semantic class of the ground at map positions: a label grid, ``labels[row,
    col]`` for the cell whose corner nearest the origin is (x0 + col * cell, y0 + row *
    cell). Outside the grid the ground is terrain. Usable as the LiDAR's ``GroundTag``."""

    labels: np.ndarray  # (rows, cols) uint8 semantic ids
    x0_m: float
    y0_m: float
    cell_m: float

    def __call__(self, x_m: np.ndarray, y_m: np.ndarray) -> np.ndarray:
        x, y = np.broadcast_arrays(np.asarray(x_m, dtype=float), np.asarray(y_m, dtype=float))
        col = np.floor((x - self.x0_m) / self.cell_m)
        row = np.floor((y - self.y0_m) / self.cell_m)
        rows, cols = self.labels.shape
        inside = (row >= 0) & (row < rows) & (col >= 0) & (col < cols)
        out = np.full(x.shape, TERRAIN, dtype=np.int64)
        out[inside] = self.labels[row[inside].astype(np.int64), col[inside].astype(np.int64)]
        return out


@dataclass(frozen=True, eq=False)
class World:
    """The static town. Arrays are shared with the build cache: treat them as read-only."""

    meshes: list[Mesh]
    light_heads: list[LightHead]
    static_boxes: OrientedBoxes
    ground_tag: GroundLabels
    seed: int
    randomize: bool
    extent_xy: tuple[float, float, float, float]  # ground covered: x_min, y_min, x_max, y_max
    build_time_s: float = 0.0

    @property
    def textures(self) -> dict[str, np.ndarray]:
        return T.make_textures(self.seed, self.randomize)

    def triangle_counts(self) -> dict[str, int]:
        """Triangles per semantic class name."""
        names = {c.class_id: c.name for c in SEMANTIC_CLASSES}
        counts: dict[str, int] = {}
        for m in self.meshes:
            counts[names[m.semantic_id]] = counts.get(names[m.semantic_id], 0) + len(m.triangles)
        return counts


_CACHE: collections.OrderedDict[tuple, World] = collections.OrderedDict()
_CACHE_SIZE = 6


def build_world(road_map: RoadMap, seed: int = 0, randomize: bool = False) -> World:
    """The town of ``road_map``; cached per (town, OpenDRIVE text, seed, randomize)."""
    key = (road_map.name, hashlib.sha1(road_map.xodr_text.encode()).hexdigest(), int(seed), bool(randomize))
    world = _CACHE.get(key)
    if world is None:
        world = _build(road_map, int(seed), bool(randomize))
        _CACHE[key] = world
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    return world


def _build(road_map: RoadMap, seed: int, randomize: bool) -> World:
    start = time.perf_counter()
    style = _Style(np.random.default_rng([seed, 11]), randomize)
    builder = _TownBuilder(road_map, seed, style)
    builder.build()
    meshes = M.merge(builder.meshes)
    for m in meshes:
        for a in (m.vertices, m.normals, m.uv, m.colour, m.triangles):
            a.setflags(write=False)
    builder.labels.setflags(write=False)
    grid = builder.grid
    elapsed = time.perf_counter() - start
    world = World(meshes, builder.light_heads, builder.boxes.to_oriented_boxes(),
                  GroundLabels(builder.labels, grid.x0, grid.y0, grid.cell), seed, randomize,
                  (grid.x0, grid.y0, grid.x0 + grid.cols * grid.cell, grid.y0 + grid.rows * grid.cell), elapsed)
    log.info("world %s (seed %d%s): %d triangles in %.2f s", road_map.name, seed, ", randomized" if randomize else "",
             sum(world.triangle_counts().values()), elapsed)
    return world


# -- style ---------------------------------------------------------------------------------


class _Style:
    """Layout parameters: fixed defaults, or drawn per seed when randomising."""

    def __init__(self, rng: np.random.Generator, randomize: bool) -> None:
        def pick(default, low, high):
            return float(rng.uniform(low, high)) if randomize else default

        self.height_scale = pick(1.0, 0.7, 1.4)
        self.tower_probability = pick(0.12, 0.03, 0.3)
        weights = rng.dirichlet(np.ones(len(T.FACADES)) * 2.0) if randomize else np.array([0.35, 0.25, 0.15, 0.25])
        self.facade_weights = weights / weights.sum()
        self.street_tree_probability = pick(0.6, 0.2, 0.95)
        self.tree_spacing_m = pick(11.0, 7.0, 16.0)
        self.lamp_spacing_m = pick(30.0, 22.0, 40.0)
        self.fence_probability = pick(0.12, 0.03, 0.35)
        self.park_probability = pick(0.15, 0.05, 0.35)
        self.setback_m = (pick(1.5, 1.0, 3.0), pick(6.0, 4.0, 10.0))
        self.yellow_centre_line = bool(rng.random() < 0.5) if randomize else False
        self.tint = pick(0.08, 0.03, 0.15)
        self.foliage_hue = pick(0.0, -0.08, 0.08)


# -- rasters -------------------------------------------------------------------------------

_SHIFT = 4  # fixed-point bits of the sub-cell coordinates handed to opencv


@dataclass(frozen=True)
class _Grid:
    x0: float
    y0: float
    cell: float
    rows: int
    cols: int

    def pixels(self, xy: np.ndarray) -> np.ndarray:
        """Map positions as opencv fixed-point pixel coordinates (cell centres at integers)."""
        px = (np.asarray(xy, dtype=np.float64) - [self.x0, self.y0]) / self.cell - 0.5
        return np.round(px * (1 << _SHIFT)).astype(np.int32)

    def sample(self, grid: np.ndarray, xy: np.ndarray) -> np.ndarray:
        """Values of ``grid`` (this geometry) at map positions; 0 outside."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        col = np.floor((xy[:, 0] - self.x0) / self.cell).astype(np.int64)
        row = np.floor((xy[:, 1] - self.y0) / self.cell).astype(np.int64)
        inside = (row >= 0) & (row < grid.shape[0]) & (col >= 0) & (col < grid.shape[1])
        out = np.zeros(len(xy), grid.dtype)
        out[inside] = grid[row[inside], col[inside]]
        return out


def _fill(mask: np.ndarray, grid: _Grid, polygon: np.ndarray, value: int = 1) -> None:
    cv2.fillPoly(mask, [grid.pixels(polygon)], value, cv2.LINE_8, _SHIFT)


def _block_any(mask: np.ndarray, k: int) -> np.ndarray:
    r, c = mask.shape[0] // k, mask.shape[1] // k
    return mask[:r * k, :c * k].reshape(r, k, c, k).any(axis=(1, 3))


def _block_all(mask: np.ndarray, k: int) -> np.ndarray:
    r, c = mask.shape[0] // k, mask.shape[1] // k
    return mask[:r * k, :c * k].reshape(r, k, c, k).all(axis=(1, 3))


# -- polyline helpers ----------------------------------------------------------------------


def _left_normal(yaw: np.ndarray) -> np.ndarray:
    return np.column_stack([-np.sin(yaw), np.cos(yaw)])


def _lane_points(lane: LaneSegment, s_m: np.ndarray, lateral_m: float | np.ndarray = 0.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Points ``lateral_m`` left of the lane centre at arc lengths ``s_m``, and the heading."""
    x = np.interp(s_m, lane.s_m, lane.points_xy[:, 0])
    y = np.interp(s_m, lane.s_m, lane.points_xy[:, 1])
    yaw = np.interp(s_m, lane.s_m, np.unwrap(lane.yaw_rad))
    return np.column_stack([x, y]) + np.asarray(lateral_m)[..., None] * _left_normal(yaw), yaw


def _samples(a: float, b: float, max_step_m: float) -> np.ndarray:
    return np.linspace(a, b, max(2, math.ceil((b - a) / max_step_m) + 1))


def _lane_s(lane: LaneSegment, max_step_m: float = 1.5, max_turn_rad: float = 0.0) -> np.ndarray:
    """The lane's own samples, with more where two are further apart than ``max_step_m``;
    with ``max_turn_rad``, fewer along straights: a sample is kept where the heading has
    turned that much since the last one kept, or ``max_step_m`` has passed."""
    s = lane.s_m
    extra = [np.linspace(s[i], s[i + 1], math.ceil((s[i + 1] - s[i]) / max_step_m) + 1)[1:-1]
             for i in np.flatnonzero(np.diff(s) > max_step_m)]
    s = np.unique(np.concatenate([s, *extra])) if extra else s
    if max_turn_rad <= 0 or len(s) < 3:
        return s
    yaw = np.interp(s, lane.s_m, np.unwrap(lane.yaw_rad))
    keep, last = [0], 0
    for i in range(1, len(s) - 1):
        if s[i + 1] - s[last] > max_step_m or abs(yaw[i + 1] - yaw[last]) > max_turn_rad:
            keep.append(i)
            last = i
    keep.append(len(s) - 1)
    return s[keep]


def _rect(cx: float, cy: float, yaw: float, length: float, width: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    f, lft = np.array([c, s]) * length / 2, np.array([-s, c]) * width / 2
    centre = np.array([cx, cy])
    return np.array([centre + f - lft, centre + f + lft, centre - f + lft, centre - f - lft])


def _tint(xy: np.ndarray, seed: int, amount: float, wavelength_m: float = 40.0,
          colour: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """A smooth brightness variation over the map (a few plane waves), so tiled
    textures do not repeat visibly; (N, 4) RGBA."""
    rng = np.random.default_rng([seed, 99])
    value = np.zeros(len(xy))
    for _ in range(4):
        angle, phase = rng.uniform(0, 2 * math.pi, 2)
        k = 2 * math.pi / (wavelength_m * rng.uniform(0.6, 1.6))
        value += np.sin(k * (xy[:, 0] * math.cos(angle) + xy[:, 1] * math.sin(angle)) + phase)
    # Vertex colours multiply the texture and cannot exceed 1: the variation darkens only.
    shade = 1.0 - amount * (0.5 + value / 8.0)
    rgb = np.clip(shade[:, None] * np.asarray(colour)[None, :], 0, 1)
    return np.column_stack([rgb, np.ones(len(xy))]).astype(np.float32)


# -- kerbs ---------------------------------------------------------------------------------


@dataclass
class _Kerb:
    """A closed kerb line with the road on its left; the sidewalk runs to its right."""

    points: np.ndarray  # (N, 2), the loop not closed
    normals: np.ndarray  # (N, 2) unit, towards the sidewalk
    miter: np.ndarray  # (N,) offsets along the normal are scaled so straight edges stay parallel
    widths: np.ndarray  # (N,) sidewalk width

    def offset(self, distance_m: float | np.ndarray) -> np.ndarray:
        return self.points + self.normals * (self.miter * distance_m)[:, None]

    @staticmethod
    def closed(a: np.ndarray) -> np.ndarray:
        """Per-point values with the first repeated at the end (the loop closed)."""
        return np.concatenate([a, a[:1]])

    @property
    def arc_m(self) -> np.ndarray:
        """Arc length at each point of the closed loop (N + 1 values)."""
        p = self.closed(self.points)
        return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])


def _kerbs(road: np.ndarray, grid: _Grid, lanes: tuple[LaneSegment, ...]) -> list[_Kerb]:
    contours, _ = cv2.findContours(road.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    edges = _LaneEdges(lanes)
    kerbs = []
    for contour in contours:
        if len(contour) < 40:
            continue
        px = contour[:, 0, :].astype(np.float64)
        # Boundary cells lie half a cell inside the road; smoothing removes the staircase.
        px = gaussian_filter1d(px, 2.5, axis=0, mode="wrap")
        xy = (px + 0.5) * grid.cell + [grid.x0, grid.y0]
        simple = cv2.approxPolyDP(xy.astype(np.float32).reshape(-1, 1, 2), 0.03, True)[:, 0, :].astype(np.float64)
        if len(simple) < 3:
            continue
        points = _subdivide_loop(simple, 3.0)
        kerb = _kerb_from_loop(points)
        if (grid.sample(road, kerb.offset(0.6)) > 0).mean() > 0.5:
            kerb = _kerb_from_loop(points[::-1])
        # The raster puts the kerb within a cell of the road edge; beside a lane its
        # edge is known exactly (and the edge line must stay visible).
        kerb = _kerb_from_loop(edges.snap(kerb.offset(0.4 * grid.cell)))
        kerb.widths = _sidewalk_widths(kerb, road, grid)
        kerbs.append(kerb)
    return kerbs


class _LaneEdges:
    """The centre lines of the lanes outside junctions, densely sampled."""

    def __init__(self, lanes: tuple[LaneSegment, ...], step_m: float = 0.5) -> None:
        centres, yaws, halves = [], [], []
        for lane in lanes:
            if lane.in_junction:
                continue
            s = _samples(0.0, lane.length_m, step_m)
            xy, yaw = _lane_points(lane, s)
            centres.append(xy)
            yaws.append(yaw)
            halves.append(np.full(len(s), lane.width_m / 2))
        self.centres = np.concatenate(centres) if centres else np.zeros((0, 2))
        self.yaw = np.concatenate(yaws) if yaws else np.zeros(0)
        self.half_width = np.concatenate(halves) if halves else np.zeros(0)
        self.tree = cKDTree(self.centres) if len(self.centres) else None

    def snap(self, points: np.ndarray) -> np.ndarray:
        """Points beside a lane's edge (not beyond its ends) moved onto the edge plus KERB_OUTSET_M."""
        if self.tree is None:
            return points
        _, i = self.tree.query(points)
        d = points - self.centres[i]
        along = d[:, 0] * np.cos(self.yaw[i]) + d[:, 1] * np.sin(self.yaw[i])
        left = _left_normal(self.yaw[i])
        lateral = (d * left).sum(axis=1)
        near_edge = (np.abs(np.abs(lateral) - self.half_width[i]) < 0.4) & (np.abs(along) < 0.3)
        target = np.sign(lateral) * (self.half_width[i] + KERB_OUTSET_M)
        out = points.copy()
        out[near_edge] += left[near_edge] * (target - lateral)[near_edge, None]
        return out


def _subdivide_loop(points: np.ndarray, max_step_m: float) -> np.ndarray:
    nxt = np.roll(points, -1, axis=0)
    out = []
    for a, b in zip(points, nxt):
        n = max(1, math.ceil(np.linalg.norm(b - a) / max_step_m))
        out.append(a + (b - a) * (np.arange(n) / n)[:, None])
    return np.concatenate(out)


def _kerb_from_loop(points: np.ndarray) -> _Kerb:
    seg = np.roll(points, -1, axis=0) - points
    seg /= np.maximum(np.linalg.norm(seg, axis=1, keepdims=True), 1e-9)
    seg_normal = np.column_stack([seg[:, 1], -seg[:, 0]])  # right of travel
    normal = seg_normal + np.roll(seg_normal, 1, axis=0)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)
    miter = 1.0 / np.maximum((normal * seg_normal).sum(axis=1), 0.5)
    return _Kerb(points, normal, miter, np.zeros(len(points)))


def _sidewalk_widths(kerb: _Kerb, road: np.ndarray, grid: _Grid) -> np.ndarray:
    """SIDEWALK_WIDTH_M, less where another road comes closer (two sidewalks then meet
    half way) or where the kerb bends so sharply towards the sidewalk that its outer
    edge would fold over."""
    reach = np.arange(0.4, 2 * SIDEWALK_WIDTH_M + 0.4, grid.cell)
    probes = kerb.points[:, None, :] + kerb.normals[:, None, :] * reach[None, :, None]
    hit = grid.sample(road, probes.reshape(-1, 2)).reshape(len(kerb.points), len(reach)) > 0
    first = np.where(hit.any(axis=1), reach[np.argmax(hit, axis=1)], np.inf)
    width = np.minimum(SIDEWALK_WIDTH_M, (first - 0.2) / 2.0)
    # Curvature over a few metres of kerb (one vertex's turn is noisy): the radius of
    # a bend towards the sidewalk (turn < 0) bounds the width.
    seg = np.roll(kerb.points, -1, axis=0) - kerb.points
    heading = np.arctan2(seg[:, 1], seg[:, 0])
    turn = np.angle(np.exp(1j * (heading - np.roll(heading, 1))))
    length = (np.linalg.norm(seg, axis=1) + np.roll(np.linalg.norm(seg, axis=1), 1)) / 2
    window = np.ones(7)
    turn_sum = _circular_sum(turn, window)
    length_sum = _circular_sum(length, window)
    radius = np.where(turn_sum < -1e-3, length_sum / np.maximum(-turn_sum, 1e-9), np.inf)
    width = np.minimum(width, 0.8 * radius)
    width = np.minimum.reduce([np.roll(width, k) for k in (-2, -1, 0, 1, 2)])
    return np.clip(width, 0.6, SIDEWALK_WIDTH_M)


def _circular_sum(values: np.ndarray, window: np.ndarray) -> np.ndarray:
    k = len(window) // 2
    padded = np.concatenate([np.resize(values[::-1], k)[::-1], values, np.resize(values, k)])
    return np.convolve(padded, window, mode="valid")


# -- boxes ---------------------------------------------------------------------------------


class _Boxes:
    def __init__(self) -> None:
        self.rows: list[tuple[float, ...]] = []

    def add(self, cx: float, cy: float, yaw: float, length: float, width: float, height: float, tag: int,
            base_z: float = 0.0) -> None:
        self.rows.append((cx, cy, yaw, length, width, height, tag, base_z))

    def to_oriented_boxes(self) -> OrientedBoxes:
        if not self.rows:
            return OrientedBoxes.empty()
        a = np.array(self.rows, dtype=float)
        return OrientedBoxes(a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4], a[:, 5], a[:, 6].astype(np.int64),
                             a[:, 7], np.full(len(a), -1, np.int64))


# -- placement -----------------------------------------------------------------------------


class _Placer:
    """Free space for props on a coarse grid: distance to road or sidewalk, and what
    is taken already."""

    def __init__(self, paved: np.ndarray, grid: _Grid, factor: int = 2) -> None:
        blocked = _block_any(paved, factor)
        self.grid = _Grid(grid.x0, grid.y0, grid.cell * factor, blocked.shape[0], blocked.shape[1])
        free = (~blocked).astype(np.uint8)
        self.clearance_m = cv2.distanceTransform(free, cv2.DIST_L2, 5) * self.grid.cell
        self.taken = np.zeros(blocked.shape, np.uint8)

    def _window(self, corners: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray] | None:
        g = self.grid
        lo = np.floor((corners.min(axis=0) - [g.x0, g.y0]) / g.cell).astype(int) - 1
        hi = np.ceil((corners.max(axis=0) - [g.x0, g.y0]) / g.cell).astype(int) + 1
        if lo.min() < 0 or hi[0] > g.cols or hi[1] > g.rows:
            return None
        local = _Grid(g.x0 + lo[0] * g.cell, g.y0 + lo[1] * g.cell, g.cell, hi[1] - lo[1], hi[0] - lo[0])
        mask = np.zeros((local.rows, local.cols), np.uint8)
        cv2.fillConvexPoly(mask, local.pixels(corners), 1, cv2.LINE_8, _SHIFT)
        return (slice(lo[1], hi[1]), slice(lo[0], hi[0])), mask.astype(bool)

    def free(self, corners: np.ndarray, clearance_m: float) -> bool:
        window = self._window(corners)
        if window is None:
            return False
        index, mask = window
        return bool((self.clearance_m[index][mask] >= clearance_m).all() and not self.taken[index][mask].any())

    def take(self, corners: np.ndarray) -> None:
        window = self._window(corners)
        if window is not None:
            index, mask = window
            self.taken[index][mask] = 1

    def clearance_at(self, xy: np.ndarray) -> np.ndarray:
        return self.grid.sample(self.clearance_m, xy)


# -- the builder ---------------------------------------------------------------------------


class _TownBuilder:
    def __init__(self, road_map: RoadMap, seed: int, style: _Style) -> None:
        self.map = road_map
        self.seed = seed
        self.style = style
        self.meshes: list[Mesh] = []
        self.light_heads: list[LightHead] = []
        self.boxes = _Boxes()
        x_min, y_min, x_max, y_max = road_map.bounds_xy
        big = TERRAIN_FAR_TILE_M
        x0 = math.floor((x_min - GROUND_MARGIN_M) / big) * big
        y0 = math.floor((y_min - GROUND_MARGIN_M) / big) * big
        cols = round((math.ceil((x_max + GROUND_MARGIN_M) / big) * big - x0) / LABEL_CELL_M)
        rows = round((math.ceil((y_max + GROUND_MARGIN_M) / big) * big - y0) / LABEL_CELL_M)
        self.grid = _Grid(x0, y0, LABEL_CELL_M, rows, cols)
        self.lane_arrays = LaneArrays(road_map)
        self.crosswalks = PedestrianManager(road_map, self.lane_arrays, np.random.default_rng(0)).crosswalks

    def rng(self, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, stream])

    def build(self) -> None:
        self.road, open_lanes = self._road_mask()
        self._road_meshes(open_lanes)
        self.lines = np.zeros_like(self.road)
        self._lane_markings()
        self._stop_lines()
        self._crosswalks()
        self.kerbs = _kerbs(self.road, self.grid, self.map.lanes)
        self.sidewalk = np.zeros_like(self.road)
        self._sidewalks()
        labels = np.full(self.road.shape, TERRAIN, np.uint8)
        labels[self.sidewalk > 0] = SIDEWALK
        labels[self.road > 0] = ROAD
        labels[self.lines > 0] = ROAD_LINE  # paint at the very edge may share a cell with the kerb
        self.labels = labels
        self._terrain()
        self.placer = _Placer(labels != TERRAIN, self.grid)
        self.poles_xy: list[tuple[float, float]] = []
        self._traffic_lights()
        self._speed_signs()
        self._street_lamps()
        self._furniture()
        self._plant_stretches()
        self._street_plots()
        self._street_trees()
        self._fill_blocks()

    # -- road ------------------------------------------------------------------------------

    def _road_mask(self) -> tuple[np.ndarray, np.ndarray]:
        """The road cells (lanes, junction pockets filled) and those of lanes outside junctions."""
        road = np.zeros((self.grid.rows, self.grid.cols), np.uint8)
        open_lanes = np.zeros_like(road)
        for lane in self.map.lanes:
            s = _lane_s(lane)
            left, _ = _lane_points(lane, s, lane.width_m / 2)
            right, _ = _lane_points(lane, s, -lane.width_m / 2)
            outline = np.vstack([left, right[::-1]])
            _fill(road, self.grid, outline)
            if not lane.in_junction:
                _fill(open_lanes, self.grid, outline)
        # Close the notches where connectors meet, fill the pockets they enclose.
        road = cv2.morphologyEx(road, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
        _, labels, stats, _ = cv2.connectedComponentsWithStats(1 - road, connectivity=4)
        small = stats[:, cv2.CC_STAT_AREA] * self.grid.cell ** 2 < JUNCTION_HOLE_MAX_M2
        small[0] = False  # label 0 is the road itself
        road[small[labels]] = 1
        return road, open_lanes

    def _road_meshes(self, open_lanes: np.ndarray) -> None:
        tint = self.style.tint

        def colour(xy: np.ndarray) -> np.ndarray:
            return _tint(xy, self.seed, tint, 30.0)

        for lane in self.map.lanes:
            if lane.in_junction:
                continue
            s = _lane_s(lane, 3.0, 0.02)
            half = lane.width_m / 2 + ROAD_OVERLAP_M
            pieces = max(1, math.ceil(2 * half / 4.6))
            edges = np.linspace(-half, half, pieces + 1)
            for a, b in itertools.pairwise(edges):
                left, _ = _lane_points(lane, s, b)
                right, _ = _lane_points(lane, s, a)
                self.meshes.append(self._flat_strip(left, right, 0.0, ROAD, T.ASPHALT, T.ASPHALT_REPEAT_M, colour))
        # Junctions (and anything else no lane strip covers): 1 m tiles merged into short runs.
        rest = (self.road > 0) & (open_lanes == 0)
        rest = cv2.dilate(rest.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        k = round(JUNCTION_TILE_M / self.grid.cell)
        tiles = _block_any(rest, k)
        x0, y0, x1, y1 = _runs(tiles, round(JUNCTION_RUN_M / JUNCTION_TILE_M))
        t = JUNCTION_TILE_M
        gx, gy = self.grid.x0, self.grid.y0
        self.meshes.append(M.flat_quads(gx + x0 * t, gy + y0 * t, gx + x1 * t, gy + y1 * t, 0.0, semantic_id=ROAD,
                                        texture=T.ASPHALT, uv_repeat_m=T.ASPHALT_REPEAT_M, colour=colour))

    @staticmethod
    def _flat_strip(left: np.ndarray, right: np.ndarray, z: float, semantic_id: int, texture: str,
                    repeat_m: float, colour) -> Mesh:
        """A horizontal strip with texture coordinates from map x, y (neighbours line up)."""
        xy = np.vstack([left, right])
        return M.strip(np.column_stack([left, np.full(len(left), z)]),
                       np.column_stack([right, np.full(len(right), z)]), semantic_id=semantic_id, normal=_UP,
                       uv_left=left / repeat_m, uv_right=right / repeat_m, texture=texture, colour=colour(xy))

    # -- paint -----------------------------------------------------------------------------

    def _paint(self, lane: LaneSegment, s_from: float, s_to: float, centre_m: float, width_m: float,
               texture: str) -> None:
        """A painted band along ``lane`` between two arc lengths, ``centre_m`` left of its centre."""
        if s_to - s_from < 0.05:
            return
        s = self._span_s(lane, s_from, s_to)
        left, _ = _lane_points(lane, s, centre_m + width_m / 2)
        right, _ = _lane_points(lane, s, centre_m - width_m / 2)
        z = np.full(len(s), MARKING_Z_M)
        u = s / T.PAINT_REPEAT_M
        self.meshes.append(M.strip(np.column_stack([left, z]), np.column_stack([right, z]), semantic_id=ROAD_LINE,
                                   normal=_UP, uv_left=np.column_stack([u, np.ones_like(u)]),
                                   uv_right=np.column_stack([u, np.zeros_like(u)]), texture=texture))
        _fill(self.lines, self.grid, np.vstack([left, right[::-1]]))
        # A line narrower than a cell can fall between cell centres: draw its middle too.
        cv2.polylines(self.lines, [self.grid.pixels((left + right) / 2)], False, 1, 1, cv2.LINE_4, _SHIFT)

    def _span_s(self, lane: LaneSegment, s_from: float, s_to: float) -> np.ndarray:
        """Samples from ``s_from`` to ``s_to``: the lane's own, thinned along straights."""
        cache = self.__dict__.setdefault("_thinned", {})
        if lane.segment_id not in cache:
            cache[lane.segment_id] = _lane_s(lane, 3.0, 0.02)
        s = cache[lane.segment_id]
        return np.concatenate([[s_from], s[(s > s_from + 0.05) & (s < s_to - 0.05)], [s_to]])

    def _lane_markings(self) -> None:
        """Each lane's left and right marks; a boundary two lanes share is painted once."""
        lanes = self.map.lanes
        painted: list[tuple[cKDTree, np.ndarray, np.ndarray]] = []
        for lane in lanes:
            if lane.in_junction:
                continue
            start = MARKING_CLEAR_M if any(lanes[p].in_junction for p in lane.predecessors) else 0.0
            end = lane.length_m - (MARKING_CLEAR_M if any(lanes[q].in_junction for q in lane.successors) else 0.0)
            if end - start < 1.0:
                continue
            s = _samples(start, end, 0.5)
            for side, marking in ((1.0, lane.left_marking), (-1.0, lane.right_marking)):
                lines = _marking_lines(marking)
                boundary, _ = _lane_points(lane, s, side * lane.width_m / 2)
                fresh = np.ones(len(s), bool)
                lo, hi = boundary.min(axis=0) - 0.6, boundary.max(axis=0) + 0.6
                for other, other_lo, other_hi in painted:
                    if (other_lo <= hi).all() and (lo <= other_hi).all():
                        fresh &= other.query(boundary, distance_upper_bound=0.6)[0] > 0.6
                if not lines:
                    continue
                if fresh.any():
                    kept = boundary[fresh]
                    painted.append((cKDTree(kept), kept.min(axis=0), kept.max(axis=0)))
                opposite = self._opposite_across(lane, side)
                texture = T.PAINT_YELLOW if self.style.yellow_centre_line and opposite else T.PAINT_WHITE
                neighbour = lane.left_neighbor if side > 0 else lane.right_neighbor
                # A line between two lanes straddles their boundary; one at the kerb lies
                # wholly on the asphalt.
                inset = 0.0 if opposite or neighbour >= 0 else LINE_WIDTH_M / 2 + EDGE_LINE_INSET_M
                for a, b in _runs_1d(fresh):
                    self._paint_boundary(lane, s[a], s[b], side, lines, start, texture, inset)

    def _paint_boundary(self, lane: LaneSegment, s0: float, s1: float, side: float, lines: list[tuple[float, bool]],
                        phase_origin: float, texture: str, inset_m: float) -> None:
        for offset, broken in lines:
            centre = side * (lane.width_m / 2 - inset_m) + offset
            if not broken:
                self._paint(lane, s0, s1, centre, LINE_WIDTH_M, texture)
                continue
            period = DASH_M + DASH_GAP_M
            k0 = math.floor((s0 - phase_origin) / period)
            for k in range(k0, math.ceil((s1 - phase_origin) / period) + 1):
                a = max(s0, phase_origin + k * period)
                b = min(s1, phase_origin + k * period + DASH_M)
                if b > a:
                    self._paint(lane, a, b, centre, LINE_WIDTH_M, texture)

    def _opposite_across(self, lane: LaneSegment, side: float) -> bool:
        """Does traffic the other way run beyond this lane boundary (the centre line)?"""
        mid = lane.length_m / 2
        (probe,), (yaw,) = _lane_points(lane, np.array([mid]), np.array([side * lane.width_m]))
        q = self.map.nearest_lane(float(probe[0]), float(probe[1]), max_distance_m=lane.width_m / 2 + 0.5)
        if q is None or q.segment_id == lane.segment_id:
            return False
        _, _, other_yaw = self.map.lanes[q.segment_id].pose_at(q.s_m)
        return math.cos(other_yaw - yaw) < -0.5

    def _stop_lines(self) -> None:
        for group in self.map.signals:
            for stop in group.stop_lines:
                lane = self.map.lanes[stop.segment_id]
                s = np.array([stop.s_m - STOP_LINE_WIDTH_M / 2, stop.s_m + STOP_LINE_WIDTH_M / 2])
                left, _ = _lane_points(lane, s, lane.width_m / 2 - 0.05)
                right, _ = _lane_points(lane, s, -lane.width_m / 2 + 0.05)
                # Across the lane: u along the line, v across its width.
                corners = np.array([right[0], left[0], left[1], right[1]])
                self._paint_quad(corners, (lane.width_m - 0.1) / T.PAINT_REPEAT_M)

    def _paint_quad(self, corners: np.ndarray, u_length: float) -> None:
        """A painted quad (corners counter-clockwise from above, the first edge along u)."""
        z = np.full(2, MARKING_Z_M)
        self.meshes.append(M.strip(np.column_stack([corners[[0, 1]], z]), np.column_stack([corners[[3, 2]], z]),
                                   semantic_id=ROAD_LINE, normal=_UP, uv_left=[[0, 0], [u_length, 0]],
                                   uv_right=[[0, 1], [u_length, 1]], texture=T.PAINT_WHITE))
        _fill(self.lines, self.grid, corners)

    def _crosswalks(self) -> None:
        """Zebra stripes, parallel to the traffic, between the two sidewalk points."""
        done: list[np.ndarray] = []
        for cw in self.crosswalks:
            p0, p1 = np.array(cw.p0), np.array(cw.p1)
            mid = (p0 + p1) / 2
            if any(np.linalg.norm(mid - d) < 1.0 for d in done):
                continue
            done.append(mid)
            length = float(np.linalg.norm(p1 - p0))
            across = (p1 - p0) / max(length, 1e-9)
            along = np.array([-across[1], across[0]])
            span = length - 2 * SIDEWALK_OFFSET_M - 0.6
            pitch = CROSSWALK_STRIPE_M + CROSSWALK_GAP_M
            n = int((span + CROSSWALK_GAP_M) // pitch)
            first = (length - (n * pitch - CROSSWALK_GAP_M)) / 2
            for k in range(n):
                a = p0 + across * (first + k * pitch)
                b = a + across * CROSSWALK_STRIPE_M
                h = along * CROSSWALK_LENGTH_M / 2
                self._paint_quad(np.array([a - h, a + h, b + h, b - h]), CROSSWALK_LENGTH_M / T.PAINT_REPEAT_M)

    # -- sidewalks and terrain -------------------------------------------------------------

    def _sidewalks(self) -> None:
        tint = self.style.tint
        for kerb in self.kerbs:
            arc = kerb.arc_m
            closed = kerb.closed
            kerb_xy = closed(kerb.points)
            stone_xy = closed(kerb.offset(KERB_STONE_WIDTH_M))
            outer_xy = closed(kerb.offset(kerb.widths))
            normal = closed(np.column_stack([kerb.normals, np.zeros(len(kerb.normals))]))
            width = closed(kerb.widths)
            u_kerb = arc / T.KERB_REPEAT_M
            h = KERB_HEIGHT_M

            def at(xy: np.ndarray, z: float) -> np.ndarray:
                return np.column_stack([xy, np.full(len(xy), z)])

            def uv(u: np.ndarray, v: float | np.ndarray) -> np.ndarray:
                return np.column_stack([u, np.broadcast_to(v, u.shape)])

            kerb_tint = _tint(np.vstack([kerb_xy, kerb_xy]), self.seed + 1, tint, 25.0)
            self.meshes += [
                # The kerb face, towards the road, and its top stones.
                M.strip(at(kerb_xy, h), at(kerb_xy, 0.0), semantic_id=SIDEWALK, normal=-normal,
                        uv_left=uv(u_kerb, 1.0), uv_right=uv(u_kerb, 0.0), texture=T.KERB, colour=kerb_tint),
                M.strip(at(kerb_xy, h), at(stone_xy, h), semantic_id=SIDEWALK, normal=_UP,
                        uv_left=uv(u_kerb, 1.0), uv_right=uv(u_kerb, 0.0), texture=T.KERB, colour=kerb_tint),
                M.strip(at(stone_xy, h), at(outer_xy, h), semantic_id=SIDEWALK, normal=_UP,
                        uv_left=uv(arc / T.SIDEWALK_REPEAT_M, 0.0),
                        uv_right=uv(arc / T.SIDEWALK_REPEAT_M, (width - KERB_STONE_WIDTH_M) / T.SIDEWALK_REPEAT_M),
                        texture=T.SIDEWALK,
                        colour=_tint(np.vstack([stone_xy, outer_xy]), self.seed + 2, tint, 20.0)),
                # The low outer edge down to the grass.
                M.strip(at(outer_xy, h), at(outer_xy, TERRAIN_Z_M), semantic_id=SIDEWALK, normal=normal,
                        uv_left=uv(u_kerb, 1.0), uv_right=uv(u_kerb, 0.0), texture=T.KERB,
                        colour=(0.85, 0.85, 0.85, 1.0)),
            ]
            for i in range(len(kerb.points)):
                quad = np.array([kerb_xy[i], kerb_xy[i + 1], outer_xy[i + 1], outer_xy[i]])
                cv2.fillConvexPoly(self.sidewalk, self.grid.pixels(quad), 1, cv2.LINE_8, _SHIFT)

    def _terrain(self) -> None:
        """Grass tiles everywhere but wholly paved ones; big tiles far from the roads."""
        k = round(TERRAIN_TILE_M / self.grid.cell)
        road_only = _block_all(self.labels != TERRAIN, k) & _block_all(self.sidewalk == 0, k)
        wanted = ~road_only
        # Distance from the nearest tile holding road or sidewalk, for the big far tiles.
        near = _block_any(self.labels != TERRAIN, k)
        distance_m = cv2.distanceTransform((~near).astype(np.uint8), cv2.DIST_L2, 3) * TERRAIN_TILE_M
        f = round(TERRAIN_FAR_TILE_M / TERRAIN_TILE_M)
        far = _block_all(distance_m > TERRAIN_FAR_M, f)
        fine = wanted & ~np.kron(far, np.ones((f, f), bool))[:wanted.shape[0], :wanted.shape[1]]
        rows, cols = np.nonzero(fine)
        big_rows, big_cols = np.nonzero(far)
        gx, gy, t, big = self.grid.x0, self.grid.y0, TERRAIN_TILE_M, TERRAIN_FAR_TILE_M
        x0 = np.concatenate([gx + cols * t, gx + big_cols * big])
        y0 = np.concatenate([gy + rows * t, gy + big_rows * big])
        size = np.concatenate([np.full(len(cols), t), np.full(len(big_cols), big)])
        grass = (0.95, 1.0, 0.92)

        def colour(xy: np.ndarray) -> np.ndarray:
            return _tint(xy, self.seed + 3, 0.25, 35.0, grass)

        self.meshes.append(M.flat_quads(x0, y0, x0 + size, y0 + size, TERRAIN_Z_M, semantic_id=TERRAIN,
                                        texture=T.GRASS, uv_repeat_m=T.GRASS_REPEAT_M, colour=colour))

    # -- street furniture ------------------------------------------------------------------

    def _near_pole(self, xy: np.ndarray, distance_m: float) -> bool:
        if not self.poles_xy:
            return False
        return bool((np.linalg.norm(np.array(self.poles_xy) - xy, axis=1) < distance_m).any())

    def _traffic_lights(self) -> None:
        width, height, depth = LIGHT_HOUSING_M
        for group in self.map.signals:
            facing = np.array([math.cos(group.yaw_rad), math.sin(group.yaw_rad)])
            pole = np.array([group.x_m, group.y_m])
            top = LIGHT_CENTRE_Z_M + height / 2 + 0.1
            self.meshes.append(M.prism(pole[0], pole[1], 0.0, LIGHT_POLE_RADIUS_M, top, semantic_id=POLE, sides=8,
                                       colour=_DARK_METAL))
            self.boxes.add(pole[0], pole[1], 0.0, 2 * LIGHT_POLE_RADIUS_M, 2 * LIGHT_POLE_RADIUS_M, top, POLE)
            # The housing hangs on the pole's front, towards the traffic it signals to.
            centre = pole + facing * (LIGHT_POLE_RADIUS_M + depth / 2 + 0.03)
            base = LIGHT_CENTRE_Z_M - height / 2
            self.meshes.append(M.box(centre[0], centre[1], base, group.yaw_rad, depth, width, height,
                                     semantic_id=TRAFFIC_LIGHT, colour=_HOUSING, bottom=True))
            self.boxes.add(centre[0], centre[1], group.yaw_rad, depth, width, height, TRAFFIC_LIGHT, base)
            self.light_heads.append(LightHead(group.light_id, float(centre[0]), float(centre[1]), LIGHT_CENTRE_Z_M,
                                              float(group.yaw_rad), width, height, depth))
            self.poles_xy.append((float(pole[0]), float(pole[1])))

    def _kerb_lane(self, lane: LaneSegment) -> bool:
        """An outermost lane outside junctions: its right edge is a kerb."""
        return not lane.in_junction and lane.right_neighbor < 0

    def _speed_signs(self) -> None:
        """A speed-limit disc on a post at the start of each street, facing its traffic."""
        radius, centre_z = 0.32, 2.25
        for lane in self.map.lanes:
            if not self._kerb_lane(lane) or lane.length_m < 40.0:
                continue
            s = min(15.0, lane.length_m / 3)
            (xy,), (yaw,) = _lane_points(lane, np.array([s]), np.array([-(lane.width_m / 2 + 0.5)]))
            if self.grid.sample(self.labels, xy)[0] != SIDEWALK or self._near_pole(xy, 2.0):
                continue
            face_yaw = float(yaw) + math.pi
            facing = np.array([math.cos(face_yaw), math.sin(face_yaw)])
            plate = xy + facing * 0.06
            self.meshes += [
                M.prism(xy[0], xy[1], 0.0, 0.035, centre_z + radius, semantic_id=POLE, sides=6, colour=_METAL),
                M.disc(plate[0], plate[1], centre_z, face_yaw, radius, semantic_id=TRAFFIC_SIGN,
                       texture=T.nearest_speed_sign(lane.speed_limit_mps)),
                M.disc(plate[0] - facing[0] * 0.02, plate[1] - facing[1] * 0.02, centre_z, face_yaw + math.pi, radius,
                       semantic_id=TRAFFIC_SIGN, colour=(0.55, 0.56, 0.58, 1.0)),
            ]
            self.boxes.add(xy[0], xy[1], 0.0, 0.07, 0.07, centre_z - radius, POLE)
            self.boxes.add(plate[0], plate[1], face_yaw, 0.04, 2 * radius, 2 * radius, TRAFFIC_SIGN, centre_z - radius)
            self.poles_xy.append((float(xy[0]), float(xy[1])))

    def _kerb_spots(self, spacing_m: float, rng: np.random.Generator, jitter_m: float = 0.0
                    ) -> list[tuple[_Kerb, np.ndarray, np.ndarray, float, float]]:
        """Evenly spaced places along every kerb: (kerb, point, normal, sidewalk width, arc)."""
        spots = []
        for kerb in self.kerbs:
            arc = kerb.arc_m
            along = np.arange(rng.uniform(0, spacing_m), arc[-1] - 1.0, spacing_m)
            for s in along + rng.uniform(-jitter_m, jitter_m, len(along)):
                s = float(np.clip(s, 0.0, arc[-1] - 1e-6))
                i = int(np.searchsorted(arc, s, side="right") - 1)
                f = (s - arc[i]) / max(arc[i + 1] - arc[i], 1e-9)
                j = (i + 1) % len(kerb.points)
                p = kerb.points[i] * (1 - f) + kerb.points[j] * f
                n = kerb.normals[i] * (1 - f) + kerb.normals[j] * f
                n /= max(np.linalg.norm(n), 1e-9)
                w = min(kerb.widths[i], kerb.widths[j])
                spots.append((kerb, p, n, w, s))
        return spots

    def _beside_open_road(self, xy: np.ndarray) -> bool:
        """Next to a lane outside junctions and away from the crosswalks."""
        q = self.map.nearest_lane(float(xy[0]), float(xy[1]), max_distance_m=12.0)
        if q is None or self.map.lanes[q.segment_id].in_junction:
            return False
        lane = self.map.lanes[q.segment_id]
        return 8.0 < q.s_m < lane.length_m - 8.0

    def _street_lamps(self) -> None:
        rng = self.rng(21)
        height, arm = 7.2, 1.6
        for _, p, n, w, _ in self._kerb_spots(self.style.lamp_spacing_m, rng, 2.0):
            xy = p + n * 0.45
            if w < 2.0 or not self._beside_open_road(xy) or self._near_pole(xy, 6.0):
                continue
            yaw = math.atan2(-n[1], -n[0])  # the arm reaches over the road
            head = xy - n * arm
            self.meshes += [
                M.prism(xy[0], xy[1], 0.0, 0.09, height, semantic_id=POLE, top_radius_m=0.06, colour=_METAL),
                M.box(*(xy - n * arm / 2), height - 0.1, yaw, arm, 0.08, 0.08, semantic_id=POLE, colour=_METAL),
                M.box(*head, height - 0.22, yaw, 0.7, 0.3, 0.14, semantic_id=POLE, colour=_DARK_METAL, bottom=True),
            ]
            self.boxes.add(xy[0], xy[1], 0.0, 0.18, 0.18, height, POLE)
            self.boxes.add(*(xy - n * arm / 2), yaw, arm + 0.35, 0.3, 0.25, POLE, height - 0.22)
            self.poles_xy.append((float(xy[0]), float(xy[1])))

    def _furniture(self) -> None:
        """Benches and bins at the back of the sidewalk, bus shelters on the verge."""
        rng = self.rng(22)
        for _, p, n, w, _ in self._kerb_spots(37.0, rng, 8.0):
            kind = rng.random()
            if w < SIDEWALK_WIDTH_M - 0.05 or kind > 0.75:
                continue
            yaw = math.atan2(-n[1], -n[0])  # facing the road
            back = p + n * (w - 0.35)
            if not self._beside_open_road(back) or self._near_pole(back, 3.0):
                continue
            if kind < 0.4:
                self._bench(back, yaw)
            elif kind < 0.65:
                self._bin(p + n * (w - 0.3))
            else:
                shelter = p + n * (w + 1.0)
                corners = _rect(*shelter, yaw, 1.6, 3.8)
                if self.placer.free(corners, 0.2):
                    self.placer.take(_rect(*shelter, yaw, 2.4, 4.6))
                    self._shelter(shelter, yaw)
            self.poles_xy.append((float(back[0]), float(back[1])))

    def _add_static(self, parts: list[tuple], xy: np.ndarray, yaw: float) -> None:
        """Boxes given in an object frame (x forward = facing): (forward, left, base_z,
        length, width, height, colour)."""
        c, s = math.cos(yaw), math.sin(yaw)
        for fx, fy, base_z, length, width, height, colour in parts:
            x, y = xy[0] + c * fx - s * fy, xy[1] + s * fx + c * fy
            self.meshes.append(M.box(x, y, base_z, yaw, length, width, height, semantic_id=STATIC, colour=colour,
                                     bottom=True))
            self.boxes.add(x, y, yaw, length, width, height, STATIC, base_z)

    def _bench(self, xy: np.ndarray, yaw: float) -> None:
        wood, iron = (0.45, 0.31, 0.2, 1.0), (0.12, 0.13, 0.13, 1.0)
        h = KERB_HEIGHT_M
        self._add_static([(0.0, 0.75, h, 0.45, 0.06, 0.42, iron), (0.0, -0.75, h, 0.45, 0.06, 0.42, iron),
                          (0.0, 0.0, h + 0.42, 0.45, 1.8, 0.05, wood), (-0.2, 0.0, h + 0.5, 0.05, 1.8, 0.4, wood)],
                         xy, yaw)

    def _bin(self, xy: np.ndarray) -> None:
        self.meshes.append(M.prism(xy[0], xy[1], KERB_HEIGHT_M, 0.25, 0.9, semantic_id=STATIC, sides=10,
                                   colour=(0.16, 0.26, 0.2, 1.0)))
        self.boxes.add(xy[0], xy[1], 0.0, 0.5, 0.5, 0.9, STATIC, KERB_HEIGHT_M)

    def _shelter(self, xy: np.ndarray, yaw: float) -> None:
        frame, glass, roof = (0.3, 0.32, 0.34, 1.0), (0.45, 0.55, 0.6, 1.0), (0.2, 0.22, 0.24, 1.0)
        self._add_static([(-0.7, 0.0, 0.0, 0.06, 3.6, 2.3, glass), (0.0, 1.8, 0.0, 1.4, 0.05, 2.3, glass),
                          (0.0, -1.8, 0.0, 1.4, 0.05, 2.3, glass), (0.0, 0.0, 2.3, 1.6, 3.8, 0.1, roof),
                          (0.55, 1.8, 0.0, 0.08, 0.08, 2.3, frame), (0.55, -1.8, 0.0, 0.08, 0.08, 2.3, frame),
                          (-0.45, 0.0, 0.45, 0.4, 2.4, 0.05, frame)], xy, yaw)

    # -- trees -----------------------------------------------------------------------------

    def _plant_stretches(self) -> None:
        """Streets are tree-lined, or not, a stretch of kerb at a time."""
        rng = self.rng(23)
        self.planted = [rng.random(int(k.arc_m[-1] // TREE_STRETCH_M) + 1) < self.style.street_tree_probability
                        for k in self.kerbs]

    def _tree_lined(self, kerb: _Kerb, s: float) -> bool:
        planted = self.planted[next(i for i, k in enumerate(self.kerbs) if k is kerb)]
        return bool(planted[int((s % kerb.arc_m[-1]) // TREE_STRETCH_M)])

    def _street_trees(self) -> None:
        rng = self.rng(26)
        for kerb, p, n, w, s in self._kerb_spots(self.style.tree_spacing_m, rng, 1.5):
            if self._tree_lined(kerb, s) and self._beside_open_road(p):
                self._tree(p + n * (w + rng.uniform(1.0, 1.6)), rng, street=True)

    def _tree(self, xy: np.ndarray, rng: np.random.Generator, street: bool = False) -> bool:
        """A tree if its trunk and crown fit; a deciduous one (an irregular ellipsoid or
        two) or a conifer (stacked cones)."""
        conifer = rng.random() < (0.15 if street else 0.35)
        scale = rng.uniform(0.8, 1.25) * (1.0 if street else rng.uniform(0.9, 1.3))
        crown_r = (1.5 if conifer else 2.4) * scale
        trunk = _rect(*xy, 0.0, 0.6, 0.6)
        # Crowns may touch one another and overhang the sidewalk, not walls.
        crown = _rect(*xy, 0.0, 1.6 * crown_r, 1.6 * crown_r)
        if not self.placer.free(trunk, 0.3) or not self.placer.free(crown, -1.0):
            return False
        self.placer.take(_rect(*xy, 0.0, 0.8 * crown_r, 0.8 * crown_r))
        hue = self.style.foliage_hue + rng.uniform(-0.06, 0.06)
        leaf = (0.85 + hue, 1.0, 0.8 - hue, 1.0)
        bright = rng.uniform(0.8, 1.1)
        leaf = tuple(min(1.0, c * bright) for c in leaf[:3]) + (1.0,)
        trunk_r = 0.12 * scale + 0.05
        if conifer:
            trunk_h = 1.2 * scale
            self.meshes.append(M.prism(*xy, 0.0, trunk_r, trunk_h + 0.5, semantic_id=VEGETATION, sides=6,
                                       texture=T.BARK, uv_repeat_m=(T.BARK_REPEAT_M, T.BARK_REPEAT_M)))
            cone_h = 2.6 * scale
            for k in range(3):  # each cone overlaps the one below by 45 %
                self.meshes.append(M.prism(*xy, trunk_h + 0.55 * cone_h * k, crown_r * 0.72 ** k, cone_h,
                                           semantic_id=VEGETATION, sides=8, top_radius_m=0.0, texture=T.FOLIAGE,
                                           colour=leaf, uv_repeat_m=(T.FOLIAGE_REPEAT_M, T.FOLIAGE_REPEAT_M)))
            self.boxes.add(*xy, 0.0, 2 * trunk_r, 2 * trunk_r, trunk_h, VEGETATION)
            self.boxes.add(*xy, 0.0, 1.6 * crown_r, 1.6 * crown_r, 2.1 * cone_h, VEGETATION, trunk_h)
            return True
        trunk_h = rng.uniform(2.2, 3.2) * scale
        rz = crown_r * rng.uniform(0.9, 1.25)
        centre_z = trunk_h + rz * 0.8
        self.meshes.append(M.prism(*xy, 0.0, trunk_r, centre_z, semantic_id=VEGETATION, sides=6, top_radius_m=0.6 *
                                   trunk_r, texture=T.BARK, uv_repeat_m=(T.BARK_REPEAT_M, T.BARK_REPEAT_M)))
        self.meshes.append(M.ellipsoid(*xy, centre_z, (crown_r, crown_r * rng.uniform(0.85, 1.0), rz),
                                       semantic_id=VEGETATION, jitter=0.14, rng=rng, texture=T.FOLIAGE, colour=leaf,
                                       uv_repeat_m=T.FOLIAGE_REPEAT_M))
        if rng.random() < 0.5:  # a second lobe makes the silhouette less of a ball
            d = rng.normal(0, 0.5 * crown_r, 2)
            self.meshes.append(M.ellipsoid(xy[0] + d[0], xy[1] + d[1], centre_z + 0.5 * rz, (0.65 * crown_r,) * 2 +
                                           (0.6 * rz,), semantic_id=VEGETATION, jitter=0.14, rng=rng,
                                           texture=T.FOLIAGE, colour=leaf, uv_repeat_m=T.FOLIAGE_REPEAT_M))
        self.boxes.add(*xy, 0.0, 2 * trunk_r, 2 * trunk_r, trunk_h, VEGETATION)
        self.boxes.add(*xy, 0.0, 1.7 * crown_r, 1.7 * crown_r, 2.0 * rz, VEGETATION, centre_z - rz)
        return True

    # -- buildings and plots -----------------------------------------------------------------

    def _street_plots(self) -> None:
        """Plots along the outer edge of every sidewalk: a building facing the street
        (set back behind a front yard), or a fenced yard."""
        rng = self.rng(24)
        lo, hi = self.style.setback_m
        for kerb in self.kerbs:
            arc = kerb.arc_m
            s = rng.uniform(0, 10.0)
            while s < arc[-1] - 8.0:
                bays, depth_bays = int(rng.integers(4, 11)), int(rng.integers(3, 8))
                setback = rng.uniform(lo, hi)
                placed = self._plot(kerb, s, bays, depth_bays, setback, rng)
                s += (placed if placed else 4.0) + rng.uniform(0.5, 8.0)

    def _plot(self, kerb: _Kerb, s: float, bays: int, depth_bays: int, setback: float,
              rng: np.random.Generator) -> float:
        """Place a plot starting at arc length ``s``; returns its frontage (0: none fits)."""
        facade = T.FACADES[int(rng.choice(len(T.FACADES), p=self.style.facade_weights))]
        layout = T.FACADE_LAYOUTS[facade]
        fence_only = rng.random() < self.style.fence_probability * 0.4
        for _ in range(3):
            length, depth = bays * layout.bay_width_m, depth_bays * layout.bay_width_m
            p, t, n, w = self._along_kerb(kerb, s + length / 2)
            if self._tree_lined(kerb, s + length / 2):
                setback = max(setback, STREET_TREE_SETBACK_M)
            front = p + n * (w + setback)
            centre = front + n * depth / 2
            yaw = math.atan2(t[1], t[0])
            corners = _rect(*centre, yaw, length, depth)
            if self.placer.free(corners, 1.0):
                self.placer.take(_rect(*centre, yaw, length + 1.0, depth + 1.0))
                if not fence_only:
                    self._building(centre, yaw, length, depth, facade, rng)
                if fence_only or (setback > 2.5 and rng.random() < self.style.fence_probability):
                    self._fence(p + n * (w + 0.5) - t * length / 2, t, length, rng)
                return length
            bays, depth_bays = max(2, bays - 2), max(2, depth_bays - 1)
        return 0.0

    def _along_kerb(self, kerb: _Kerb, s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        arc = kerb.arc_m
        s = s % arc[-1]
        i = int(np.searchsorted(arc, s, side="right") - 1)
        j = (i + 1) % len(kerb.points)
        f = (s - arc[i]) / max(arc[i + 1] - arc[i], 1e-9)
        p = kerb.points[i] * (1 - f) + kerb.points[j] * f
        t = kerb.points[j] - kerb.points[i]
        t /= max(np.linalg.norm(t), 1e-9)
        return p, t, np.array([t[1], -t[0]]), float(min(kerb.widths[i], kerb.widths[j]))

    def _fence(self, start: np.ndarray, direction: np.ndarray, length: float, rng: np.random.Generator) -> None:
        height = rng.uniform(0.9, 1.4)
        yaw = math.atan2(direction[1], direction[0])
        pieces = max(1, math.ceil(length / 4.0))
        piece = length / pieces
        for k in range(pieces):
            c = start + direction * (piece * (k + 0.5))
            self.meshes.append(M.box(c[0], c[1], 0.0, yaw, piece, 0.05, height, semantic_id=FENCE,
                                     texture=T.FENCE_WOOD, uv_repeat_m=(T.FENCE_REPEAT_M, height)))
            self.boxes.add(c[0], c[1], yaw, piece, 0.05, height, FENCE)

    def _floors(self, rng: np.random.Generator, far: bool) -> int:
        low, high = FLOOR_HEIGHT_RANGE
        if rng.random() < self.style.tower_probability * (1.5 if far else 1.0):
            floors = rng.integers(7, high + 1)
        else:
            floors = rng.integers(low, 7)
        return int(np.clip(round(floors * self.style.height_scale), low, high))

    def _building(self, centre: np.ndarray, yaw: float, length: float, depth: float, facade: str,
                  rng: np.random.Generator, far: bool = False) -> None:
        layout = T.FACADE_LAYOUTS[facade]
        height = self._floors(rng, far) * layout.floor_height_m
        colour = tuple(1.0 - rng.uniform(0.0, 2.0 * self.style.tint, 3)) + (1.0,)  # each building a shade apart
        cell = 12.0 if far else MAX_EDGE_M
        self.meshes.append(M.box(*centre, 0.0, yaw, length, depth, height, semantic_id=BUILDING, texture=facade,
                                 colour=colour, uv_repeat_m=layout.repeat_m, max_cell_m=cell, top=False))
        c, s = math.cos(yaw), math.sin(yaw)
        corner = np.array([*(centre - np.array([c, s]) * length / 2 - np.array([-s, c]) * depth / 2), height])
        self.meshes.append(M.planar_grid(corner, (c, s, 0.0), (-s, c, 0.0), length, depth, semantic_id=BUILDING,
                                         texture=T.ROOF, uv_repeat_m=(T.ROOF_REPEAT_M, T.ROOF_REPEAT_M),
                                         max_cell_m=cell))
        self.boxes.add(*centre, yaw, length, depth, height, BUILDING)
        if length * depth > 150 and rng.random() < 0.6:  # plant rooms on the roof
            for _ in range(int(rng.integers(1, 3))):
                off = rng.uniform(-0.3, 0.3, 2) * [length, depth]
                x, y = centre + np.array([c, s]) * off[0] + np.array([-s, c]) * off[1]
                size = rng.uniform(2.0, 4.5, 2)
                h = rng.uniform(1.5, 3.0)
                self.meshes.append(M.box(x, y, height, yaw, *size, h, semantic_id=BUILDING,
                                         colour=(0.55, 0.55, 0.56, 1.0)))
                self.boxes.add(x, y, yaw, *size, h, BUILDING, height)

    def _fill_blocks(self) -> None:
        """Inside the blocks and around the town: more buildings, and parks of trees."""
        rng = self.rng(25)
        x0, y0 = self.grid.x0, self.grid.y0
        x1, y1 = x0 + self.grid.cols * self.grid.cell, y0 + self.grid.rows * self.grid.cell
        pitch = 22.0
        xs, ys = np.meshgrid(np.arange(x0 + pitch / 2, x1, pitch), np.arange(y0 + pitch / 2, y1, pitch))
        candidates = np.column_stack([xs.ravel(), ys.ravel()]) + rng.uniform(-6, 6, (xs.size, 2))
        candidates = candidates[rng.permutation(len(candidates))]
        clearance = self.placer.clearance_at(candidates)
        for xy, clear in zip(candidates, clearance):
            if clear < 4.0:
                continue
            if rng.random() < self.style.park_probability:
                for _ in range(int(rng.integers(4, 12))):
                    self._tree(xy + rng.normal(0, 6.0, 2), rng)
                continue
            q = self.map.nearest_lane(float(xy[0]), float(xy[1]), max_distance_m=1e4)
            yaw = self.map.lanes[q.segment_id].pose_at(q.s_m)[2] if q is not None else 0.0
            facade = T.FACADES[int(rng.choice(len(T.FACADES), p=self.style.facade_weights))]
            bay = T.FACADE_LAYOUTS[facade].bay_width_m
            far = clear > TERRAIN_FAR_M
            bays, depth_bays = int(rng.integers(4, 10)), int(rng.integers(3, 8))
            for _ in range(3):
                corners = _rect(*xy, yaw, bays * bay, depth_bays * bay)
                if self.placer.free(corners, 2.0):
                    self.placer.take(_rect(*xy, yaw, bays * bay + 3.0, depth_bays * bay + 3.0))
                    self._building(xy, yaw, bays * bay, depth_bays * bay, facade, rng, far)
                    break
                bays, depth_bays = max(2, bays - 2), max(2, depth_bays - 2)


# -- small helpers -------------------------------------------------------------------------


def _marking_lines(marking: str) -> list[tuple[float, bool]]:
    """(lateral offset, broken) of each painted line of a carla marking type. Of a
    double line the first word is the line on the left of the lane's direction."""
    words = {"Solid": [False], "Broken": [True], "SolidSolid": [False, False], "SolidBroken": [False, True],
             "BrokenSolid": [True, False], "BrokenBroken": [True, True]}.get(marking, [])
    if len(words) == 2:
        half = (DOUBLE_LINE_GAP_M + LINE_WIDTH_M) / 2
        return [(half, words[0]), (-half, words[1])]
    return [(0.0, b) for b in words]


def _runs_1d(mask: np.ndarray, min_length: int = 2) -> list[tuple[int, int]]:
    """(first, last) index of each run of True at least ``min_length`` long."""
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2]) if b - a >= min_length]


def _runs(tiles: np.ndarray, max_run: int) -> tuple[np.ndarray, ...]:
    """Runs of set tiles along each row, at most ``max_run`` long: (x0, y0, x1, y1) in tiles."""
    x0s, y0s, x1s = [], [], []
    for row in np.flatnonzero(tiles.any(axis=1)):
        for a, b in _runs_1d(tiles[row], min_length=1):
            for start in range(a, b + 1, max_run):
                x0s.append(start)
                x1s.append(min(b + 1, start + max_run))
                y0s.append(row)
    x0, y0, x1 = (np.array(v, dtype=np.float64) for v in (x0s, y0s, x1s))
    return x0, y0, x1, y0 + 1
