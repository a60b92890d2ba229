"""The committed towns: they load in carla, every lane can reach every other, every
junction of three or more roads has a light per approach, roads do not overlap, and
the generator reproduces the files byte for byte."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections import defaultdict

import carla
import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from sim.towns import HELDOUT_TOWNS, TOWNS, TRAINING_TOWNS, town_path

TRAFFIC_LIGHT_TYPE = "1000001"
LINK_TOLERANCE_M = 0.5
MIN_ROAD_SEPARATION_M = 1.0
# A light belongs to an approach if it stands this close to where the lane enters.
LIGHT_TO_STOP_MAX_M = 10.0
MAX_EXTENT_M = {"grid_town": 400.0, "multilane_town": 600.0, "holdout_town": 600.0}


@contextlib.contextmanager
def _native_stderr(sink: list[str]):
    """carla's C++ parser writes its warnings straight to file descriptor 2."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            sink.append(capture.read().decode(errors="replace"))


@pytest.fixture(scope="module", params=sorted(TOWNS))
def town(request) -> tuple[str, carla.Map, str]:
    """(name, map, what carla printed on stderr while parsing)."""
    name = request.param
    stderr: list[str] = []
    with _native_stderr(stderr):
        carla_map = carla.Map(name, town_path(name).read_text(encoding="utf-8"))
    return name, carla_map, stderr[0]


def _xyz(location: carla.Location) -> tuple[float, float, float]:
    return location.x, location.y, location.z


def _distance_2d(first: carla.Location, second: carla.Location) -> float:
    return math.hypot(first.x - second.x, first.y - second.y)


def _driving_topology(carla_map: carla.Map) -> list[tuple[carla.Waypoint, carla.Waypoint]]:
    return [(a, b) for a, b in carla_map.get_topology()
            if a.lane_type == carla.LaneType.Driving and b.lane_type == carla.LaneType.Driving]


def test_town_registry() -> None:
    assert set(TRAINING_TOWNS) | set(HELDOUT_TOWNS) == set(TOWNS)
    assert not set(TRAINING_TOWNS) & set(HELDOUT_TOWNS)
    for name in TOWNS:
        assert town_path(name).is_file()
    with pytest.raises(KeyError, match="unknown town"):
        town_path("Town01")


def test_loads_with_geo_reference(town) -> None:
    _, carla_map, stderr = town
    assert "georeference" not in stderr.lower(), stderr
    origin = carla_map.transform_to_geolocation(carla.Location(0.0, 0.0, 0.0))
    assert (origin.latitude, origin.longitude) == pytest.approx((49.0, 8.0))


def test_waypoints_are_finite(town) -> None:
    _, carla_map, _ = town
    waypoints = carla_map.generate_waypoints(2.0)
    assert waypoints
    coords = np.array([(*_xyz(w.transform.location), w.transform.rotation.yaw) for w in waypoints])
    assert np.isfinite(coords).all()


def test_town_fits_its_extent(town) -> None:
    name, carla_map, _ = town
    xy = np.array([_xyz(w.transform.location)[:2] for w in carla_map.generate_waypoints(2.0)])
    extent = xy.max(axis=0) - xy.min(axis=0)
    assert extent.max() < MAX_EXTENT_M[name]


def test_every_lane_reaches_every_other(town) -> None:
    _, carla_map, _ = town
    topology = _driving_topology(carla_map)
    starts = np.array([_xyz(a.transform.location) for a, _ in topology])
    ends = np.array([_xyz(b.transform.location) for _, b in topology])
    tree = cKDTree(starts)
    edges = [(i, j) for i, end in enumerate(ends) for j in tree.query_ball_point(end, LINK_TOLERANCE_M)]
    rows, cols = zip(*edges)
    graph = coo_matrix((np.ones(len(edges)), (rows, cols)), shape=(len(topology), len(topology)))
    n_components, _ = connected_components(graph, directed=True, connection="strong")
    assert n_components == 1


def _approaches(carla_map: carla.Map) -> dict[int, dict[int, list[carla.Waypoint]]]:
    """junction id -> incoming road id -> the entry waypoints of its lanes driving in."""
    approaches: dict[int, dict[int, list[carla.Waypoint]]] = defaultdict(lambda: defaultdict(list))
    for a, b in _driving_topology(carla_map):
        if not a.is_junction and b.is_junction:
            approaches[b.get_junction().id][a.road_id].append(b)
    return approaches


def test_every_approach_to_a_big_junction_has_a_light(town) -> None:
    _, carla_map, _ = town
    lights = carla_map.get_all_landmarks_of_type(TRAFFIC_LIGHT_TYPE)
    assert all(light.type == TRAFFIC_LIGHT_TYPE and light.is_dynamic for light in lights)
    signalled = 0
    for junction_id, by_road in _approaches(carla_map).items():
        if len(by_road) < 3:
            continue
        for road_id, entries in by_road.items():
            for entry in entries:
                near = [light for light in lights if light.road_id == road_id
                        and _distance_2d(entry.transform.location, light.transform.location)
                        < LIGHT_TO_STOP_MAX_M]
                assert near, f"junction {junction_id}: no light for road {road_id}"
                signalled += 1
            # carla itself must tie the light to the approach lanes (orientation + validity).
            lane_before = entries[0].previous(5.0)[0]
            found = lane_before.get_landmarks_of_type(20.0, TRAFFIC_LIGHT_TYPE, False)
            assert any(light.road_id == road_id for light in found), (junction_id, road_id)
    assert signalled > 0


