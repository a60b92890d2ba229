"""Per-frame ground-truth labels from the simulator's own state: 3D boxes in the ego
frame, 2D boxes per camera with truncation and occlusion, and lane boundaries.

Pure numpy, with cv2 only to rasterise silhouettes; nothing here imports the renderer.
Frames (REP 103): the ego frame is ``base_link``, origin at the ego's box centre on the
ground, x forward, y left, z up. Cameras use :class:`CameraConfig`'s optical frame.

Label semantics, chosen to match KITTI / nuScenes usage:

- ``Box2D`` extent: the projection of the box (clipped against the camera's near plane
  first, so a car alongside the camera still gets a correct, truncated box), clipped to
  the image. ``truncation`` = 1 - (area of that extent / area of the unclipped
  projected box).
- ``visible_fraction``: pixels of the object's instance id in the instance image
  divided by the pixels its silhouette would cover in the image if nothing occluded it.
  The silhouette is the union of the object's model triangles when a model is given
  (the renderer's actor meshes), else the convex hull of its projected box, so with no
  model a car's fraction is a little low (the box is fuller than the car).
- Occluded objects are kept (``visible_fraction`` 0) when their silhouette covers at
  least ``min_silhouette_px`` pixels of the image: a consumer filters on visibility,
  which it cannot do for boxes we never wrote. Objects entirely behind the camera or
  outside the image are dropped.
- Without an instance image (a camera with no instance pass) occlusion is unknown:
  ``visible_fraction`` is the geometric 1 - truncation and ``visible_pixels`` is -1.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

from drivestack.schema import (
    ActorKind,
    ActorState,
    Box2D,
    Box3D,
    CameraImage,
    EgoState,
    GroundTruth,
    LaneBoundary,
    ObjectClass,
    TrafficLight,
    instance_id_of_actor,
    instance_id_of_light,
)
from sim.sensors.camera_model import CameraConfig

if TYPE_CHECKING:  # sim.road_map imports carla; the labels only read its arrays
    from sim.road_map import LaneSegment, RoadMap

# Geometry closer to the camera than this along its axis is cut off before projecting:
# small enough to keep a car alongside the camera, large enough to keep pixels finite.
NEAR_PLANE_M = 0.05
# Lane points nearer than this along the camera axis project far outside any useful image.
LANE_MIN_DEPTH_M = 0.5
# A lane chain stops after this many segments even if ``ahead_m`` is not reached (tiny loops).
MAX_CHAIN_SEGMENTS = 64
# Sub-pixel bits for cv2's polygon fill, and a guard so fixed-point pixels stay in int32.
_FILL_SHIFT_BITS = 2
_MAX_ABS_PX = 2.0e7

_ACTOR_CLASS = {ActorKind.VEHICLE: ObjectClass.VEHICLE, ActorKind.PEDESTRIAN: ObjectClass.PEDESTRIAN}

# Box corners: bit 2 of the index = front/back, bit 1 = left/right, bit 0 = bottom/top;
# edges join corners that differ in exactly one bit.
_CORNER_SIGNS = np.array([(sx, sy, sz) for sx, sy, sz in itertools.product((1, -1), (1, -1), (0, 1))], dtype=float)
_BOX_EDGES = np.array([(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1])


class LightHeadLike(Protocol):
    """A traffic light's lamp housing as the world builder places it (map frame)."""

    light_id: int
    x_m: float
    y_m: float
    z_m: float  # centre height
    yaw_rad: float  # the direction the lamps face
    width_m: float
    height_m: float
    depth_m: float


# An object model: (M, 3, 3) triangle vertices, an object with ``vertices`` (N, 3) and
# ``triangles`` (M, 3) (sim.render.mesh.Mesh), or a sequence of those; metres in the
# object's body frame (x forward, origin at the box centre on the ground).
Silhouettes = Callable[[Box3D], object] | Mapping[int, object]


