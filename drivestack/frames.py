"""Mounted sensors, REP 103 (numpy only, shared by the simulator's camera model, the
perception pipeline and the planner): rotations, camera mounts, pixel <-> ground."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def rotation_rpy(roll_rad: float, pitch_rad: float, yaw_rad: float) -> np.ndarray:
    """Rz(yaw) Ry(pitch) Rx(roll): a mounted sensor's body axes expressed in its parent's."""
    cr, sr = math.cos(roll_rad), math.sin(roll_rad)
    cp, sp = math.cos(pitch_rad), math.sin(pitch_rad)
    cy, sy = math.cos(yaw_rad), math.sin(yaw_rad)
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    return rz @ ry @ rx


# base_link axes expressed in the optical frame (x_opt = -y, y_opt = -z, z_opt = x).
_OPTICAL_TO_BODY = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
MAX_GROUND_RANGE_M = 80.0  # farther ground points are too sensitive to pitch to be useful


@dataclass(frozen=True)
class CameraMount:
    """The camera's pose on the car, in base_link (REP 103), as the sensor config gives it."""

    x_m: float = 1.5
    y_m: float = 0.0
    z_m: float = 1.6
    roll_rad: float = 0.0
    pitch_rad: float = 0.0  # + = nose down
    yaw_rad: float = 0.0

    def rotation(self) -> np.ndarray:
        """Camera body (REP 103) -> base_link."""
        return rotation_rpy(self.roll_rad, self.pitch_rad, self.yaw_rad)


def image_to_ground(uv_px: np.ndarray, intrinsics: np.ndarray, mount: CameraMount) -> np.ndarray:
    """(N, 2) pixels -> (N, 3) points where their rays meet the ground (z = 0) in
    base_link; NaN rows for rays that point at or above the horizon."""
    uv = np.asarray(uv_px, np.float64).reshape(-1, 2)
    rays_optical = np.linalg.solve(intrinsics, np.column_stack([uv, np.ones(len(uv))]).T).T
    rays = rays_optical @ (mount.rotation() @ _OPTICAL_TO_BODY).T
    origin = np.array([mount.x_m, mount.y_m, mount.z_m])
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -origin[2] / rays[:, 2]
    points = origin + t[:, None] * rays
    points[~(t > 0) | (np.linalg.norm(points[:, :2] - origin[:2], axis=1) > MAX_GROUND_RANGE_M)] = np.nan
    points[:, 2] = np.where(np.isnan(points[:, 0]), np.nan, 0.0)
    return points


def body_to_image(points_m: np.ndarray, intrinsics: np.ndarray, mount: CameraMount) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) base_link points -> ((N, 2) pixels, (N,) depth along the optical axis);
    a point behind the camera has depth <= 0 and meaningless pixels."""
    p = np.asarray(points_m, np.float64).reshape(-1, 3) - np.array([mount.x_m, mount.y_m, mount.z_m])
    optical = p @ (mount.rotation() @ _OPTICAL_TO_BODY)
    depth = optical[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uvw = optical @ np.asarray(intrinsics, np.float64).T
        uv = uvw[:, :2] / uvw[:, 2:3]
    return uv, depth
