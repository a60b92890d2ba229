"""Schema <-> ROS message conversions, through real CDR bytes (rosbags typestore)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from drivestack.schema import (ActorKind, ActorState, EgoState, RoadOption, Route, RouteWaypoint, TrafficLight,
                               TrafficLightState, VehicleControl)
from ros_nodes import topics
from ros_nodes.convert_labels import boxes_2d, boxes_2d_msg, boxes_3d, boxes_3d_msg, lane_boundaries, lanes_msg
from ros_nodes.convert_sensors import (MessageError, camera_info_msg, cloud_msg, cloud_points, image_array,
                                       image_msg, imu_msg, imu_reading, intrinsics_of, msg_class, rgb_array)
from ros_nodes.convert_world import (actor_states, actors_msg, control_msg, ego_state, ego_state_msg, route_msg,
                                     route_of, traffic_lights, traffic_lights_msg, vehicle_control)
from ros_nodes.frame_messages import observation_messages
from ros_nodes.graph import decode, encode
from sim.builtin import BuiltinSimulator
from sim.scenario import Scenario
from sim.sensors.suite import load_suite


def wire(msg, msgtype: str):
    """What a subscriber or a bag reader gets back: serialise to CDR and decode."""
    return decode(encode(msg, msgtype), msgtype)


IMAGE = "sensor_msgs/msg/Image"


@pytest.mark.parametrize("encoding, array", [
    ("rgb8", np.random.default_rng(0).integers(0, 255, (6, 8, 3), dtype=np.uint8)),
    ("mono8", np.arange(48, dtype=np.uint8).reshape(6, 8)),
    ("32FC1", np.linspace(0.5, 1000.0, 48, dtype=np.float32).reshape(6, 8)),
    ("32SC1", np.arange(48, dtype=np.int32).reshape(6, 8) * 100_003),
])
def test_image_round_trip(encoding, array):
    back = image_array(wire(image_msg(array, encoding, 5, "front_optical"), IMAGE))
    assert back.dtype == array.dtype and np.array_equal(back, array)


def test_colour_encodings_and_compressed_images_decode_to_rgb():
    rgb = np.random.default_rng(1).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    bgra = np.dstack([rgb[..., ::-1], np.full((4, 5), 255, np.uint8)])
    assert np.array_equal(rgb_array(wire(image_msg(rgb[..., ::-1], "bgr8", 0, "c"), IMAGE)), rgb)
    assert np.array_equal(rgb_array(wire(image_msg(bgra, "bgra8", 0, "c"), IMAGE)), rgb)
    grey = rgb_array(wire(image_msg(rgb[..., 0], "mono8", 0, "c"), IMAGE))
    assert grey.shape == (4, 5, 3) and np.array_equal(grey[..., 1], rgb[..., 0])
    compressed = msg_class("sensor_msgs/msg/CompressedImage")
    ok, png = cv2.imencode(".png", rgb[..., ::-1])
    msg = compressed(header=image_msg(rgb, "rgb8", 0, "c").header, format="png", data=png.reshape(-1))
    assert np.array_equal(rgb_array(wire(msg, "sensor_msgs/msg/CompressedImage")), rgb)
    with pytest.raises(MessageError, match="does not decode"):
        rgb_array(compressed(header=msg.header, format="jpeg", data=np.arange(30, dtype=np.uint8)))


def test_bad_images_are_errors_not_garbage():
    msg = image_msg(np.zeros((6, 8, 3), np.uint8), "rgb8", 0, "c")
    msg.data = msg.data[:-10]  # truncated
    with pytest.raises(MessageError, match="needs 144 bytes, has 134"):
        image_array(msg)
    msg = image_msg(np.zeros((6, 8), np.uint8), "mono8", 0, "c")
    msg.encoding = "yuv422"
    with pytest.raises(MessageError, match="unsupported image encoding 'yuv422'"):
        image_array(msg)
    with pytest.raises(MessageError, match="not a colour"):
        rgb_array(image_msg(np.zeros((2, 2), np.float32), "32FC1", 0, "c"))


def test_camera_info_carries_k():
    k = np.array([[160.0, 0, 160], [0, 160.0, 80], [0, 0, 1]])
    info = wire(camera_info_msg(k, 320, 160, 7, "front_optical"), "sensor_msgs/msg/CameraInfo")
    assert np.array_equal(intrinsics_of(info), k) and (info.width, info.height) == (320, 160)
    assert np.array_equal(np.asarray(info.p).reshape(3, 4)[:, :3], k)


def test_point_cloud_round_trip_and_foreign_layouts():
    points = np.random.default_rng(2).normal(size=(50, 5)).astype(np.float32)
    points[:, 4] = np.arange(50) % 7
    assert np.array_equal(cloud_points(wire(cloud_msg(points, 3, "lidar"), "sensor_msgs/msg/PointCloud2")), points)
    # Another tool's cloud: float64 x, y, z and no intensity; NaN points are "no return".
    xyz = np.random.default_rng(3).normal(size=(10, 3))
    xyz[4] = np.nan
    field = msg_class("sensor_msgs/msg/PointField")
    foreign = msg_class("sensor_msgs/msg/PointCloud2")(
        header=cloud_msg(points, 0, "x").header, height=1, width=10,
        fields=[field(name=n, offset=8 * i, datatype=8, count=1) for i, n in enumerate("xyz")],
        is_bigendian=False, point_step=24, row_step=240, data=xyz.view(np.uint8).reshape(-1), is_dense=False)
    read = cloud_points(foreign)
    assert read.shape == (9, 5) and np.allclose(read[:, :3], np.delete(xyz, 4, axis=0).astype(np.float32))
    assert not read[:, 3:].any()
    foreign.fields = foreign.fields[:2]
    with pytest.raises(MessageError, match="without field"):
        cloud_points(foreign)


def test_control_uses_carla_steer_sign_and_rejects_nan():
    control = VehicleControl(throttle=0.3, steer=0.25, brake=0.0)
    msg = wire(control_msg(control, 50_000_000), "drivestack_msgs/msg/VehicleControl")
    assert msg.steer == pytest.approx(-0.25)  # CARLA: positive steers right
    back = vehicle_control(msg)
    assert back.steer == float(np.float32(0.25)) and back.throttle == float(np.float32(0.3))
    msg.throttle = math.nan
    with pytest.raises(MessageError, match="NaN"):
        vehicle_control(msg)
    msg.throttle, msg.steer = 2.0, -3.0  # finite but out of range: clamped
    assert vehicle_control(msg) == VehicleControl(1.0, 1.0, 0.0)


def test_privileged_state_is_lossless():
    ego = EgoState(1_250_000_000, 101.123456789012, -7.0000000001, 0.1 + 1e-15, 8.3, 0.2, 0.01, -0.4, 0.05,
                   4.6, 1.95, 0)
    back, lane = ego_state(wire(ego_state_msg(ego, 17), "drivestack_msgs/msg/EgoState"))
    assert back == ego and lane == 17
    actors = (ActorState(3, ActorKind.VEHICLE, 1.0 / 3.0, 2.0, -3.1, 5.5, 4.4, 1.8, 1.5, 9),
              ActorState(40, ActorKind.PEDESTRIAN, 7.0, 8.0, 0.5, 1.2, 0.5, 0.5, 1.8, -1))
    assert actor_states(wire(actors_msg(actors, 5), "drivestack_msgs/msg/ActorArray")) == actors
    lights = (TrafficLight(2, 10.0, 20.0, TrafficLightState.YELLOW, 4, (((1.0, 2.0), (3.0, 4.0)),)),)
    assert traffic_lights(wire(traffic_lights_msg(lights, 5), "drivestack_msgs/msg/TrafficLightArray")) == lights
    route = Route((RouteWaypoint(0.0, 0.0, 0.0, RoadOption.LANEFOLLOW, 2),
                   RouteWaypoint(1.0 / 7.0, 2.0, 0.3, RoadOption.LEFT, 5)), 2.01)
    assert route_of(wire(route_msg(route, 0), "drivestack_msgs/msg/Route")) == route


@pytest.fixture(scope="module")
def labelled_frame():
    sim = BuiltinSimulator()
    scenario = Scenario(name="convert", town="grid_town", route_length_m=300.0, npc_vehicles=8, pedestrians=6,
                        seed=4, sensors=load_suite("full"))
    obs = sim.reset(scenario)
    for _ in range(5):
        obs = sim.step(VehicleControl(throttle=0.5))
    sim.close()
    return obs, scenario


def test_labels_round_trip(labelled_frame):
    obs, _ = labelled_frame
    gt = obs.ground_truth
    assert gt.boxes_2d and gt.boxes_3d and gt.lanes
    camera = gt.boxes_2d[0].camera
    mine = tuple(b for b in gt.boxes_2d if b.camera == camera)
    back = boxes_2d(wire(boxes_2d_msg(mine, obs.stamp_ns, "c"), "drivestack_msgs/msg/LabeledBox2DArray"), camera)
    for a, b in zip(mine, back, strict=True):
        assert (a.instance_id, a.object_class, a.light_state, a.visible_pixels) == \
               (b.instance_id, b.object_class, b.light_state, b.visible_pixels)
        assert np.allclose([a.u_min_px, a.v_min_px, a.u_max_px, a.v_max_px],
                           [b.u_min_px, b.v_min_px, b.u_max_px, b.v_max_px], atol=1e-9)
        assert b.visible_fraction == pytest.approx(a.visible_fraction, abs=1e-6)
    back3 = boxes_3d(wire(boxes_3d_msg(gt.boxes_3d, obs.stamp_ns), "drivestack_msgs/msg/LabeledBox3DArray"))
    assert [(b.instance_id, b.object_class, b.x_m, b.yaw_rad) for b in back3] == \
           [(b.instance_id, b.object_class, b.x_m, b.yaw_rad) for b in gt.boxes_3d]
    lanes = lane_boundaries(wire(lanes_msg(gt.lanes, obs.stamp_ns), "drivestack_msgs/msg/LaneArray"))
    for a, b in zip(gt.lanes, lanes, strict=True):
        assert (a.position, a.marking) == (b.position, b.marking) and np.array_equal(a.points_m, b.points_m)
        assert a.image_px.keys() == b.image_px.keys()
        assert all(np.allclose(a.image_px[k], b.image_px[k], atol=1e-3) for k in a.image_px)


def test_a_frame_fills_exactly_the_topic_table(labelled_frame):
    obs, scenario = labelled_frame
    table = {t.name: t for t in topics.topic_table(scenario.sensors, 0.05)}
    messages = observation_messages(obs, scenario.sensors)
    published = {topic for topic, _ in messages}
    assert published <= table.keys()
    per_frame = {n for n, t in table.items() if t.rate_hz is not None and n not in (topics.CLOCK, topics.CONTROL)}
    assert per_frame <= published
    for topic, msg in messages:  # every message survives the wire in its table type
        wire(msg, table[topic].msgtype)
    front = obs.camera("front")
    rgb = dict(messages)[topics.camera_image_topic("front", "rgb")]
    assert np.array_equal(image_array(wire(rgb, IMAGE)), front.rgb)
    depth = dict(messages)[topics.camera_image_topic("front", "depth")]
    assert np.array_equal(image_array(wire(depth, IMAGE)), front.depth_m)
    imu = imu_reading(wire(imu_msg(obs.imu), "sensor_msgs/msg/Imu"))
    assert imu.accel_mps2 == pytest.approx(obs.imu.accel_mps2) and imu.compass_rad == pytest.approx(obs.imu.compass_rad)


def test_readme_shows_the_topic_table():
    from pathlib import Path
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    shown = readme.split("<!-- topic-table:start -->\n", 1)[1].split("\n<!-- topic-table:end -->", 1)[0]
    assert shown == topics.readme_table(), "README's topic table is stale: paste `python -m ros_nodes.topics`"


def test_nan_in_a_pose_is_an_error_naming_the_message():
    ego = EgoState(0, 1.0, 2.0, 0.0, 3.0)
    msg = wire(ego_state_msg(ego, 1), "drivestack_msgs/msg/EgoState")
    msg.x_m = math.nan
    with pytest.raises(MessageError, match="EgoState with a NaN"):
        ego_state(msg)
    actors = actors_msg((ActorState(3, ActorKind.VEHICLE, 1.0, 2.0, 0.0, 5.5, 4.4, 1.8),), 5)
    actors.actors[0].yaw_rad = math.inf
    with pytest.raises(MessageError, match="actor 3"):
        actor_states(actors)
