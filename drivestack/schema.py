"""The schema: frozen dataclasses for everything that passes between components.

Conventions (docs/architecture.md, section 3): SI units unless the unit is in the
field name, REP 103 frames (x forward, y left, z up, yaw counter-clockwise from +x),
time as ``stamp_ns`` from the simulator clock. Only numpy is imported here.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np


class RoadOption(enum.IntEnum):
    """High-level route command; values are CARLA's ``RoadOption``."""

    VOID = -1
    LEFT = 1
    RIGHT = 2
    STRAIGHT = 3
    LANEFOLLOW = 4
    CHANGELANELEFT = 5
    CHANGELANERIGHT = 6


class ActorKind(enum.Enum):
    VEHICLE = "vehicle"
    PEDESTRIAN = "pedestrian"
    STATIC = "static"


class TrafficLightState(enum.IntEnum):
    """Values are CARLA's ``TrafficLightState``."""

    RED = 0
    YELLOW = 1
    GREEN = 2
    OFF = 3


class InfractionKind(enum.Enum):
    """CARLA Leaderboard 2.0 infraction types."""

    COLLISION_PEDESTRIAN = "collisions_pedestrian"
    COLLISION_VEHICLE = "collisions_vehicle"
    COLLISION_STATIC = "collisions_layout"
    RED_LIGHT = "red_light"
    STOP_SIGN = "stop_infraction"
    SCENARIO_TIMEOUT = "scenario_timeouts"
    MIN_SPEED = "min_speed_infractions"
    OUTSIDE_ROUTE_LANES = "outside_route_lanes"
    ROUTE_DEVIATION = "route_dev"
    AGENT_BLOCKED = "vehicle_blocked"
    ROUTE_TIMEOUT = "route_timeout"


class EpisodeStatus(enum.Enum):
    COMPLETED = "Completed"
    ROUTE_DEVIATION = "Failed - Agent deviated from the route"
    AGENT_BLOCKED = "Failed - Agent got blocked"
    ROUTE_TIMEOUT = "Failed - Agent timed out"
    SIMULATION_ERROR = "Failed - Simulation crashed"
    AGENT_CRASHED = "Failed - Agent crashed"


def _check_finite(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not math.isfinite(value):
            raise ValueError(f"{owner}.{name} is {value}; it must be a finite number")


@dataclass(frozen=True)
class SemanticClass:
    class_id: int
    name: str
    colour_rgb: tuple[int, int, int]


# The semantic classes every sensor and label uses: a subset of CARLA's semantic tags
# (0.9.14+ numbering, Cityscapes palette), so CARLA ground truth maps onto it as is.
SEMANTIC_CLASSES: tuple[SemanticClass, ...] = (
    SemanticClass(0, "unlabeled", (0, 0, 0)),
    SemanticClass(1, "road", (128, 64, 128)),
    SemanticClass(2, "sidewalk", (244, 35, 232)),
    SemanticClass(3, "building", (70, 70, 70)),
    SemanticClass(5, "fence", (190, 153, 153)),
    SemanticClass(6, "pole", (153, 153, 153)),
    SemanticClass(7, "traffic_light", (250, 170, 30)),
    SemanticClass(8, "traffic_sign", (220, 220, 0)),
    SemanticClass(9, "vegetation", (107, 142, 35)),
    SemanticClass(10, "terrain", (152, 251, 152)),
    SemanticClass(11, "sky", (70, 130, 180)),
    SemanticClass(12, "pedestrian", (220, 20, 60)),
    SemanticClass(14, "car", (0, 0, 142)),
    SemanticClass(20, "static", (110, 190, 160)),
    SemanticClass(24, "road_line", (157, 234, 50)),
)
SEMANTIC_ID = {c.name: c.class_id for c in SEMANTIC_CLASSES}


@dataclass(frozen=True)
class VehicleControl:
    """Actuator command, field for field like CARLA's ``VehicleControl``.

    ``steer`` is in [-1, 1] with positive = left (REP 103), the opposite sign of
    CARLA's; throttle and brake are in [0, 1]. Construction rejects NaN/inf and
    out-of-range values: use :meth:`clamped` to saturate finite values explicitly.
    """

    throttle: float = 0.0
    steer: float = 0.0
    brake: float = 0.0
    hand_brake: bool = False
    reverse: bool = False

    def __post_init__(self) -> None:
        _check_finite("VehicleControl", throttle=self.throttle, steer=self.steer, brake=self.brake)
        for name, low, high in (("throttle", 0.0, 1.0), ("steer", -1.0, 1.0), ("brake", 0.0, 1.0)):
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"VehicleControl.{name}={value} is outside [{low}, {high}]")

    @classmethod
    def clamped(cls, throttle: float = 0.0, steer: float = 0.0, brake: float = 0.0,
                hand_brake: bool = False, reverse: bool = False) -> VehicleControl:
        """Saturate finite values into range; NaN/inf still raise (never silently clamped)."""
        _check_finite("VehicleControl", throttle=throttle, steer=steer, brake=brake)
        return cls(min(max(throttle, 0.0), 1.0), min(max(steer, -1.0), 1.0),
                   min(max(brake, 0.0), 1.0), hand_brake, reverse)


