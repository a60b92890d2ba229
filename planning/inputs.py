"""What the planner receives and returns: the schema of the planning package.

Only what a real car has goes in: odometry (the ego's pose and speed in ``map``),
camera detections and lanes, LiDAR obstacles, an optional learned-policy proposal,
plus the HD map and the route given at construction. Every input carries the stamp of
the sensor frame it came from, so the safety supervisor can tell a stale one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from drivestack.frames import CameraMount
from drivestack.schema import EgoState, LaneBoundary, ObjectDetection, Obstacle, VehicleControl


class DriveMode(str, enum.Enum):
    """Who drives: the modular planner; the learned policy with only clamping and NaN
    checks; or the policy with the safety supervisor able to override it."""

    MODULAR = "modular"
    POLICY = "policy"
    POLICY_SAFETY = "policy+safety"


@dataclass(frozen=True, eq=False)
class CameraModel:
    """A camera as the planner needs it: pinhole intrinsics (CameraInfo K), image size
    and the mount in base_link."""

    name: str
    intrinsics: np.ndarray  # (3, 3)
    width_px: int
    height_px: int
    mount: CameraMount = CameraMount()


@dataclass(frozen=True, eq=False)
class CameraDetections:
    stamp_ns: int
    camera: CameraModel
    detections: tuple[ObjectDetection, ...]


@dataclass(frozen=True, eq=False)
class LaneDetections:
    """Detected lane boundaries, ``points_m`` on the ground in base_link."""

    stamp_ns: int
    lanes: tuple[LaneBoundary, ...]


@dataclass(frozen=True, eq=False)
class ObstacleScan:
    """LiDAR obstacles of one scan, in base_link."""

    stamp_ns: int
    obstacles: tuple[Obstacle, ...]


@dataclass(frozen=True)
class PolicyProposal:
    """A learned policy's control. Plain floats: a broken policy may say NaN, which
    the supervisor must catch (a :class:`VehicleControl` cannot hold it)."""

    stamp_ns: int
    steer: float
    throttle: float
    brake: float


@dataclass(frozen=True, eq=False)
class PlannerInputs:
    """One frame's inputs; ``stamp_ns`` is the frame's simulation time. A missing input
    is ``None``; an input from an older frame has an older stamp."""

    stamp_ns: int
    ego: EgoState | None
    detections: CameraDetections | None = None
    lanes: LaneDetections | None = None
    obstacles: ObstacleScan | None = None
    policy: PolicyProposal | None = None


@dataclass(frozen=True)
class Track:
    """A tracked object. Position and box in base_link; velocity over the ground
    (not relative to the ego), expressed in base_link axes; the same in ``map``."""

    track_id: int
    label: str  # "vehicle", "pedestrian" or "unknown" (LiDAR only, never classified)
    x_m: float
    y_m: float
    vx_mps: float
    vy_mps: float
    length_m: float
    width_m: float
    yaw_rad: float  # box direction in base_link
    x_map_m: float
    y_map_m: float
    vx_map_mps: float
    vy_map_mps: float
    position_std_m: float
    age_s: float
    hits: int
    sources: tuple[str, ...]  # "lidar", "camera"

    @property
    def speed_mps(self) -> float:
        return float(np.hypot(self.vx_mps, self.vy_mps))


@dataclass(frozen=True)
class VehicleModel:
    """The ego's calibration the controllers need (filled from the simulator's
    vehicle parameters, or a real car's)."""

    length_m: float
    width_m: float
    wheelbase_m: float
    rear_axle_to_center_m: float
    max_steer_angle_rad: float
    max_accel_mps2: float
    max_brake_decel_mps2: float
    rolling_resistance_mps2: float
    drag_coefficient_per_m: float

    @classmethod
    def of(cls, params) -> VehicleModel:
        """From any object with these attributes (``sim.vehicle_dynamics.VehicleParams``)."""
        return cls(**{name: float(getattr(params, name)) for name in cls.__dataclass_fields__})


@dataclass(frozen=True, eq=False)
class PlannerOutput:
    stamp_ns: int
    control: VehicleControl
    mode: DriveMode
    # The planned path in ``map`` (N, 2) with the speed planned at each point (N,).
    path_xy_m: np.ndarray
    path_speed_mps: np.ndarray
    target_speed_mps: float
    behaviour: str  # "follow route", "follow vehicle 3", "stop: red light", ...
    # Why the car is stopping or slowing, or why the supervisor overrode ("" = neither).
    stop_reason: str
    override: str
    tracks: tuple[Track, ...]
    faults: tuple[str, ...]  # inputs found missing, stale or NaN this step
    # Braking harder than the comfort limit was called for (a sudden obstacle, TTC).
    emergency: bool = False
    step_ms: float = 0.0
