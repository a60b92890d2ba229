"""The modular agent for the in-process runner: the same perception and planner the
ROS 2 graph runs, called directly.

It reads only what a real car has from each observation: the stamp, the odometry
(``obs.ego``), the front camera's RGB image and intrinsics, the LiDAR's x, y, z and
intensity (not the simulator's semantic tag). Ground truth (actors, lights, labels,
the ego's lane id) is never touched; a test hands it an observation whose privileged
fields raise. The perception callables and the learned policy (policy modes) are
injected, so this module imports neither torch nor Open3D (``drivestack.agents``
builds them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from drivestack.schema import EgoState, LaneBoundary, ObjectDetection, Obstacle, Observation, VehicleControl
from planning.inputs import (CameraDetections, CameraModel, LaneDetections, ObstacleScan, PlannerInputs, PlannerOutput,
                             PolicyProposal)
from planning.planner import ModularPlanner

# image (H, W, 3) uint8, stamp -> (detections, lanes in base_link)
CameraPerceiver = Callable[[np.ndarray, int], tuple[Sequence[ObjectDetection], Sequence[LaneBoundary]]]
# points (N, 4) x, y, z, intensity in the sensor frame -> obstacles in base_link
ObstacleDetector = Callable[[np.ndarray], Sequence[Obstacle]]
# stamp, image (H, W, 3) uint8, odometry -> the learned policy's control
Proposer = Callable[[int, np.ndarray, EgoState], PolicyProposal]


class ModularAgent:
    name = "modular"

    def __init__(self, planner: ModularPlanner, *, camera: CameraModel | None = None,
                 perceive: CameraPerceiver | None = None, detect_obstacles: ObstacleDetector | None = None,
                 propose: Proposer | None = None, policy_camera: str = "front") -> None:
        self.planner, self.camera = planner, camera
        self.perceive, self.detect_obstacles = perceive, detect_obstacles
        self.propose, self.policy_camera = propose, policy_camera
        self.last_output: PlannerOutput | None = None
        self.step_ms: list[float] = []

    def run_step(self, obs: Observation) -> VehicleControl:
        stamp = obs.stamp_ns
        detections = lanes = obstacles = None
        if self.perceive is not None and self.camera is not None:
            image = next((c for c in obs.cameras if c.name == self.camera.name), None)
            if image is not None and image.rgb is not None:
                found, boundaries = self.perceive(image.rgb, stamp)
                camera = self.camera if np.array_equal(self.camera.intrinsics, image.intrinsics) else \
                    CameraModel(self.camera.name, image.intrinsics, image.rgb.shape[1], image.rgb.shape[0],
                                self.camera.mount)
                detections = CameraDetections(stamp, camera, tuple(found))
                lanes = LaneDetections(stamp, tuple(boundaries))
        if self.detect_obstacles is not None and obs.lidar is not None:
            obstacles = ObstacleScan(obs.lidar.stamp_ns, tuple(self.detect_obstacles(obs.lidar.points[:, :4])))
        policy = None
        if self.propose is not None:
            image = next((c for c in obs.cameras if c.name == self.policy_camera), None)
            if image is not None and image.rgb is not None:
                policy = self.propose(stamp, image.rgb, obs.ego)
        out = self.planner.step(PlannerInputs(stamp, obs.ego, detections, lanes, obstacles, policy))
        self.last_output = out
        self.step_ms.append(out.step_ms)
        return out.control

    def summary(self) -> dict:
        """Overrides and faults of the episode, and the planner's own step time."""
        counts = dict(self.planner.counts)
        times = np.array(self.step_ms) if self.step_ms else np.zeros(1)
        return {"supervisor": counts, "planner_step_ms_median": float(np.median(times)),
                "planner_step_ms_p95": float(np.percentile(times, 95))}
