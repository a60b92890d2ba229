"""A learned driving policy's proposal for one frame: camera image, speed and the
route command in, ``PolicyProposal`` out.

The command comes from the route and the odometry (``RouteProgress.command_ahead``),
exactly as the behaviour-cloning dataset computes it from a bag, so the policy sees at
run time the command it was trained with. The policy itself is injected (a
``models.driving_policy.DrivingPolicy`` or anything with its call signature), so this
module imports no torch; the in-process agent and the ROS 2 policy node share it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from drivestack.schema import EgoState, RoadOption, Route
from planning.inputs import PolicyProposal
from sim.route_progress import RouteProgress


class PolicyAnswer(Protocol):
    steer: float
    throttle: float
    brake: float


# image (H, W, 3) uint8, speed m/s, command -> steer, throttle, brake
Policy = Callable[[np.ndarray, float, RoadOption], PolicyAnswer]


class PolicyProposer:
    def __init__(self, policy: Policy, route: Route) -> None:
        self.policy = policy
        self.progress = RouteProgress(route)
        self.command = RoadOption.LANEFOLLOW

    def __call__(self, stamp_ns: int, image: np.ndarray, ego: EgoState) -> PolicyProposal:
        s_m = self.progress.update(ego.x_m, ego.y_m)
        self.command = self.progress.command_ahead(s_m)
        answer = self.policy(image, float(ego.speed_mps), self.command)
        return PolicyProposal(stamp_ns, float(answer.steer), float(answer.throttle), float(answer.brake))
