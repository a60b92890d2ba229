"""Maneuver tests' world: scripted actors on a real town, the ego's bicycle, and a
perception stand-in, in the spirit of openpilot's longitudinal maneuvers.

A maneuver (``tests/data/maneuvers/*.yaml``) places the ego on a real map (a long
straight lane, a signalled junction approach, a two-lane road) and scripts the other
actors: a stopped car, a lead that brakes, a pedestrian who steps out, a car crossing
the junction, a light's colour over time. The planner under test drives the ego's
kinematic bicycle (``sim.vehicle_dynamics``, the simulator's own model).

What stands in for perception: every step, the actors' boxes within LiDAR range become
``Obstacle`` boxes in base_link (with position noise) and, projected through the front
camera's intrinsics, ``ObjectDetection`` boxes with their class; a lamp facing the ego
becomes a ``traffic_light_<colour>`` detection. That is the planner's input contract,
so tracking, behaviour, control and the supervisor run exactly as in the car; the
camera net and the LiDAR detector themselves are tested elsewhere and in closed loop
(``drivestack eval drive``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drivestack.config import read_yaml
from drivestack.frames import CameraMount, body_to_image
from drivestack.schema import EgoState, ObjectDetection, Obstacle, Route, RouteWaypoint, RoadOption
from planning.inputs import CameraDetections, CameraModel, ObstacleScan, PlannerInputs, VehicleModel
from planning.planner import ModularPlanner
from sim.builtin import load_town
from sim.geometry import boxes_overlap
from sim.vehicle_dynamics import BicycleState, VehicleParams, step

MANEUVER_DIR = Path(__file__).parent / "data" / "maneuvers"
DT_S = 0.05
LIDAR_RANGE_M = 50.0
CAMERA = CameraModel("front", np.array([[160.0, 0.0, 160.0], [0.0, 160.0, 80.0], [0.0, 0.0, 1.0]]), 320, 160,
                     CameraMount(1.5, 0.0, 1.6))
LAMP_HEIGHT_M, LAMP_SIZE_M = 3.0, (0.35, 1.0)
SIZES = {"vehicle": (4.5, 1.9, 1.5), "pedestrian": (0.5, 0.5, 1.8)}


@dataclass
class Actor:
    kind: str
    path_xy: np.ndarray  # the polyline it moves along
    s_m: float  # where on it
    speed_mps: float
    brake_at_s: float = math.inf
    decel_mps2: float = 0.0
    start_at_s: float = 0.0  # a pedestrian waits on the kerb until then
    trigger_distance_m: float = math.inf  # ... or until the ego is this close
    started: bool = True

    def pose(self) -> tuple[float, float, float]:
        s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(self.path_xy, axis=0), axis=1))])
        k = min(int(np.searchsorted(s, self.s_m, side="right")) - 1, len(s) - 2)
        d = self.path_xy[k + 1] - self.path_xy[k]
        f = (self.s_m - s[k]) / max(s[k + 1] - s[k], 1e-9)
        x, y = self.path_xy[k] + f * d
        return float(x), float(y), math.atan2(d[1], d[0])


@dataclass
class ManeuverResult:
    collided: bool
    min_gap_m: float
    max_decel_mps2: float
    max_comfort_violation_mps2: float  # deceleration above the comfort limit outside emergencies
    stopped: bool
    stop_front_s_m: float  # route arc length of the front bumper at the first stop
    max_lateral_m: float
    final_s_m: float
    behaviours: set[str] = field(default_factory=set)
    trace: list[tuple[float, float, float, str]] = field(default_factory=list)  # t, s, v, behaviour


def _route(xy: np.ndarray, lane_ids: list[int]) -> Route:
    d = np.diff(xy, axis=0)
    yaw = np.arctan2(d[:, 1], d[:, 0])
    yaw = np.append(yaw, yaw[-1])
    wps = tuple(RouteWaypoint(float(x), float(y), float(a), RoadOption.LANEFOLLOW, int(k))
                for (x, y), a, k in zip(xy, yaw, lane_ids))
    return Route(wps, float(np.linalg.norm(d, axis=1).sum()))


def _chain(road_map, first: int, length_m: float, prefer_straight: bool = True) -> tuple[np.ndarray, list[int]]:
    """Lane centre points from lane ``first`` on through successors (straight ahead
    through junctions) for ``length_m``."""
    pts, ids, lane, total = [], [], first, 0.0
    while total < length_m:
        seg = road_map.lanes[lane]
        pts.append(seg.points_xy if not pts else seg.points_xy[1:])
        ids += [lane] * (len(seg.points_xy) - (1 if len(ids) else 0))
        total += seg.length_m
        if not seg.successors:
            break
        straight = [k for k in seg.successors if road_map.lanes[k].turn == RoadOption.STRAIGHT]
        lane = straight[0] if (prefer_straight and straight) else seg.successors[0]
    return np.concatenate(pts), ids


def _setting(road_map, setting: str) -> tuple[np.ndarray, list[int], dict]:
    """The ego's path for a maneuver setting and facts about it."""
    lanes = road_map.lanes
    if setting in ("straight", "two_lane"):
        ok = [seg for seg in lanes if not seg.in_junction and seg.length_m > 110
              and (setting == "straight" or seg.left_neighbor >= 0)]
        seg = max(ok, key=lambda s: s.length_m)
        # Start on the lane's first point; stop the path before the junction at its end.
        return seg.points_xy.copy(), [seg.segment_id] * len(seg.points_xy), {"lane": seg.segment_id}
    if setting == "junction":
        # An approach with a stop line and a straight connector that a straight connector
        # crosses (a four-way junction), long enough to start 60 m before the line.
        for group in road_map.signals:
            for line in group.stop_lines:
                seg = lanes[line.segment_id]
                straight = [k for k in seg.successors if lanes[k].turn == RoadOption.STRAIGHT]
                crossed = straight and any(lanes[k].turn == RoadOption.STRAIGHT
                                           for k in road_map.connector_conflicts.get(straight[0], ()))
                if seg.length_m > 70 and crossed:
                    xy, ids = _chain(road_map, seg.segment_id, seg.length_m + 60.0)
                    start = int(np.searchsorted(seg.s_m, line.s_m - 60.0))
                    return xy[start:], ids[start:], {"light_id": group.light_id, "connector": straight[0],
                                                     "stop_line_s": line.s_m - seg.s_m[start]}
    raise ValueError(f"no place for setting {setting!r} in {road_map.name}")


