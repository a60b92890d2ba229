"""The rosidl-built drivestack_msgs package (`make` builds it into the venv) and the
rosbags definitions read from the same .msg files agree byte for byte."""

from __future__ import annotations

import array
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

try:
    import drivestack_msgs.msg as msgs
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "drivestack_msgs is not built into this environment: run `make setup` "
        "or `.venv/bin/python -m ros_nodes.build_msgs`"
    ) from exc

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, PoseWithCovariance, Quaternion
from std_msgs.msg import Header

# rosidl_generator_py (imported by every rosidl message's type support) pulls in an old
# lark that imports the deprecated sre_parse / sre_constants.
pytestmark = pytest.mark.filterwarnings("ignore:module 'sre_:DeprecationWarning")

MSG_DIR = Path(__file__).resolve().parent.parent / "ros_nodes" / "drivestack_msgs" / "msg"
NAMES = sorted(p.stem for p in MSG_DIR.glob("*.msg"))


@pytest.fixture(scope="module")
def typestore():
    store = get_typestore(Stores.ROS2_JAZZY)
    types: dict = {}
    for name in NAMES:
        types.update(get_types_from_msg((MSG_DIR / f"{name}.msg").read_text(), f"drivestack_msgs/msg/{name}"))
    store.register(types)  # all at once: they refer to each other
    return store


def plain(value):
    """A rosidl message or a rosbags message as nested dicts / lists of Python scalars."""
    if hasattr(value, "get_fields_and_field_types"):
        return {name: plain(getattr(value, name)) for name in value.get_fields_and_field_types()}
    if dataclasses.is_dataclass(value):
        # rosbags also lists __msgtype__ and the constants (UPPER_CASE; rosidl fields are
        # lower case) as dataclass fields.
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not f.name.startswith("__") and f.name == f.name.lower()}
    if isinstance(value, (list, tuple, array.array, np.ndarray)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def assert_same_layout(typestore, rosbags_msg, data: bytes, cls) -> None:
    """rosbags serialises `rosbags_msg` to CDR of the same length as rclpy's `data`, equal
    to it except in alignment padding (Fast CDR leaves padding bytes uninitialised, rosbags
    writes zeros), and rclpy reads rosbags' bytes back to the same message."""
    ours = bytes(typestore.serialize_cdr(rosbags_msg, rosbags_msg.__msgtype__))
    assert len(ours) == len(data)
    assert deserialize_message(ours, cls) == deserialize_message(data, cls)


def stamp(sec: int, nanosec: int, frame_id: str) -> Header:
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def vehicle_control() -> msgs.VehicleControl:
    return msgs.VehicleControl(
        header=stamp(12, 500_000_000, "ego_vehicle"),
        throttle=0.75, steer=-0.25, brake=0.125,
        hand_brake=False, reverse=True, gear=-1, manual_gear_shift=True,
    )


def detection(det_id: str, class_id: str, score: float, x: float) -> msgs.Detection2D:
    covariance = [float(i) / 8 for i in range(36)]
    return msgs.Detection2D(
        header=stamp(3, 7, "front_optical"),
        results=[
            msgs.ObjectHypothesisWithPose(
                hypothesis=msgs.ObjectHypothesis(class_id=class_id, score=score),
                pose=PoseWithCovariance(
                    pose=Pose(position=Point(x=x, y=-2.5, z=0.75),
                              orientation=Quaternion(x=0.0, y=0.0, z=0.5, w=0.75)),
                    covariance=covariance,
                ),
            ),
            msgs.ObjectHypothesisWithPose(hypothesis=msgs.ObjectHypothesis(class_id="unknown", score=0.0625)),
        ],
        bbox=msgs.BoundingBox2D(
            center=msgs.Pose2D(position=msgs.Point2D(x=x * 10, y=80.5), theta=0.125),
            size_x=42.0, size_y=17.25,
        ),
        id=det_id,
    )


def detection_array() -> msgs.Detection2DArray:
    return msgs.Detection2DArray(
        header=stamp(3, 7, "front_optical"),
        detections=[detection("17", "vehicle", 0.875, 12.0), detection("1048577", "traffic_light", 0.5, 30.0)],
    )


def lane_array() -> msgs.LaneArray:
    lane = msgs.Lane(
        position=-1, marking="Broken", score=0.5,
        points=[Point(x=float(i), y=1.75, z=0.0) for i in range(4)],
        image=[msgs.LaneImagePoints(camera="front", u_px=[1.5, 2.5, 3.5], v_px=[100.0, 90.0, 80.0])],
    )
    return msgs.LaneArray(header=stamp(1, 2, "base_link"), lanes=[lane, msgs.Lane(position=2, marking="Solid")])


def test_every_message_is_built():
    assert len(NAMES) >= 27
    missing = [name for name in NAMES if not hasattr(msgs, name)]
    assert not missing, f"not in the installed drivestack_msgs (rebuild: python -m ros_nodes.build_msgs): {missing}"
    for name in NAMES:
        cls = getattr(msgs, name)
        assert cls.__module__.startswith("drivestack_msgs.msg")
        assert deserialize_message(serialize_message(cls()), cls) == cls()


@pytest.mark.parametrize("make", [vehicle_control, detection_array, lane_array])
def test_rclpy_round_trip_and_rosbags_agree(make, typestore):
    msg = make()
    name = type(msg).__name__
    data = serialize_message(msg)

    back = deserialize_message(data, type(msg))
    assert back == msg
    assert plain(back) == plain(msg)

    # The same CDR bytes through rosbags' definitions (from the .msg files): same values;
    # and rosbags' bytes read back by rclpy give the same message.
    rosbags_msg = typestore.deserialize_cdr(data, f"drivestack_msgs/msg/{name}")
    assert plain(rosbags_msg) == plain(msg)
    assert_same_layout(typestore, rosbags_msg, data, type(msg))


def test_nested_content_survives():
    back = deserialize_message(serialize_message(detection_array()), msgs.Detection2DArray)
    second = back.detections[1]
    assert second.id == "1048577"
    assert second.results[0].hypothesis.class_id == "traffic_light"
    assert second.results[0].pose.pose.position.x == 30.0
    assert list(second.results[0].pose.covariance)[35] == 35 / 8
    assert second.bbox.center.position.x == 300.0
    control = deserialize_message(serialize_message(vehicle_control()), msgs.VehicleControl)
    assert (control.throttle, control.steer, control.gear, control.reverse) == (0.75, -0.25, -1, True)
    assert msgs.LabeledBox2D.LIGHT_NONE == -1 and msgs.Actor.KIND_PEDESTRIAN == 1


@pytest.mark.parametrize("name", NAMES)
def test_default_message_bytes_agree_with_rosbags(name, typestore):
    """Every type: rosidl's layout and the rosbags definition agree."""
    cls = getattr(msgs, name)
    data = serialize_message(cls())
    rosbags_msg = typestore.deserialize_cdr(data, f"drivestack_msgs/msg/{name}")
    assert plain(rosbags_msg) == plain(cls())
    assert_same_layout(typestore, rosbags_msg, data, cls)
