"""Planning inputs and outputs <-> messages (rosbags typestore classes, no rclpy).

Inputs: odometry -> :class:`EgoState`; the perception messages -> the planner's
stamped input types (``planning.inputs``); a policy's ``VehicleControl`` <->
:class:`PolicyProposal` (NaN passes through: the supervisor must see it). Outputs: the
planned path (``nav_msgs/Path``), the decision (``drivestack_msgs/PlannerStatus``) and
debug markers (``visualization_msgs/MarkerArray``: tracks, path, behaviour text).
Decoders raise :class:`MessageError` with the reason; the node adds topic and stamp.
"""

from __future__ import annotations

import math

import numpy as np

from drivestack.schema import EgoState, Route
from planning.inputs import (CameraDetections, CameraModel, LaneDetections, ObstacleScan, PlannerOutput,
                             PolicyProposal, Track)
from ros_nodes.convert_labels import lane_boundaries
from ros_nodes.convert_perception import detections_of, obstacles_of
from ros_nodes.convert_sensors import MessageError, header, msg_class, point, quaternion_yaw, stamp_ns_of, \
    vector3, yaw_quaternion

# visualization_msgs/Marker type and action values.
MARKER_CUBE, MARKER_LINE_STRIP, MARKER_TEXT = 1, 4, 9
MARKER_ADD, MARKER_DELETEALL = 0, 3
# RGBA per track label (vehicles blue, people orange, LiDAR-only objects grey).
TRACK_COLOURS = {"vehicle": (0.2, 0.45, 1.0, 0.8), "pedestrian": (1.0, 0.55, 0.1, 0.9),
                 "unknown": (0.6, 0.6, 0.6, 0.7)}
_PATH_COLOUR = (0.1, 0.9, 0.3, 1.0)
_STOP_COLOUR = (1.0, 0.2, 0.2, 1.0)
_TEXT_COLOUR = (1.0, 1.0, 1.0, 1.0)
_TRACK_HEIGHT_M = {"vehicle": 1.5, "pedestrian": 1.8, "unknown": 1.0}


# ---------------------------------------------------------------- inputs

def ego_state_of(msg, length_m: float = 4.5, width_m: float = 1.9) -> EgoState:
    """The ego's pose in ``map`` and its speed from ``nav_msgs/Odometry`` (twist in
    base_link, REP 105). Odometry has no acceleration or steering angle: they stay 0;
    the box size is the vehicle's calibration, not a measurement."""
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    v, w = msg.twist.twist.linear, msg.twist.twist.angular
    values = (p.x, p.y, p.z, q.x, q.y, q.z, q.w, v.x, v.y, w.z)
    if not all(math.isfinite(value) for value in values):
        raise MessageError(f"Odometry with a NaN or infinite value: {values}")
    if abs(q.x * q.x + q.y * q.y + q.z * q.z + q.w * q.w - 1.0) > 1e-3:
        raise MessageError(f"Odometry orientation is not a unit quaternion: {(q.x, q.y, q.z, q.w)}")
    # Forward speed, signed: the lateral twist of a car is slip, not travel.
    return EgoState(stamp_ns_of(msg.header.stamp), float(p.x), float(p.y), quaternion_yaw(q), float(v.x),
                    float(p.z), float(w.z), length_m=length_m, width_m=width_m)


def camera_detections(msg, camera: CameraModel) -> CameraDetections:
    return CameraDetections(stamp_ns_of(msg.header.stamp), camera, detections_of(msg, camera.name))


def lane_detections(msg) -> LaneDetections:
    return LaneDetections(stamp_ns_of(msg.header.stamp), lane_boundaries(msg))


def obstacle_scan(msg) -> ObstacleScan:
    return ObstacleScan(stamp_ns_of(msg.header.stamp), obstacles_of(msg))