def test_lights_stand_right_of_their_lanes(town) -> None:
    _, carla_map, _ = town
    for light in carla_map.get_all_landmarks_of_type(TRAFFIC_LIGHT_TYPE):
        # "+" serves the lanes along the reference line (negative ids): right of them is t < 0.
        if light.orientation == carla.LandmarkOrientation.Positive:
            assert light.t < 0
            assert all(low <= high < 0 for low, high in light.get_lane_validities())
        else:
            assert light.orientation == carla.LandmarkOrientation.Negative
            assert light.t > 0
            assert all(0 < low <= high for low, high in light.get_lane_validities())


def test_roads_do_not_overlap(town) -> None:
    _, carla_map, _ = town
    points_by_road: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for waypoint in carla_map.generate_waypoints(1.0):
        if not waypoint.is_junction:
            points_by_road[waypoint.road_id].append(_xyz(waypoint.transform.location)[:2])
    road_ids = sorted(points_by_road)
    trees = {road_id: cKDTree(points_by_road[road_id]) for road_id in road_ids}
    for i, first in enumerate(road_ids):
        for second in road_ids[i + 1:]:
            distance, _ = trees[second].query(points_by_road[first],
                                              distance_upper_bound=MIN_ROAD_SEPARATION_M)
            assert not np.isfinite(distance).any(), f"roads {first} and {second} come within 1 m"


def test_lane_centres_are_continuous(town) -> None:
    """A lane's last point is the next lane's first: no jump at junction boundaries."""
    _, carla_map, _ = town
    for a, b in _driving_topology(carla_map):
        path = [a, *a.next_until_lane_end(1.0)]
        last = path[-1].transform.location
        assert last.distance(b.transform.location) < 1.0 + 1e-3
        yaw_step = (path[-1].transform.rotation.yaw - b.transform.rotation.yaw + 180.0) % 360.0 - 180.0
        assert abs(yaw_step) < 15.0


def test_generator_reproduces_committed_files(tmp_path) -> None:
    pytest.importorskip("scenariogeneration")
    from sim.towns import generate_towns

    written = generate_towns.main(tmp_path)
    assert sorted(path.name for path in written) == sorted(f"{name}.xodr" for name in TOWNS)
    for path in written:
        assert path.read_bytes() == town_path(path.stem).read_bytes(), (
            f"{path.stem}: run `python -m sim.towns.generate_towns` and commit the result")
    # A second build in the same process must not drift (ids, dates, registries).
    again = generate_towns.main(tmp_path / "again")
    for first, second in zip(written, again):
        assert first.read_bytes() == second.read_bytes()


def test_lane_counts_and_curves(town) -> None:
    """Grid and holdout: one lane each way; multilane: two. None is all straight lines."""
    name, carla_map, _ = town
    lanes_each_way = max(abs(w.lane_id) for w in carla_map.generate_waypoints(2.0) if not w.is_junction)
    assert lanes_each_way == (2 if name == "multilane_town" else 1)
    curved = [w for w in carla_map.generate_waypoints(2.0) if not w.is_junction
              and abs(math.remainder(w.transform.rotation.yaw, 90.0)) > 1.0]
    assert curved, f"{name} has only axis-aligned straight roads"


def _turn(junction_lane: carla.Waypoint) -> str:
    path = [junction_lane, *junction_lane.next_until_lane_end(1.0)]
    # carla's yaw is clockwise seen from above: a left turn decreases it.
    change = (path[0].transform.rotation.yaw - path[-1].transform.rotation.yaw + 180.0) % 360.0 - 180.0
    if abs(change) < 45.0:
        return "straight"
    return "left" if change > 0 else "right"


def test_multilane_four_way_turns_by_lane() -> None:
    """Outer lane turns right, inner lane turns left, both go straight on."""
    carla_map = carla.Map("multilane_town", town_path("multilane_town").read_text(encoding="utf-8"))
    movements: dict[tuple[int, int, int], set[str]] = defaultdict(set)
    junction_roads: dict[int, set[int]] = defaultdict(set)
    for a, b in _driving_topology(carla_map):
        if not a.is_junction and b.is_junction:
            junction_id = b.get_junction().id
            junction_roads[junction_id].add(a.road_id)
            movements[(junction_id, a.road_id, abs(a.lane_id))].add(_turn(b))
    four_ways = [j for j, roads in junction_roads.items() if len(roads) == 4]
    assert four_ways
    for junction_id in four_ways:
        for road_id in junction_roads[junction_id]:
            assert movements[(junction_id, road_id, 1)] == {"straight", "left"}
            assert movements[(junction_id, road_id, 2)] == {"straight", "right"}
