"""Route planner on small OpenDRIVE maps built here with scenariogeneration.

The test town: a 4-way junction (2+2 lanes, every turn connected) whose arms are joined
in pairs by 270-degree loops, so every lane leads back to the junction and nothing is a
dead end; plus a separate two-way ring 300 m away that no route can reach.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from drivestack.schema import RoadOption, Route
from sim.road_map import LaneSegment, RoadMap
from sim.route_planner import NoRouteError, RoutePlanner, route_lane_ids
from sim.towns import TOWNS, town_path

xodr = pytest.importorskip("scenariogeneration").xodr

RESOLUTION_M = 2.0
ARM_LENGTH_M = 40.0
JUNCTION_RADIUS_M = 10.0
LANE_WIDTH_M = 3.5
TURN_OPTIONS = (RoadOption.LEFT, RoadOption.RIGHT, RoadOption.STRAIGHT)


def _junction_with_loops() -> xodr.OpenDrive:
    odr = xodr.OpenDrive("route_planner_test")
    # Arms 1-4 leave the junction (centre (-10, 0)) eastwards, southwards, westwards, northwards.
    arm_angles = {1: 0.0, 2: -math.pi / 2, 3: math.pi, 4: math.pi / 2}
    arms = {rid: xodr.create_road(xodr.Line(ARM_LENGTH_M), rid, left_lanes=2, right_lanes=2,
                                  lane_width=LANE_WIDTH_M) for rid in arm_angles}
    arms[1].planview.set_start_point(0.0, 0.0, 0.0)  # both components need a fixed start
    loop_radius_m = ARM_LENGTH_M + JUNCTION_RADIUS_M
    loops = []
    # Loop 5 joins the far ends of arms 1 and 2, loop 6 those of arms 3 and 4.
    for loop_id, first, second in ((5, 1, 2), (6, 3, 4)):
        loop = xodr.create_road(xodr.Arc(-1.0 / loop_radius_m, angle=1.5 * math.pi), loop_id,
                                left_lanes=2, right_lanes=2, lane_width=LANE_WIDTH_M)
        arms[first].add_successor(xodr.ElementType.road, loop_id, xodr.ContactPoint.start)
        loop.add_predecessor(xodr.ElementType.road, first, xodr.ContactPoint.end)
        loop.add_successor(xodr.ElementType.road, second, xodr.ContactPoint.end)
        arms[second].add_successor(xodr.ElementType.road, loop_id, xodr.ContactPoint.end)
        loops.append(loop)
    junction = xodr.CommonJunctionCreator(100, "centre", startnum=100)
    for rid, angle in arm_angles.items():
        junction.add_incoming_road_circular_geometry(arms[rid], JUNCTION_RADIUS_M, angle, "predecessor")
    for road in [*arms.values(), *loops]:
        odr.add_road(road)
    for first, second in ((1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)):
        junction.add_connection(first, second)
    odr.add_junction_creator(junction)
    # The unreachable ring: two half circles, one lane each way.
    east = xodr.create_road(xodr.Arc(1.0 / 30.0, angle=math.pi), 20, left_lanes=1, right_lanes=1,
                            lane_width=LANE_WIDTH_M)
    west = xodr.create_road(xodr.Arc(1.0 / 30.0, angle=math.pi), 21, left_lanes=1, right_lanes=1,
                            lane_width=LANE_WIDTH_M)
    east.planview.set_start_point(300.0, 0.0, 0.0)
    east.add_successor(xodr.ElementType.road, 21, xodr.ContactPoint.start)
    east.add_predecessor(xodr.ElementType.road, 21, xodr.ContactPoint.end)
    west.add_predecessor(xodr.ElementType.road, 20, xodr.ContactPoint.end)
    west.add_successor(xodr.ElementType.road, 20, xodr.ContactPoint.start)
    odr.add_road(east)
    odr.add_road(west)
    odr.adjust_roads_and_lanes()
    return odr


def _arcs_for_constant_curvature_spirals(root: ET.Element) -> None:
    """The junction creator's clothoid fits have constant-curvature pieces, which carla
    0.9.16 evaluates to the wrong positions (the lane zig-zags back); as arcs they load
    correctly (sim/towns/generate_towns.py does the same)."""
    for geometry in root.iter("geometry"):
        spiral = geometry.find("spiral")
        if spiral is None:
            continue
        start, end = float(spiral.get("curvStart")), float(spiral.get("curvEnd"))
        if abs(end - start) > 1e-6:
            continue
        geometry.remove(spiral)
        if abs(start) > 1e-6:
            ET.SubElement(geometry, "arc", curvature=repr((start + end) / 2.0))
        else:
            ET.SubElement(geometry, "line")


@pytest.fixture(scope="module")
def road_map(tmp_path_factory) -> RoadMap:
    path = tmp_path_factory.mktemp("maps") / "route_planner_test.xodr"
    root = _junction_with_loops().get_element()
    _arcs_for_constant_curvature_spirals(root)
    path.write_bytes(ET.tostring(root))
    return RoadMap.from_file(path)


@pytest.fixture(scope="module")
def planner(road_map) -> RoutePlanner:
    return RoutePlanner(road_map, sampling_resolution_m=RESOLUTION_M)


def lane(road_map: RoadMap, road_id: int, lane_id: int) -> LaneSegment:
    """The road's (single) segment for an OpenDRIVE lane outside junctions."""
    (found,) = [seg for seg in road_map.lanes if seg.road_id == road_id and seg.lane_id == lane_id]
    return found