# -- 3D boxes -----------------------------------------------------------------------------


def map_to_ego(ego: EgoState, x_m: np.ndarray, y_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map-frame ground positions into the ego frame."""
    c, s = math.cos(ego.yaw_rad), math.sin(ego.yaw_rad)
    dx, dy = np.asarray(x_m, dtype=float) - ego.x_m, np.asarray(y_m, dtype=float) - ego.y_m
    return dx * c + dy * s, -dx * s + dy * c


def _wrap(angle_rad: float) -> float:
    return math.atan2(math.sin(angle_rad), math.cos(angle_rad))


def boxes_3d(ego: EgoState, actors: Sequence[ActorState], lights: Sequence[TrafficLight] = (),
             light_heads: Sequence[LightHeadLike] = (), max_distance_m: float = 80.0) -> tuple[Box3D, ...]:
    """Vehicles, pedestrians and traffic-light housings within ``max_distance_m`` (ground
    distance from the ego's centre), in the ego frame. Actors stand on the ground (z = 0
    in the map); static actors have no detection class and are left out. A housing
    whose light is not in ``lights`` gets ``light_state`` None (unknown)."""
    boxes = []
    for actor in actors:
        object_class = _ACTOR_CLASS.get(actor.kind)
        if object_class is None or actor.actor_id == ego.actor_id:
            continue
        x, y = map_to_ego(ego, actor.x_m, actor.y_m)
        if math.hypot(x, y) > max_distance_m:
            continue
        boxes.append(Box3D(instance_id_of_actor(actor.actor_id), object_class, float(x), float(y),
                           actor.height_m / 2.0 - ego.z_m, _wrap(actor.yaw_rad - ego.yaw_rad),
                           actor.length_m, actor.width_m, actor.height_m, actor.speed_mps))
    state_by_light = {light.light_id: light.state for light in lights}
    for head in light_heads:
        x, y = map_to_ego(ego, head.x_m, head.y_m)
        if math.hypot(x, y) > max_distance_m:
            continue
        # A housing's length runs along the direction its lamps face.
        boxes.append(Box3D(instance_id_of_light(head.light_id), ObjectClass.TRAFFIC_LIGHT, float(x), float(y),
                           head.z_m - ego.z_m, _wrap(head.yaw_rad - ego.yaw_rad), head.depth_m, head.width_m,
                           head.height_m, light_state=state_by_light.get(head.light_id)))
    return tuple(boxes)


def box_corners(boxes: Sequence[Box3D]) -> np.ndarray:
    """(B, 8, 3) corners in the ego frame, ordered as ``_CORNER_SIGNS``."""
    if not boxes:
        return np.zeros((0, 8, 3))
    arr = np.array([(b.x_m, b.y_m, b.z_m - b.height_m / 2.0, b.yaw_rad, b.length_m, b.width_m, b.height_m)
                    for b in boxes])
    local = _CORNER_SIGNS[None] * np.stack([arr[:, 4] / 2, arr[:, 5] / 2, arr[:, 6]], axis=1)[:, None, :]
    c, s = np.cos(arr[:, 3])[:, None], np.sin(arr[:, 3])[:, None]
    x = arr[:, 0:1] + c * local[..., 0] - s * local[..., 1]
    y = arr[:, 1:2] + s * local[..., 0] + c * local[..., 1]
    return np.stack([x, y, arr[:, 2:3] + local[..., 2]], axis=-1)


# -- 2D boxes ------------------------------------------------------------------------------


def _clip_edges_to_near_plane(corners_opt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The vertices of each box cut by the near plane: its corners in front plus the
    points where its edges cross the plane. (B, 8, 3) -> points (B, 20, 3), valid (B, 20)."""
    front = corners_opt[..., 2] > NEAR_PLANE_M
    a, b = corners_opt[:, _BOX_EDGES[:, 0]], corners_opt[:, _BOX_EDGES[:, 1]]
    za, zb = a[..., 2], b[..., 2]
    crosses = (za > NEAR_PLANE_M) != (zb > NEAR_PLANE_M)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(crosses, (NEAR_PLANE_M - za) / (zb - za), 0.0)
    cut = a + t[..., None] * (b - a)
    cut[..., 2] = np.where(crosses, NEAR_PLANE_M, cut[..., 2])
    return np.concatenate([corners_opt, cut], axis=1), np.concatenate([front, crosses], axis=1)


def _project_optical(camera: CameraConfig, points_opt: np.ndarray) -> np.ndarray:
    """Pixels of optical-frame points in front of the camera (depth > 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = points_opt[..., :2] / points_opt[..., 2:3] * camera.focal_px
    return uv + (camera.width_px / 2.0, camera.height_px / 2.0)


def _clip_polygon_to_near_plane(polygon: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman against z_opt > NEAR_PLANE_M for one (K, 3) polygon."""
    out = []
    for i in range(len(polygon)):
        p, q = polygon[i], polygon[(i + 1) % len(polygon)]
        p_in, q_in = p[2] > NEAR_PLANE_M, q[2] > NEAR_PLANE_M
        if p_in:
            out.append(p)
        if p_in != q_in:
            t = (NEAR_PLANE_M - p[2]) / (q[2] - p[2])
            out.append(p + t * (q - p))
    return np.array(out).reshape(-1, 3)


def _model_triangles(model: object) -> np.ndarray:
    """(M, 3, 3) triangle vertices of any accepted model form."""
    if hasattr(model, "vertices") and hasattr(model, "triangles"):
        return np.asarray(model.vertices, dtype=float)[np.asarray(model.triangles)]
    if isinstance(model, np.ndarray):
        return np.asarray(model, dtype=float).reshape(-1, 3, 3)
    parts = [_model_triangles(part) for part in model]
    return np.concatenate(parts) if parts else np.zeros((0, 3, 3))


def _model_of(silhouettes: Silhouettes | None, box: Box3D) -> object | None:
    if silhouettes is None:
        return None
    if isinstance(silhouettes, Mapping):
        return silhouettes.get(box.instance_id)
    return silhouettes(box)


def _model_polygons_px(camera: CameraConfig, box: Box3D, triangles_body: np.ndarray) -> list[np.ndarray]:
    """The model's triangles placed at the box, near-clipped and projected to pixels."""
    c, s = math.cos(box.yaw_rad), math.sin(box.yaw_rad)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    origin = np.array([box.x_m, box.y_m, box.z_m - box.height_m / 2.0])
    ego = triangles_body.reshape(-1, 3) @ rotation.T + origin
    opt = camera.base_link_to_optical(ego).reshape(-1, 3, 3)
    # The renderer culls back faces, and a closed model's back faces lie behind its front
    # faces: only triangles facing the camera (outward normal towards it) shape the union.
    normal = np.cross(opt[:, 1] - opt[:, 0], opt[:, 2] - opt[:, 0])
    opt = opt[np.einsum("ij,ij->i", normal, opt[:, 0]) < 0.0]
    front = opt[..., 2] > NEAR_PLANE_M
    whole = front.all(axis=1)
    polygons = [_project_optical(camera, opt[whole])]  # one (M, 3, 2) array: filled in a batch
    # Only triangles straddling the near plane need the (slow, per-triangle) clip.
    for triangle in opt[front.any(axis=1) & ~whole]:
        polygons.append(_project_optical(camera, _clip_polygon_to_near_plane(triangle)))
    return polygons


def _fill_count(convex_polygons_px: Sequence[np.ndarray], roi: tuple[int, int, int, int]) -> tuple[int, np.ndarray]:
    """Pixels of the ROI (u0, v0, u1, v1) whose centres the union of the polygons covers."""
    u0, v0, u1, v1 = roi
    mask = np.zeros((v1 - v0, u1 - u0), dtype=np.uint8)
    scale = 1 << _FILL_SHIFT_BITS
    for polygons in convex_polygons_px:
        # A single polygon (K, 2) or a batch of triangles (M, 3, 2), converted in one go.
        batch = polygons if polygons.ndim == 3 else polygons[None]
        if batch.shape[1] < 3:
            continue
        # Pixel (col j, row i) covers [j, j+1) x [i, i+1) in camera pixels; cv2 puts it at j.
        fixed = np.round((np.clip(batch, -_MAX_ABS_PX, _MAX_ABS_PX) - (u0 + 0.5, v0 + 0.5)) * scale).astype(np.int32)
        # One polygon per call: cv2.fillPoly fills several by the even-odd rule, and the
        # faces of a non-convex model overlap, which would punch holes in the union.
        for polygon in fixed:
            cv2.fillConvexPoly(mask, polygon, 1, shift=_FILL_SHIFT_BITS)
    return int(np.count_nonzero(mask)), mask


def boxes_2d(camera: CameraConfig, boxes: Sequence[Box3D], instance: np.ndarray | None = None,
             silhouettes: Silhouettes | None = None, min_silhouette_px: int = 1) -> tuple[Box2D, ...]:
    """2D boxes of ``boxes`` (ego frame) in ``camera``'s image; see the module docstring.

    ``silhouettes`` gives an object's model, keyed by instance id (a mapping) or per box
    (a callable; None = no model, use the box). Boxes whose silhouette covers fewer than
    ``min_silhouette_px`` image pixels are dropped, with or without an instance image,
    so both give the same set of boxes.
    """
    width, height = camera.width_px, camera.height_px
    if instance is not None and instance.shape[:2] != (height, width):
        raise ValueError(f"camera {camera.name}: instance image is {instance.shape[1]}x{instance.shape[0]} px, "
                         f"the camera {width}x{height}")
    if not boxes:
        return ()
    corners_opt = camera.base_link_to_optical(box_corners(boxes).reshape(-1, 3)).reshape(-1, 8, 3)
    points_opt, valid = _clip_edges_to_near_plane(corners_opt)
    uv = _project_optical(camera, np.where(valid[..., None], points_opt, 1.0))
    u, v = uv[..., 0], uv[..., 1]
    u_min, u_max = np.where(valid, u, np.inf).min(axis=1), np.where(valid, u, -np.inf).max(axis=1)
    v_min, v_max = np.where(valid, v, np.inf).min(axis=1), np.where(valid, v, -np.inf).max(axis=1)
    cu0, cu1 = np.clip(u_min, 0, width), np.clip(u_max, 0, width)
    cv0, cv1 = np.clip(v_min, 0, height), np.clip(v_max, 0, height)
    with np.errstate(invalid="ignore"):
        area_in = (cu1 - cu0) * (cv1 - cv0)
        area = (u_max - u_min) * (v_max - v_min)
    keep = valid.any(axis=1) & (area_in > 0)
    centres = np.array([(b.x_m, b.y_m, b.z_m) for b in boxes])
    distance_m = np.linalg.norm(camera.base_link_to_optical(centres), axis=1)

    kept = np.flatnonzero(keep)
    rois = {i: (int(math.floor(cu0[i])), int(math.floor(cv0[i])), int(math.ceil(cu1[i])), int(math.ceil(cv1[i])))
            for i in kept}
    silhouette = {}
    for i in kept:
        model = _model_of(silhouettes, boxes[i])
        if model is not None:
            polygons = _model_polygons_px(camera, boxes[i], _model_triangles(model))
            silhouette[i] = _fill_count(polygons, rois[i])
        else:
            hull = cv2.convexHull(uv[i][valid[i]].astype(np.float32)).reshape(-1, 2).astype(float)
            silhouette[i] = _fill_count([hull], rois[i])
    kept = [i for i in kept if silhouette[i][0] >= max(min_silhouette_px, 1)]
    visible = _visible_pixels(instance, [boxes[i].instance_id for i in kept],
                              [rois[i] for i in kept], [silhouette[i][1] for i in kept])

    labels = []
    for i, seen in zip(kept, visible):
        box, truncation = boxes[i], float(1.0 - area_in[i] / area[i])
        fraction = 1.0 - truncation if seen < 0 else min(max(seen / silhouette[i][0], 0.0), 1.0)
        labels.append(Box2D(camera.name, box.instance_id, box.object_class, float(cu0[i]), float(cv0[i]),
                            float(cu1[i]), float(cv1[i]), fraction, truncation, float(distance_m[i]), seen,
                            box.light_state))
    return tuple(labels)


def _visible_pixels(instance: np.ndarray | None, instance_ids: Sequence[int],
                    rois: Sequence[tuple[int, int, int, int]], masks: Sequence[np.ndarray]) -> list[int]:
    """Instance-image pixel count per box; -1 each without an instance image.

    One ``np.unique`` over the image counts every id. An id shared by several boxes
    (one light's several housings) is counted inside each box's own silhouette instead.
    """
    if instance is None:
        return [-1] * len(instance_ids)
    ids, counts = np.unique(instance, return_counts=True)
    count_of = dict(zip(ids.tolist(), counts.tolist()))
    shared = {i for i in instance_ids if instance_ids.count(i) > 1}
    visible = []
    for instance_id, (u0, v0, u1, v1), mask in zip(instance_ids, rois, masks):
        if instance_id in shared:
            visible.append(int(np.count_nonzero((instance[v0:v1, u0:u1] == instance_id) & (mask > 0))))
        else:
            visible.append(int(count_of.get(instance_id, 0)))
    return visible


# -- lanes ----------------------------------------------------------------------------------


def _ego_arc_length(segment: LaneSegment, x_m: float, y_m: float) -> float:
    """Arc length of the point of ``segment`` nearest to (x, y)."""
    d = np.hypot(segment.points_xy[:, 0] - x_m, segment.points_xy[:, 1] - y_m)
    j = int(np.argmin(d))
    along = (x_m - segment.points_xy[j, 0]) * math.cos(segment.yaw_rad[j]) + \
            (y_m - segment.points_xy[j, 1]) * math.sin(segment.yaw_rad[j])
    return float(min(max(segment.s_m[j] + along, 0.0), segment.length_m))


def _heading_change(a: float, b: float) -> float:
    return abs(_wrap(b - a))


def _next_in_sequence(lane_sequence: Sequence[int], current: int, candidates: Sequence[int],
                      step: int) -> int | None:
    """The lane after (step=+1) or before (-1) ``current`` in the route, if a candidate."""
    positions = [i for i, lane in enumerate(lane_sequence) if lane == current]
    for i in positions:
        j = i + step
        if 0 <= j < len(lane_sequence) and lane_sequence[j] in candidates:
            return lane_sequence[j]
    return None


def lane_chain(road_map: RoadMap, segment_id: int, s_m: float, ahead_m: float, behind_m: float,
               lane_sequence: Sequence[int] | None = None) -> tuple[list[int], int]:
    """Segments from ``behind_m`` before to ``ahead_m`` after arc length ``s_m`` of
    ``segment_id``, and the index of ``segment_id`` in them: the route's lanes where
    ``lane_sequence`` says (the route's lane ids in order; repeats are fine), else the
    straightest successor (predecessor) at each branch."""
    lanes = road_map.lanes
    chain = [segment_id]
    remaining = ahead_m - (lanes[segment_id].length_m - s_m)
    while remaining > 0 and len(chain) < MAX_CHAIN_SEGMENTS:
        current = lanes[chain[-1]]
        if not current.successors:
            break
        choice = _next_in_sequence(lane_sequence or (), current.segment_id, current.successors, +1)
        if choice is None:
            choice = min(current.successors,
                         key=lambda k: _heading_change(current.yaw_rad[-1], lanes[k].yaw_rad[-1]))
        chain.append(choice)
        remaining -= lanes[choice].length_m
    remaining, behind_count = behind_m - s_m, 0
    while remaining > 0 and len(chain) < MAX_CHAIN_SEGMENTS:
        current = lanes[chain[0]]
        if not current.predecessors:
            break
        choice = _next_in_sequence(lane_sequence or (), current.segment_id, current.predecessors, -1)
        if choice is None:
            choice = min(current.predecessors,
                         key=lambda k: _heading_change(lanes[k].yaw_rad[0], current.yaw_rad[0]))
        chain.insert(0, choice)
        behind_count += 1
        remaining -= lanes[choice].length_m
    return chain, behind_count


def opposite_lane(road_map: RoadMap, segment: LaneSegment) -> LaneSegment | None:
    """The oncoming lane across the centre line from ``segment``, if the map has one
    right beside it (same road and section, lane id of the other sign, no median)."""
    if abs(segment.lane_id) != 1 or segment.in_junction:
        return None
    for other in road_map.lanes:
        if (other.road_id, other.section_id, other.lane_id) == (segment.road_id, segment.section_id, -segment.lane_id):
            mid = segment.points_xy[len(segment.points_xy) // 2]
            gap = np.hypot(*(other.points_xy - mid).T).min()
            if abs(gap - (segment.width_m + other.width_m) / 2.0) < 0.5:
                return other
    return None


def _boundary_offsets(road_map: RoadMap, segment: LaneSegment) -> dict[int, tuple[float, str]]:
    """Lateral offset (+ = left) from the lane centre of each boundary the lane has, and
    its marking."""
    half = segment.width_m / 2.0
    out = {-1: (half, segment.left_marking), +1: (-half, segment.right_marking)}
    if segment.left_neighbor >= 0:
        left = road_map.lanes[segment.left_neighbor]
        out[-2] = (half + left.width_m, left.left_marking)
    else:
        oncoming = opposite_lane(road_map, segment)
        if oncoming is not None:
            # Driving the other way, its right edge is the far one from us.
            out[-2] = (half + oncoming.width_m, oncoming.right_marking)
    if segment.right_neighbor >= 0:
        right = road_map.lanes[segment.right_neighbor]
        out[+2] = (-(half + right.width_m), right.right_marking)
    return out


def lane_boundaries(road_map: RoadMap | None, ego: EgoState, ego_lane_segment_id: int,
                    cameras: Sequence[CameraConfig] = (), ahead_m: float = 60.0, behind_m: float = 10.0,
                    spacing_m: float = 1.0, lane_sequence: Sequence[int] | None = None) -> tuple[LaneBoundary, ...]:
    """The ego lane's edges (-1 left, +1 right) and its neighbours' far edges (-2, +2)
    as ground polylines in the ego frame, following the lane graph; () off the map.

    Each boundary is the stretch, around the ego, where the lane it belongs to exists
    (a neighbour ending at a junction ends its far edge there). Its marking is the
    one at the ego's lane, not per point.
    """
    if ego_lane_segment_id < 0 or road_map is None:
        return ()
    lanes = road_map.lanes
    s_ego = _ego_arc_length(lanes[ego_lane_segment_id], ego.x_m, ego.y_m)
    chain, ego_index = lane_chain(road_map, ego_lane_segment_id, s_ego, ahead_m, behind_m, lane_sequence)
    positions = (-2, -1, +1, +2)
    xy, normal, s_chain, offsets = [], [], [], {p: [] for p in positions}
    s_start = 0.0
    for k, segment_id in enumerate(chain):
        segment = lanes[segment_id]
        first = 0 if k == 0 else 1  # a lane's first point repeats its predecessor's last
        xy.append(segment.points_xy[first:])
        normal.append(np.column_stack([-np.sin(segment.yaw_rad[first:]), np.cos(segment.yaw_rad[first:])]))
        s_chain.append(segment.s_m[first:] + s_start)
        available = _boundary_offsets(road_map, segment)
        for p in positions:
            offsets[p].append(np.full(len(segment.points_xy) - first, available.get(p, (np.nan,))[0]))
        s_start += segment.length_m
    xy, normal, s_chain = np.concatenate(xy), np.concatenate(normal), np.concatenate(s_chain)
    ego_s = sum(lanes[k].length_m for k in chain[:ego_index]) + s_ego
    grid = np.arange(max(s_chain[0], ego_s - behind_m), min(s_chain[-1], ego_s + ahead_m) + 1e-9, spacing_m)
    centre = np.column_stack([np.interp(grid, s_chain, xy[:, 0]), np.interp(grid, s_chain, xy[:, 1])])
    n = np.column_stack([np.interp(grid, s_chain, normal[:, 0]), np.interp(grid, s_chain, normal[:, 1])])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    at_ego = int(np.argmin(np.abs(grid - ego_s)))
    markings = _boundary_offsets(road_map, lanes[ego_lane_segment_id])

    result = []
    for position in positions:
        if position not in markings:
            continue
        offset = np.interp(grid, s_chain, np.concatenate(offsets[position]))
        run = _finite_run(offset, at_ego)
        if run is None or run.stop - run.start < 2:
            continue
        ground = centre[run] + n[run] * offset[run, None]
        x, y = map_to_ego(ego, ground[:, 0], ground[:, 1])
        points = np.column_stack([x, y, np.zeros(len(x)) - ego.z_m])
        result.append(LaneBoundary(position, markings[position][1], points, _image_points(cameras, points)))
    return tuple(result)


def _finite_run(values: np.ndarray, index: int) -> slice | None:
    """The contiguous stretch of finite values around ``index``."""
    finite = np.isfinite(values)
    if not finite[index]:
        return None
    gaps = np.flatnonzero(~finite)
    start = int(gaps[gaps < index].max()) + 1 if (gaps < index).any() else 0
    stop = int(gaps[gaps > index].min()) if (gaps > index).any() else len(values)
    return slice(start, stop)


def _image_points(cameras: Sequence[CameraConfig], points_ego: np.ndarray) -> dict[str, np.ndarray]:
    image_px = {}
    for camera in cameras:
        uv, depth = camera.project(points_ego)
        inside = (depth > LANE_MIN_DEPTH_M) & (uv[:, 0] >= 0) & (uv[:, 0] < camera.width_px) \
            & (uv[:, 1] >= 0) & (uv[:, 1] < camera.height_px)
        image_px[camera.name] = uv[inside]
    return image_px


# -- one frame --------------------------------------------------------------------------------


def frame_ground_truth(*, ego: EgoState, actors: Sequence[ActorState], lights: Sequence[TrafficLight],
                       ego_lane_segment_id: int, road_map: RoadMap | None, cameras: Sequence[CameraConfig] = (),
                       images: Sequence[CameraImage] = (), light_heads: Sequence[LightHeadLike] = (),
                       silhouettes: Silhouettes | None = None, lane_sequence: Sequence[int] | None = None,
                       max_distance_m: float = 80.0, min_silhouette_px: int = 1) -> GroundTruth:
    """All labels of one frame. Each camera's instance image comes from the image of the
    same name in ``images``; a camera without one gets geometric visibility only."""
    instance_by_camera = {image.name: image.instance for image in images}
    boxes = boxes_3d(ego, actors, lights, light_heads, max_distance_m)
    boxes_in_images = tuple(
        box for camera in cameras
        for box in boxes_2d(camera, boxes, instance_by_camera.get(camera.name), silhouettes, min_silhouette_px))
    lanes = lane_boundaries(road_map, ego, ego_lane_segment_id, cameras, lane_sequence=lane_sequence)
    return GroundTruth(boxes, boxes_in_images, lanes)
