"""Generate the OpenDRIVE towns in this folder with scenariogeneration.

Run ``python -m sim.towns.generate_towns [OUTPUT_DIR]``; without an argument the
``.xodr`` files are written beside this module. The output is byte-for-byte
reproducible, so the committed files can be checked against a fresh run.

A town is described as data: junction nodes (a centre and the radius at which their
roads end) and roads between two node arms, each with a shape (straight, rounded
polyline, arc). Every road gets a fixed start pose, so the geometry is exact and
closed loops close; scenariogeneration only builds the junction connecting roads and
the lane links. Conventions: right-hand traffic, lanes 3.5 m wide, driving lanes with
negative ids run along the reference line (OpenDRIVE and CARLA agree on this).
"""

from __future__ import annotations

import logging
import math
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from scenariogeneration import xodr
from scenariogeneration.helpers import prettify

log = logging.getLogger(__name__)

TOWNS_DIR = Path(__file__).resolve().parent
LANE_WIDTH_M = 3.5
SIDEWALK_WIDTH_M = 2.0
# The signal pole stands this far outside the outermost driving lane; CARLA only keeps
# collision on a light that is more than half a lane width from the closest lane centre.
SIGNAL_EDGE_CLEARANCE_M = 1.0
# The CARLA server spawns a whole traffic-light post (pole included) at the signal's
# position, so the signal sits on the ground rather than at lamp height.
SIGNAL_Z_OFFSET_M = 0.0
TRAFFIC_LIGHT_TYPE = "1000001"
# CARLA towns use this transverse Mercator projection; without a geoReference carla
# warns "cannot parse georeference" and falls back to lat/lon 0/0.
GEO_REFERENCE = ("+proj=tmerc +lat_0=49.0 +lon_0=8.0 +k=1 +x_0=0 +y_0=0 +datum=WGS84 "
                 "+units=m +geoidgrids=egm96_15.gtx +vunits=m +no_defs ")
# scenariogeneration stamps the header with datetime.now(); a constant keeps the
# files reproducible.
HEADER_DATE = "2025-01-01T00:00:00"
# A junction movement whose heading change is below this is "straight"; above the
# U-turn limit it is not connected at all.
STRAIGHT_LIMIT_RAD = math.radians(45.0)
UTURN_LIMIT_RAD = math.radians(135.0)
# Generated geometry must close to within this (the planview is chained by hand).
CLOSURE_TOLERANCE_M = 1e-6
# Town roads are numbered from 1, junction k is JUNCTION_ID_STRIDE * k and its
# connecting roads follow it; signal i of junction j is 10 j + i.
JUNCTION_ID_STRIDE = 100
# Below this curvature change a clothoid is written as an arc (or a line): carla
# evaluates constant-curvature spirals to NaN.
DEGENERATE_SPIRAL_CURVATURE = 1e-6

Geometry = xodr.Line | xodr.Arc | xodr.Spiral


# -- town description -----------------------------------------------------------------


@dataclass(frozen=True)
class Pose:
    x_m: float
    y_m: float
    heading_rad: float


@dataclass(frozen=True)
class Node:
    """A junction: its roads end ``radius_m`` from the centre, along their arm angle."""

    name: str
    x_m: float
    y_m: float
    radius_m: float

    def port(self, arm_deg: float) -> Pose:
        """Where a road on this arm meets the junction, heading away from the centre."""
        heading = math.radians(arm_deg)
        return Pose(self.x_m + self.radius_m * math.cos(heading),
                    self.y_m + self.radius_m * math.sin(heading), heading)


# A shape turns the start pose (leaving one junction) and the end pose (entering the
# next) into planview geometries.
Shape = Callable[[Pose, Pose], list[Geometry]]


@dataclass(frozen=True)
class RoadSpec:
    start: tuple[str, float]  # (node name, arm angle in degrees)
    end: tuple[str, float]
    shape: Shape


@dataclass(frozen=True)
class TownSpec:
    name: str
    nodes: tuple[Node, ...]
    roads: tuple[RoadSpec, ...]
    lanes_per_direction: int
    sidewalk: bool