def pose(road_map: RoadMap, road_id: int, lane_id: int, s_m: float) -> tuple[float, float, float]:
    return lane(road_map, road_id, lane_id).pose_at(s_m)


def xy(road_map: RoadMap, road_id: int, lane_id: int, s_m: float) -> tuple[float, float]:
    return pose(road_map, road_id, lane_id, s_m)[:2]


def spacings(route: Route) -> np.ndarray:
    pts = np.array([(wp.x_m, wp.y_m) for wp in route.waypoints])
    return np.linalg.norm(np.diff(pts, axis=0), axis=1)


def assert_well_formed(road_map: RoadMap, route: Route) -> None:
    """Continuous, lanes linked in order, option consistent with the lanes, length right."""
    gaps = spacings(route)
    assert gaps.max() <= 2.5 * RESOLUTION_M
    assert route.length_m == pytest.approx(gaps.sum(), rel=0.02, abs=0.1)
    ids = [wp.lane_segment_id for wp in route.waypoints]
    assert all(i >= 0 for i in ids)
    for a, b in zip(ids, ids[1:]):
        if a != b:
            seg = road_map.lanes[a]
            assert b in seg.successors or b in (seg.left_neighbor, seg.right_neighbor), (a, b)
    for wp in route.waypoints:
        if road_map.lanes[wp.lane_segment_id].in_junction:
            assert wp.option == road_map.lanes[wp.lane_segment_id].turn


def turn_runs(road_map: RoadMap, route: Route) -> list[tuple[RoadOption, float]]:
    """(option, heading change) for every pass through a junction, from the waypoint
    before the first connector waypoint to the last one."""
    runs = []
    wps = route.waypoints
    k = 0
    while k < len(wps):
        if road_map.lanes[wps[k].lane_segment_id].in_junction and k > 0:
            j = k
            while j + 1 < len(wps) and road_map.lanes[wps[j + 1].lane_segment_id].in_junction:
                j += 1
            change = math.atan2(math.sin(wps[j].yaw_rad - wps[k - 1].yaw_rad),
                                math.cos(wps[j].yaw_rad - wps[k - 1].yaw_rad))
            if j + 1 < len(wps):  # a run cut by the route's end has no complete turn
                runs.append((wps[k].option, change))
            k = j + 1
        else:
            k += 1
    return runs


