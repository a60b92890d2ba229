"""Vectorised 2-D geometry for collision checks, stop lines and route progress.

Pure numpy, REP 103 ``map`` frame (x forward, y left, yaw counter-clockwise), metres.
A box is the oriented footprint of a vehicle given by its centre, yaw, length (along
its heading) and width; where boxes are stacked in one array the columns are
``BOX_FIELDS``. Contact counts as overlap (closed sets): a collision check must not
miss two bumpers that touch exactly.
"""

from __future__ import annotations

import functools
import math

import numpy as np

BOX_FIELDS = ("x_m", "y_m", "yaw_rad", "length_m", "width_m")


def box_corners(x: np.ndarray | float, y: np.ndarray | float, yaw: np.ndarray | float,
                length: np.ndarray | float, width: np.ndarray | float) -> np.ndarray:
    """Corners of oriented boxes, shape ``(..., 4, 2)``, counter-clockwise from front-left.

    The inputs broadcast against each other.
    """
    x, y, yaw, length, width = np.broadcast_arrays(*(np.asarray(v, dtype=float)
                                                     for v in (x, y, yaw, length, width)))
    cos_yaw, sin_yaw = np.cos(yaw), np.sin(yaw)
    # Corner offsets in the box frame: front-left, rear-left, rear-right, front-right.
    along = np.stack([length, -length, -length, length], axis=-1) / 2
    across = np.stack([width, width, -width, -width], axis=-1) / 2
    corners_x = x[..., None] + along * cos_yaw[..., None] - across * sin_yaw[..., None]
    corners_y = y[..., None] + along * sin_yaw[..., None] + across * cos_yaw[..., None]
    return np.stack([corners_x, corners_y], axis=-1)


def _sat_overlap_parts(dx: np.ndarray, dy: np.ndarray,
                       cos_a: np.ndarray, sin_a: np.ndarray, half_la: np.ndarray, half_wa: np.ndarray,
                       cos_b: np.ndarray, sin_b: np.ndarray, half_lb: np.ndarray,
                       half_wb: np.ndarray) -> np.ndarray:
    """Separating-axis test of two rectangles, broadcast over all inputs.

    ``(dx, dy)`` goes from centre A to centre B. Two rectangles are disjoint iff one of
    their four edge normals separates them; a rectangle's projection radius on a unit
    axis u is ``l/2 |e_x.u| + w/2 |e_y.u|``, and the axis dot products between the two
    boxes only need the cosine and sine of the relative yaw.
    """
    abs_cos = np.abs(cos_a * cos_b + sin_a * sin_b)
    abs_sin = np.abs(sin_b * cos_a - cos_b * sin_a)
    overlap = np.abs(dx * cos_a + dy * sin_a) <= half_la + half_lb * abs_cos + half_wb * abs_sin
    overlap &= np.abs(dy * cos_a - dx * sin_a) <= half_wa + half_lb * abs_sin + half_wb * abs_cos
    overlap &= np.abs(dx * cos_b + dy * sin_b) <= half_lb + half_la * abs_cos + half_wa * abs_sin
    overlap &= np.abs(dy * cos_b - dx * sin_b) <= half_wb + half_la * abs_sin + half_wa * abs_cos
    return overlap


# Below this many candidate pairs a plain-Python test beats numpy's per-call overhead.
_SCALAR_PAIR_LIMIT = 24


def _sat_overlap_scalar(dx: float, dy: float, yaw_a: float, half_la: float, half_wa: float,
                        yaw_b: float, half_lb: float, half_wb: float) -> bool:
    """``_sat_overlap_parts`` for one pair of Python floats (same arithmetic)."""
    cos_a, sin_a, cos_b, sin_b = math.cos(yaw_a), math.sin(yaw_a), math.cos(yaw_b), math.sin(yaw_b)
    abs_cos = abs(cos_a * cos_b + sin_a * sin_b)
    abs_sin = abs(sin_b * cos_a - cos_b * sin_a)
    return (abs(dx * cos_a + dy * sin_a) <= half_la + half_lb * abs_cos + half_wb * abs_sin
            and abs(dy * cos_a - dx * sin_a) <= half_wa + half_lb * abs_sin + half_wb * abs_cos
            and abs(dx * cos_b + dy * sin_b) <= half_lb + half_la * abs_cos + half_wa * abs_sin
            and abs(dy * cos_b - dx * sin_b) <= half_wb + half_la * abs_sin + half_wa * abs_cos)


