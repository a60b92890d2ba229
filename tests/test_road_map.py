"""OpenDRIVE loading through carla.Map: shipped towns, a foreign file, bad input."""

import math

import numpy as np
import pytest

from drivestack.schema import RoadOption
from sim.road_map import MapError, RoadMap
from sim.towns import TOWNS, town_path

DATA = __import__("pathlib").Path(__file__).parent / "data"


@pytest.fixture(scope="module", params=sorted(TOWNS))
def town(request) -> RoadMap:
    return RoadMap.from_file(town_path(request.param))


def test_lane_graph_is_consistent(town):
    for seg in town.lanes:
        assert np.isfinite(seg.points_xy).all() and len(seg.points_xy) >= 2
        assert np.all(np.diff(seg.s_m) > 0)
        # Sampled about every metre, no gaps.
        assert np.diff(seg.s_m).max() < 1.6
        for succ in seg.successors:
            assert np.linalg.norm(town.lanes[succ].points_xy[0] - seg.points_xy[-1]) < 0.5
            assert seg.segment_id in town.lanes[succ].predecessors
    # Every lane once: carla lists a lane per successor, the graph must not.
    keys = [(s.road_id, s.section_id, s.lane_id) for s in town.lanes]
    assert len(keys) == len(set(keys))


def test_frames_are_rep103(town):
    """Heading points along the polyline and the left neighbour lies on the left."""
    checked = 0
    for seg in town.lanes:
        chord = seg.points_xy[1] - seg.points_xy[0]
        assert math.cos(math.atan2(chord[1], chord[0]) - seg.yaw_rad[0]) > 0.99
        if seg.left_neighbor >= 0:
            other = town.lanes[seg.left_neighbor]
            mid = seg.points_xy[len(seg.points_xy) // 2]
            d = other.points_xy[np.argmin(np.linalg.norm(other.points_xy - mid, axis=1))] - mid
            yaw = seg.yaw_rad[len(seg.points_xy) // 2]
            assert -d[0] * math.sin(yaw) + d[1] * math.cos(yaw) > 2.0  # + = left in REP 103
            checked += 1
    if town.name == "multilane_town":
        assert checked > 0


def test_junctions_have_lights_stop_lines_and_turns(town):
    signalled = [j for j in town.junctions.values() if j.signal_ids]
    assert signalled
    for junction in signalled:
        for incoming in junction.incoming:
            stop = town.stop_line(incoming)
            assert stop is not None, f"approach lane {incoming} has no stop line"
            lane = town.lanes[incoming]
            assert lane.length_m - stop.s_m == pytest.approx(5.0, abs=0.01)
            assert math.dist(stop.p0, stop.p1) == pytest.approx(lane.width_m, rel=0.01)
    turns = {town.lanes[c].turn for j in town.junctions.values() for c in j.connectors}
    assert {RoadOption.LEFT, RoadOption.RIGHT, RoadOption.STRAIGHT} <= turns
    # A left turn crosses the opposing straight movement at a 4-way junction.
    assert any(town.connector_conflicts[c] for c in town.connector_conflicts)


def test_nearest_lane_prefers_the_lane_heading_our_way(town):
    seg = next(s for s in town.lanes if not s.in_junction and s.length_m > 30)
    x, y, yaw = seg.pose_at(15.0)
    q = town.nearest_lane(x, y, yaw)
    assert q.segment_id == seg.segment_id and q.distance_m < 0.1
    assert q.s_m == pytest.approx(15.0, abs=0.6)
    shifted = town.nearest_lane(x - 0.5 * math.sin(yaw), y + 0.5 * math.cos(yaw), yaw)
    assert shifted.lateral_offset_m == pytest.approx(0.5, abs=0.05)
    assert town.nearest_lane(x + 1e4, y, yaw) is None


def test_geolocation_uses_the_geo_reference(town):
    lat, lon, _ = town.geolocation(0.0, 0.0)
    assert (lat, lon) == pytest.approx((49.0, 8.0), abs=1e-6)
    lat_n, _, _ = town.geolocation(0.0, 111.0)  # +y is north (ENU) in the map frame
    assert lat_n == pytest.approx(lat + 0.001, abs=2e-5)
    _, lon_e, _ = town.geolocation(111.0, 0.0)
    assert lon_e > lon


def test_foreign_opendrive_file_loads():
    """A hand-written ring road (not made by our generator) loads and is drivable."""
    ring = RoadMap.from_file(DATA / "foreign_ring.xodr")
    assert len(ring.lanes) == 4
    assert ring.total_lane_length_m == pytest.approx(2 * math.pi * (50 + 1.75) + 2 * math.pi * (50 - 1.75), rel=0.02)
    assert sorted({round(s.speed_limit_mps, 3) for s in ring.lanes}) == [round(30 / 3.6, 3), round(40 / 3.6, 3)]
    lat, lon, _ = ring.geolocation(0.0, 0.0)
    assert (lat, lon) == pytest.approx((52.5, 13.4))
    for seg in ring.lanes:
        assert len(seg.successors) == 1


def _road(road_id: int, x0: float, link: str, lanes: str) -> str:
    return (f'<road name="r{road_id}" length="150" id="{road_id}" junction="-1"><link>{link}</link>'
            f'<planView><geometry s="0" x="{x0}" y="0" hdg="0" length="150"><line/></geometry></planView>'
            f'<lanes><laneSection s="0">{lanes}</laneSection></lanes></road>')


LANE = '<lane id="{id}" type="driving" level="false">{link}<width sOffset="0" a="3.5" b="0" c="0" d="0"/></lane>'


def test_hand_written_opendrive_with_dead_ends_loads(tmp_path):
    """A file written here, not by our generator: a two-way street of two roads end to
    end (every lane starts or ends at a dead end) and a separate one-way street. carla's
    topology omits lanes that start at a dead end; the lane graph must not."""
    two_way = ('<left>' + LANE.format(id=1, link='<link><successor id="1"/></link>') + '</left>'
               '<center><lane id="0" type="none" level="false"/></center>'
               '<right>' + LANE.format(id=-1, link='<link><successor id="-1"/></link>') + '</right>')
    two_way_b = two_way.replace("successor", "predecessor")
    one_way = ('<center><lane id="0" type="none" level="false"/></center>'
               '<right>' + LANE.format(id=-1, link="") + '</right>')
    text = ('<?xml version="1.0"?><OpenDRIVE><header revMajor="1" revMinor="4" name="street"/>'
            + _road(1, 0.0, '<successor elementType="road" elementId="2" contactPoint="start"/>', two_way)
            + _road(2, 150.0, '<predecessor elementType="road" elementId="1" contactPoint="end"/>', two_way_b)
            + _road(3, 0.0, "", one_way).replace('y="0"', 'y="50"')
            + "</OpenDRIVE>")
    path = tmp_path / "street.xodr"
    path.write_text(text)
    street = RoadMap.from_file(path)
    keys = sorted((s.road_id, s.lane_id) for s in street.lanes)
    assert keys == [(1, -1), (1, 1), (2, -1), (2, 1), (3, -1)]
    by_key = {(s.road_id, s.lane_id): s for s in street.lanes}
    # Right lanes run with the road (+x), left lanes against it; the halves connect.
    assert by_key[(1, -1)].successors == (by_key[(2, -1)].segment_id,)
    assert by_key[(2, 1)].successors == (by_key[(1, 1)].segment_id,)
    assert by_key[(2, -1)].successors == () and by_key[(1, 1)].successors == ()
    assert math.cos(by_key[(1, 1)].yaw_rad[0]) < -0.99
    assert by_key[(3, -1)].points_xy[0] == pytest.approx((0.0, 48.25))
    assert by_key[(3, -1)].length_m == pytest.approx(150.0)


@pytest.mark.parametrize("text, message", [
    ("this is not xml", "malformed OpenDRIVE XML"),
    ("<map><road/></map>", "root element is <map>"),
    ("<OpenDRIVE><header/></OpenDRIVE>", "no <road> elements"),
    ('<OpenDRIVE><header/><road id="1" length="10"><planView/><lanes/></road></OpenDRIVE>',
     "road 1 has no <planView><geometry>"),
    ('<OpenDRIVE><header/><road id="1" length="10"><planView><geometry s="0" x="a" y="0" hdg="0" length="10">'
     '<line/></geometry></planView><lanes><laneSection s="0"/></lanes></road></OpenDRIVE>', "numeric 'x'"),
    ('<OpenDRIVE><header/><road id="1" length="10"><planView><geometry s="0" x="0" y="0" hdg="0" length="10">'
     '<line/></geometry></planView><lanes><laneSection s="0"><center><lane id="0" type="none"/></center>'
     '</laneSection></lanes></road></OpenDRIVE>', "no driving lanes"),
])
def test_malformed_opendrive_gets_a_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.xodr"
    path.write_text(text)
    with pytest.raises(MapError, match=message):
        RoadMap.from_file(path)


def test_truncated_town_file_is_rejected(tmp_path):
    text = town_path("grid_town").read_text()
    path = tmp_path / "truncated.xodr"
    path.write_text(text[: len(text) // 2])
    with pytest.raises(MapError, match="malformed OpenDRIVE XML"):
        RoadMap.from_file(path)


def test_missing_or_wrong_file(tmp_path):
    with pytest.raises(MapError, match="no such map file"):
        RoadMap.from_file(tmp_path / "nope.xodr")
    with pytest.raises(MapError, match="expected an OpenDRIVE .xodr file"):
        RoadMap.from_file(tmp_path / "map.txt")