# -- shapes ---------------------------------------------------------------------------


def _wrap(angle_rad: float) -> float:
    return math.atan2(math.sin(angle_rad), math.cos(angle_rad))


def straight(start: Pose, end: Pose) -> list[Geometry]:
    return [xodr.Line(math.hypot(end.x_m - start.x_m, end.y_m - start.y_m))]


def arc(start: Pose, end: Pose) -> list[Geometry]:
    """One circular arc from ``start`` turning to ``end``'s heading; only exact when the
    poses are symmetric about the chord (``_make_road`` rejects a miss)."""
    turn = _wrap(end.heading_rad - start.heading_rad)
    chord = math.hypot(end.x_m - start.x_m, end.y_m - start.y_m)
    radius = chord / (2.0 * math.sin(abs(turn) / 2.0))
    return [xodr.Arc(math.copysign(1.0 / radius, turn), angle=turn)]


def _corner(turn_rad: float, radius_m: float, spiral_length_m: float) -> list[Geometry]:
    """A bend of ``turn_rad``: a circular arc, eased in and out by clothoids if asked
    (a clothoid makes the curvature, hence the steering, change gradually)."""
    curvature = math.copysign(1.0 / radius_m, turn_rad)
    if spiral_length_m == 0.0:
        return [xodr.Arc(curvature, angle=turn_rad)]
    spiral_turn = curvature * spiral_length_m / 2.0
    if abs(2.0 * spiral_turn) >= abs(turn_rad):
        raise ValueError("clothoids longer than the whole bend")
    return [xodr.Spiral(0.0, curvature, length=spiral_length_m),
            xodr.Arc(curvature, angle=turn_rad - 2.0 * spiral_turn),
            xodr.Spiral(curvature, 0.0, length=spiral_length_m)]


def _end_of(geometries: Sequence[Geometry], pose: Pose) -> Pose:
    x, y, h = pose.x_m, pose.y_m, pose.heading_rad
    for geometry in geometries:
        x, y, h, _ = geometry.get_end_data(x, y, h)
    return Pose(x, y, h)


def rounded_polyline(vertices_xy: Sequence[tuple[float, float]], radius_m: float,
                     spiral_length_m: float = 0.0) -> Shape:
    """Straight legs through ``vertices_xy``, each vertex rounded by a symmetric bend.

    A symmetric bend starts and ends the same distance (its tangent length) from the
    vertex, so the straight legs are the vertex-to-vertex distances minus those.
    """
    def shape(start: Pose, end: Pose) -> list[Geometry]:
        points = [(start.x_m, start.y_m), *vertices_xy, (end.x_m, end.y_m)]
        headings = [math.atan2(b[1] - a[1], b[0] - a[0]) for a, b in zip(points, points[1:])]
        bends, tangents = [], [0.0]
        for h_in, h_out in zip(headings, headings[1:]):
            bend = _corner(_wrap(h_out - h_in), radius_m, spiral_length_m)
            # From the origin along x, a symmetric bend of tangent length t ends at
            # t (1, 0) + t (cos turn, sin turn): its y gives t.
            bend_end = _end_of(bend, Pose(0.0, 0.0, 0.0))
            bends.append(bend)
            tangents.append(bend_end.y_m / math.sin(_wrap(h_out - h_in)))
        tangents.append(0.0)
        geometries: list[Geometry] = []
        for i, (a, b) in enumerate(zip(points, points[1:])):
            leg = math.dist(a, b) - tangents[i] - tangents[i + 1]
            if leg < 0.0:
                raise ValueError(f"bend radius too large for leg {a} -> {b}")
            if leg > 0.0:
                geometries.append(xodr.Line(leg))
            if i < len(bends):
                geometries.extend(bends[i])
        return geometries
    return shape


# -- building -------------------------------------------------------------------------


@dataclass
class _RoadEnd:
    """One road as seen from a junction."""

    road: xodr.Road
    contact: str  # "successor": the road ends at the junction; "predecessor": it starts there
    pose_in: Pose  # position of the reference line at the junction, heading into it

    @property
    def incoming_lane_sign(self) -> int:
        # Right-hand traffic: lanes towards a junction at the road's end run along the
        # reference line (negative ids), towards one at its start against it.
        return -1 if self.contact == "successor" else 1


