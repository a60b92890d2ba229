"""Geometry: box overlap against brute-force polygon checks, segments, projection."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.geometry import (box_corners, boxes_overlap, cumulative_arc_length, pairwise_overlaps,
                          project_onto_polyline, segment_crosses_line, segments_intersect)


# ---------------------------------------------------------------- reference
def _cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _inside_convex(point: tuple[float, float], polygon: list[tuple[float, float]]) -> bool:
    """Closed point-in-polygon for a counter-clockwise convex polygon."""
    return all(_cross(polygon[i], polygon[(i + 1) % 4], point) >= 0.0 for i in range(4))


def _edges_cross(a0, a1, b0, b1) -> bool:
    d1, d2 = _cross(b0, b1, a0), _cross(b0, b1, a1)
    d3, d4 = _cross(a0, a1, b0), _cross(a0, a1, b1)
    return d1 * d2 < 0 and d3 * d4 < 0


def _polygons_intersect(poly_a: list, poly_b: list) -> bool:
    """Brute force, independent of the SAT: an edge pair crosses or a vertex is inside."""
    if any(_inside_convex(p, poly_b) for p in poly_a) or any(_inside_convex(p, poly_a) for p in poly_b):
        return True
    return any(_edges_cross(poly_a[i], poly_a[(i + 1) % 4], poly_b[j], poly_b[(j + 1) % 4])
               for i in range(4) for j in range(4))


def _sampled_overlap(poly_a: list, poly_b: list, samples: int = 15) -> bool:
    """A grid of points inside A, any of which inside B proves an overlap."""
    a, b = np.asarray(poly_a), np.asarray(poly_b)
    fractions = np.linspace(0.0, 1.0, samples)
    u, v = np.meshgrid(fractions, fractions)
    points = (a[1] + u[..., None] * (a[0] - a[1]) + v[..., None] * (a[2] - a[1])).reshape(-1, 2)
    edge, to_point = np.roll(b, -1, axis=0) - b, points[:, None, :] - b[None, :, :]
    inside = edge[None, :, 0] * to_point[..., 1] - edge[None, :, 1] * to_point[..., 0] >= 0.0
    return bool(np.any(np.all(inside, axis=1)))


def _random_boxes(rng: np.random.Generator, count: int, spread_m: float) -> np.ndarray:
    return np.column_stack([rng.uniform(0, spread_m, count), rng.uniform(0, spread_m, count),
                            rng.uniform(-math.pi, math.pi, count), rng.uniform(0.5, 6.0, count),
                            rng.uniform(0.5, 2.5, count)])


def _polygon(box: np.ndarray) -> list[tuple[float, float]]:
    return [tuple(c) for c in box_corners(*box).tolist()]


# -------------------------------------------------------------------- boxes
def test_box_corners_axis_aligned_and_rotated() -> None:
    corners = box_corners(0.0, 0.0, 0.0, 4.0, 2.0)
    np.testing.assert_allclose(corners, [[2, 1], [-2, 1], [-2, -1], [2, -1]])
    rotated = box_corners(1.0, 1.0, math.pi / 2, 4.0, 2.0)
    np.testing.assert_allclose(rotated[0], [0.0, 3.0], atol=1e-12)  # front-left points along +y
    assert box_corners(np.zeros(3), 0.0, np.zeros(3), 4.0, np.ones(3)).shape == (3, 4, 2)


def test_touching_boxes_overlap_and_near_miss_does_not() -> None:
    ego = (0.0, 0.0, 0.0, 4.5, 1.9)
    assert boxes_overlap(ego, [[4.5, 0.0, 0.0, 4.5, 1.9]])[0]             # bumpers touch
    assert not boxes_overlap(ego, [[4.5 + 1e-6, 0.0, 0.0, 4.5, 1.9]])[0]
    assert boxes_overlap(ego, [[0.0, 1.9, 0.0, 4.5, 1.9]])[0]             # side by side, touching
    assert not boxes_overlap(ego, [[0.0, 1.9 + 1e-6, 0.0, 4.5, 1.9]])[0]


def test_rotated_corner_against_face() -> None:
    side = 2.0
    corner_reach = side / math.sqrt(2.0)  # a square rotated 45 deg reaches this far along x
    ego = (0.0, 0.0, 0.0, 4.0, 2.0)
    diamond = lambda gap: [2.0 + corner_reach + gap, 0.3, math.pi / 4, side, side]  # noqa: E731
    assert boxes_overlap(ego, [diamond(-1e-9)])[0]
    assert not boxes_overlap(ego, [diamond(1e-6)])[0]
    # Corner-to-corner near miss that the bounding circles do not reject: only the
    # diamond's diagonal edge separates it from the ego's front-left corner.
    assert not boxes_overlap(ego, [[2.3, 2.3, math.pi / 4, 2.0, 2.0]])[0]
    assert boxes_overlap(ego, [[2.1, 2.1, math.pi / 4, 2.0, 2.0]])[0]


def test_overlap_matches_brute_force_polygons() -> None:
    rng = np.random.default_rng(7)
    boxes = _random_boxes(rng, 200, spread_m=12.0)
    overlaps = 0
    for a in range(0, 200, 20):
        computed = boxes_overlap(boxes[a], boxes)
        expected = [_polygons_intersect(_polygon(boxes[a]), _polygon(b)) for b in boxes]
        np.testing.assert_array_equal(computed, expected)
        sampled = np.array([_sampled_overlap(_polygon(boxes[a]), _polygon(b)) for b in boxes])
        assert not np.any(sampled & ~computed), "a sampled point inside both boxes must mean overlap"
        overlaps += int(computed.sum())
    assert 100 < overlaps < 1900  # both outcomes are exercised


def test_overlap_matches_shapely_when_installed() -> None:
    geometry = pytest.importorskip("shapely.geometry")
    rng = np.random.default_rng(3)
    boxes = _random_boxes(rng, 200, spread_m=10.0)
    for a in range(0, 200, 10):
        expected = [geometry.Polygon(_polygon(boxes[a])).intersects(geometry.Polygon(_polygon(b))) for b in boxes]
        np.testing.assert_array_equal(boxes_overlap(boxes[a], boxes), expected)


@pytest.mark.parametrize("spread_m", [8.0, 200.0])  # dense: vectorised path; sparse: scalar path
def test_pairwise_matches_one_vs_many(spread_m: float) -> None:
    rng = np.random.default_rng(11)
    boxes = _random_boxes(rng, 50, spread_m)
    matrix = pairwise_overlaps(*boxes.T)
    assert matrix.shape == (50, 50)
    assert not matrix.diagonal().any()
    np.testing.assert_array_equal(matrix, matrix.T)
    for a in range(50):
        expected = boxes_overlap(boxes[a], boxes)
        expected[a] = False
        np.testing.assert_array_equal(matrix[a], expected)


def test_pairwise_small_inputs() -> None:
    assert pairwise_overlaps([], [], [], [], []).shape == (0, 0)
    assert pairwise_overlaps([0.0], [0.0], [0.0], [4.0], [2.0]).tolist() == [[False]]


# ----------------------------------------------------------------- segments
@pytest.mark.parametrize(("p0", "p1", "q0", "q1", "expected"), [
    ((0, 0), (2, 2), (0, 2), (2, 0), True),         # X
    ((0, 0), (1, 0), (0, 1), (1, 1), False),        # parallel
    ((0, 0), (2, 0), (1, 0), (3, 0), True),         # collinear overlap
    ((0, 0), (1, 0), (2, 0), (3, 0), False),        # collinear apart
    ((0, 0), (1, 0), (1, 0), (1, 5), True),         # shared endpoint
    ((0, 0), (2, 0), (1, 0), (1, 5), True),         # T
    ((0, 0), (2, 0), (1, 1e-9), (1, 5), False),     # near miss
])
def test_segments_intersect(p0, p1, q0, q1, expected: bool) -> None:
    assert segments_intersect(p0, p1, q0, q1) is expected


def test_segments_intersect_vectorised() -> None:
    q0 = np.array([[1.0, -1.0], [5.0, -1.0], [1.5, -1.0]])
    q1 = np.array([[1.0, 1.0], [5.0, 1.0], [1.5, 1.0]])
    result = segments_intersect((0.0, 0.0), (2.0, 0.0), q0, q1)
    assert result.tolist() == [True, False, True]


def test_crossing_counts_arrival_on_the_line_once() -> None:
    line = ((1.0, -1.0), (1.0, 1.0))
    assert segment_crosses_line((0.0, 0.0), (1.0, 0.0), *line)      # ends on the line
    assert not segment_crosses_line((1.0, 0.0), (2.0, 0.0), *line)  # starts on it
    assert segment_crosses_line((0.5, 0.0), (2.0, 0.0), *line)
    assert not segment_crosses_line((0.0, 0.0), (0.9, 0.0), *line)


# --------------------------------------------------------------- projection
def test_projection_distance_and_signs() -> None:
    points = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]])
    s_axis = cumulative_arc_length(points)
    np.testing.assert_allclose(s_axis, [0.0, 10.0, 20.0])
    assert project_onto_polyline(points, s_axis, (5.0, 2.0)) == pytest.approx((5.0, 2.0, 0))
    assert project_onto_polyline(points, s_axis, (5.0, -3.0)) == pytest.approx((5.0, -3.0, 0))
    # Right of the northbound second segment is negative.
    assert project_onto_polyline(points, s_axis, (12.0, 5.0)) == pytest.approx((15.0, -2.0, 1))
    s_m, lateral_m, index = project_onto_polyline(points, s_axis, (-3.0, -4.0))
    assert (s_m, abs(lateral_m), index) == pytest.approx((0.0, 5.0, 0))
    assert project_onto_polyline(points, s_axis, (10.0, 14.0))[0] == pytest.approx(20.0)


def test_projection_hint_keeps_the_pass_the_caller_is_on() -> None:
    # Out and back 1 m apart: the same place is passed twice.
    points = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 1.0], [0.0, 1.0]])
    s_axis = cumulative_arc_length(points)
    query = (5.0, 0.6)  # nearer the way back
    assert project_onto_polyline(points, s_axis, query)[2] == 2
    assert project_onto_polyline(points, s_axis, query, hint_index=0, window=1)[:3] == pytest.approx((5.0, 0.6, 0))
    s_m, lateral_m, index = project_onto_polyline(points, s_axis, query, hint_index=2)
    assert (s_m, lateral_m, index) == pytest.approx((16.0, 0.4, 2))  # heading -x, so -y is left


def test_projection_handles_duplicate_points() -> None:
    points = np.array([[0.0, 0.0], [0.0, 0.0], [10.0, 0.0]])
    s_axis = cumulative_arc_length(points)
    assert project_onto_polyline(points, s_axis, (4.0, 1.0)) == pytest.approx((4.0, 1.0, 1))