def boxes_overlap(box_a: np.ndarray | tuple[float, ...], boxes_b: np.ndarray) -> np.ndarray:
    """Whether box A overlaps each of the boxes B; rows are ``BOX_FIELDS``.

    ``box_a`` has shape ``(5,)``, ``boxes_b`` ``(M, 5)``; returns an ``(M,)`` bool array.
    Like ``pairwise_overlaps``, a bounding-circle test runs first.
    """
    a = np.asarray(box_a, dtype=float)
    b = np.asarray(boxes_b, dtype=float).reshape(-1, 5)
    if a.shape != (5,):
        raise ValueError(f"box_a needs the 5 values {BOX_FIELDS}; got shape {a.shape}")
    xa, ya, yaw_a, length_a, width_a = a.tolist()
    dx, dy = b[:, 0] - xa, b[:, 1] - ya
    reach = 0.5 * (math.hypot(length_a, width_a) + np.hypot(b[:, 3], b[:, 4]))
    candidates = np.flatnonzero(dx * dx + dy * dy <= reach * reach)
    result = np.zeros(len(b), dtype=bool)
    if candidates.size == 0:
        return result
    dx, dy, near = dx[candidates], dy[candidates], b[candidates]
    if candidates.size <= _SCALAR_PAIR_LIMIT:
        result[candidates] = [
            _sat_overlap_scalar(pair_dx, pair_dy, yaw_a, length_a / 2, width_a / 2, yaw_b, length_b / 2, width_b / 2)
            for pair_dx, pair_dy, (_, _, yaw_b, length_b, width_b) in zip(dx.tolist(), dy.tolist(), near.tolist())]
    else:
        result[candidates] = _sat_overlap_parts(dx, dy, math.cos(yaw_a), math.sin(yaw_a), length_a / 2, width_a / 2,
                                                np.cos(near[:, 2]), np.sin(near[:, 2]), near[:, 3] / 2, near[:, 4] / 2)
    return result


@functools.lru_cache(maxsize=64)
def _upper_pairs(count: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.triu_indices(count, k=1)
    return rows, cols


def pairwise_overlaps(x: np.ndarray, y: np.ndarray, yaw: np.ndarray, length: np.ndarray,
                      width: np.ndarray) -> np.ndarray:
    """All-vs-all overlap of N boxes as an ``(N, N)`` symmetric bool matrix, diagonal False.

    Most pairs in traffic are far apart, so a bounding-circle test on the N(N-1)/2
    pairs keeps the exact separating-axis test to the few candidates; the pair indices
    are cached per N because building them costs more than the test itself.
    """
    x, y, yaw, length, width = (np.asarray(v, dtype=float).ravel() for v in (x, y, yaw, length, width))
    count = x.size
    result = np.zeros((count, count), dtype=bool)
    rows, cols = _upper_pairs(count)
    dx, dy = x[cols] - x[rows], y[cols] - y[rows]
    radius = 0.5 * np.hypot(length, width)
    reach = radius[rows] + radius[cols]
    candidates = np.flatnonzero(dx * dx + dy * dy <= reach * reach)
    if candidates.size == 0:
        return result
    rows, cols, dx, dy = rows[candidates], cols[candidates], dx[candidates], dy[candidates]
    half_length, half_width = length / 2, width / 2
    if candidates.size <= _SCALAR_PAIR_LIMIT:
        yaw_list, hl_list, hw_list = yaw.tolist(), half_length.tolist(), half_width.tolist()
        hit = np.array([_sat_overlap_scalar(pair_dx, pair_dy, yaw_list[a], hl_list[a], hw_list[a],
                                            yaw_list[b], hl_list[b], hw_list[b])
                        for a, b, pair_dx, pair_dy in zip(rows.tolist(), cols.tolist(),
                                                          dx.tolist(), dy.tolist())], dtype=bool)
    else:
        cos_yaw, sin_yaw = np.cos(yaw), np.sin(yaw)
        hit = _sat_overlap_parts(dx, dy, cos_yaw[rows], sin_yaw[rows], half_length[rows], half_width[rows],
                                 cos_yaw[cols], sin_yaw[cols], half_length[cols], half_width[cols])
    result[rows[hit], cols[hit]] = True
    result[cols[hit], rows[hit]] = True
    return result


def _orientation(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """z of (b - a) x (c - a): > 0 when c lies left of the directed line a -> b."""
    return ((b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1])
            - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0]))


