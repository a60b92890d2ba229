"""The live view, checked with a real WebSocket client speaking the Foxglove protocol:
the server advertises its channels (JSON ``advertise``), a client subscribes to them
and gets binary message frames (opcode 0x01, subscription id, log time, payload),
decoded with the protobuf schema the channel advertised. Then the node as a process:
a camera image, a perception overlay and LiDAR obstacles published on the graph reach
a client.
"""

from __future__ import annotations

import base64
import json
import math
import os
import socket
import struct
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import rclpy
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from websockets.sync.client import connect

from drivestack.schema import Obstacle
from ros_nodes import topics
from ros_nodes.convert_perception import obstacles_msg
from ros_nodes.convert_sensors import image_msg
from ros_nodes.foxglove_view import FoxgloveView, quaternion_xyzw, sensor_mounts
from ros_nodes.graph import Publishers
from ros_nodes.topics import Qos, Topic
from sim.sensors.suite import load_suite

# foxglove-sdk 0.30 names protocol v1 `foxglove.sdk.v1` (formerly foxglove.websocket.v1).
SUBPROTOCOL = "foxglove.sdk.v1"
MESSAGE_DATA = 0x01
SCHEMAS = {"/camera/front/image": "foxglove.RawImage", "/camera/front/calibration": "foxglove.CameraCalibration",
           "/lidar": "foxglove.PointCloud", "/tf": "foxglove.FrameTransforms",
           "/drivestack/trajectory": "foxglove.SceneUpdate", "/drivestack/route": "foxglove.SceneUpdate"}


class FoxgloveClient:
    """Subscribes to every channel it is told of; keeps each topic's (log time, payload)."""

    def __init__(self, ws) -> None:  # noqa: ANN001 (a websockets ClientConnection)
        self.ws = ws
        self.channels: dict[str, dict] = {}
        self.topic_of_subscription: dict[int, str] = {}
        self.messages: dict[str, list[tuple[int, bytes]]] = defaultdict(list)

    def pump(self, duration_s: float) -> None:
        deadline = time.monotonic() + duration_s
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                frame = self.ws.recv(timeout=remaining)
            except TimeoutError:
                return
            if isinstance(frame, str):
                self._on_json(json.loads(frame))
            else:
                opcode, subscription, log_time = struct.unpack_from("<BIQ", frame)
                assert opcode == MESSAGE_DATA
                self.messages[self.topic_of_subscription[subscription]].append((log_time, frame[13:]))

    def _on_json(self, message: dict) -> None:
        if message["op"] != "advertise":
            return
        new = []
        for channel in message["channels"]:
            self.channels[channel["topic"]] = channel
            subscription = len(self.topic_of_subscription) + 1
            self.topic_of_subscription[subscription] = channel["topic"]
            new.append({"id": subscription, "channelId": channel["id"]})
        self.ws.send(json.dumps({"op": "subscribe", "subscriptions": new}))

    def decode(self, topic: str, payload: bytes):  # -> a protobuf message
        """A payload of ``topic`` as the message of the schema its channel advertised."""
        channel = self.channels[topic]
        assert channel["encoding"] == "protobuf" and channel["schemaEncoding"] == "protobuf"
        pool = descriptor_pool.DescriptorPool()
        for file in descriptor_pb2.FileDescriptorSet.FromString(base64.b64decode(channel["schema"])).file:
            pool.Add(file)
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(channel["schemaName"])).FromString(payload)