def _make_road(road_id: int, spec: RoadSpec, nodes: dict[str, Node], lanes: int) -> xodr.Road:
    start = nodes[spec.start[0]].port(spec.start[1])
    end_port = nodes[spec.end[0]].port(spec.end[1])
    end = Pose(end_port.x_m, end_port.y_m, _wrap(end_port.heading_rad + math.pi))
    geometries = spec.shape(start, end)
    reached = _end_of(geometries, start)
    error = math.hypot(reached.x_m - end.x_m, reached.y_m - end.y_m)
    if error > CLOSURE_TOLERANCE_M or abs(_wrap(reached.heading_rad - end.heading_rad)) > 1e-6:
        raise ValueError(f"road {road_id} {spec.start}->{spec.end} misses its end by {error:.3g} m")
    road = xodr.create_road(geometries, road_id, left_lanes=lanes, right_lanes=lanes,
                            lane_width=LANE_WIDTH_M)
    # A fixed start pose places every road exactly; scenariogeneration would otherwise
    # chain roads through the junctions and accumulate clothoid-fit error around loops.
    road.planview.set_start_point(start.x_m, start.y_m, start.heading_rad)
    road.planview.adjust_geometries()
    return road


def _movement(incoming: _RoadEnd, outgoing: _RoadEnd) -> str:
    heading_out = outgoing.pose_in.heading_rad + math.pi
    turn = _wrap(heading_out - incoming.pose_in.heading_rad)
    if abs(turn) < STRAIGHT_LIMIT_RAD:
        return "straight"
    if abs(turn) > UTURN_LIMIT_RAD:
        return "u_turn"
    return "left" if turn > 0 else "right"


def _lane_pairs(movement: str, movements: set[str], lanes: int) -> list[tuple[int, int]]:
    """(incoming lane, outgoing lane) numbers for one movement, 1 = next to the centre line.

    Straight on keeps the lane. Where an approach can turn both ways, left turns leave
    from the inner lane and right turns from the outer one, and may end in any lane of
    the exit road: the lane graph has no lane changes, so these turns are where a route
    can move between inner and outer lanes. Where an approach can turn only one way
    (the through road of a T), every lane turns and keeps its lane, as dual turn lanes
    do; otherwise a lane that can only go straight would circle a loop forever.
    """
    every_lane = range(1, lanes + 1)
    if movement == "straight":
        return [(k, k) for k in every_lane]
    if movement == "u_turn":
        return []
    opposite = "right" if movement == "left" else "left"
    if opposite not in movements:
        return [(k, k) for k in every_lane]
    from_lane = 1 if movement == "left" else lanes
    return [(from_lane, k) for k in every_lane]


def _connect_junction(creator: xodr.CommonJunctionCreator, ends: list[_RoadEnd], lanes: int) -> None:
    for incoming in ends:
        exits = [(outgoing, _movement(incoming, outgoing)) for outgoing in ends if outgoing is not incoming]
        movements = {movement for _, movement in exits}
        for outgoing, movement in exits:
            for lane_in, lane_out in _lane_pairs(movement, movements, lanes):
                creator.add_connection(incoming.road.id, outgoing.road.id,
                                       incoming.incoming_lane_sign * lane_in,
                                       -outgoing.incoming_lane_sign * lane_out)


def _add_sidewalks(road: xodr.Road) -> None:
    # Added after the junctions are built: the junction creator copies every lane of an
    # incoming road into its connecting roads, and a sidewalk there would be driveable.
    for section in road.lanes.lanesections:
        section.add_left_lane(xodr.Lane(xodr.LaneType.sidewalk, a=SIDEWALK_WIDTH_M))
        section.add_right_lane(xodr.Lane(xodr.LaneType.sidewalk, a=SIDEWALK_WIDTH_M))


