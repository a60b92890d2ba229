"""Run one closed-loop episode: simulator, agent and referee in lockstep.

This is the headless in-process runner (docs/architecture.md, section 1); the ROS 2
graph will drive the same components through nodes.
"""

from __future__ import annotations

import hashlib
import math
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from drivestack.schema import ActorKind, EpisodeResult, EpisodeStatus, Observation, Route, VehicleControl
from sim.infraction_monitor import EpisodeMonitor
from sim.protocol import Simulator, SimulatorError
from sim.road_map import RoadMap
from sim.route_planner import RoutePlanner
from sim.scenario import Scenario

log = logging.getLogger(__name__)

REFERENCE_SPEED_RADIUS_M = 50.0
REFERENCE_FOLLOWING_GAP_M = 10.0
REFERENCE_FOLLOWING_TIME_S = 1.5



class Agent(Protocol):
    name: str

    def run_step(self, obs: Observation) -> VehicleControl: ...


AgentFactory = Callable[[RoadMap, Route, Simulator], Agent]


class EpisodeObserver(Protocol):
    """Sees every observation of an episode and the agent's answer to it (video writer,
    bag recorder); ``finish`` gets the result, or None when the episode raised."""

    def start(self, road_map: RoadMap, route: Route) -> None: ...

    def observe(self, obs: Observation) -> None: ...

    def act(self, stamp_ns: int, control: VehicleControl) -> None: ...

    def finish(self, result: EpisodeResult | None) -> None: ...


@dataclass(frozen=True)
class EpisodeRun:
    result: EpisodeResult
    route: Route
    road_map: RoadMap
    # Columns: time_s, x_m, y_m, yaw_rad, speed_mps (one row per step).
    trajectory: np.ndarray
    # Wall-clock seconds per simulated second: < 1 is faster than real time.
    real_time_factor: float


def trajectory_digest(trajectory: np.ndarray) -> str:
    """sha256 of the exact trajectory bytes: equal digests = bit-identical runs."""
    return hashlib.sha256(np.ascontiguousarray(trajectory, dtype=np.float64).tobytes()).hexdigest()[:16]


def _reference_speed(obs: Observation) -> float | None:
    """Speed of the traffic the ego should keep up with, for the min-speed test.

    The leaderboard averages its "background" vehicles, which it keeps in the ego's
    flow. Here that flow is the car ahead of the ego on its own lane, sampled only while
    it is between a following distance (10 m + 1.5 s of the ego's speed) and 50 m
    ahead: closer, the ego is bound to it and merely follows with a reaction lag (a
    queue starting at green would count as "slow"); farther or absent, it says nothing
    about the ego's pace, and the step is skipped. A slow agent lets its leader pull
    away into that window and is flagged.
    """
    ego, lane = obs.ego, obs.ego_lane_segment_id
    if lane < 0:
        return None
    cos_yaw, sin_yaw = math.cos(ego.yaw_rad), math.sin(ego.yaw_rad)
    leader, leader_distance = None, REFERENCE_SPEED_RADIUS_M
    for a in obs.actors:
        if a.kind != ActorKind.VEHICLE or a.lane_segment_id != lane:
            continue
        distance = math.hypot(a.x_m - ego.x_m, a.y_m - ego.y_m)
        if (a.x_m - ego.x_m) * cos_yaw + (a.y_m - ego.y_m) * sin_yaw > 0.0 and distance < leader_distance:
            leader, leader_distance = a, distance
    if leader is None:
        return None
    gap = leader_distance - (leader.length_m + ego.length_m) / 2
    if gap < REFERENCE_FOLLOWING_GAP_M + REFERENCE_FOLLOWING_TIME_S * ego.speed_mps:
        return None
    return leader.speed_mps


def run_episode(sim: Simulator, scenario: Scenario, make_agent: AgentFactory,
                on_step: Callable[[float], None] | None = None,
                observers: Sequence[EpisodeObserver] = ()) -> EpisodeRun:
    """Drive ``scenario`` until the referee ends it; ``on_step(completion_pct)`` per step."""
    obs = sim.reset(scenario)
    road_map, route = sim.road_map, sim.route
    for observer in observers:
        observer.start(road_map, route)
    run = None
    try:
        run = _drive(sim, scenario, make_agent, obs, on_step, observers)
        return run
    finally:
        for observer in observers:
            observer.finish(run.result if run is not None else None)


class Referee:
    """Scores one episode step by step, from the simulator's privileged observations:
    the in-process runner and the ROS 2 bridge both end and score episodes with it."""

    def __init__(self, sim: Simulator, scenario: Scenario, first: Observation) -> None:
        self.scenario, self.road_map, self.route = scenario, sim.road_map, sim.route
        self.allowed = RoutePlanner(self.road_map).allowed_lane_ids(self.route)
        self.route_junctions = {self.road_map.lanes[k].junction_id for k in self.allowed
                                if self.road_map.lanes[k].in_junction}
        self.monitor = EpisodeMonitor(self.route, sim.dt_s)
        # CARLA's collision sensor is the truth there; the built-in simulator's contacts
        # are the same box test the monitor does itself.
        self.reported_collisions = getattr(sim, "reports_collisions", False)
        self.rows = [(0.0, first.ego.x_m, first.ego.y_m, first.ego.yaw_rad, first.ego.speed_mps)]
        self.last = first
        self.started = time.perf_counter()

    @property
    def done(self) -> bool:
        return self.monitor.done

    @property
    def route_completion_pct(self) -> float:
        return self.monitor.route_completion_pct

    def update(self, obs: Observation) -> None:
        lane = obs.ego_lane_segment_id
        on_route = lane in self.allowed or (lane >= 0 and self.road_map.lanes[lane].junction_id in self.route_junctions)
        self.monitor.update(obs.stamp_ns, obs.ego, obs.actors, obs.traffic_lights, on_route, _reference_speed(obs),
                            obs.collisions if self.reported_collisions else None)
        self.rows.append((obs.stamp_ns * 1e-9, obs.ego.x_m, obs.ego.y_m, obs.ego.yaw_rad, obs.ego.speed_mps))
        self.last = obs

    def finish(self, status_override: EpisodeStatus | None = None) -> EpisodeRun:
        wall_s = time.perf_counter() - self.started
        trajectory = np.array(self.rows)
        town = getattr(self.road_map, "name", self.scenario.town)
        stamp_ns = self.last.stamp_ns
        result = self.monitor.finish(stamp_ns, self.scenario.name, town, self.scenario.seed,
                                     trajectory_digest(trajectory),
                                     **({"abort_status": status_override} if status_override else {}))
        sim_s = max(stamp_ns * 1e-9, 1e-9)
        return EpisodeRun(result, self.route, self.road_map, trajectory, wall_s / sim_s)


def _drive(sim: Simulator, scenario: Scenario, make_agent: AgentFactory, obs: Observation,
           on_step: Callable[[float], None] | None, observers: Sequence[EpisodeObserver]) -> EpisodeRun:
    agent = make_agent(sim.road_map, sim.route, sim)
    referee = Referee(sim, scenario, obs)
    status_override = None
    for observer in observers:
        observer.observe(obs)
    while not referee.done:
        control = agent.run_step(obs)
        for observer in observers:
            observer.act(obs.stamp_ns, control)
        try:
            obs = sim.step(control)
        except SimulatorError as exc:
            log.error("simulator failed: %s", exc)
            status_override = EpisodeStatus.SIMULATION_ERROR
            break
        referee.update(obs)
        for observer in observers:
            observer.observe(obs)
        if on_step is not None:
            on_step(referee.route_completion_pct)
    return referee.finish(status_override)
