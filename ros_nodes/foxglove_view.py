"""Live view: camera, LiDAR, ego pose, trajectory and route on a local Foxglove
WebSocket server (the `foxglove-sdk` package), from plain arrays (no ROS here).

Channels (Foxglove's well-known schemas, protobuf):

- ``/camera/<name>/image`` RawImage rgb8 and ``/camera/<name>/calibration`` CameraCalibration
- ``/lidar`` PointCloud (x, y, z, intensity float32, tag uint32) in the LiDAR's frame
- ``/tf`` FrameTransforms: ``map -> base_link`` and ``base_link -> <sensor>`` mounts,
  every pose, so the 3D panel follows the car and places the sensors
- ``/drivestack/trajectory`` and ``/drivestack/route`` SceneUpdate line strips in ``map``
- ``/camera/<name>/perception`` RawImage rgb8: the perception node's overlay of that camera
- ``/drivestack/obstacles`` SceneUpdate cubes: the LiDAR obstacles, upright boxes in ``base_link``

Every message is stamped and logged with the simulation time (``log_time``), so the
app's clock and the transforms' stamps are one clock. The SDK sends from its own
threads; a channel nobody subscribes to is not even encoded, so an idle view costs
the driving loop nothing. The server speaks the ``foxglove.sdk.v1`` subprotocol.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import foxglove
import numpy as np
from foxglove.channels import (CameraCalibrationChannel, FrameTransformsChannel, PointCloudChannel,
                               RawImageChannel, SceneUpdateChannel)
from foxglove.messages import (CameraCalibration, Color, CubePrimitive, FrameTransform, FrameTransforms,
                               LinePrimitive, PackedElementField, PackedElementFieldNumericType, Point3, PointCloud,
                               Pose, Quaternion, RawImage, SceneEntity, SceneUpdate, Timestamp, Vector3)
from foxglove.websocket import ServerListener

if TYPE_CHECKING:
    from drivestack.schema import Obstacle
    from sim.sensors.suite import SensorSuite

DEFAULT_HOST = "127.0.0.1"  # loopback: the view is for this machine unless asked otherwise
DEFAULT_PORT = 8765  # Foxglove's default WebSocket port
MAP_FRAME, BASE_FRAME = "map", "base_link"
LIDAR_FRAME = "lidar"  # the frame of the bridge's clouds (drivestack.schema.LidarScan)
TRAJECTORY_MAX_POSES = 2000  # 100 s at 20 Hz: bounds memory and the size of each update
TRAJECTORY_EVERY = 5  # send the trajectory every 5th pose: 2,000 points at 20 Hz would be ~1 MB/s

_CLOUD_FIELDS = [PackedElementField(name=name, offset=4 * i, type=PackedElementFieldNumericType.Float32)
                 for i, name in enumerate(("x", "y", "z", "intensity"))]
_CLOUD_FIELDS.append(PackedElementField(name="tag", offset=16, type=PackedElementFieldNumericType.Uint32))
_CLOUD_POINT = np.dtype({"names": ["xyzi", "tag"], "formats": [(np.float32, 4), np.uint32], "offsets": [0, 16],
                         "itemsize": 20})
_TRAJECTORY_COLOR = Color(r=0.1, g=0.6, b=1.0, a=1.0)
_ROUTE_COLOR = Color(r=0.2, g=0.9, b=0.3, a=0.6)
_OBSTACLE_COLOR = Color(r=1.0, g=0.45, b=0.1, a=0.5)
OBSTACLES_CHANNEL = "/drivestack/obstacles"


def perception_channel(camera: str) -> str:
    """The channel of a camera's perception overlay, beside its raw image."""
    return f"/camera/{camera}/perception"


@dataclass(frozen=True)
class SensorMount:
    """A sensor frame's pose in ``base_link``: where the 3D panel draws its data."""

    frame_id: str
    translation_m: tuple[float, float, float]
    rotation: np.ndarray  # 3x3, the sensor frame's axes in base_link (columns)