def _crossing_path(road_map, connector: int) -> np.ndarray:
    """A conflicting connector with its approach lane, for a car crossing our path."""
    conflicts = sorted(road_map.connector_conflicts[connector])
    lanes = road_map.lanes
    ours = lanes[connector]
    # The most perpendicular conflicting connector that is straight.
    def angle(k):
        return abs(math.sin(lanes[k].yaw_rad[len(lanes[k].yaw_rad) // 2] - ours.yaw_rad[len(ours.yaw_rad) // 2]))
    best = max((k for k in conflicts if lanes[k].turn == RoadOption.STRAIGHT), key=angle)
    feeder = lanes[lanes[best].predecessors[0]]
    return np.concatenate([feeder.points_xy, lanes[best].points_xy[1:], lanes[lanes[best].successors[0]].points_xy[1:]]
                          if lanes[best].successors else [feeder.points_xy, lanes[best].points_xy[1:]]), feeder.length_m


def _perceive(ego: EgoState, actors: list[Actor], lamps: list[tuple[float, float, float, str]], stamp_ns: int,
              rng: np.random.Generator) -> tuple[ObstacleScan, CameraDetections]:
    c, s = math.cos(ego.yaw_rad), math.sin(ego.yaw_rad)
    obstacles, detections = [], []
    for a in actors:
        x, y, yaw = a.pose()
        length, width, height = SIZES[a.kind]
        dx, dy = x - ego.x_m, y - ego.y_m
        bx, by = dx * c + dy * s, -dx * s + dy * c
        if math.hypot(bx, by) > LIDAR_RANGE_M:
            continue
        byaw = math.remainder(yaw - ego.yaw_rad, math.pi)
        obstacles.append(Obstacle(len(obstacles), bx + rng.normal(0, 0.1), by + rng.normal(0, 0.1), height / 2,
                                  byaw, length, width, height, 50))
        corners = np.array([(bx + sx * length / 2 * math.cos(byaw) - sy * width / 2 * math.sin(byaw),
                             by + sx * length / 2 * math.sin(byaw) + sy * width / 2 * math.cos(byaw), z)
                            for sx in (-1, 1) for sy in (-1, 1) for z in (0.0, height)])
        box = _image_box(corners)
        if box is not None:
            detections.append(ObjectDetection("front", a.kind, 0.9, *box))
    for lx, ly, facing, state in lamps:
        dx, dy = lx - ego.x_m, ly - ego.y_m
        if dx * math.cos(facing) + dy * math.sin(facing) > 0:  # we see its back
            continue
        bx, by = dx * c + dy * s, -dx * s + dy * c
        w, h = LAMP_SIZE_M
        corners = np.array([(bx, by + sy * w / 2, LAMP_HEIGHT_M + sz * h / 2) for sy in (-1, 1) for sz in (-1, 1)])
        box = _image_box(corners)
        if box is not None and 0 < bx < 60:
            detections.append(ObjectDetection("front", f"traffic_light_{state}", 0.9, *box))
    return ObstacleScan(stamp_ns, tuple(obstacles)), CameraDetections(stamp_ns, CAMERA, tuple(detections))


def _image_box(corners: np.ndarray) -> tuple[float, float, float, float] | None:
    uv, depth = body_to_image(corners, CAMERA.intrinsics, CAMERA.mount)
    if not (depth > 0.5).all():
        return None
    u0, v0 = uv.min(axis=0)
    u1, v1 = uv.max(axis=0)
    u0, u1 = max(u0, 0.0), min(u1, CAMERA.width_px - 1.0)
    v0, v1 = max(v0, 0.0), min(v1, CAMERA.height_px - 1.0)
    return (float(u0), float(v0), float(u1), float(v1)) if u1 - u0 > 1 and v1 - v0 > 1 else None


def load_maneuver(name: str) -> dict:
    return read_yaml(MANEUVER_DIR / f"{name}.yaml")


def run_maneuver(spec: dict, seed: int = 0) -> ManeuverResult:
    road_map, _ = load_town(spec["town"])
    xy, ids, facts = _setting(road_map, spec["setting"])
    route = _route(xy, ids)
    params = VehicleParams.load()
    planner = ModularPlanner(road_map, route, VehicleModel.of(params), DT_S)
    path_s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
    rng = np.random.default_rng(seed)

    actors = []
    for a in spec.get("actors", ()):
        if a["kind"] == "pedestrian":
            # Steps out from the right kerb and crosses the lane leftwards.
            x0, y0, yaw0 = _pose_on(xy, path_s, a["route_m"])
            start = np.array([x0 + 4.5 * math.sin(yaw0), y0 - 4.5 * math.cos(yaw0)])
            across = np.array([-math.sin(yaw0), math.cos(yaw0)])
            actors.append(Actor("pedestrian", np.array([start, start + 15.0 * across]), 0.0, a["speed_mps"],
                                trigger_distance_m=a["trigger_distance_m"], started=False))
        elif a.get("crossing"):
            path, feeder_len = _crossing_path(road_map, facts["connector"])
            actors.append(Actor("vehicle", path, max(feeder_len - a["start_before_junction_m"], 0.0), a["speed_mps"]))
        else:
            actors.append(Actor("vehicle", xy, a["route_m"], a.get("speed_mps", 0.0),
                                brake_at_s=a.get("brake_at_s", math.inf), decel_mps2=a.get("decel_mps2", 0.0)))
    light = spec.get("light")
    lamp_facing = None
    if light is not None:
        group = road_map.signals[facts["light_id"]]
        lamp_facing = (group.x_m, group.y_m, group.yaw_rad)

    state = BicycleState.zeros(1)
    state.x_m[0], state.y_m[0] = xy[0]
    state.yaw_rad[0] = math.atan2(*(xy[1] - xy[0])[::-1])
    state.speed_mps[0] = spec["ego_speed_mps"]
    result = ManeuverResult(False, math.inf, 0.0, 0.0, False, math.nan, 0.0, 0.0)
    comfort = planner.cp.comfort_decel_mps2
    for k in range(int(spec["duration_s"] / DT_S)):
        t = k * DT_S
        stamp = int(round(t * 1e9))
        ego = EgoState(stamp, float(state.x_m[0]), float(state.y_m[0]), float(state.yaw_rad[0]),
                       float(state.speed_mps[0]), length_m=params.length_m, width_m=params.width_m)
        lamps = []
        if lamp_facing is not None:
            colour = light["state"] if t < light.get("green_after_s", math.inf) else "green"
            lamps.append((*lamp_facing, colour))
        scan, detections = _perceive(ego, actors, lamps, stamp, rng)
        out = planner.step(PlannerInputs(stamp, ego, detections, None, scan))
        s_ego, lateral = _locate(xy, path_s, ego.x_m, ego.y_m)
        result.behaviours.add(out.behaviour.split(" track")[0])
        result.trace.append((t, s_ego, ego.speed_mps, out.behaviour))
        if s_ego < path_s[-1] - 1.0:  # past the route's end the car just drives on
            result.max_lateral_m = max(result.max_lateral_m, abs(lateral))
        c = out.control
        before = float(state.speed_mps[0])
        step(state, params, np.array([c.throttle]), np.array([c.steer]), np.array([c.brake]), np.array([False]), DT_S)
        decel = (before - float(state.speed_mps[0])) / DT_S
        result.max_decel_mps2 = max(result.max_decel_mps2, decel)
        if not out.emergency:
            result.max_comfort_violation_mps2 = max(result.max_comfort_violation_mps2, decel - comfort)
        if not result.stopped and state.speed_mps[0] < 0.05 and t > 0.5:
            result.stopped, result.stop_front_s_m = True, s_ego + params.length_m / 2
        # The world moves on.
        for a in actors:
            if not a.started:
                ax, ay, _ = a.pose()
                a.started = math.hypot(ax - ego.x_m, ay - ego.y_m) < a.trigger_distance_m
            if not a.started:
                continue
            if t >= a.brake_at_s:
                a.speed_mps = max(a.speed_mps - a.decel_mps2 * DT_S, 0.0)
            a.s_m += a.speed_mps * DT_S
        ego_box = np.array([state.x_m[0], state.y_m[0], state.yaw_rad[0], params.length_m, params.width_m])
        for a in actors:
            x, y, yaw = a.pose()
            box = np.array([[x, y, yaw, SIZES[a.kind][0], SIZES[a.kind][1]]])
            result.collided |= bool(boxes_overlap(ego_box, box)[0])
            gap = math.hypot(x - state.x_m[0], y - state.y_m[0]) - (params.length_m + SIZES[a.kind][0]) / 2
            result.min_gap_m = min(result.min_gap_m, gap)
    result.final_s_m = _locate(xy, path_s, float(state.x_m[0]), float(state.y_m[0]))[0]
    result.facts = facts
    return result


def _pose_on(xy: np.ndarray, s: np.ndarray, at_m: float) -> tuple[float, float, float]:
    k = min(int(np.searchsorted(s, at_m, side="right")) - 1, len(s) - 2)
    d = xy[k + 1] - xy[k]
    f = (at_m - s[k]) / max(s[k + 1] - s[k], 1e-9)
    x, y = xy[k] + f * d
    return float(x), float(y), math.atan2(d[1], d[0])


def _locate(xy: np.ndarray, s: np.ndarray, x: float, y: float) -> tuple[float, float]:
    """(arc length, signed lateral offset + = left) of a point on the ego's path."""
    a, b = xy[:-1], xy[1:]
    ab = b - a
    t = np.clip(((x - a[:, 0]) * ab[:, 0] + (y - a[:, 1]) * ab[:, 1]) / np.maximum((ab * ab).sum(1), 1e-12), 0, 1)
    foot = a + t[:, None] * ab
    k = int(np.argmin(np.hypot(foot[:, 0] - x, foot[:, 1] - y)))
    n = math.hypot(*ab[k])
    return float(s[k] + t[k] * n), float(-(x - foot[k, 0]) * ab[k, 1] + (y - foot[k, 1]) * ab[k, 0]) / max(n, 1e-9)