def _within_bounds(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """For c collinear with a-b: whether c lies on the closed segment a-b."""
    low, high = np.minimum(a, b), np.maximum(a, b)
    return np.all((c >= low) & (c <= high), axis=-1)


def _as_points(*points: np.ndarray | tuple[float, float]) -> list[np.ndarray]:
    return list(np.broadcast_arrays(*(np.asarray(p, dtype=float) for p in points)))


def _to_bool(result: np.ndarray) -> bool | np.ndarray:
    return bool(result) if result.ndim == 0 else result


def point_on_segment(point: np.ndarray | tuple[float, float], q0: np.ndarray | tuple[float, float],
                     q1: np.ndarray | tuple[float, float]) -> bool | np.ndarray:
    """Whether the point lies on the closed segment q0-q1 (exactly, no tolerance)."""
    point, q0, q1 = _as_points(point, q0, q1)
    return _to_bool((_orientation(q0, q1, point) == 0) & _within_bounds(q0, q1, point))


def segments_intersect(p0: np.ndarray | tuple[float, float], p1: np.ndarray | tuple[float, float],
                       q0: np.ndarray | tuple[float, float],
                       q1: np.ndarray | tuple[float, float]) -> bool | np.ndarray:
    """Whether the closed segments p0-p1 and q0-q1 share a point (touching counts).

    Points are ``(..., 2)`` arrays that broadcast; a Python bool comes back for single
    segments, a bool array otherwise.
    """
    p0, p1, q0, q1 = _as_points(p0, p1, q0, q1)
    side_p0, side_p1 = _orientation(q0, q1, p0), _orientation(q0, q1, p1)
    side_q0, side_q1 = _orientation(p0, p1, q0), _orientation(p0, p1, q1)
    proper = (side_p0 * side_p1 < 0) & (side_q0 * side_q1 < 0)
    touching = (((side_p0 == 0) & _within_bounds(q0, q1, p0))
                | ((side_p1 == 0) & _within_bounds(q0, q1, p1))
                | ((side_q0 == 0) & _within_bounds(p0, p1, q0))
                | ((side_q1 == 0) & _within_bounds(p0, p1, q1)))
    return _to_bool(proper | touching)


def segment_crosses_line(p0: np.ndarray | tuple[float, float], p1: np.ndarray | tuple[float, float],
                         q0: np.ndarray | tuple[float, float],
                         q1: np.ndarray | tuple[float, float]) -> bool | np.ndarray:
    """Whether a point moving p0 -> p1 crossed (or reached) the line segment q0-q1.

    Half-open in time: a step that ends exactly on the line counts, the next step,
    which starts on it, does not, so one crossing is never counted twice.
    """
    p0, p1, q0, q1 = _as_points(p0, p1, q0, q1)
    started_on_line = (_orientation(q0, q1, p0) == 0) & _within_bounds(q0, q1, p0)
    return _to_bool(np.asarray(segments_intersect(p0, p1, q0, q1)) & ~started_on_line)


def cumulative_arc_length(points_xy: np.ndarray) -> np.ndarray:
    """Arc length at each vertex of an ``(N, 2)`` polyline, starting at 0."""
    points_xy = np.asarray(points_xy, dtype=float)
    step = np.hypot(*np.diff(points_xy, axis=0).T)
    return np.concatenate([[0.0], np.cumsum(step)])


def project_onto_polyline(points_xy: np.ndarray, cumulative_s: np.ndarray,
                          query_xy: np.ndarray | tuple[float, float], *,
                          hint_index: int | None = None,
                          window: int | None = None) -> tuple[float, float, int]:
    """Closest point of a polyline to ``query_xy``: ``(s_m, lateral_offset_m, segment_index)``.

    ``lateral_offset_m`` is the signed distance to that point, positive left of the
    polyline's direction. With ``hint_index`` only the segments
    ``hint_index .. hint_index + window - 1`` are searched (all remaining ones when
    ``window`` is None), so a caller tracking progress along a route that passes the
    same place twice never jumps to the later pass. Ties go to the earliest segment.
    """
    points_xy = np.asarray(points_xy, dtype=float)
    cumulative_s = np.asarray(cumulative_s, dtype=float)
    segment_count = len(points_xy) - 1
    if segment_count < 1:
        raise ValueError("a polyline needs at least two points")
    first = 0 if hint_index is None else min(max(int(hint_index), 0), segment_count - 1)
    last = segment_count if window is None else min(first + max(int(window), 1), segment_count)
    start, end = points_xy[first:last], points_xy[first + 1:last + 1]
    query = np.asarray(query_xy, dtype=float)

    direction = end - start
    length_sq = np.einsum("ij,ij->i", direction, direction)
    to_query = query - start
    # Zero-length segments (duplicate waypoints) project onto their single point.
    fraction = np.clip(np.einsum("ij,ij->i", to_query, direction) / np.maximum(length_sq, 1e-18), 0.0, 1.0)
    offset = to_query - fraction[:, None] * direction
    distance_sq = np.einsum("ij,ij->i", offset, offset)
    best = int(np.argmin(distance_sq))

    index = first + best
    s_m = cumulative_s[index] + fraction[best] * np.sqrt(length_sq[best])
    side = direction[best, 0] * to_query[best, 1] - direction[best, 1] * to_query[best, 0]
    lateral_m = float(np.copysign(np.sqrt(distance_sq[best]), side))
    return float(s_m), lateral_m, index