@dataclass(frozen=True)
class EgoState:
    """Ego vehicle state in the ``map`` frame; pose of the rear-axle-independent box centre."""

    stamp_ns: int
    x_m: float
    y_m: float
    yaw_rad: float
    speed_mps: float
    z_m: float = 0.0
    yaw_rate_radps: float = 0.0
    accel_mps2: float = 0.0
    steer_angle_rad: float = 0.0
    length_m: float = 4.5
    width_m: float = 1.9
    actor_id: int = 0


@dataclass(frozen=True)
class ActorState:
    """Another traffic participant, as the simulator knows it (ground truth)."""

    actor_id: int
    kind: ActorKind
    x_m: float
    y_m: float
    yaw_rad: float
    speed_mps: float
    length_m: float
    width_m: float
    height_m: float = 1.5
    lane_segment_id: int = -1  # ground truth, -1 when unknown or off the lane graph


@dataclass(frozen=True)
class TrafficLight:
    """A signal controlling the stop lines of one junction approach."""

    light_id: int
    x_m: float
    y_m: float
    state: TrafficLightState
    junction_id: int
    # Stop line per controlled lane: ((x0, y0), (x1, y1)) across the lane, in metres.
    stop_lines: tuple[tuple[tuple[float, float], tuple[float, float]], ...] = ()


@dataclass(frozen=True)
class ImuReading:
    """Body-frame (``base_link``, REP 103) inertial measurement, like sensor_msgs/Imu.

    The accelerometer measures specific force: at rest it reads +9.81 m/s^2 on z.
    ``compass_rad`` is the heading clockwise from north (CARLA's IMU compass).
    """

    stamp_ns: int
    accel_mps2: tuple[float, float, float]
    gyro_radps: tuple[float, float, float]
    compass_rad: float


@dataclass(frozen=True)
class GnssReading:
    stamp_ns: int
    latitude_deg: float
    longitude_deg: float
    altitude_m: float


@dataclass(frozen=True, eq=False)
class CameraImage:
    """One camera's images for one frame, in the camera's optical frame (ROS
    ``*_optical``: z forward, x right, y down). A kind the camera does not render is
    ``None``. ``intrinsics`` is CameraInfo's 3x3 K."""

    name: str
    stamp_ns: int
    intrinsics: np.ndarray  # (3, 3) float64
    rgb: np.ndarray | None = None  # (H, W, 3) uint8
    depth_m: np.ndarray | None = None  # (H, W) float32, distance along the optical axis
    semantic: np.ndarray | None = None  # (H, W) uint8, SEMANTIC_CLASSES ids
    instance: np.ndarray | None = None  # (H, W) int32, see instance_id_of_actor

    @property
    def shape(self) -> tuple[int, int]:
        return next(a.shape[:2] for a in (self.rgb, self.depth_m, self.semantic, self.instance) if a is not None)


# Instance ids in CameraImage.instance: 0 = no object (road, buildings, sky...),
# an actor (ego included) 1 + actor_id, a traffic light's lamp housing
# TRAFFIC_LIGHT_INSTANCE_BASE + light_id.
INSTANCE_NONE = 0
TRAFFIC_LIGHT_INSTANCE_BASE = 1 << 20


def instance_id_of_actor(actor_id: int) -> int:
    return 1 + actor_id


def instance_id_of_light(light_id: int) -> int:
    return TRAFFIC_LIGHT_INSTANCE_BASE + light_id


class ObjectClass(enum.Enum):
    """Classes of labelled objects (detection ground truth)."""

    VEHICLE = "vehicle"
    PEDESTRIAN = "pedestrian"
    TRAFFIC_LIGHT = "traffic_light"


@dataclass(frozen=True)
class Box3D:
    """An object's upright box in the ego frame (``base_link``: REP 103, origin at the
    ego's box centre on the ground); ``z_m`` is the box centre's height."""

    instance_id: int
    object_class: ObjectClass
    x_m: float
    y_m: float
    z_m: float
    yaw_rad: float
    length_m: float
    width_m: float
    height_m: float
    speed_mps: float = 0.0
    light_state: TrafficLightState | None = None


@dataclass(frozen=True)
class Obstacle:
    """An obstacle the LiDAR sees: an upright box in ``base_link`` (as :class:`Box3D`),
    ``z_m`` its centre's height. ``yaw_rad`` is the direction of the box's length, in
    (-pi/2, pi/2] (a box has no front). ``obstacle_id`` numbers the obstacles of one scan
    (nearest first); it does not follow an object from scan to scan."""

    obstacle_id: int
    x_m: float
    y_m: float
    z_m: float
    yaw_rad: float
    length_m: float
    width_m: float
    height_m: float
    point_count: int