def policy_proposal(msg) -> PolicyProposal:
    """A learned policy's ``VehicleControl`` (CARLA's steer sign, positive = right), as
    it came: range and NaN are the safety supervisor's to judge."""
    return PolicyProposal(stamp_ns_of(msg.header.stamp), -float(msg.steer), float(msg.throttle), float(msg.brake))


def policy_proposal_msg(proposal: PolicyProposal):
    """The inverse of :func:`policy_proposal`: unchecked (a ``VehicleControl`` could not
    hold NaN, and the planner's supervisor must be the one to catch it)."""
    return msg_class("drivestack_msgs/msg/VehicleControl")(
        header=header(proposal.stamp_ns, "base_link"), throttle=float(proposal.throttle),
        steer=-float(proposal.steer), brake=float(proposal.brake), hand_brake=False, reverse=False, gear=0,
        manual_gear_shift=False)


# ---------------------------------------------------------------- outputs

def path_msg(xy_m: np.ndarray, stamp_ns: int, frame_id: str = "map"):
    """A polyline as ``nav_msgs/Path``, each pose heading along the line."""
    xy = np.asarray(xy_m, np.float64).reshape(-1, 2)
    hdr = header(stamp_ns, frame_id)
    headings = _headings(xy)
    pose = msg_class("geometry_msgs/msg/Pose")
    stamped = msg_class("geometry_msgs/msg/PoseStamped")
    return msg_class("nav_msgs/msg/Path")(header=hdr, poses=[
        stamped(header=hdr, pose=pose(position=point(x, y, 0.0), orientation=yaw_quaternion(yaw)))
        for (x, y), yaw in zip(xy, headings)])


def route_path_msg(route: Route, stamp_ns: int):
    """The global route's waypoints as ``nav_msgs/Path`` in ``map`` (for viewers)."""
    hdr = header(stamp_ns, "map")
    pose = msg_class("geometry_msgs/msg/Pose")
    stamped = msg_class("geometry_msgs/msg/PoseStamped")
    return msg_class("nav_msgs/msg/Path")(header=hdr, poses=[
        stamped(header=hdr, pose=pose(position=point(w.x_m, w.y_m, 0.0), orientation=yaw_quaternion(w.yaw_rad)))
        for w in route.waypoints])


def path_points(msg) -> np.ndarray:
    """(N, 2) x, y of a ``nav_msgs/Path``."""
    return np.array([(p.pose.position.x, p.pose.position.y) for p in msg.poses], np.float64).reshape(-1, 2)


def planner_status_msg(out: PlannerOutput, extra_faults: tuple[str, ...] = ()):
    """The decision of one frame; ``extra_faults`` are the node's own (malformed messages)."""
    return status_msg(out.stamp_ns, out.mode.value, out.behaviour, out.stop_reason, out.override,
                      (*extra_faults, *out.faults), out.target_speed_mps, out.emergency, len(out.tracks),
                      out.step_ms)


def status_msg(stamp_ns: int, mode: str, behaviour: str, stop_reason: str, override: str = "",
               faults: tuple[str, ...] = (), target_speed_mps: float = 0.0, emergency: bool = False,
               track_count: int = 0, step_ms: float = 0.0):
    return msg_class("drivestack_msgs/msg/PlannerStatus")(
        header=header(stamp_ns, "base_link"), mode=mode, behaviour=behaviour, stop_reason=stop_reason,
        override=override, faults=list(faults), target_speed_mps=float(target_speed_mps), emergency=bool(emergency),
        track_count=int(track_count), step_ms=float(step_ms))