def assert_turns_match_geometry(road_map: RoadMap, route: Route) -> None:
    for option, change in turn_runs(road_map, route):
        if option == RoadOption.LEFT:
            assert change > math.radians(35)
        elif option == RoadOption.RIGHT:
            assert change < -math.radians(35)
        else:
            assert option == RoadOption.STRAIGHT and abs(change) < math.radians(35)


# -- plan -------------------------------------------------------------------------------


@pytest.mark.parametrize("goal_road, expected", [(3, RoadOption.LEFT), (1, RoadOption.RIGHT),
                                                 (4, RoadOption.STRAIGHT)])
def test_turn_through_junction_gets_the_turn_option(road_map, planner, goal_road, expected):
    # Northbound on arm 2 towards the junction: west is left, east is right.
    start = pose(road_map, 2, 1, 10.0)
    goal = xy(road_map, goal_road, -1, 20.0)
    route = planner.plan(start, goal)
    assert_well_formed(road_map, route)
    assert_turns_match_geometry(road_map, route)
    in_junction = [wp.option for wp in route.waypoints if road_map.lanes[wp.lane_segment_id].in_junction]
    assert in_junction and set(in_junction) == {expected}
    assert route.length_m < 100.0  # straight through, no loop


def test_turn_is_announced_on_the_approach(road_map, planner):
    route = planner.plan(pose(road_map, 2, 1, 5.0), xy(road_map, 3, -1, 20.0))
    entry = next(k for k, wp in enumerate(route.waypoints)
                 if road_map.lanes[wp.lane_segment_id].in_junction) - 1  # where the junction starts
    gaps = spacings(route)
    to_junction = [gaps[k:entry].sum() for k in range(entry + 1)]
    assert max(to_junction) > 10.0
    for d, wp in zip(to_junction, route.waypoints):
        if d <= 5.0:
            assert wp.option == RoadOption.LEFT
        elif d > 10.0:
            assert wp.option == RoadOption.LANEFOLLOW


def test_start_and_end_at_the_requested_points(road_map, planner):
    pairs = [((2, 1, 12.0), (3, -1, 25.0)), ((1, 1, 3.0), (2, -2, 31.0)), ((5, -1, 100.0), (6, 1, 50.0)),
             ((4, 2, 20.0), (4, -1, 20.0))]
    for (sr, sl, ss), (gr, gl, gs) in pairs:
        start, goal = pose(road_map, sr, sl, ss), xy(road_map, gr, gl, gs)
        route = planner.plan(start, goal)
        assert_well_formed(road_map, route)
        assert_turns_match_geometry(road_map, route)
        first, last = route.waypoints[0], route.waypoints[-1]
        assert math.dist((first.x_m, first.y_m), start[:2]) < 0.5
        assert math.dist((last.x_m, last.y_m), goal) < 0.5
        assert first.lane_segment_id == lane(road_map, sr, sl).segment_id
        assert last.lane_segment_id == lane(road_map, gr, gl).segment_id


def test_points_off_the_centre_line_project_onto_the_lane(road_map, planner):
    x, y, yaw = pose(road_map, 2, 1, 10.0)
    # 1 m to the right of the lane centre, still heading along it; goal 1.2 m off its lane.
    start = (x + math.sin(yaw), y - math.cos(yaw), yaw + 0.2)
    gx, gy, gyaw = pose(road_map, 4, -1, 30.0)
    goal = (gx - 1.2 * math.sin(gyaw), gy + 1.2 * math.cos(gyaw))
    route = planner.plan(start, goal)
    assert math.dist((route.waypoints[0].x_m, route.waypoints[0].y_m), (x, y)) < 0.3
    assert math.dist((route.waypoints[-1].x_m, route.waypoints[-1].y_m), goal) < 1.5
    assert route.waypoints[-1].lane_segment_id == lane(road_map, 4, -1).segment_id