@dataclass(frozen=True)
class ObjectDetection:
    """An object a camera model found: a box in image pixels (u right, v down) with its
    class (``vehicle``, ``pedestrian``, ``traffic_light_red|yellow|green``) and score."""

    camera: str
    label: str
    score: float
    u_min_px: float
    v_min_px: float
    u_max_px: float
    v_max_px: float


@dataclass(frozen=True)
class Box2D:
    """An object's box in one camera image, pixels (u right, v down), clipped to the
    image. ``truncation`` is the share of the object's unclipped projected box outside
    the image; ``visible_fraction`` the share of its silhouette's in-image pixels that
    the instance image shows (occlusion)."""

    camera: str
    instance_id: int
    object_class: ObjectClass
    u_min_px: float
    v_min_px: float
    u_max_px: float
    v_max_px: float
    visible_fraction: float
    truncation: float
    distance_m: float
    visible_pixels: int
    light_state: TrafficLightState | None = None


@dataclass(frozen=True, eq=False)
class LaneBoundary:
    """A lane boundary ahead of the ego as a polyline in the ego frame (on the ground).

    ``position`` counts boundaries from the ego lane: -1 its left edge, +1 its right
    edge, -2 / +2 the far edges of the left / right neighbour lanes (CULane's four
    lanes). ``marking`` is the OpenDRIVE type ("Solid", "Broken", "SolidSolid", ...).
    ``image_px`` holds the projection into each camera, keyed by camera name, as
    (K, 2) pixels of the points in front of that camera and inside its image.
    """

    position: int
    marking: str
    points_m: np.ndarray  # (N, 3) float64, ego frame
    image_px: dict = field(default_factory=dict)


@dataclass(frozen=True)
class GroundTruth:
    """Exact labels of one frame, from the simulator's own state."""

    boxes_3d: tuple[Box3D, ...] = ()
    boxes_2d: tuple[Box2D, ...] = ()
    lanes: tuple[LaneBoundary, ...] = ()


@dataclass(frozen=True, eq=False)
class LidarScan:
    """Points of one simulator step, CARLA ``ray_cast_semantic``-like: an (N, 5)
    float32 array of x, y, z (sensor frame, REP 103), intensity, semantic tag."""

    stamp_ns: int
    points: np.ndarray
    frame_id: str = "lidar"


@dataclass(frozen=True)
class Observation:
    """What a simulator step returns: the privileged world state, which only the
    expert and the label writer may read (``actors``, ``traffic_lights``,
    ``ground_truth``), and the sensors, which every agent may read."""

    stamp_ns: int
    ego: EgoState
    actors: tuple[ActorState, ...]
    traffic_lights: tuple[TrafficLight, ...]
    ego_lane_segment_id: int = -1
    imu: ImuReading | None = None
    gnss: GnssReading | None = None
    # Actors whose boxes started touching the ego's this step (the collision sensor).
    collisions: tuple[int, ...] = ()
    # Road marks the ego crossed this step (the lane-invasion sensor): OpenDRIVE types
    # as carla names them ("Solid", "Broken", ...), "NONE" for an unmarked edge.
    lane_invasions: tuple[str, ...] = ()
    cameras: tuple[CameraImage, ...] = ()
    lidar: LidarScan | None = None
    ground_truth: GroundTruth | None = None

    def camera(self, name: str) -> CameraImage:
        for image in self.cameras:
            if image.name == name:
                return image
        raise KeyError(f"no camera {name!r} in this observation (cameras: "
                       f"{', '.join(c.name for c in self.cameras) or 'none'})")


@dataclass(frozen=True)
class RouteWaypoint:
    """One point of a planned route with the command valid from here on."""

    x_m: float
    y_m: float
    yaw_rad: float
    option: RoadOption
    lane_segment_id: int = -1


@dataclass(frozen=True)
class Route:
    waypoints: tuple[RouteWaypoint, ...]
    length_m: float

    def __post_init__(self) -> None:
        if len(self.waypoints) < 2:
            raise ValueError("a route needs at least two waypoints")


@dataclass(frozen=True)
class InfractionEvent:
    kind: InfractionKind
    stamp_ns: int
    x_m: float
    y_m: float
    other_actor_id: int = -1
    # For MIN_SPEED and OUTSIDE_ROUTE_LANES: the percentage the penalty is computed from.
    value_pct: float = 0.0
    detail: str = ""


@dataclass(frozen=True)
class EpisodeResult:
    """Per-route outcome, with the CARLA Leaderboard 2.0 score components."""

    scenario: str
    town: str
    seed: int
    status: EpisodeStatus
    route_length_m: float
    route_completion_pct: float
    infraction_penalty: float
    driving_score: float
    infractions: tuple[InfractionEvent, ...]
    duration_s: float
    distance_driven_m: float
    trajectory_digest: str = ""
    extra: dict = field(default_factory=dict)
