"""A learned driving policy's proposal for one frame: camera image, speed and the
route command in, ``PolicyProposal`` out.

The command comes from the route and the odometry (``RouteProgress.command_ahead``),
exactly as the behaviour-cloning dataset computes it from a bag, so the policy sees at
run time the command it was trained with. The policy itself is injected (a
``models.driving_policy.DrivingPolicy`` or anything with its call signature), so this
module imports no torch; the in-process agent and the ROS 2 policy node share it.

Two ways to get throttle and brake (``longitudinal``):

- ``control``: the command branch's own throttle and brake (CILRS).
- ``waypoints``: the speed the predicted waypoints imply (the first step's length
  over its time), tracked by the planner's speed controller, with the branch's steer
  (TCP's "trajectory + control"). A cloned throttle regresses to the mean of cruising
  (small) and launching (full) throttle, too weak to pull away from a standstill: the
  inertia problem. The waypoints say how fast to go, and the controller supplies the
  launch. Standing still, the waypoints regress towards the measured zero speed too, so
  there the branch's brake decides: the car launches when the policy does not brake
  (measured on held-out stopped frames: median brake 0.09 where the expert went on,
  0.79 where it stood).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

import math

from drivestack.schema import EgoState, RoadOption, Route
from drivestack.vehicle_control import pedals_for_accel
from planning.control import LongitudinalController
from planning.inputs import PolicyProposal, VehicleModel
from sim.route_progress import RouteProgress

LONGITUDINAL_MODES = ("control", "waypoints")
# Below this waypoint speed the policy means "stand": measured on held-out stopped
# frames, those labelled stop predict a median 0.05 m/s (90 % under 0.15), those
# labelled go 0.37.
STAND_BELOW_MPS = 0.25
STANDING_MPS = 0.5  # below this the car counts as standing
LAUNCH_BRAKE_BELOW = 0.5  # standing, a branch brake under this means "go"
LAUNCH_SPEED_MPS = 2.0  # the target while launching; the waypoints take over once moving


class PolicyAnswer(Protocol):
    steer: float
    throttle: float
    brake: float
    waypoints_m: np.ndarray  # (K, 2) ego positions every waypoint_dt_s, ego frame (x forward, y left)


# image (H, W, 3) uint8, speed m/s, command -> steer, throttle, brake
Policy = Callable[[np.ndarray, float, RoadOption], PolicyAnswer]


class WaypointSpeedControl:
    """Throttle and brake that track the speed of the predicted waypoints."""

    def __init__(self, vehicle: VehicleModel, dt_s: float, waypoint_dt_s: float) -> None:
        self.vehicle, self.dt_s, self.waypoint_dt_s = vehicle, dt_s, waypoint_dt_s
        self.controller = LongitudinalController()
        self.target_speed_mps = 0.0

    def __call__(self, waypoints_m: np.ndarray, speed_mps: float, brake: float) -> tuple[float, float]:
        first = np.asarray(waypoints_m, dtype=float)[0]
        target = float(np.hypot(first[0], first[1])) / self.waypoint_dt_s
        if not all(math.isfinite(v) for v in (target, speed_mps, brake)):
            return math.nan, math.nan  # the supervisor must see the fault, not a made-up brake
        if target < STAND_BELOW_MPS:
            target = 0.0
        if speed_mps < STANDING_MPS and brake < LAUNCH_BRAKE_BELOW:
            target = max(target, LAUNCH_SPEED_MPS)
        self.target_speed_mps = target
        accel = self.controller.command(self.target_speed_mps, speed_mps, self.dt_s)
        throttle, brake = pedals_for_accel(np.float64(accel), np.float64(speed_mps), self.vehicle)
        return float(throttle), float(brake)


class PolicyProposer:
    def __init__(self, policy: Policy, route: Route, longitudinal: WaypointSpeedControl | None = None) -> None:
        self.policy, self.longitudinal = policy, longitudinal
        self.progress = RouteProgress(route)
        self.command = RoadOption.LANEFOLLOW

    def __call__(self, stamp_ns: int, image: np.ndarray, ego: EgoState) -> PolicyProposal:
        s_m = self.progress.update(ego.x_m, ego.y_m)
        self.command = self.progress.command_ahead(s_m)
        answer = self.policy(image, float(ego.speed_mps), self.command)
        throttle, brake = float(answer.throttle), float(answer.brake)
        if self.longitudinal is not None:
            throttle, brake = self.longitudinal(answer.waypoints_m, float(ego.speed_mps), brake)
        return PolicyProposal(stamp_ns, float(answer.steer), throttle, brake)


def make_proposer(policy, route: Route, vehicle: VehicleModel, dt_s: float,
                  longitudinal: str = "waypoints") -> PolicyProposer:
    """The proposer for ``policy`` (a ``DrivingPolicy``: its net's config gives the
    waypoints' spacing); ``longitudinal`` is one of ``LONGITUDINAL_MODES``."""
    if longitudinal not in LONGITUDINAL_MODES:
        raise ValueError(f"longitudinal={longitudinal!r}: one of {', '.join(LONGITUDINAL_MODES)}")
    speed = WaypointSpeedControl(vehicle, dt_s, policy.model.config()["waypoint_dt_s"]) \
        if longitudinal == "waypoints" else None
    return PolicyProposer(policy, route, speed)