def _traffic_light(end: _RoadEnd, signal_id: int, lanes: int) -> xodr.Signal:
    """A light at the junction end of ``end.road``, right of the lanes driving in.

    Orientation "+" means "for the lanes along the reference line" (negative ids),
    "-" for those against it; the validity names the lanes explicitly, and CARLA
    puts its stop trigger boxes on exactly those lanes. CARLA ignores the orientation
    when it computes the light's pose (yaw = road heading + hOffset), so hOffset
    turns the lamp to face the approaching traffic.
    """
    length = end.road.planview.get_total_length()
    offset = lanes * LANE_WIDTH_M + SIGNAL_EDGE_CLEARANCE_M
    sign = end.incoming_lane_sign
    signal = xodr.Signal(
        s=length if end.contact == "successor" else 0.0,
        t=offset * sign,  # right of the traffic driving in: t < 0 for lanes along the road
        country="OpenDRIVE", Type=TRAFFIC_LIGHT_TYPE, subtype="-1", id=str(signal_id),
        name=f"traffic_light_{signal_id}", dynamic=xodr.Dynamic.yes, zOffset=SIGNAL_Z_OFFSET_M,
        orientation=xodr.Orientation.positive if sign < 0 else xodr.Orientation.negative,
        hOffset=math.pi if sign < 0 else 0.0, height=1.0, width=0.5)
    signal.add_validity(*sorted((sign, sign * lanes)))
    return signal


@dataclass
class _Built:
    opendrive: xodr.OpenDrive
    controllers: dict[int, list[int]]  # junction id -> its signal ids


def _road_ends(roads: list[xodr.Road], town: TownSpec) -> dict[str, list[_RoadEnd]]:
    ends_by_node: dict[str, list[_RoadEnd]] = {node.name: [] for node in town.nodes}
    for road, spec in zip(roads, town.roads):
        if spec.start[0] == spec.end[0]:
            raise ValueError(f"road {road.id} starts and ends at junction {spec.start[0]}")
        x, y, h = road.planview.get_start_point()
        ends_by_node[spec.start[0]].append(_RoadEnd(road, "predecessor", Pose(x, y, _wrap(h + math.pi))))
        x, y, h = road.planview.get_end_point()
        ends_by_node[spec.end[0]].append(_RoadEnd(road, "successor", Pose(x, y, h)))
    return ends_by_node


def _junction(junction_id: int, name: str, ends: list[_RoadEnd], lanes: int) -> xodr.CommonJunctionCreator:
    if len(ends) < 2:
        raise ValueError(f"junction {name} has {len(ends)} road(s): a dead end")
    creator = xodr.CommonJunctionCreator(junction_id, name, startnum=junction_id + 1)
    for end in ends:
        # Global coordinates serve as the creator's "local" frame, so its connecting
        # roads fit the fixed roads exactly.
        creator.add_incoming_road_cartesian_geometry(
            end.road, end.pose_in.x_m, end.pose_in.y_m, end.pose_in.heading_rad, end.contact)
    _connect_junction(creator, ends, lanes)
    return creator


def _add_traffic_lights(junction_id: int, ends: list[_RoadEnd], lanes: int) -> list[int]:
    """One light per road into the junction; returns their signal ids."""
    signal_ids = []
    for i, end in enumerate(ends):
        signal_id = 10 * junction_id + i
        # Road.add_signal registers ids in a process-wide table and renames repeats,
        # so a second build in one process would renumber the lights.
        end.road.signals.append(_traffic_light(end, signal_id, lanes))
        signal_ids.append(signal_id)
    return signal_ids


def _build(town: TownSpec) -> _Built:
    nodes = {node.name: node for node in town.nodes}
    if len(town.roads) >= JUNCTION_ID_STRIDE:
        raise ValueError(f"road ids must stay below the first junction id ({JUNCTION_ID_STRIDE})")
    roads = [_make_road(i + 1, spec, nodes, town.lanes_per_direction)
             for i, spec in enumerate(town.roads)]
    ends_by_node = _road_ends(roads, town)

    creators, controllers = [], {}
    for k, node in enumerate(town.nodes, start=1):
        # carla reads a road's successor id as a road whenever some road has that id,
        # so junction ids must differ from every road id.
        junction_id = JUNCTION_ID_STRIDE * k
        ends = ends_by_node[node.name]
        creators.append(_junction(junction_id, node.name, ends, town.lanes_per_direction))
        if len(ends) >= 3:
            controllers[junction_id] = _add_traffic_lights(junction_id, ends, town.lanes_per_direction)

    opendrive = xodr.OpenDrive(town.name, geo_reference=f"<![CDATA[{GEO_REFERENCE}]]>")
    for road in roads:
        if town.sidewalk:
            _add_sidewalks(road)
        opendrive.add_road(road)
    for creator in creators:
        opendrive.add_junction_creator(creator)
    opendrive.adjust_roads_and_lanes()
    return _Built(opendrive, controllers)