def test_start_heading_selects_the_lane_direction(road_map, planner):
    # On the centre line of arm 1: heading along either lane chooses that lane.
    ex, ey, eyaw = pose(road_map, 1, -1, 20.0)
    wx, wy, wyaw = pose(road_map, 1, 1, 20.0)
    centre = ((ex + wx) / 2, (ey + wy) / 2)
    along = planner.plan((*centre, eyaw), xy(road_map, 1, -1, 35.0))
    against = planner.plan((*centre, wyaw), xy(road_map, 1, 1, 35.0))
    assert along.waypoints[0].lane_segment_id == lane(road_map, 1, -1).segment_id
    assert along.length_m < 20.0
    assert against.waypoints[0].lane_segment_id == lane(road_map, 1, 1).segment_id
    assert against.length_m < 20.0


def test_goal_ahead_on_the_same_lane_is_direct(road_map, planner):
    route = planner.plan(pose(road_map, 1, -1, 10.0), xy(road_map, 1, -1, 35.0))
    assert route.length_m == pytest.approx(25.0, abs=0.05)
    assert route_lane_ids(route) == {lane(road_map, 1, -1).segment_id}
    assert all(wp.option == RoadOption.LANEFOLLOW for wp in route.waypoints)


def test_goal_behind_on_the_same_lane_loops_around(road_map, planner):
    start, goal = pose(road_map, 1, -1, 30.0), xy(road_map, 1, -1, 10.0)
    route = planner.plan(start, goal)
    assert_well_formed(road_map, route)
    assert_turns_match_geometry(road_map, route)
    assert route.length_m > 200.0
    assert math.dist((route.waypoints[-1].x_m, route.waypoints[-1].y_m), goal) < 0.5
    assert route.waypoints[-1].lane_segment_id == lane(road_map, 1, -1).segment_id
    assert any(wp.option in TURN_OPTIONS for wp in route.waypoints)


@pytest.mark.parametrize("start_lane, goal_lane, goal_road, expected", [
    (2, -1, 3, RoadOption.CHANGELANELEFT),   # outer lane, left turn, goal on the inner lane
    (1, -2, 1, RoadOption.CHANGELANERIGHT),  # inner lane, right turn, goal on the outer lane
])
def test_lane_change_to_reach_the_goal_lane(road_map, planner, start_lane, goal_lane, goal_road, expected):
    goal_seg = lane(road_map, goal_road, goal_lane)
    route = planner.plan(pose(road_map, 2, start_lane, 5.0), goal_seg.pose_at(35.0)[:2])
    assert_well_formed(road_map, route)
    options = [wp.option for wp in route.waypoints]
    assert expected in options
    other = RoadOption.CHANGELANERIGHT if expected == RoadOption.CHANGELANELEFT else RoadOption.CHANGELANELEFT
    assert other not in options
    changing = [k for k, option in enumerate(options) if option == expected]
    landing = route.waypoints[changing[-1]]
    source = road_map.lanes[route.waypoints[changing[0]].lane_segment_id]
    side = source.left_neighbor if expected == RoadOption.CHANGELANELEFT else source.right_neighbor
    assert landing.lane_segment_id == side
    # After the change the waypoints run on the target lane's centre line.
    after = []
    for wp in route.waypoints[changing[-1]:]:
        if wp.lane_segment_id != landing.lane_segment_id:
            break
        after.append(wp)
    assert len(after) >= 2
    for wp in after:
        query = road_map.nearest_lane(wp.x_m, wp.y_m, wp.yaw_rad)
        assert query.segment_id == landing.lane_segment_id and abs(query.lateral_offset_m) < 0.2
    # The manoeuvre is spread out: 10-20 m from leaving one lane to joining the other.
    travelled = spacings(route)[changing[0]:changing[-1]].sum()
    assert 10.0 <= travelled <= 20.0
    assert route.waypoints[-1].lane_segment_id == goal_seg.segment_id


