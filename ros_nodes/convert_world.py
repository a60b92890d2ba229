"""World state, route and control <-> drivestack_msgs.

The privileged messages (ego state, actors, traffic lights) carry the schema's float64
values field for field, so an agent node rebuilds exactly the observation the
in-process runner would hand it: the two runners give bit-identical trajectories.
"""

from __future__ import annotations

import math

import numpy as np

from drivestack.schema import (ActorKind, ActorState, EgoState, Route, RouteWaypoint, RoadOption, TrafficLight,
                               TrafficLightState, VehicleControl)
from ros_nodes.convert_sensors import MessageError, header, msg_class, point, stamp_ns_of, vector3

_ACTOR_KINDS = (ActorKind.VEHICLE, ActorKind.PEDESTRIAN, ActorKind.STATIC)  # Actor.KIND_* values

# carla_msgs/CarlaLaneInvasionEvent markings, mapped as CARLA's bridge does: only a
# plain "Broken" or "Solid" has its own value.
LANE_MARKING_OTHER, LANE_MARKING_BROKEN, LANE_MARKING_SOLID = 0, 1, 2


def control_msg(control: VehicleControl, stamp_ns: int):
    """CARLA's control message: steer positive = right, the schema's sign flipped."""
    return msg_class("drivestack_msgs/msg/VehicleControl")(
        header=header(stamp_ns, "base_link"), throttle=control.throttle, steer=-control.steer, brake=control.brake,
        hand_brake=bool(control.hand_brake), reverse=bool(control.reverse), gear=0, manual_gear_shift=False)


def vehicle_control(msg) -> VehicleControl:
    """The schema's control from a message: NaN/inf is an error, range is clamped."""
    values = (msg.throttle, msg.steer, msg.brake)
    if not all(math.isfinite(v) for v in values):
        raise MessageError(f"VehicleControl with a NaN or infinite value: throttle={msg.throttle}, "
                           f"steer={msg.steer}, brake={msg.brake}")
    return VehicleControl.clamped(float(msg.throttle), -float(msg.steer), float(msg.brake),
                                  bool(msg.hand_brake), bool(msg.reverse))


def ego_state_msg(ego: EgoState, lane_segment_id: int):
    return msg_class("drivestack_msgs/msg/EgoState")(
        header=header(ego.stamp_ns, "map"), x_m=ego.x_m, y_m=ego.y_m, z_m=ego.z_m, yaw_rad=ego.yaw_rad,
        speed_mps=ego.speed_mps, yaw_rate_radps=ego.yaw_rate_radps, accel_mps2=ego.accel_mps2,
        steer_angle_rad=ego.steer_angle_rad, length_m=ego.length_m, width_m=ego.width_m, actor_id=ego.actor_id,
        lane_segment_id=lane_segment_id)


def ego_state(msg) -> tuple[EgoState, int]:
    """The ego state and the lane segment under it."""
    values = (msg.x_m, msg.y_m, msg.z_m, msg.yaw_rad, msg.speed_mps, msg.yaw_rate_radps, msg.accel_mps2,
              msg.steer_angle_rad, msg.length_m, msg.width_m)
    if not all(math.isfinite(v) for v in values):
        raise MessageError(f"EgoState with a NaN or infinite value: {values}")
    ego = EgoState(stamp_ns_of(msg.header.stamp), msg.x_m, msg.y_m, msg.yaw_rad, msg.speed_mps, msg.z_m,
                   msg.yaw_rate_radps, msg.accel_mps2, msg.steer_angle_rad, msg.length_m, msg.width_m,
                   int(msg.actor_id))
    return ego, int(msg.lane_segment_id)


