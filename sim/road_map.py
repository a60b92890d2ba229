"""HD map from OpenDRIVE: the only module that touches ``carla.Map``.

The carla client package parses OpenDRIVE offline. At load time we sample every
driving lane of its topology into a polyline in the REP 103 ``map`` frame and build a
lane graph (successors, same-direction neighbours, junction connectors with their
turn, stop lines and traffic-light groups). Everything downstream (simulator, route
planner, expert, driving score) works on that graph with numpy and never calls carla
in the hot loop.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import carla
import numpy as np
from scipy.spatial import cKDTree

from drivestack.schema import RoadOption
from sim import carla_frames

log = logging.getLogger(__name__)

SAMPLE_SPACING_M = 1.0
# Connector turns: a heading change under this is STRAIGHT (CARLA's planner uses 35 deg).
STRAIGHT_TURN_LIMIT_RAD = math.radians(35.0)
# The stop line sits this far before the junction so a crosswalk fits in front of it.
STOP_LINE_SETBACK_M = 5.0
DEFAULT_SPEED_LIMIT_MPS = 30.0 / 3.6
_TRAFFIC_LIGHT_TYPE = "1000001"
_SPEED_LIMIT_TYPE = "274"
_SPEED_UNITS_TO_MPS = {"km/h": 1 / 3.6, "m/s": 1.0, "mph": 0.44704}


class MapError(ValueError):
    """The OpenDRIVE input cannot be used (malformed XML, no driving lanes...)."""


@dataclass(frozen=True)
class LaneSegment:
    """One driving lane between two branching points, sampled every ~1 m.

    ``points_xy[i]`` lies at arc length ``s_m[i]`` with tangent heading ``yaw_rad[i]``;
    the last point coincides with the first point of every successor.
    """

    segment_id: int
    road_id: int
    section_id: int
    lane_id: int
    junction_id: int  # -1 outside junctions
    points_xy: np.ndarray
    yaw_rad: np.ndarray
    s_m: np.ndarray
    width_m: float
    speed_limit_mps: float
    successors: tuple[int, ...]
    predecessors: tuple[int, ...]
    left_neighbor: int  # same-direction lane to the left, -1 if none
    right_neighbor: int
    turn: RoadOption  # LEFT/RIGHT/STRAIGHT for junction connectors, else LANEFOLLOW
    # OpenDRIVE road-mark types of the lane's left and right boundary (carla's names:
    # "Solid", "Broken", "SolidSolid", "NONE", ...), at its middle.
    left_marking: str = "NONE"
    right_marking: str = "NONE"

    @property
    def length_m(self) -> float:
        return float(self.s_m[-1])

    @property
    def in_junction(self) -> bool:
        return self.junction_id >= 0

    def pose_at(self, s_m: float) -> tuple[float, float, float]:
        """Interpolated (x, y, yaw) at arc length ``s_m`` (clamped to the lane)."""
        s = min(max(s_m, 0.0), self.length_m)
        i = int(np.searchsorted(self.s_m, s, side="right")) - 1
        i = min(max(i, 0), len(self.s_m) - 2)
        ds = self.s_m[i + 1] - self.s_m[i]
        f = 0.0 if ds <= 0 else (s - self.s_m[i]) / ds
        x, y = self.points_xy[i] + f * (self.points_xy[i + 1] - self.points_xy[i])
        yaw = self.yaw_rad[i] + f * carla_frames.wrap_angle(self.yaw_rad[i + 1] - self.yaw_rad[i])
        return float(x), float(y), carla_frames.wrap_angle(float(yaw))


@dataclass(frozen=True)
class StopLine:
    """Where traffic on ``segment_id`` stops before a junction."""

    segment_id: int
    s_m: float  # arc length of the line along the incoming lane
    p0: tuple[float, float]
    p1: tuple[float, float]


@dataclass(frozen=True)
class SignalGroup:
    """One traffic light (an OpenDRIVE signal) and the approach lanes it controls."""

    light_id: int
    x_m: float
    y_m: float
    yaw_rad: float  # the direction the lamp faces (towards oncoming traffic)
    junction_id: int
    stop_lines: tuple[StopLine, ...]
    opendrive_id: str = ""  # the <signal> id; CARLA's TrafficLight.get_opendrive_id()


@dataclass(frozen=True)
class Junction:
    junction_id: int
    connectors: tuple[int, ...]
    incoming: tuple[int, ...]
    center_xy: tuple[float, float]
    signal_ids: tuple[int, ...]


@dataclass(frozen=True)
class LaneQuery:
    segment_id: int
    s_m: float
    lateral_offset_m: float  # + = left of the lane centre
    distance_m: float


class RoadMap:
    """A town: lane graph, junctions, traffic-light groups and geo-reference."""

    def __init__(self, name: str, xodr_text: str) -> None:
        speed_by_road = _parse_and_validate(name, xodr_text)
        with _captured_native_stderr(name):
            try:
                self._carla_map = carla.Map(name, xodr_text)
            except RuntimeError as exc:
                raise MapError(f"{name}: carla could not build a map from the OpenDRIVE ({exc})") from exc
        self.name = name
        self.xodr_text = xodr_text
        self.lanes: tuple[LaneSegment, ...] = _build_lane_graph(self._carla_map, speed_by_road)
        if not self.lanes:
            raise MapError(f"{name}: the OpenDRIVE file has no driving lanes")
        self.junctions, self.signals = _build_junctions(self._carla_map, self.lanes)
        self._stop_line_by_segment = {sl.segment_id: sl for g in self.signals for sl in g.stop_lines}
        self._light_by_segment = {sl.segment_id: g.light_id for g in self.signals for sl in g.stop_lines}
        self.connector_conflicts: dict[int, frozenset[int]] = _connector_conflicts(self.lanes, self.junctions)
        self._index_points()

    @classmethod
    def from_file(cls, path: str | Path) -> RoadMap:
        path = Path(path)
        if path.suffix != ".xodr":
            raise MapError(f"{path}: expected an OpenDRIVE .xodr file")
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise MapError(f"{path}: no such map file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise MapError(f"{path}: cannot read map file ({exc})") from None
        return cls(path.stem, text)

    # -- queries ------------------------------------------------------------------

    def lane(self, segment_id: int) -> LaneSegment:
        return self.lanes[segment_id]

    def stop_line(self, segment_id: int) -> StopLine | None:
        return self._stop_line_by_segment.get(segment_id)

    def light_of_segment(self, segment_id: int) -> int:
        """The traffic light controlling the stop line of ``segment_id``, or -1."""
        return self._light_by_segment.get(segment_id, -1)

    def nearest_lane(self, x_m: float, y_m: float, yaw_rad: float | None = None,
                     max_distance_m: float = 10.0) -> LaneQuery | None:
        """Closest lane centre point; with ``yaw_rad``, prefer lanes heading the same way."""
        # Enough neighbours that, inside a junction, crossing connectors cannot hide the
        # lane heading our way.
        k = min(48, len(self._pt_segment))
        dists, idx = self._kdtree.query((x_m, y_m), k=k, distance_upper_bound=max_distance_m)
        dists, idx = np.atleast_1d(dists), np.atleast_1d(idx)
        found = np.isfinite(dists)
        if not found.any():
            return None
        dists, idx = dists[found], idx[found]
        cost = dists
        if yaw_rad is not None:
            # A lane pointing the other way is never "the lane we are in".
            cost = dists + 10.0 * (1.0 - np.cos(yaw_rad - self._pt_yaw[idx]))
        # A lane's first point repeats its predecessor's last: the lane ending there wins.
        cost = cost + 1e-3 * (self._pt_index[idx] == 0)
        best = idx[int(np.argmin(cost))]
        seg = self.lanes[self._pt_segment[best]]
        j = self._pt_index[best]
        dx, dy = x_m - seg.points_xy[j, 0], y_m - seg.points_xy[j, 1]
        c, s = math.cos(seg.yaw_rad[j]), math.sin(seg.yaw_rad[j])
        along, lateral = dx * c + dy * s, -dx * s + dy * c
        return LaneQuery(seg.segment_id, float(min(max(seg.s_m[j] + along, 0.0), seg.length_m)),
                         float(lateral), float(math.hypot(dx, dy)))

    def geolocation(self, x_m: float, y_m: float, z_m: float = 0.0) -> tuple[float, float, float]:
        """(latitude_deg, longitude_deg, altitude_m) from the map's geo-reference."""
        # carla's geo transform treats its own y as north, although its y points south in
        # the left-handed frame (its GNSS is mirrored). OpenDRIVE's y is north, so hand it
        # the map-frame y unchanged: latitude then grows northwards as on Earth.
        geo = self._carla_map.transform_to_geolocation(carla.Location(x=float(x_m), y=float(y_m), z=float(z_m)))
        return float(geo.latitude), float(geo.longitude), float(geo.altitude)

    @property
    def bounds_xy(self) -> tuple[float, float, float, float]:
        lo, hi = self._all_points.min(axis=0), self._all_points.max(axis=0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    @property
    def total_lane_length_m(self) -> float:
        return float(sum(seg.length_m for seg in self.lanes))

    def _index_points(self) -> None:
        self._all_points = np.concatenate([seg.points_xy for seg in self.lanes])
        self._pt_segment = np.concatenate([np.full(len(seg.points_xy), seg.segment_id) for seg in self.lanes])
        self._pt_index = np.concatenate([np.arange(len(seg.points_xy)) for seg in self.lanes])
        self._pt_yaw = np.concatenate([seg.yaw_rad for seg in self.lanes])
        self._kdtree = cKDTree(self._all_points)


# Two junction connectors whose centre lines pass closer than this cannot be used at once.
CONFLICT_DISTANCE_M = 2.5


def _connector_conflicts(lanes: tuple[LaneSegment, ...], junctions: dict[int, Junction]
                         ) -> dict[int, frozenset[int]]:
    """For every connector, the connectors of its junction that cross or merge into it.

    Connectors leaving the same lane only diverge (car following handles them) unless
    they end in the same lane.
    """
    conflicts: dict[int, set[int]] = {seg.segment_id: set() for seg in lanes if seg.in_junction}
    for junction in junctions.values():
        trees = {c: cKDTree(lanes[c].points_xy) for c in junction.connectors}
        for i, a in enumerate(junction.connectors):
            for b in junction.connectors[i + 1:]:
                la, lb = lanes[a], lanes[b]
                merge = bool(set(la.successors) & set(lb.successors))
                same_entry = bool(set(la.predecessors) & set(lb.predecessors))
                if merge or (not same_entry and trees[a].query(lb.points_xy, distance_upper_bound=CONFLICT_DISTANCE_M)[0].min() < CONFLICT_DISTANCE_M):
                    conflicts[a].add(b)
                    conflicts[b].add(a)
    return {k: frozenset(v) for k, v in conflicts.items()}


# -- loading ------------------------------------------------------------------------


def _parse_and_validate(name: str, xodr_text: str) -> dict[int, float]:
    """Check the XML is OpenDRIVE before carla sees it; return road speed limits (m/s)."""
    try:
        root = ET.fromstring(xodr_text)
    except ET.ParseError as exc:
        raise MapError(f"{name}: malformed OpenDRIVE XML ({exc})") from None
    if root.tag != "OpenDRIVE":
        raise MapError(f"{name}: root element is <{root.tag}>, expected <OpenDRIVE>")
    roads = root.findall("road")
    if not roads:
        raise MapError(f"{name}: the OpenDRIVE file has no <road> elements")
    for road in roads:
        _check_road(name, road)
    speeds: dict[int, float] = {}
    for road in roads:
        speed = road.find("type/speed")
        if speed is None or "max" not in speed.attrib:
            continue
        try:
            value = float(speed.attrib["max"]) * _SPEED_UNITS_TO_MPS.get(speed.attrib.get("unit", "m/s"), 1.0)
            speeds[int(road.attrib["id"])] = value
        except (KeyError, ValueError):
            continue  # "no limit" and non-numeric ids are legal OpenDRIVE: keep the default
    return speeds


def _check_road(name: str, road: ET.Element) -> None:
    """What carla's parser needs to not crash (it segfaults on a road without geometry)."""
    rid = road.attrib.get("id", "?")
    geometries = road.findall("planView/geometry")
    if not geometries:
        raise MapError(f"{name}: road {rid} has no <planView><geometry>")
    for geometry in geometries:
        for key in ("s", "x", "y", "hdg", "length"):
            try:
                value = float(geometry.attrib[key])
            except (KeyError, ValueError):
                raise MapError(f"{name}: road {rid} has a geometry without a numeric '{key}'") from None
            if not math.isfinite(value):
                raise MapError(f"{name}: road {rid} has a geometry with {key}={value}")
        if len(geometry) != 1:
            raise MapError(f"{name}: road {rid} has a geometry without exactly one shape (line, arc, ...)")
    if road.find("lanes/laneSection") is None:
        raise MapError(f"{name}: road {rid} has no <lanes><laneSection>")


@contextlib.contextmanager
def _captured_native_stderr(name: str):
    """carla's C++ parser writes warnings to fd 2; route them to logging instead."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for line in sink.read().decode(errors="replace").splitlines():
                if line.strip():
                    log.debug("carla (%s): %s", name, line.strip())


def _lane_key(wp: carla.Waypoint) -> tuple[int, int, int]:
    return wp.road_id, wp.section_id, wp.lane_id


def _finite(wp: carla.Waypoint) -> bool:
    loc = wp.transform.location
    return math.isfinite(loc.x) and math.isfinite(loc.y)


def _sample_segment(entry: carla.Waypoint, exit_: carla.Waypoint) -> list[carla.Waypoint]:
    """Waypoints from ``entry`` along its lane to the lane end, then ``exit_``.

    carla evaluates some geometries (spirals in generated junctions, notably) to NaN at
    isolated arc lengths; those samples are dropped, the lane stays continuous.
    """
    path = [entry] + entry.next_until_lane_end(SAMPLE_SPACING_M)
    if _lane_key(path[-1]) != _lane_key(exit_) or path[-1].s != exit_.s:
        path.append(exit_)
    return [wp for wp in path if _finite(wp)]


def _polyline(wps: list[carla.Waypoint]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points, yaw, arc length) in REP 103; gaps left by NaN samples are bridged by a
    cubic Hermite curve that matches the headings at both ends."""
    raw = [(*carla_frames.location_to_xyz(w.transform.location)[:2],
            carla_frames.yaw_deg_to_rad(w.transform.rotation.yaw)) for w in wps]
    pts: list[tuple[float, float]] = [raw[0][:2]]
    yaws: list[float] = [raw[0][2]]
    for (x0, y0, yaw0), (x1, y1, yaw1) in zip(raw, raw[1:]):
        gap = math.hypot(x1 - x0, y1 - y0)
        if gap < 1e-3:
            continue
        n = int(gap / SAMPLE_SPACING_M)
        for t in np.linspace(0.0, 1.0, n + 1)[1:-1] if n > 1 else ():
            pts.append(_hermite((x0, y0, yaw0), (x1, y1, yaw1), gap, t))
            yaws.append(math.nan)
        pts.append((x1, y1))
        yaws.append(yaw1)
    xy = np.array(pts, dtype=np.float64)
    if len(xy) < 2:
        xy = np.vstack([xy, xy[-1] + 1e-3])
        yaws.append(yaws[-1])
    yaw = np.array(yaws)
    chord = np.diff(xy, axis=0)
    chord_yaw = np.arctan2(chord[:, 1], chord[:, 0])
    missing = np.isnan(yaw)
    yaw[missing] = chord_yaw[np.flatnonzero(missing) - 1]
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(chord, axis=1))])
    return xy, yaw, s