def _to_xml(built: _Built) -> bytes:
    root = built.opendrive.get_element()
    root.find("header").set("date", HEADER_DATE)
    _replace_degenerate_spirals(root)
    _add_controllers(root, built.controllers)
    return prettify(root)


def _replace_degenerate_spirals(root: ET.Element) -> None:
    """Rewrite constant-curvature clothoids as arcs or lines.

    The junction creator fits every connecting road with three clothoids; a straight
    movement gives near-zero curvature throughout and a turn a constant-curvature
    middle piece, and carla returns NaN positions along both. Arcs and lines of the
    same length and curvature are the same curve.
    """
    for geometry in root.iter("geometry"):
        spiral = geometry.find("spiral")
        if spiral is None:
            continue
        start, end = float(spiral.get("curvStart")), float(spiral.get("curvEnd"))
        if abs(end - start) > DEGENERATE_SPIRAL_CURVATURE:
            continue
        geometry.remove(spiral)
        if abs(start) > DEGENERATE_SPIRAL_CURVATURE:
            ET.SubElement(geometry, "arc", curvature=repr((start + end) / 2.0))
        else:
            ET.SubElement(geometry, "line")


def _add_controllers(root: ET.Element, controllers: dict[int, list[int]]) -> None:
    """One controller per light, listed by its junction.

    The CARLA server only spawns traffic-light actors for signals reached through
    junction -> controller -> control, and cycles the controllers of one junction in
    turn (its own towns do the same). scenariogeneration cannot write controllers.
    """
    first_junction = next(i for i, child in enumerate(root) if child.tag == "junction")
    new_elements = []
    for junction_id, signal_ids in controllers.items():
        for signal_id in signal_ids:
            controller = ET.Element("controller", id=str(signal_id), name=f"controller_{signal_id}",
                                    sequence="0")
            ET.SubElement(controller, "control", signalId=str(signal_id), type="0")
            new_elements.append(controller)
        junction = next(j for j in root.iter("junction") if j.get("id") == str(junction_id))
        for sequence, signal_id in enumerate(signal_ids):
            ET.SubElement(junction, "controller", id=str(signal_id), type="0", sequence=str(sequence))
    for offset, element in enumerate(new_elements):
        root.insert(first_junction + offset, element)


# -- the towns ------------------------------------------------------------------------


def grid_town() -> TownSpec:
    """A 3x3 lattice, 100 m pitch: a 4-way junction in the middle, T-junctions on the
    edge midpoints, the corners rounded into curves, so every road loops back."""
    pitch, radius, corner_radius = 100.0, 12.0, 25.0
    nodes = (
        Node("centre", 0.0, 0.0, radius),
        Node("east", pitch, 0.0, radius),
        Node("north", 0.0, pitch, radius),
        Node("west", -pitch, 0.0, radius),
        Node("south", 0.0, -pitch, radius),
    )
    roads = (
        RoadSpec(("centre", 0), ("east", 180), straight),
        RoadSpec(("centre", 90), ("north", 270), straight),
        RoadSpec(("centre", 180), ("west", 0), straight),
        RoadSpec(("centre", 270), ("south", 90), straight),
        # The perimeter, counter-clockwise, one road per corner.
        RoadSpec(("east", 90), ("north", 0), rounded_polyline([(pitch, pitch)], corner_radius)),
        RoadSpec(("north", 180), ("west", 90), rounded_polyline([(-pitch, pitch)], corner_radius)),
        RoadSpec(("west", 270), ("south", 180), rounded_polyline([(-pitch, -pitch)], corner_radius)),
        RoadSpec(("south", 0), ("east", 270), rounded_polyline([(pitch, -pitch)], corner_radius)),
    )
    return TownSpec("grid_town", nodes, roads, lanes_per_direction=1, sidewalk=True)


