"""CARLA actors -> drivestack's privileged world state (REP 103, the ``map`` frame).

CARLA ids are large and arbitrary; the rest of the stack numbers actors per episode
(ego 0, then NPC vehicles, then pedestrians), so ``ActorIds`` maps between the two and
the instance images, labels and collision events use the same numbers as on the
built-in simulator.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import carla

from drivestack.schema import ActorKind, ActorState, EgoState, TrafficLight, TrafficLightState
from sim import carla_frames
from sim.road_map import RoadMap

EGO_ID = 0
# Static world geometry (walls, poles, parked props): CARLA reports it as a collision
# partner with a ``static.*`` type or no actor at all.
LAYOUT_ID = -1


@dataclass
class ActorIds:
    """CARLA actor id <-> episode actor id."""

    by_carla: dict[int, int] = field(default_factory=dict)
    kinds: dict[int, ActorKind] = field(default_factory=dict)

    def add(self, carla_id: int, kind: ActorKind) -> int:
        actor_id = len(self.by_carla)
        self.by_carla[carla_id] = actor_id
        self.kinds[actor_id] = kind
        return actor_id

    def of(self, carla_id: int) -> int:
        return self.by_carla.get(carla_id, LAYOUT_ID)


def forward_speed_mps(velocity_xyz: tuple[float, float, float], yaw_rad: float) -> float:
    """Signed speed along the heading: negative when reversing."""
    return velocity_xyz[0] * math.cos(yaw_rad) + velocity_xyz[1] * math.sin(yaw_rad)


def box_centre_pose(actor: Any) -> carla_frames.Pose:
    """The actor's pose at its bounding box's centre on the ground (drivestack's vehicle
    origin); CARLA's actor origin need not be there."""
    transform = actor.get_transform()
    local = actor.bounding_box.location
    centre = transform.transform(carla.Location(x=local.x, y=local.y, z=0.0))
    pose = carla_frames.transform_to_pose(transform)
    x_m, y_m, z_m = carla_frames.location_to_xyz(centre)
    return carla_frames.Pose(x_m, y_m, z_m, pose.roll_rad, pose.pitch_rad, pose.yaw_rad)


def ego_state(vehicle: Any, stamp_ns: int, steer_angle_rad: float) -> EgoState:
    pose = box_centre_pose(vehicle)
    velocity = carla_frames.vector_to_xyz(vehicle.get_velocity())
    accel = carla_frames.vector_to_xyz(vehicle.get_acceleration())
    yaw_rate = carla_frames.angular_velocity_to_radps(vehicle.get_angular_velocity())[2]
    extent = vehicle.bounding_box.extent
    return EgoState(stamp_ns=stamp_ns, x_m=pose.x_m, y_m=pose.y_m, yaw_rad=pose.yaw_rad,
                    speed_mps=forward_speed_mps(velocity, pose.yaw_rad), z_m=pose.z_m, yaw_rate_radps=yaw_rate,
                    accel_mps2=accel[0] * math.cos(pose.yaw_rad) + accel[1] * math.sin(pose.yaw_rad),
                    steer_angle_rad=steer_angle_rad, length_m=2.0 * extent.x, width_m=2.0 * extent.y,
                    actor_id=EGO_ID)


def actor_states(actors: Iterable[tuple[int, ActorKind, Any]], road_map: RoadMap) -> tuple[ActorState, ...]:
    """``(episode id, kind, carla actor)`` -> ActorState, with the lane each vehicle is on."""
    states = []
    for actor_id, kind, actor in actors:
        pose = box_centre_pose(actor)
        velocity = carla_frames.vector_to_xyz(actor.get_velocity())
        extent = actor.bounding_box.extent
        speed = (forward_speed_mps(velocity, pose.yaw_rad) if kind == ActorKind.VEHICLE
                 else math.hypot(velocity[0], velocity[1]))
        lane = -1
        if kind == ActorKind.VEHICLE:
            q = road_map.nearest_lane(pose.x_m, pose.y_m, pose.yaw_rad, max_distance_m=4.0)
            lane = q.segment_id if q is not None else -1
        states.append(ActorState(actor_id, kind, pose.x_m, pose.y_m, pose.yaw_rad, speed, 2.0 * extent.x,
                                 2.0 * extent.y, 2.0 * extent.z, lane))
    return tuple(states)


_LIGHT_STATES = {"Red": TrafficLightState.RED, "Yellow": TrafficLightState.YELLOW,
                 "Green": TrafficLightState.GREEN}


def light_state(carla_state: Any) -> TrafficLightState:
    """carla.TrafficLightState -> ours (Off and Unknown are OFF)."""
    return _LIGHT_STATES.get(str(carla_state), TrafficLightState.OFF)


def traffic_lights(road_map: RoadMap, state_by_opendrive_id: dict[str, TrafficLightState]
                   ) -> tuple[TrafficLight, ...]:
    """The map's signal groups with the server's lamp states.

    Stop lines and junctions come from the OpenDRIVE, as on the built-in simulator, so
    planners see the same lights either way; a signal with no actor on the server is OFF.
    """
    return tuple(TrafficLight(g.light_id, g.x_m, g.y_m, state_by_opendrive_id.get(g.opendrive_id,
                                                                                   TrafficLightState.OFF),
                              g.junction_id, tuple((sl.p0, sl.p1) for sl in g.stop_lines))
                 for g in road_map.signals)


def collided_ids(events: Sequence[Any], ids: ActorIds, previous: frozenset[int]) -> tuple[tuple[int, ...],
                                                                                          frozenset[int]]:
    """The collision sensor's events of one tick -> the episode ids of new contacts.

    CARLA fires an event per physics hit, so a car grinding along a wall reports on
    every tick; as on the built-in simulator, only a contact that did not exist on the
    previous tick counts as a new collision.
    """
    touching = frozenset(ids.of(e.other_actor.id) if e.other_actor is not None else LAYOUT_ID for e in events)
    return tuple(sorted(touching - previous)), touching