def _hermite(p0: tuple[float, float, float], p1: tuple[float, float, float], scale: float,
             t: float) -> tuple[float, float]:
    h00, h10 = 2 * t**3 - 3 * t**2 + 1, t**3 - 2 * t**2 + t
    h01, h11 = -2 * t**3 + 3 * t**2, t**3 - t**2
    x = h00 * p0[0] + h10 * scale * math.cos(p0[2]) + h01 * p1[0] + h11 * scale * math.cos(p1[2])
    y = h00 * p0[1] + h10 * scale * math.sin(p0[2]) + h01 * p1[1] + h11 * scale * math.sin(p1[2])
    return x, y


def _marking_type(marking: carla.LaneMarking | None) -> str:
    # carla has no marking object where the file defines no <roadMark>.
    return str(marking.type) if marking is not None else "NONE"


def _turn_of(yaw: np.ndarray) -> RoadOption:
    change = carla_frames.wrap_angle(float(yaw[-1] - yaw[0]))
    if abs(change) < STRAIGHT_TURN_LIMIT_RAD:
        return RoadOption.STRAIGHT
    return RoadOption.LEFT if change > 0 else RoadOption.RIGHT


def _road_speed_limits(carla_map: carla.Map, speed_by_road: dict[int, float]) -> dict[int, float]:
    limits = dict(speed_by_road)
    for lm in carla_map.get_all_landmarks_of_type(_SPEED_LIMIT_TYPE):
        unit = _SPEED_UNITS_TO_MPS.get(lm.unit, 1 / 3.6)
        limits.setdefault(lm.road_id, float(lm.value) * unit)
    return limits


