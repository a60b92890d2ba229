"""Server-side state of the double: one record per actor and one episode per loaded map.

The classes named like CARLA's (``Vehicle``, ``World``...) are client handles onto these
records. As in CARLA, several handles can exist for one actor (``get_actors()`` builds new
ones each call) and compare by identity, not by id.
"""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import carla
import numpy as np

from . import scene
from .blueprints import BlueprintSpec

if TYPE_CHECKING:
    from .actors import Sensor


def _zeros() -> np.ndarray:
    return np.zeros(3)


@dataclass(eq=False)
class ActorRecord:
    id: int
    type_id: str
    kind: str  # "vehicle" | "walker" | "controller" | "sensor" | "traffic_light" | "spectator"
    attributes: dict[str, str]
    transform: carla.Transform  # world; for attached actors recomputed every tick from the parent
    bounding_box: carla.BoundingBox  # relative to the actor
    episode_id: int
    unique_id: int  # Unreal object id, what instance cameras encode
    spec: BlueprintSpec | None = None
    parent_id: int | None = None
    relative: carla.Transform | None = None
    alive: bool = True
    velocity: np.ndarray = field(default_factory=_zeros)  # m/s, world
    angular_velocity_dps: np.ndarray = field(default_factory=_zeros)
    acceleration: np.ndarray = field(default_factory=_zeros)

    @property
    def physical(self) -> bool:
        return self.kind in ("vehicle", "walker")


@dataclass(eq=False)
class VehicleRecord(ActorRecord):
    pending_control: carla.VehicleControl = field(default_factory=carla.VehicleControl)
    applied_control: carla.VehicleControl = field(default_factory=carla.VehicleControl)
    light_state: carla.VehicleLightState = carla.VehicleLightState.NONE
    autopilot: bool = False
    tm_port: int = 8000
    speed_mps: float = 0.0
    steer_angle_rad: float = 0.0
    waypoint: carla.Waypoint | None = None
    path: list[carla.Location] = field(default_factory=list)


@dataclass(eq=False)
class ControllerRecord(ActorRecord):
    active: bool = False
    target: carla.Location | None = None
    max_speed_mps: float = 1.4


@dataclass(eq=False)
class SensorRecord(ActorRecord):
    listener: Sensor | None = None  # the handle whose callback receives the data
    callback: Callable[[Any], None] | None = None
    next_capture_s: float = 0.0
    lidar_angle_deg: float = 0.0
    rng: np.random.Generator | None = None
    previous_waypoint: carla.Waypoint | None = None


@dataclass(eq=False)
class LightRecord(ActorRecord):
    opendrive_id: str = ""
    light_boxes: tuple[carla.BoundingBox, ...] = ()
    controlled_lanes: frozenset[tuple[int, int]] = frozenset()
    group_size: int = 1
    group_index: int = 0
    state: carla.TrafficLightState = carla.TrafficLightState.Green
    frozen_state: carla.TrafficLightState | None = None


class Map(carla.Map):
    """The real ``carla.Map`` plus the recommended spawn points a server map carries.

    A ``carla.Map`` built offline from OpenDRIVE has no spawn points (they come from the
    Unreal level), so this subclass answers ``get_spawn_points`` like a loaded level would.
    """

    _spawn_points: tuple[carla.Transform, ...] = ()

    def get_spawn_points(self) -> list[carla.Transform]:
        return [scene.copy_transform(t) for t in self._spawn_points]


# Spawn points sit this high above the road, as in CARLA's towns, so cars drop onto it.
SPAWN_HEIGHT_M = 0.6
DEFAULT_SPEED_LIMIT_MPS = 30.0 / 3.6
_SPEED_UNIT = {"km/h": 1 / 3.6, "m/s": 1.0, "mph": 0.44704}


def build_map(name: str, xodr: str) -> Map:
    carla_map = Map(name, xodr)
    points, kept = [], []
    for wp in carla_map.generate_waypoints(25.0):
        if wp.is_junction or wp.lane_type != carla.LaneType.Driving:
            continue
        loc = wp.transform.location
        if any(abs(loc.x - k[0]) + abs(loc.y - k[1]) < 8.0 for k in kept):
            continue
        kept.append((loc.x, loc.y))
        points.append(carla.Transform(carla.Location(x=loc.x, y=loc.y, z=loc.z + SPAWN_HEIGHT_M),
                                      carla.Rotation(yaw=wp.transform.rotation.yaw)))
    carla_map._spawn_points = tuple(points)
    return carla_map


def road_speed_limits(xodr: str) -> dict[int, float]:
    limits: dict[int, float] = {}
    for road in ET.fromstring(xodr).findall("road"):
        speed = road.find("type/speed")
        try:
            limits[int(road.attrib["id"])] = float(speed.attrib["max"]) * _SPEED_UNIT.get(
                speed.attrib.get("unit", "m/s"), 1.0)
        except (AttributeError, KeyError, ValueError):
            continue
    return limits


def sidewalk_points(carla_map: carla.Map) -> list[carla.Location]:
    """Where ``get_random_location_from_navigation`` may answer: sidewalk centres.

    Without sidewalks, points 1 m beyond the outer edge of the rightmost driving lane.
    """
    points: list[carla.Location] = []
    edges: list[carla.Location] = []
    for wp in carla_map.generate_waypoints(5.0):
        if wp.is_junction:
            continue
        lane, outer = wp, wp
        for _ in range(6):
            nxt = lane.get_right_lane()
            if nxt is None or nxt.lane_id * wp.lane_id <= 0:
                break
            if nxt.lane_type == carla.LaneType.Sidewalk:
                points.append(scene.copy_location(nxt.transform.location))
                break
            if nxt.lane_type == carla.LaneType.Driving:
                outer = nxt
            lane = nxt
        tf = outer.transform
        right = tf.get_right_vector()
        offset = outer.lane_width / 2.0 + 1.0
        edges.append(carla.Location(x=tf.location.x + right.x * offset, y=tf.location.y + right.y * offset,
                                    z=tf.location.z))
    return points or edges


@dataclass(eq=False)
class Episode:
    id: int
    map_path: str
    carla_map: Map
    settings: carla.WorldSettings
    weather: carla.WeatherParameters
    speed_limits: dict[int, float]
    navigation: list[carla.Location]
    elapsed_s: float = 0.0
    delta_s: float = 0.0
    actors: dict[int, ActorRecord] = field(default_factory=dict)  # alive actors only
    pedestrian_rng: random.Random = field(default_factory=lambda: random.Random(0))

    def alive(self, kind: str | None = None) -> list[ActorRecord]:
        return [r for r in self.actors.values() if kind is None or r.kind == kind]
