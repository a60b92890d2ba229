"""The built-in simulator: OpenDRIVE towns, kinematic vehicles, NPC traffic, pedestrians,
and the ego's sensors (``sim.sensors``: IMU, GNSS, events, cameras, LiDAR, labels).

Fixed step ``dt_s`` and a single seeded random generator make every episode
reproducible bit for bit. Each step: NPC and pedestrian decisions from the current
state, one vectorised bicycle step for all vehicles (ego in row 0), then lights.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

from drivestack.schema import ActorKind, ActorState, EgoState, Observation, Route, VehicleControl
from sim import towns
from sim.geometry import boxes_overlap, pairwise_overlaps
from sim.lane_arrays import LaneArrays
from sim.pedestrians import PEDESTRIAN_SIZE_M, PedestrianManager, crossing_path
from sim.protocol import EpisodeMapAndRoute, SimulatorError
from sim.road_map import MapError, RoadMap
from sim.route_planner import NoRouteError, RoutePlanner
from sim.route_progress import RouteProgress
from sim.scenario import PedestrianCrossing, Scenario, ScenarioError
from sim.sensors.inertial import Gnss, Imu
from sim.sensors.rig import SensorRig
from sim.traffic import EgoLaneInfo, TrafficManager, TrafficParams
from sim.traffic_lights import TrafficLightController
from sim.vehicle_dynamics import BicycleState, VehicleParams, step as bicycle_step

DEFAULT_DT_S = 0.05
MIN_ROUTE_LENGTH_M = 5.0
EGO_ROW = 0


@functools.lru_cache(maxsize=16)
def _load_map(path: str, mtime_ns: int) -> tuple[RoadMap, LaneArrays]:
    road_map = RoadMap.from_file(path)
    return road_map, LaneArrays(road_map)


def load_town(town: str) -> tuple[RoadMap, LaneArrays]:
    """A shipped town by name or any ``.xodr`` by path; parsed once per process."""
    if town.endswith(".xodr"):
        path = Path(town)
    elif town in towns.TOWNS:
        path = towns.town_path(town)
    else:
        raise MapError(f"unknown town {town!r} (known: {', '.join(towns.TOWNS)}; or give a path to a .xodr file)")
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        raise MapError(f"{path}: no such map file") from None
    return _load_map(str(path.resolve()), mtime)


def plan_scenario_route(road_map: RoadMap, scenario: Scenario, rng: np.random.Generator) -> Route:
    planner = RoutePlanner(road_map)
    if scenario.start is None:
        return planner.random_route(rng, scenario.route_length_m)
    stops = [scenario.start[:2], *scenario.waypoints, scenario.goal]
    legs = []
    pose = scenario.start
    for goal in stops[1:]:
        leg = planner.plan(pose, goal)
        legs.append(leg)
        last = leg.waypoints[-1]
        pose = (last.x_m, last.y_m, last.yaw_rad)
    if sum(leg.length_m for leg in legs) < MIN_ROUTE_LENGTH_M:
        raise NoRouteError(f"scenario {scenario.name}: start and goal are the same place (route under "
                           f"{MIN_ROUTE_LENGTH_M:.0f} m)")
    if len(legs) == 1:
        return legs[0]
    waypoints = legs[0].waypoints + tuple(wp for leg in legs[1:] for wp in leg.waypoints[1:])
    return Route(waypoints, sum(leg.length_m for leg in legs))


class BuiltinSimulator(EpisodeMapAndRoute):
    reports_collisions = False  # its collision sensor is the referee's own box test

    def __init__(self, dt_s: float = DEFAULT_DT_S, vehicle_params: VehicleParams | None = None,
                 traffic_params: TrafficParams | None = None) -> None:
        if not (math.isfinite(dt_s) and 0 < dt_s <= 0.5):
            raise ValueError(f"dt_s={dt_s} must be in (0, 0.5] seconds")
        self.dt_s = dt_s
        self.vehicle = vehicle_params or VehicleParams.load()
        self.traffic_params = traffic_params or TrafficParams.load()
        self.sensors = SensorRig()
        self._map: RoadMap | None = None
        self._route: Route | None = None
        self.scenario: Scenario | None = None

    # -- protocol ------------------------------------------------------------------------

    def reset(self, scenario: Scenario) -> Observation:
        self.scenario = scenario
        self._map, self.lanes = load_town(scenario.town)
        self.rng = np.random.default_rng(scenario.seed)
        self._route = plan_scenario_route(self._map, scenario, self.rng)
        self.step_count = 0
        self.lights = TrafficLightController(self._map, self.rng)
        n = 1 + scenario.npc_vehicles
        self.state = BicycleState.zeros(n)
        first = self._route.waypoints[0]
        self.state.x_m[EGO_ROW], self.state.y_m[EGO_ROW], self.state.yaw_rad[EGO_ROW] = \
            first.x_m, first.y_m, first.yaw_rad
        self.traffic = TrafficManager(self._map, self.lanes, self.traffic_params, self.vehicle, self.rng)
        self.pedestrians = PedestrianManager(self._map, self.lanes, self.rng)
        try:
            self.traffic.spawn(scenario.npc_vehicles, self.state, self._keep_clear_xy())
            self.pedestrians.spawn(scenario.pedestrians)
        except ValueError as exc:  # more traffic than the town holds: the scenario's mistake
            raise ScenarioError(f"scenario {scenario.name}: {exc}") from None
        self._pending_crossings = sorted(scenario.pedestrian_crossings, key=lambda c: c.route_distance_m)
        self._progress = RouteProgress(self._route)
        self._ego_lane = EgoLaneInfo()
        self._ego_lateral_m = 0.0
        self._update_ego_lane()
        # Sensor noise has its own stream: switching it on leaves the traffic unchanged.
        sensor_rng = np.random.default_rng([scenario.seed, 1])
        self.imu = Imu(scenario.sensors.imu, sensor_rng)
        self.gnss = Gnss(scenario.sensors.gnss, sensor_rng, self._map.geolocation)
        self.sensors.reset(scenario.sensors, self._map, self._route, scenario.weather, scenario.seed,
                           self.vehicle.height_m)
        self._contacts: frozenset[int] = frozenset()
        return self._observe()

    def step(self, control: VehicleControl) -> Observation:
        if self._map is None:
            raise SimulatorError("reset() the simulator with a scenario first")
        if not isinstance(control, VehicleControl):
            raise TypeError(f"step() takes a VehicleControl, got {type(control).__name__}")
        throttle, steer, brake = self.traffic.controls(
            self.state, self._ego_lane, self.lights, self.pedestrians.on_road_xy())
        reverse = np.zeros(len(self.state), dtype=bool)
        reverse[EGO_ROW] = control.reverse
        # Actuator commands are single precision, as in CARLA and on the control topic:
        # a control that went through a message drives exactly like one that did not.
        ego_throttle, ego_steer, ego_brake = (float(np.float32(v)) for v in (control.throttle, control.steer,
                                                                             control.brake))
        brake_all = np.concatenate([[1.0 if control.hand_brake else ego_brake], brake])
        bicycle_step(self.state, self.vehicle, np.concatenate([[ego_throttle], throttle]),
                     np.concatenate([[ego_steer], steer]), brake_all, reverse, self.dt_s)
        self.traffic.advance(self.state, self._keep_clear_xy)
        self.step_count += 1
        self.lights.update(self.time_s)
        self.pedestrians.step(self.dt_s, self.lights, np.column_stack([self.state.x_m, self.state.y_m]))
        self._update_ego_lane()
        self._trigger_crossings()
        return self._observe()

    def close(self) -> None:
        self.sensors.close()
        self._map = self._route = None

    # -- state ---------------------------------------------------------------------------

    @property
    def time_s(self) -> float:
        return self.step_count * self.dt_s

    @property
    def stamp_ns(self) -> int:
        # Integer arithmetic so that stamps never drift with float rounding.
        return self.step_count * int(round(self.dt_s * 1e9))

    def _keep_clear_xy(self) -> list[tuple[float, float]]:
        xy = [(float(self.state.x_m[EGO_ROW]), float(self.state.y_m[EGO_ROW]))]
        rows = slice(1, 1 + self.traffic.n)
        xy += list(zip(self.state.x_m[rows].tolist(), self.state.y_m[rows].tolist()))
        # Keep spawns off the first stretch of the ego's route.
        xy += [(w.x_m, w.y_m) for w in self._route.waypoints[:10]]
        return xy

    def _update_ego_lane(self) -> None:
        q = self._map.nearest_lane(float(self.state.x_m[EGO_ROW]), float(self.state.y_m[EGO_ROW]),
                                   float(self.state.yaw_rad[EGO_ROW]), max_distance_m=4.0)
        on_lane = q is not None and abs(q.lateral_offset_m) < self._map.lanes[q.segment_id].width_m / 2 + 0.5
        previous, previous_offset = self._ego_lane.lane, self._ego_lateral_m
        self._ego_lane = EgoLaneInfo(q.segment_id, q.s_m) if on_lane else EgoLaneInfo()
        self._ego_lateral_m = q.lateral_offset_m if on_lane else 0.0
        self._lane_invasions = self._crossed_marking(previous, previous_offset)

    def _crossed_marking(self, previous: int, previous_offset_m: float) -> tuple[str, ...]:
        """The lane-invasion sensor: the road mark the ego's centre crossed this step.

        Either the ego left its lane's middle sideways past the boundary (into an
        oncoming lane, which the heading-aware lane query does not switch to), or the
        lane query moved to a same-direction neighbour. Junction connectors carry no
        marks.
        """
        if previous < 0 or self._map.lanes[previous].in_junction:
            return ()
        lane, current = self._map.lanes[previous], self._ego_lane.lane
        if current == previous:
            half = lane.width_m / 2
            if not abs(previous_offset_m) <= half < abs(self._ego_lateral_m):
                return ()
            to_left = self._ego_lateral_m > 0
        elif current in (lane.left_neighbor, lane.right_neighbor) and current >= 0:
            to_left = current == lane.left_neighbor
        else:
            return ()
        return (lane.left_marking if to_left else lane.right_marking,)

    def _trigger_crossings(self) -> None:
        if not self._pending_crossings:
            return
        progress = self.ego_route_progress_m()
        crossing = self._pending_crossings[0]
        if progress < crossing.route_distance_m - crossing.trigger_distance_m:
            return
        self._pending_crossings.pop(0)
        self._spawn_crossing(crossing)

    def _spawn_crossing(self, crossing: PedestrianCrossing) -> None:
        start_xy, goal_xy = crossing_path(self._map, self._route, self._progress, crossing)
        self.pedestrians.add_crossing(start_xy, goal_xy, crossing.speed_mps)

    def ego_route_progress_m(self) -> float:
        """Arc length of the ego along its route."""
        return self._progress.update(float(self.state.x_m[EGO_ROW]), float(self.state.y_m[EGO_ROW]))

    # -- observation ---------------------------------------------------------------------

    def _observe(self) -> Observation:
        s, v = self.state, self.vehicle
        ego = EgoState(
            stamp_ns=self.stamp_ns, x_m=float(s.x_m[0]), y_m=float(s.y_m[0]), yaw_rad=float(s.yaw_rad[0]),
            speed_mps=float(s.speed_mps[0]), yaw_rate_radps=float(s.yaw_rate_radps[0]),
            accel_mps2=float(s.accel_mps2[0]), steer_angle_rad=float(s.steer_angle_rad[0]),
            length_m=v.length_m, width_m=v.width_m)
        actors, lights = tuple(self._actor_states()), self.lights.snapshot()
        images, scan, truth = self.sensors.observe(self.stamp_ns, self.dt_s, ego, v.height_m, actors, lights,
                                                   self._ego_lane.lane)
        return Observation(self.stamp_ns, ego, actors, lights, self._ego_lane.lane, imu=self.imu.read(ego),
                           gnss=self.gnss.read(ego), collisions=self._new_contacts(),
                           lane_invasions=self._lane_invasions, cameras=images, lidar=scan, ground_truth=truth)

    def _new_contacts(self) -> tuple[int, ...]:
        """The collision sensor: actor ids whose boxes began to overlap the ego's this step.

        Actor ids are rows of ``_boxes``: NPC vehicles 1..n, then pedestrians, as in the
        observation.
        """
        boxes = self._boxes()
        if len(boxes) == 1:
            return ()
        hit = boxes_overlap(boxes[EGO_ROW], boxes[1:])
        touching = frozenset((np.flatnonzero(hit) + 1).tolist())
        started, self._contacts = touching - self._contacts, touching
        return tuple(sorted(started))

    def _boxes(self) -> np.ndarray:
        """Footprints of everyone, one row each (x, y, yaw, length, width): the ego, the
        NPC vehicles, then the pedestrians; the row is the actor id."""
        s, v, ped = self.state, self.vehicle, self.pedestrians.xy
        n_veh, n_ped = len(s), len(ped)
        return np.column_stack([
            np.concatenate([s.x_m, ped[:, 0]]), np.concatenate([s.y_m, ped[:, 1]]),
            np.concatenate([s.yaw_rad, self.pedestrians.yaw_rad]),
            np.concatenate([np.full(n_veh, v.length_m), np.full(n_ped, PEDESTRIAN_SIZE_M)]),
            np.concatenate([np.full(n_veh, v.width_m), np.full(n_ped, PEDESTRIAN_SIZE_M)])])

    def _actor_states(self) -> list[ActorState]:
        s, v, t = self.state, self.vehicle, self.traffic
        rows = range(1, 1 + t.n)
        xs, ys, yaws, speeds = (a[1:1 + t.n].tolist() for a in (s.x_m, s.y_m, s.yaw_rad, s.speed_mps))
        lanes = t.lane.tolist()
        actors = [ActorState(row, ActorKind.VEHICLE, xs[i], ys[i], yaws[i], speeds[i], v.length_m, v.width_m,
                             v.height_m, lanes[i]) for i, row in enumerate(rows)]
        actors += self.pedestrians.actor_states(first_id=1 + t.n)
        return actors

    def overlapping_pairs(self, include_ego: bool = False) -> list[tuple[int, int]]:
        """Pairs of actor ids whose boxes overlap now (for traffic soak checks)."""
        n_veh = len(self.state)
        hits = pairwise_overlaps(*self._boxes().T)
        pairs = [(int(a), int(b)) for a, b in zip(*np.nonzero(np.triu(hits)))]
        if not include_ego:
            pairs = [(a, b) for a, b in pairs if a != EGO_ROW and b != EGO_ROW]
        return [(a, b) for a, b in pairs if a < n_veh or b < n_veh]
