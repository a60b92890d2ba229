"""Pinhole camera model shared by the renderer, ground-truth labels and ROS CameraInfo.

A camera is mounted on the ego with a pose in ``base_link`` (REP 103: x forward, y
left, z up). Images use the ROS optical frame (``*_optical``: z forward, x right, y
down), so the intrinsic matrix is the one ``sensor_msgs/CameraInfo`` carries, with
CARLA's convention for the focal length: ``f = width / (2 tan(fov / 2))`` from the
horizontal field of view, square pixels, principal point at the image centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from drivestack.frames import rotation_rpy

CAMERA_KINDS = ("rgb", "depth", "semantic", "instance")
MAX_IMAGE_SIDE_PX = 4096  # the software renderer's texture limit

# base_link axes expressed in the optical frame: x_opt = -y, y_opt = -z, z_opt = x.
_BASE_TO_OPTICAL = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


@dataclass(frozen=True)
class CameraConfig:
    name: str = "front"
    width_px: int = 320
    height_px: int = 160
    fov_deg: float = 90.0  # horizontal
    x_m: float = 1.5  # mount position relative to the box centre on the ground
    y_m: float = 0.0
    z_m: float = 1.6
    roll_rad: float = 0.0
    pitch_rad: float = 0.0  # + = nose down (REP 103 rotation about y)
    yaw_rad: float = 0.0
    kinds: tuple[str, ...] = ("rgb", "depth", "semantic", "instance")

    def __post_init__(self) -> None:
        for name in ("width_px", "height_px"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_IMAGE_SIDE_PX:
                raise ValueError(f"camera {self.name}: {name}={value!r} must be a whole number in 1..{MAX_IMAGE_SIDE_PX}")
        if not (math.isfinite(self.fov_deg) and 0.0 < self.fov_deg < 180.0):
            raise ValueError(f"camera {self.name}: fov_deg={self.fov_deg} must be in (0, 180)")
        for name in ("x_m", "y_m", "z_m", "roll_rad", "pitch_rad", "yaw_rad"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"camera {self.name}: {name}={getattr(self, name)} must be finite")
        unknown = sorted(set(self.kinds) - set(CAMERA_KINDS))
        if unknown or not self.kinds:
            raise ValueError(f"camera {self.name}: kinds {list(self.kinds)} must be a non-empty subset of "
                             f"{', '.join(CAMERA_KINDS)}")

    @property
    def focal_px(self) -> float:
        return self.width_px / (2.0 * math.tan(math.radians(self.fov_deg) / 2.0))

    @property
    def intrinsics(self) -> np.ndarray:
        """The 3x3 camera matrix K of sensor_msgs/CameraInfo."""
        f = self.focal_px
        return np.array([[f, 0.0, self.width_px / 2.0], [0.0, f, self.height_px / 2.0], [0.0, 0.0, 1.0]])

    @property
    def vertical_fov_deg(self) -> float:
        return math.degrees(2.0 * math.atan(self.height_px / (2.0 * self.focal_px)))

    def mount_rotation(self) -> np.ndarray:
        """Rotation taking camera-body (REP 103) vectors into base_link: Rz(yaw) Ry(pitch) Rx(roll)."""
        return rotation_rpy(self.roll_rad, self.pitch_rad, self.yaw_rad)

    def base_link_to_optical(self, points_base: np.ndarray) -> np.ndarray:
        """(N, 3) points in base_link -> (N, 3) in this camera's optical frame."""
        body = (np.asarray(points_base, dtype=float) - (self.x_m, self.y_m, self.z_m)) @ self.mount_rotation()
        return body @ _BASE_TO_OPTICAL.T

    def project(self, points_base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (N, 2) (u right, v down) and depth along the optical axis (N,).

        Points behind the camera get depth <= 0 and meaningless pixels: filter on depth.
        """
        optical = self.base_link_to_optical(points_base)
        depth = optical[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = (optical[:, :2] / depth[:, None]) * self.focal_px + (self.width_px / 2.0, self.height_px / 2.0)
        return uv, depth

    def camera_info(self, frame_id: str) -> dict:
        """The fields of sensor_msgs/CameraInfo for an undistorted pinhole camera."""
        k = self.intrinsics
        p = np.hstack([k, np.zeros((3, 1))])
        return {"header_frame_id": frame_id, "width": self.width_px, "height": self.height_px,
                "distortion_model": "plumb_bob", "d": [0.0] * 5, "k": k.ravel().tolist(),
                "r": np.eye(3).ravel().tolist(), "p": p.ravel().tolist()}