def test_lane_changes_are_costly_but_never_forbidden(road_map):
    # From the outer lane only a lane change reaches the inner lane beyond the left turn
    # (the junction joins inner lanes to inner lanes): any cost still takes one change.
    start, goal = pose(road_map, 2, 2, 5.0), xy(road_map, 3, -1, 35.0)
    for cost_m in (0.0, 10.0, 5000.0):
        route = RoutePlanner(road_map, lane_change_cost_m=cost_m).plan(start, goal)
        options = [wp.option for wp in route.waypoints]
        changes = sum(1 for a, b in zip([RoadOption.VOID, *options], options)
                      if b == RoadOption.CHANGELANELEFT and a != RoadOption.CHANGELANELEFT)
        assert changes == 1 and RoadOption.CHANGELANERIGHT not in options
        assert route.waypoints[-1].lane_segment_id == lane(road_map, 3, -1).segment_id


def test_goal_between_lanes_ends_on_the_nearest_lane(road_map, planner):
    # 1.5 m from the westbound lane of arm 1, 2 m from the eastbound one: from the north
    # arm the eastbound lane is a left turn away, the westbound one a loop away, and
    # the route still ends on the nearest lane.
    ex, ey, _ = pose(road_map, 1, -1, 20.0)
    wx, wy, _ = pose(road_map, 1, 1, 20.0)
    goal = (wx + (ex - wx) * 1.5 / 3.5, wy + (ey - wy) * 1.5 / 3.5)
    route = planner.plan(pose(road_map, 4, 2, 10.0), goal)
    assert route.waypoints[-1].lane_segment_id == lane(road_map, 1, 1).segment_id
    assert math.dist((route.waypoints[-1].x_m, route.waypoints[-1].y_m), goal) == pytest.approx(1.5, abs=0.05)
    assert route.length_m > 200.0


def test_unreachable_goal_raises(road_map, planner):
    with pytest.raises(NoRouteError, match="no path from"):
        planner.plan(pose(road_map, 2, 1, 10.0), xy(road_map, 20, -1, 40.0))
    with pytest.raises(NoRouteError, match="no path from"):
        planner.plan(pose(road_map, 20, 1, 40.0), xy(road_map, 2, 1, 10.0))


def test_points_far_from_any_lane_raise(road_map, planner):
    with pytest.raises(NoRouteError, match=r"no drivable lane within 10 m of goal \(300.0, 30.0\)"):
        planner.plan(pose(road_map, 2, 1, 10.0), (300.0, 30.0))
    with pytest.raises(NoRouteError, match="no drivable lane within 10 m of start"):
        planner.plan((300.0, 30.0, 0.0), xy(road_map, 2, 1, 10.0))
    assert issubclass(NoRouteError, ValueError)


def test_invalid_parameters_are_rejected(road_map):
    with pytest.raises(ValueError, match="sampling_resolution_m"):
        RoutePlanner(road_map, sampling_resolution_m=0.0)
    with pytest.raises(ValueError, match="lane_change_cost_m"):
        RoutePlanner(road_map, lane_change_cost_m=-1.0)


# -- lanes of a route ------------------------------------------------------------------------


def test_allowed_lanes_add_same_direction_neighbours_only(road_map, planner):
    route = planner.plan(pose(road_map, 2, 1, 5.0), xy(road_map, 4, -1, 30.0))  # straight north
    used = route_lane_ids(route)
    allowed = planner.allowed_lane_ids(route)
    assert planner.route_lane_ids(route) == used
    assert {lane(road_map, 2, 1).segment_id, lane(road_map, 4, -1).segment_id} <= used
    assert used <= allowed and isinstance(allowed, frozenset)
    assert {lane(road_map, 2, 2).segment_id, lane(road_map, 4, -2).segment_id} <= allowed
    southbound = {lane(road_map, r, l).segment_id for r, l in ((2, -1), (2, -2), (4, 1), (4, 2))}
    assert not southbound & allowed