def actors_msg(actors: tuple[ActorState, ...], stamp_ns: int):
    actor = msg_class("drivestack_msgs/msg/Actor")
    return msg_class("drivestack_msgs/msg/ActorArray")(header=header(stamp_ns, "map"), actors=[
        actor(actor_id=a.actor_id, kind=_ACTOR_KINDS.index(a.kind), x_m=a.x_m, y_m=a.y_m, yaw_rad=a.yaw_rad,
              speed_mps=a.speed_mps, length_m=a.length_m, width_m=a.width_m, height_m=a.height_m,
              lane_segment_id=a.lane_segment_id) for a in actors])


def actor_states(msg) -> tuple[ActorState, ...]:
    out = []
    for a in msg.actors:
        values = (a.x_m, a.y_m, a.yaw_rad, a.speed_mps, a.length_m, a.width_m, a.height_m)
        if not all(math.isfinite(v) for v in values) or a.kind >= len(_ACTOR_KINDS):
            raise MessageError(f"actor {a.actor_id}: kind {a.kind}, values {values} are not a valid actor")
        out.append(ActorState(int(a.actor_id), _ACTOR_KINDS[a.kind], a.x_m, a.y_m, a.yaw_rad, a.speed_mps,
                              a.length_m, a.width_m, a.height_m, int(a.lane_segment_id)))
    return tuple(out)


def traffic_lights_msg(lights: tuple[TrafficLight, ...], stamp_ns: int):
    light = msg_class("drivestack_msgs/msg/TrafficLight")
    return msg_class("drivestack_msgs/msg/TrafficLightArray")(header=header(stamp_ns, "map"), lights=[
        light(light_id=t.light_id, x_m=t.x_m, y_m=t.y_m, state=int(t.state), junction_id=t.junction_id,
              stop_line_points=[point(x, y, 0.0) for line in t.stop_lines for x, y in line]) for t in lights])


def traffic_lights(msg) -> tuple[TrafficLight, ...]:
    out = []
    for t in msg.lights:
        points = [(p.x, p.y) for p in t.stop_line_points]
        if len(points) % 2 or t.state > TrafficLightState.OFF:
            raise MessageError(f"traffic light {t.light_id}: state {t.state}, {len(points)} stop-line points")
        lines = tuple((points[k], points[k + 1]) for k in range(0, len(points), 2))
        out.append(TrafficLight(int(t.light_id), t.x_m, t.y_m, TrafficLightState(t.state), int(t.junction_id),
                                lines))
    return tuple(out)


def route_msg(route: Route, stamp_ns: int):
    waypoint = msg_class("drivestack_msgs/msg/RouteWaypoint")
    return msg_class("drivestack_msgs/msg/Route")(header=header(stamp_ns, "map"), length_m=route.length_m, waypoints=[
        waypoint(x_m=w.x_m, y_m=w.y_m, yaw_rad=w.yaw_rad, option=int(w.option), lane_segment_id=w.lane_segment_id)
        for w in route.waypoints])


def route_of(msg) -> Route:
    try:
        return Route(tuple(RouteWaypoint(w.x_m, w.y_m, w.yaw_rad, RoadOption(w.option), int(w.lane_segment_id))
                           for w in msg.waypoints), msg.length_m)
    except ValueError as exc:
        raise MessageError(f"Route: {exc}") from exc


def collision_msgs(other_actor_ids: tuple[int, ...], stamp_ns: int) -> list:
    event = msg_class("drivestack_msgs/msg/CollisionEvent")
    return [event(header=header(stamp_ns, "base_link"), other_actor_id=actor_id, normal_impulse=vector3(0, 0, 0))
            for actor_id in other_actor_ids]


def lane_invasion_msg(markings: tuple[str, ...], stamp_ns: int):
    codes = [LANE_MARKING_BROKEN if m == "Broken" else LANE_MARKING_SOLID if m == "Solid" else LANE_MARKING_OTHER
             for m in markings]
    return msg_class("drivestack_msgs/msg/LaneInvasionEvent")(header=header(stamp_ns, "base_link"),
                                                                crossed_lane_markings=np.array(codes, np.int32))