def markers_msg(out: PlannerOutput, ego: EgoState | None, extra_faults: tuple[str, ...] = ()):
    """Debug view of one frame in ``map``: a DELETEALL (the previous frame's markers go),
    each track's box coloured by label with its id, the planned path (red when the car
    stops), and the behaviour / stop reason / override as text above the ego."""
    stamp = out.stamp_ns
    markers = [_marker(stamp, "", 0, MARKER_CUBE, action=MARKER_DELETEALL)]
    for track in out.tracks:
        markers += _track_markers(stamp, track, ego)
    if len(out.path_xy_m):
        stopping = bool(out.stop_reason) and out.target_speed_mps < 0.1
        markers.append(_marker(stamp, "path", 0, MARKER_LINE_STRIP, scale=(0.3, 0.0, 0.0),
                               colour=_STOP_COLOUR if stopping else _PATH_COLOUR,
                               points=[point(x, y, 0.1) for x, y in out.path_xy_m]))
    if ego is not None and all(math.isfinite(v) for v in (ego.x_m, ego.y_m)):
        lines = [out.behaviour, *(f"{label}: {text}" for label, text in (("stop", out.stop_reason),
                                                                        ("override", out.override)) if text),
                 *(f"fault: {f}" for f in (*extra_faults, *out.faults))]
        markers.append(_marker(stamp, "behaviour", 0, MARKER_TEXT, position=(ego.x_m, ego.y_m, 3.5),
                               scale=(0.0, 0.0, 1.0), colour=_TEXT_COLOUR, text="\n".join(lines)))
    return msg_class("visualization_msgs/msg/MarkerArray")(markers=markers)


def _track_markers(stamp_ns: int, track: Track, ego: EgoState | None) -> list:
    colour = TRACK_COLOURS.get(track.label, TRACK_COLOURS["unknown"])
    height = _TRACK_HEIGHT_M.get(track.label, 1.0)
    yaw = track.yaw_rad + (ego.yaw_rad if ego is not None else 0.0)  # base_link -> map
    box = _marker(stamp_ns, "tracks", track.track_id, MARKER_CUBE, position=(track.x_map_m, track.y_map_m, height / 2),
                  yaw_rad=yaw, scale=(track.length_m, track.width_m, height), colour=colour)
    label = _marker(stamp_ns, "track_ids", track.track_id, MARKER_TEXT,
                    position=(track.x_map_m, track.y_map_m, height + 0.8), scale=(0.0, 0.0, 0.8), colour=colour,
                    text=f"{track.track_id} {track.label} {track.speed_mps:.1f} m/s")
    return [box, label]


def _marker(stamp_ns: int, ns: str, marker_id: int, kind: int, *, action: int = MARKER_ADD,
            position: tuple[float, float, float] = (0.0, 0.0, 0.0), yaw_rad: float = 0.0,
            scale: tuple[float, float, float] = (1.0, 1.0, 1.0), colour=(1.0, 1.0, 1.0, 1.0), points=(),
            text: str = ""):
    pose = msg_class("geometry_msgs/msg/Pose")(position=point(*position), orientation=yaw_quaternion(yaw_rad))
    return msg_class("visualization_msgs/msg/Marker")(
        header=header(stamp_ns, "map"), ns=ns, id=int(marker_id), type=kind, action=action, pose=pose,
        scale=vector3(*scale), color=msg_class("std_msgs/msg/ColorRGBA")(*map(float, colour)),
        lifetime=msg_class("builtin_interfaces/msg/Duration")(sec=0, nanosec=0), frame_locked=False,
        points=list(points), colors=[], texture_resource="",
        texture=msg_class("sensor_msgs/msg/CompressedImage")(header=header(stamp_ns, ""), format="",
                                                             data=np.zeros(0, np.uint8)),
        uv_coordinates=[], text=text, mesh_resource="",
        mesh_file=msg_class("visualization_msgs/msg/MeshFile")(filename="", data=np.zeros(0, np.uint8)),
        mesh_use_embedded_materials=False)


def _headings(xy: np.ndarray) -> np.ndarray:
    if len(xy) < 2:
        return np.zeros(len(xy))
    step = np.diff(xy, axis=0)
    yaw = np.arctan2(step[:, 1], step[:, 0])
    return np.append(yaw, yaw[-1])