# -- random routes -----------------------------------------------------------------------


def test_random_route_is_deterministic_for_a_seed(planner):
    a = planner.random_route(np.random.default_rng(7), 400.0)
    b = planner.random_route(np.random.default_rng(7), 400.0)
    c = planner.random_route(np.random.default_rng(8), 400.0)
    assert a == b
    assert a != c


@pytest.mark.parametrize("length_m", [30.0, 150.0, 600.0, 1500.0])
def test_random_route_length_and_shape(road_map, planner, length_m):
    rng = np.random.default_rng(int(length_m))
    for _ in range(5):
        route = planner.random_route(rng, length_m)
        assert length_m <= route.length_m <= 1.5 * length_m
        assert not road_map.lanes[route.waypoints[0].lane_segment_id].in_junction
        assert not road_map.lanes[route.waypoints[-1].lane_segment_id].in_junction or \
            math.dist((route.waypoints[-1].x_m, route.waypoints[-1].y_m),
                      road_map.lanes[route.waypoints[-1].lane_segment_id].points_xy[-1]) < 1e-6
        assert_well_formed(road_map, route)
        assert_turns_match_geometry(road_map, route)


def test_random_route_can_be_replanned(road_map, planner):
    """The end of a random route is reachable from its start by plan()."""
    rng = np.random.default_rng(3)
    for _ in range(10):
        walked = planner.random_route(rng, 300.0)
        start, end = walked.waypoints[0], walked.waypoints[-1]
        planned = planner.plan((start.x_m, start.y_m, start.yaw_rad), (end.x_m, end.y_m))
        assert planned.length_m <= walked.length_m + 1.0
        assert math.dist((planned.waypoints[-1].x_m, planned.waypoints[-1].y_m), (end.x_m, end.y_m)) < 0.5


# -- shipped towns -----------------------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(TOWNS))
def town(request) -> tuple[RoadMap, RoutePlanner]:
    road_map = RoadMap.from_file(town_path(request.param))
    return road_map, RoutePlanner(road_map, sampling_resolution_m=RESOLUTION_M)


def test_every_lane_of_a_shipped_town_is_reachable(town):
    road_map, planner = town
    rng = np.random.default_rng(2024)
    for _ in range(4):
        start = planner.random_route(rng, 50.0).waypoints[0]
        for seg in road_map.lanes:
            goal = seg.pose_at(seg.length_m / 2.0)[:2]
            route = planner.plan((start.x_m, start.y_m, start.yaw_rad), goal)
            end = route.waypoints[-1]
            assert math.dist((end.x_m, end.y_m), goal) < 0.1, (road_map.name, seg.segment_id)
            assert_well_formed(road_map, route)
            assert_turns_match_geometry(road_map, route)


def test_random_routes_on_a_shipped_town(town):
    road_map, planner = town
    rng = np.random.default_rng(11)
    for _ in range(5):
        route = planner.random_route(rng, 1000.0)
        assert 1000.0 <= route.length_m <= 1500.0
        assert_well_formed(road_map, route)
        assert_turns_match_geometry(road_map, route)


def test_start_inside_a_junction_takes_the_lane_heading_its_way(town):
    """1.5 m off a connector's centre, crossing connectors can be nearer than it."""
    road_map, planner = town
    for seg in road_map.lanes:
        if not seg.in_junction:
            continue
        x, y, yaw = seg.pose_at(seg.length_m / 2.0)
        for offset_m in (1.5, -1.5):
            start = (x - offset_m * math.sin(yaw), y + offset_m * math.cos(yaw), yaw)
            route = planner.plan(start, seg.points_xy[-1])
            assert math.cos(route.waypoints[0].yaw_rad - yaw) > 0.5, (road_map.name, seg.segment_id, offset_m)