def _build_lane_graph(carla_map: carla.Map, speed_by_road: dict[int, float]) -> tuple[LaneSegment, ...]:
    # carla lists a lane once per successor; every lane becomes one segment here.
    topology, seen = [], set()
    for a, b in carla_map.get_topology():
        if a.lane_type == carla.LaneType.Driving and _lane_key(a) not in seen:
            seen.add(_lane_key(a))
            topology.append((a, b))
    # The topology leaves out lanes that start at a dead end (a one-way street's only
    # lane, the outbound lane of a cul-de-sac): find them among the sampled waypoints.
    # (carla's previous_until_lane_start segfaults on such lanes: take the sample that
    # comes first in the direction of travel instead; right lanes run with s.)
    first: dict[tuple[int, int, int], carla.Waypoint] = {}
    for wp in carla_map.generate_waypoints(2.0):
        key = _lane_key(wp)
        if key in seen or wp.lane_type != carla.LaneType.Driving or not _finite(wp):
            continue
        earlier = key not in first or (wp.s < first[key].s if wp.lane_id < 0 else wp.s > first[key].s)
        if earlier:
            first[key] = wp
    for _, start in sorted(first.items()):
        end = (start.next_until_lane_end(SAMPLE_SPACING_M) or [start])[-1]
        topology.append((start, end))
    if not topology:
        return ()
    speed_limits = _road_speed_limits(carla_map, speed_by_road)
    raw, markings = [], []
    for entry, exit_ in topology:
        samples = _sample_segment(entry, exit_)
        pts, yaws, s = _polyline(samples)
        raw.append((entry, pts, yaws, s))
        middle = samples[len(samples) // 2] if len(samples) > 2 else entry
        markings.append((_marking_type(middle.left_lane_marking), _marking_type(middle.right_lane_marking)))
    starts = np.array([r[1][0] for r in raw])
    start_tree = cKDTree(starts)
    successors: list[list[int]] = [[] for _ in raw]
    predecessors: list[list[int]] = [[] for _ in raw]
    for i, (_, pts, yaws, _) in enumerate(raw):
        for j in start_tree.query_ball_point(pts[-1], r=0.5):
            # Same place and roughly the same heading: a lane continuing, not an opposite lane.
            if j != i and math.cos(carla_frames.wrap_angle(yaws[-1] - raw[j][2][0])) > 0.0:
                successors[i].append(j)
                predecessors[j].append(i)
    key_to_ids: dict[tuple[int, int, int], int] = {}
    for i, (entry, *_rest) in enumerate(raw):
        key_to_ids.setdefault(_lane_key(entry), i)

    def neighbor(entry: carla.Waypoint, side: str, pts: np.ndarray) -> int:
        mid = carla_map.get_waypoint(carla_frames.xyz_to_location(*pts[len(pts) // 2], 0.0),
                                     project_to_road=True, lane_type=carla.LaneType.Driving)
        if mid is None or mid.is_junction:
            return -1
        other = mid.get_left_lane() if side == "left" else mid.get_right_lane()
        if other is None or other.lane_type != carla.LaneType.Driving or other.lane_id * mid.lane_id <= 0:
            return -1
        return key_to_ids.get(_lane_key(other), -1)

    lanes = []
    for i, (entry, pts, yaws, s) in enumerate(raw):
        junction_id = entry.junction_id if entry.is_junction else -1
        limit = speed_limits.get(entry.road_id, DEFAULT_SPEED_LIMIT_MPS)
        lanes.append(LaneSegment(
            segment_id=i, road_id=entry.road_id, section_id=entry.section_id, lane_id=entry.lane_id,
            junction_id=junction_id, points_xy=pts, yaw_rad=yaws, s_m=s,
            width_m=float(entry.lane_width), speed_limit_mps=float(limit),
            successors=tuple(sorted(successors[i])), predecessors=tuple(sorted(predecessors[i])),
            left_neighbor=-1 if junction_id >= 0 else neighbor(entry, "left", pts),
            right_neighbor=-1 if junction_id >= 0 else neighbor(entry, "right", pts),
            turn=_turn_of(yaws) if junction_id >= 0 else RoadOption.LANEFOLLOW,
            left_marking=markings[i][0], right_marking=markings[i][1],
        ))
    for seg in lanes:
        seg.points_xy.setflags(write=False)
        seg.yaw_rad.setflags(write=False)
        seg.s_m.setflags(write=False)
    return tuple(lanes)


def _stop_line_for(seg: LaneSegment) -> StopLine:
    s = max(seg.length_m - STOP_LINE_SETBACK_M, 0.0)
    x, y, yaw = seg.pose_at(s)
    half = seg.width_m / 2.0
    nx, ny = -math.sin(yaw) * half, math.cos(yaw) * half
    return StopLine(seg.segment_id, s, (x + nx, y + ny), (x - nx, y - ny))


def _signal_groups(carla_map: carla.Map, lanes: tuple[LaneSegment, ...], incoming: dict[int, set[int]]
                   ) -> tuple[list[SignalGroup], dict[int, list[int]]]:
    """One group per OpenDRIVE traffic light, controlling the approach lanes it faces.

    A signal may sit on the approach road itself (our towns) or be referenced from the
    junction's connecting roads (CARLA's towns, where carla reports it once per
    connector): either way it controls the incoming lanes feeding that road that end
    within 30 m of it. A lane belongs to the first signal that claims it; a second
    head for the same approach adds nothing.
    """
    junction_of = {sid: jid for jid, inc in incoming.items() for sid in inc}
    feeders: dict[int, set[int]] = {}
    for seg in lanes:
        if seg.in_junction:
            feeders.setdefault(seg.road_id, set()).update(p for p in seg.predecessors if p in junction_of)
    by_signal: dict[str, tuple[carla.Landmark, list[int]]] = {}
    for lm in carla_map.get_all_landmarks_of_type(_TRAFFIC_LIGHT_TYPE):
        x, y, _ = carla_frames.location_to_xyz(lm.transform.location)
        candidates = feeders.get(lm.road_id, set()) | {
            sid for sid in junction_of if lanes[sid].road_id == lm.road_id}
        near = [sid for sid in sorted(candidates) if math.dist(lanes[sid].points_xy[-1], (x, y)) < 30.0]
        entry = by_signal.setdefault(lm.id, (lm, []))
        entry[1].extend(sid for sid in near if sid not in entry[1])
    signals: list[SignalGroup] = []
    signal_ids_by_junction: dict[int, list[int]] = {jid: [] for jid in incoming}
    claimed: set[int] = set()
    for lm, controlled in by_signal.values():
        controlled = [sid for sid in controlled if sid not in claimed]
        if not controlled:
            log.debug("%s: traffic light %s controls no free approach lane; ignored", carla_map.name, lm.id)
            continue
        jid = junction_of[controlled[0]]
        controlled = [sid for sid in controlled if junction_of[sid] == jid]
        claimed.update(controlled)
        x, y, _ = carla_frames.location_to_xyz(lm.transform.location)
        light_id = len(signals)
        signals.append(SignalGroup(light_id, x, y, carla_frames.yaw_deg_to_rad(lm.transform.rotation.yaw), jid,
                                   tuple(_stop_line_for(lanes[sid]) for sid in controlled), str(lm.id)))
        signal_ids_by_junction[jid].append(light_id)
    return signals, signal_ids_by_junction


def _build_junctions(carla_map: carla.Map, lanes: tuple[LaneSegment, ...]
                     ) -> tuple[dict[int, Junction], tuple[SignalGroup, ...]]:
    connectors: dict[int, list[int]] = {}
    for seg in lanes:
        if seg.in_junction:
            connectors.setdefault(seg.junction_id, []).append(seg.segment_id)
    incoming: dict[int, set[int]] = {jid: set() for jid in connectors}
    for jid, conns in connectors.items():
        for c in conns:
            incoming[jid].update(p for p in lanes[c].predecessors if not lanes[p].in_junction)

    signals, signal_ids_by_junction = _signal_groups(carla_map, lanes, incoming)
    junctions = {}
    for jid, conns in connectors.items():
        pts = np.concatenate([lanes[c].points_xy for c in conns])
        junctions[jid] = Junction(jid, tuple(sorted(conns)), tuple(sorted(incoming[jid])),
                                  (float(pts[:, 0].mean()), float(pts[:, 1].mean())),
                                  tuple(signal_ids_by_junction[jid]))
    return junctions, tuple(signals)
