"""The schema: frozen dataclasses for everything that passes between components.

Conventions (docs/architecture.md, section 3): SI units unless the unit is in the
field name, REP 103 frames (x forward, y left, z up, yaw counter-clockwise from +x),
time as ``stamp_ns`` from the simulator clock. Only numpy is imported here.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field


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


@dataclass(frozen=True)
class Observation:
    """What a simulator step returns: for now the privileged world state (sensor data
    joins it with the rendering milestone). Only the expert may read ``actors``."""

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