@contextmanager
def foxglove_client(url: str, wait_s: float = 0.0) -> Iterator[FoxgloveClient]:
    """Connected to ``url``; retried for ``wait_s`` while nothing listens there yet."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            ws = connect(url, subprotocols=[SUBPROTOCOL], max_size=None, open_timeout=5)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with ws:
        yield FoxgloveClient(ws)


def pump_until(client: FoxgloveClient, wanted: set[str], feed, timeout_s: float = 5.0) -> None:
    """Feed frames until every wanted topic has a message (subscribing takes a moment)."""
    deadline = time.monotonic() + timeout_s
    while not wanted <= set(client.messages):
        assert time.monotonic() < deadline, f"no message on {sorted(wanted - set(client.messages))}"
        feed()
        client.pump(0.03)


def test_sensor_mounts_put_the_optical_frame_forward_and_the_lidar_on_the_roof():
    mounts = {m.frame_id: m for m in sensor_mounts(load_suite("full"))}
    front = mounts["front_optical"]
    np.testing.assert_allclose(front.rotation @ [0, 0, 1], [1, 0, 0], atol=1e-12)  # optical z: forward
    np.testing.assert_allclose(front.rotation @ [1, 0, 0], [0, -1, 0], atol=1e-12)  # optical x: right
    np.testing.assert_allclose(quaternion_xyzw(front.rotation), (-0.5, 0.5, -0.5, 0.5), atol=1e-12)
    assert mounts["lidar"].translation_m[2] > 1.0


@pytest.mark.parametrize("yaw, pitch", [(0.3, 0.0), (3.1, -0.4), (-2.0, 1.2)])
def test_quaternion_of_a_rotation_turns_vectors_the_same_way(yaw, pitch):
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    rotation = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]]) @ np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    x, y, z, w = quaternion_xyzw(rotation)
    v = np.array([0.2, -1.0, 0.7])
    u = np.array([x, y, z])
    turned = v + 2 * w * np.cross(u, v) + 2 * np.cross(u, np.cross(u, v))  # q v q*
    np.testing.assert_allclose(turned, rotation @ v, atol=1e-12)
    assert w >= 0


def test_view_advertises_and_sends_camera_cloud_poses_and_route():
    rgb = np.arange(8 * 12 * 3, dtype=np.uint8).reshape(8, 12, 3)
    points = np.array([[1.0, 2.0, 0.5, 0.9, 7], [4.0, -1.0, 0.2, 0.3, 10]], np.float32)
    stamps = iter(range(1_000_000_000, 10**12, 50_000_000))
    with FoxgloveView(port=0, cameras=["front"], trajectory_max_poses=50) as view:
        assert view.port > 0 and view.url == f"ws://127.0.0.1:{view.port}"
        view.set_mounts(sensor_mounts(load_suite("full")))
        with foxglove_client(view.url) as client:
            def feed() -> None:
                stamp = next(stamps)
                view.camera("front", rgb, np.array([[10.0, 0, 6], [0, 10, 4], [0, 0, 1]]), stamp)
                view.lidar(points, stamp)
                view.ego_pose(stamp * 1e-9, 0.0, 0.1, stamp)

            pump_until(client, set(SCHEMAS) - {"/drivestack/route"}, feed)
            view.route([(0.0, 0.0), (10.0, 0.0), (20.0, 5.0)])
            pump_until(client, {"/drivestack/route"}, lambda: None)
        for _ in range(60):
            view.ego_pose(0.0, 0.0, 0.0, next(stamps))
        assert view.trajectory_length == 50  # bounded
    for topic, schema in SCHEMAS.items():
        assert client.channels[topic]["schemaName"] == schema
        assert client.channels[topic]["encoding"] == "protobuf"
    log_time, payload = client.messages["/camera/front/image"][-1]
    assert log_time % 50_000_000 == 0 and rgb.tobytes() in payload  # stamped with the frame's time
    packed = b"".join(struct.pack("<4fI", *p[:4], int(p[4])) for p in points)
    assert packed in client.messages["/lidar"][-1][1]
    assert b"front_optical" in client.messages["/tf"][-1][1] and b"base_link" in client.messages["/tf"][-1][1]


OBSTACLES = (Obstacle(0, 6.0, -1.5, 0.8, 0.3, 4.2, 1.8, 1.6, 120),
             Obstacle(1, 12.0, 3.0, 0.9, -0.2, 0.6, 0.6, 1.8, 40))


class _NotToBeRead:
    """Input a view must not even look at while nobody subscribes."""

    def __iter__(self):
        raise AssertionError("encoded with no subscriber")

    @property
    def shape(self):
        raise AssertionError("encoded with no subscriber")


def assert_cubes_are(scene, obstacles) -> None:
    (entity,) = scene.entities
    assert entity.frame_id == "base_link" and entity.id == "obstacles"
    assert len(entity.cubes) == len(obstacles)
    for cube, o in zip(entity.cubes, obstacles):
        position, size, orientation = cube.pose.position, cube.size, cube.pose.orientation
        assert (position.x, position.y, position.z) == pytest.approx((o.x_m, o.y_m, o.z_m))
        assert (size.x, size.y, size.z) == pytest.approx((o.length_m, o.width_m, o.height_m))
        assert 2 * math.atan2(orientation.z, orientation.w) == pytest.approx(o.yaw_rad)


def test_view_sends_the_perception_overlay_and_the_obstacle_cubes():
    overlay = np.full((8, 12, 3), (10, 200, 30), np.uint8)
    stamps = iter(range(2_000_000_000, 10**12, 50_000_000))
    with FoxgloveView(port=0, perception_cameras=["front"], obstacles=True) as view:
        view.perception_image("front", _NotToBeRead(), 0)  # nobody watches yet: not encoded
        view.obstacles(_NotToBeRead(), 0)
        with foxglove_client(view.url) as client:
            def feed() -> None:
                stamp = next(stamps)
                view.perception_image("front", overlay, stamp)
                view.obstacles(OBSTACLES, stamp)

            pump_until(client, {"/camera/front/perception", "/drivestack/obstacles"}, feed)
            view.obstacles([], next(stamps))  # an empty scan clears the cubes
            count = len(client.messages["/drivestack/obstacles"])
            while len(client.messages["/drivestack/obstacles"]) == count:
                client.pump(0.05)
    assert client.channels["/camera/front/perception"]["schemaName"] == "foxglove.RawImage"
    assert client.channels["/drivestack/obstacles"]["schemaName"] == "foxglove.SceneUpdate"
    log_time, payload = client.messages["/camera/front/perception"][-1]
    image = client.decode("/camera/front/perception", payload)
    assert (image.width, image.height, image.encoding, image.frame_id) == (12, 8, "rgb8", "front_optical")
    assert image.data == overlay.tobytes()
    assert (image.timestamp.seconds * 10**9 + image.timestamp.nanos) == log_time
    *_, (cubes_time, cubes), (_, cleared) = client.messages["/drivestack/obstacles"]
    assert cubes_time == log_time
    assert_cubes_are(client.decode("/drivestack/obstacles", cubes), OBSTACLES)
    assert_cubes_are(client.decode("/drivestack/obstacles", cleared), ())


def test_a_client_that_comes_later_gets_the_route_with_the_next_pose():
    with FoxgloveView(port=0) as view:
        view.route(np.array([[0.0, 0.0], [5.0, 5.0]]))
        with foxglove_client(view.url) as client:
            stamps = iter(range(0, 10**12, 50_000_000))
            pump_until(client, {"/drivestack/route"}, lambda: view.ego_pose(1.0, 2.0, 0.0, next(stamps)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_node_serves_a_published_camera_image_overlay_and_obstacles():
    port = _free_port()
    node_proc = subprocess.Popen(
        [sys.executable, "-m", "ros_nodes.foxglove_node", "--ros-args", "-p", f"port:={port}",
         "-p", "sensors:=full"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=Path(__file__).parents[1])
    context = rclpy.Context()
    rclpy.init(context=context)  # own context: other tests may use rclpy's default one
    node = rclpy.create_node(f"foxglove_test_publisher_{os.getpid()}", context=context)
    image_topic, overlay_topic = topics.camera_image_topic("front", "rgb"), topics.overlay_topic("front")
    pubs = Publishers(node, [Topic(image_topic, "sensor_msgs/msg/Image", Qos.SENSOR, None),
                             Topic(overlay_topic, "sensor_msgs/msg/Image", Qos.SENSOR, None), topics.OBSTACLES_TOPIC])
    rgb = np.full((4, 6, 3), (200, 30, 90), np.uint8)
    overlay = np.full((4, 6, 3), (20, 240, 60), np.uint8)
    stamp = 0

    def publish() -> None:
        nonlocal stamp
        stamp += 50_000_000
        pubs.publish(image_topic, image_msg(rgb, "rgb8", stamp, "front_optical"))
        pubs.publish(overlay_topic, image_msg(overlay, "rgb8", stamp, "front_optical"))
        pubs.publish(topics.OBSTACLES, obstacles_msg(OBSTACLES, stamp))

    wanted = {"/camera/front/image", "/camera/front/perception", "/drivestack/obstacles"}
    try:
        with foxglove_client(f"ws://127.0.0.1:{port}", wait_s=15.0) as client:
            pump_until(client, wanted, publish, timeout_s=15.0)
        for topic in wanted:
            log_time, _ = client.messages[topic][-1]
            assert 0 < log_time <= stamp, topic
        assert rgb.tobytes() in client.messages["/camera/front/image"][-1][1]
        assert client.decode("/camera/front/perception",
                             client.messages["/camera/front/perception"][-1][1]).data == overlay.tobytes()
        assert_cubes_are(client.decode("/drivestack/obstacles", client.messages["/drivestack/obstacles"][-1][1]),
                         OBSTACLES)
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
        node_proc.terminate()
        try:
            output = node_proc.communicate(timeout=10)[0]
        except subprocess.TimeoutExpired:  # keep what it said: the failure below shows it
            node_proc.kill()
            output = "did not exit within 10 s of SIGTERM:\n" + node_proc.communicate()[0]
        print(output)  # pytest shows it when the test fails
    assert node_proc.returncode == 0, output
    assert f"ws://127.0.0.1:{port}" in output