def multilane_town() -> TownSpec:
    """Two lanes each way: a 4-way junction whose arms run out to T-junctions on a
    circular ring road, so the ring is all curves and every arm closes two loops."""
    ring_radius, centre_radius, tee_radius = 220.0, 18.0, 18.0
    # The ring roads end on the circle, ``tee_radius`` (a chord) from the T centre,
    # which is this angle around the ring.
    gap_deg = math.degrees(2.0 * math.asin(tee_radius / (2.0 * ring_radius)))
    nodes = [Node("centre", 0.0, 0.0, centre_radius)]
    for name, angle in (("east", 0), ("north", 90), ("west", 180), ("south", 270)):
        nodes.append(Node(name, ring_radius * math.cos(math.radians(angle)),
                          ring_radius * math.sin(math.radians(angle)), tee_radius))
    names = ("east", "north", "west", "south")
    roads = [RoadSpec(("centre", 90 * i), (name, 90 * i + 180), straight) for i, name in enumerate(names)]
    for i, name in enumerate(names):
        # Counter-clockwise from one T to the next. An arm angle is the direction of
        # that chord, so each ring road is an arc a shade flatter than the circle.
        leave = 90 * i + 90 + gap_deg / 2.0
        arrive = 90 * (i + 1) - 90 - gap_deg / 2.0
        roads.append(RoadSpec((name, leave), (names[(i + 1) % 4], arrive), arc))
    return TownSpec("multilane_town", tuple(nodes), tuple(roads), lanes_per_direction=2, sidewalk=False)


def holdout_town() -> TownSpec:
    """Held out from training: a bow tie. A 4-way junction whose arms bend in pairs to
    two T-junctions on the diagonal, closed by one long road around the west side; the
    bends are clothoid-eased, unlike the training towns' plain arcs."""
    radius, pitch, outer, corner_radius, spiral = 12.0, 110.0, 200.0, 30.0, 15.0
    nodes = (
        Node("centre", 0.0, 0.0, radius),
        Node("north_east", pitch, pitch, radius),
        Node("south_west", -pitch, -pitch, radius),
    )

    def bend(*vertices: tuple[float, float]) -> Shape:
        return rounded_polyline(vertices, corner_radius, spiral)

    roads = (
        RoadSpec(("centre", 90), ("north_east", 180), bend((0.0, pitch))),
        RoadSpec(("centre", 0), ("north_east", 270), bend((pitch, 0.0))),
        RoadSpec(("centre", 270), ("south_west", 0), bend((0.0, -pitch))),
        RoadSpec(("centre", 180), ("south_west", 90), bend((-pitch, 0.0))),
        RoadSpec(("north_east", 90), ("south_west", 270),
                 bend((pitch, outer), (-outer, outer), (-outer, -outer), (-pitch, -outer))),
    )
    return TownSpec("holdout_town", nodes, roads, lanes_per_direction=1, sidewalk=True)


TOWN_BUILDERS: dict[str, Callable[[], TownSpec]] = {
    "grid_town": grid_town,
    "multilane_town": multilane_town,
    "holdout_town": holdout_town,
}


def town_xml(name: str) -> bytes:
    """The OpenDRIVE file of town ``name`` as bytes."""
    return _to_xml(_build(TOWN_BUILDERS[name]()))


def main(output_dir: str | Path | None = None) -> list[Path]:
    """Write every town to ``output_dir`` (default: this package) and return the paths."""
    out = Path(output_dir) if output_dir is not None else TOWNS_DIR
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in TOWN_BUILDERS:
        path = out / f"{name}.xodr"
        path.write_bytes(town_xml(name))
        log.info("wrote %s", path)
        written.append(path)
    return written


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(sys.argv[1] if len(sys.argv) > 1 else None)