def sensor_mounts(suite: SensorSuite) -> tuple[SensorMount, ...]:
    """The LiDAR and every camera's optical frame of ``suite`` (frame names as the bridge's)."""
    mounts = []
    if suite.lidar is not None:
        lidar = suite.lidar
        c, s = math.cos(lidar.yaw_rad), math.sin(lidar.yaw_rad)
        mounts.append(SensorMount(LIDAR_FRAME, (lidar.x_m, lidar.y_m, lidar.z_m),
                                  np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])))
    for camera in suite.cameras:
        position = (camera.x_m, camera.y_m, camera.z_m)
        # Rows: the optical coordinates of position + each base_link axis, i.e. the
        # optical axes expressed in base_link as columns (the camera model's own maths).
        rotation = camera.base_link_to_optical(np.eye(3) + position)
        mounts.append(SensorMount(f"{camera.name}_optical", position, rotation))
    return tuple(mounts)


def quaternion_xyzw(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """A proper rotation matrix as a unit quaternion (Shepperd's method: stable for any angle)."""
    m = np.asarray(rotation, float)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0.0:
        s = 2.0 * math.sqrt(1.0 + trace)
        w, x, y, z = 0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        w, x, y, z = (m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        w, x, y, z = (m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        w, x, y, z = (m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s
    sign = -1.0 if w < 0.0 else 1.0  # q and -q are one rotation: print the one with w >= 0
    return sign * float(x), sign * float(y), sign * float(z), sign * float(w)


def _time(stamp_ns: int) -> Timestamp:
    sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
    return Timestamp(sec, nsec)


def _log_rgb(channel: RawImageChannel, rgb: np.ndarray, stamp_ns: int, frame_id: str) -> None:
    height, width = rgb.shape[:2]
    pixels = np.ascontiguousarray(rgb, np.uint8)
    channel.log(RawImage(timestamp=_time(stamp_ns), frame_id=frame_id, width=width, height=height, encoding="rgb8",
                         step=3 * width, data=pixels.tobytes()), log_time=stamp_ns)


class _Subscriptions(ServerListener):
    """Notes that a client subscribed: the route (sent once) and the whole trajectory
    must then be sent again."""

    def __init__(self) -> None:
        self.new_subscriber = False

    def on_subscribe(self, client, channel) -> None:  # noqa: ANN001 (SDK types)
        # Only a flag: this runs on the server's thread, and logging from here can race
        # the new subscription's registration. The next pose re-sends.
        self.new_subscriber = True


class FoxgloveView:
    """Owns a Foxglove WebSocket server and its channels; ``close()`` stops it.

    ``port=0`` takes a free port (``view.port`` says which). Raises RuntimeError when
    the server cannot bind. Name the ``cameras`` (and ``lidar``) up front: a channel
    made while a client is connected can be refused to it (foxglove-sdk 0.30 answers
    its subscribe with "unknown channel" when the two cross). The same holds for the
    perception outputs: ``perception_cameras`` (the overlays) and ``obstacles``.
    """

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, cameras: Iterable[str] = (),
                 lidar: bool = True, name: str = "drivestack", trajectory_max_poses: int = TRAJECTORY_MAX_POSES,
                 trajectory_every: int = TRAJECTORY_EVERY, perception_cameras: Iterable[str] = (),
                 obstacles: bool = False) -> None:
        # An own context, not the SDK's global one: two views (tests) never share channels.
        self._context = foxglove.Context()
        self._cameras: dict[str, tuple[RawImageChannel, CameraCalibrationChannel]] = {}
        for camera in cameras:
            self._camera_channels(camera)
        self._lidar = PointCloudChannel("/lidar", context=self._context) if lidar else None
        self._tf = FrameTransformsChannel("/tf", context=self._context)
        self._trajectory_channel = SceneUpdateChannel("/drivestack/trajectory", context=self._context)
        self._route_channel = SceneUpdateChannel("/drivestack/route", context=self._context)
        self._overlays: dict[str, RawImageChannel] = {}
        for camera in perception_cameras:
            self._overlay_channel(camera)
        self._obstacles = SceneUpdateChannel(OBSTACLES_CHANNEL, context=self._context) if obstacles else None
        self._listener = _Subscriptions()
        self._server = foxglove.start_server(name=name, host=host, port=port, context=self._context,
                                             server_listener=self._listener)
        self.host = host
        self._trajectory: deque[Point3] = deque(maxlen=trajectory_max_poses)
        self._trajectory_every = max(1, int(trajectory_every))
        self._poses = 0
        self._mounts: tuple[tuple[str, Vector3, Quaternion], ...] = ()
        self._route: SceneUpdate | None = None
        self._last_stamp_ns = 0
        self.closed = False

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def trajectory_length(self) -> int:
        """Poses kept for the trajectory (at most ``trajectory_max_poses``)."""
        return len(self._trajectory)

    def camera(self, name: str, rgb: np.ndarray, intrinsics: np.ndarray | None, stamp_ns: int,
               frame_id: str | None = None) -> None:
        """An (H, W, 3) uint8 RGB image; with its 3x3 K, the calibration too."""
        image_channel, calibration_channel = self._camera_channels(name)
        frame_id = frame_id or f"{name}_optical"
        height, width = rgb.shape[:2]
        stamp = _time(stamp_ns)
        if image_channel.has_sinks():
            _log_rgb(image_channel, rgb, stamp_ns, frame_id)
        if intrinsics is not None and calibration_channel.has_sinks():
            k = np.asarray(intrinsics, float).reshape(3, 3)
            projection = np.hstack([k, np.zeros((3, 1))])
            calibration_channel.log(CameraCalibration(
                timestamp=stamp, frame_id=frame_id, width=width, height=height, distortion_model="plumb_bob",
                D=[0.0] * 5, K=k.reshape(-1).tolist(), R=np.eye(3).reshape(-1).tolist(),
                P=projection.reshape(-1).tolist()), log_time=stamp_ns)

    def perception_image(self, camera: str, rgb: np.ndarray, stamp_ns: int, frame_id: str | None = None) -> None:
        """An (H, W, 3) uint8 RGB image with the camera's predictions drawn on it."""
        channel = self._overlay_channel(camera)
        if channel.has_sinks():
            _log_rgb(channel, rgb, stamp_ns, frame_id or f"{camera}_optical")

    def obstacles(self, obstacles: Iterable[Obstacle], stamp_ns: int, frame_id: str = BASE_FRAME) -> None:
        """LiDAR obstacles (upright boxes in ``frame_id``) as one entity of cubes; each
        update replaces the last, so an empty one clears them."""
        if self._obstacles is None:
            self._obstacles = SceneUpdateChannel(OBSTACLES_CHANNEL, context=self._context)
        if not self._obstacles.has_sinks():
            return
        cubes = [CubePrimitive(
            pose=Pose(position=Vector3(x=float(o.x_m), y=float(o.y_m), z=float(o.z_m)),
                      orientation=Quaternion(z=math.sin(o.yaw_rad / 2.0), w=math.cos(o.yaw_rad / 2.0))),
            size=Vector3(x=float(o.length_m), y=float(o.width_m), z=float(o.height_m)), color=_OBSTACLE_COLOR)
            for o in obstacles]
        self._obstacles.log(SceneUpdate(entities=[SceneEntity(timestamp=_time(stamp_ns), frame_id=frame_id,
                                                              id="obstacles", cubes=cubes)]), log_time=stamp_ns)

    def lidar(self, points: np.ndarray, stamp_ns: int, frame_id: str = LIDAR_FRAME) -> None:
        """(N, 5) points x, y, z, intensity, tag (the semantic class) in ``frame_id``."""
        if self._lidar is None:
            self._lidar = PointCloudChannel("/lidar", context=self._context)
        if not self._lidar.has_sinks():
            return
        packed = np.empty(len(points), _CLOUD_POINT)
        packed["xyzi"] = points[:, :4]
        packed["tag"] = points[:, 4]
        self._lidar.log(PointCloud(timestamp=_time(stamp_ns), frame_id=frame_id, point_stride=_CLOUD_POINT.itemsize,
                                   fields=_CLOUD_FIELDS, data=packed.tobytes()), log_time=stamp_ns)

    def set_mounts(self, mounts: Iterable[SensorMount]) -> None:
        """Sensor frames sent with every ego pose on ``/tf``."""
        self._mounts = tuple((m.frame_id, Vector3(x=m.translation_m[0], y=m.translation_m[1], z=m.translation_m[2]),
                              Quaternion(**dict(zip("xyzw", quaternion_xyzw(m.rotation))))) for m in mounts)

    def ego_pose(self, x_m: float, y_m: float, yaw_rad: float, stamp_ns: int, z_m: float = 0.0) -> None:
        """The ego in ``map``: ``map -> base_link`` (and the mounts) now, and the trajectory."""
        self._last_stamp_ns = stamp_ns
        self._trajectory.append(Point3(x=float(x_m), y=float(y_m), z=float(z_m)))
        self._poses += 1
        resend = self._listener.new_subscriber
        self._listener.new_subscriber = False
        if resend:
            self._log_route()
        stamp = _time(stamp_ns)
        if self._tf.has_sinks():
            ego = FrameTransform(timestamp=stamp, parent_frame_id=MAP_FRAME, child_frame_id=BASE_FRAME,
                                 translation=Vector3(x=float(x_m), y=float(y_m), z=float(z_m)),
                                 rotation=Quaternion(z=math.sin(yaw_rad / 2.0), w=math.cos(yaw_rad / 2.0)))
            mounts = [FrameTransform(timestamp=stamp, parent_frame_id=BASE_FRAME, child_frame_id=frame_id,
                                     translation=translation, rotation=rotation)
                      for frame_id, translation, rotation in self._mounts]
            self._tf.log(FrameTransforms(transforms=[ego, *mounts]), log_time=stamp_ns)
        due = resend or (self._poses - 1) % self._trajectory_every == 0  # from the first pose on
        if due and self._trajectory_channel.has_sinks():
            self._trajectory_channel.log(SceneUpdate(entities=[SceneEntity(
                timestamp=stamp, frame_id=MAP_FRAME, id="trajectory",
                lines=[LinePrimitive(thickness=0.3, points=list(self._trajectory), color=_TRAJECTORY_COLOR)])]),
                log_time=stamp_ns)

    def route(self, waypoints_xy: Sequence[Sequence[float]] | np.ndarray, stamp_ns: int | None = None) -> None:
        """The planned route, (N, 2) x, y in ``map``; kept and sent again to late clients."""
        points = [Point3(x=float(x), y=float(y), z=0.05) for x, y in np.asarray(waypoints_xy, float)[:, :2]]
        self._route = SceneUpdate(entities=[SceneEntity(
            timestamp=_time(stamp_ns if stamp_ns is not None else self._last_stamp_ns), frame_id=MAP_FRAME,
            id="route", lines=[LinePrimitive(thickness=0.6, points=points, color=_ROUTE_COLOR)])])
        self._log_route()

    def _log_route(self) -> None:
        if self._route is not None:
            self._route_channel.log(self._route, log_time=self._last_stamp_ns)

    def _camera_channels(self, name: str) -> tuple[RawImageChannel, CameraCalibrationChannel]:
        if name not in self._cameras:
            self._cameras[name] = (RawImageChannel(f"/camera/{name}/image", context=self._context),
                                   CameraCalibrationChannel(f"/camera/{name}/calibration", context=self._context))
        return self._cameras[name]

    def _overlay_channel(self, camera: str) -> RawImageChannel:
        if camera not in self._overlays:
            self._overlays[camera] = RawImageChannel(perception_channel(camera), context=self._context)
        return self._overlays[camera]

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the server; a stop that hangs (a client mid-handshake) does not keep the
        process alive past ``timeout_s``."""
        if not self.closed:
            self.closed = True
            stopper = threading.Thread(target=self._server.stop, daemon=True)
            stopper.start()
            stopper.join(timeout_s)

    def __enter__(self) -> FoxgloveView:
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        self.close()
