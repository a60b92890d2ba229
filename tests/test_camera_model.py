"""Pinhole camera model: intrinsics, mounting and projection, and bad parameters."""

import math

import numpy as np
import pytest

from sim.sensors.camera_model import CameraConfig


def test_intrinsics_follow_the_horizontal_fov():
    cam = CameraConfig(width_px=320, height_px=160, fov_deg=90.0)
    k = cam.intrinsics
    assert k[0, 0] == pytest.approx(160.0) and k[1, 1] == k[0, 0]
    assert (k[0, 2], k[1, 2]) == (160.0, 80.0)
    assert cam.vertical_fov_deg == pytest.approx(2 * math.degrees(math.atan(0.5)))
    info = cam.camera_info("ego_vehicle/rgb_front_optical")
    assert info["k"] == k.ravel().tolist() and info["p"][3] == 0.0 and info["distortion_model"] == "plumb_bob"


def test_projection_of_axis_edges_and_sides():
    cam = CameraConfig(width_px=320, height_px=160, fov_deg=90.0, x_m=1.5, z_m=1.6)
    points = np.array([
        [11.5, 0.0, 1.6],    # straight ahead: image centre
        [11.5, 10.0, 1.6],   # 45 deg to the left: left image border
        [11.5, 0.0, 2.6],    # above the axis: upper half (v smaller)
        [-5.0, 0.0, 1.6],    # behind
    ])
    uv, depth = cam.project(points)
    assert uv[0] == pytest.approx((160.0, 80.0)) and depth[0] == pytest.approx(10.0)
    assert uv[1] == pytest.approx((0.0, 80.0))
    assert uv[2][1] < 80.0
    assert depth[3] < 0


def test_mount_yaw_and_pitch():
    left = CameraConfig(yaw_rad=math.pi / 2, x_m=0.0, z_m=1.0)
    uv, depth = left.project(np.array([[0.0, 10.0, 1.0]]))  # a point to the car's left
    assert uv[0] == pytest.approx((160.0, 80.0)) and depth[0] == pytest.approx(10.0)
    down = CameraConfig(pitch_rad=math.radians(10.0), x_m=0.0, z_m=1.0)
    ground_ahead = np.array([[1.0 / math.tan(math.radians(10.0)), 0.0, 0.0]])
    uv, _ = down.project(ground_ahead)
    assert uv[0] == pytest.approx((160.0, 80.0))


@pytest.mark.parametrize("kwargs, message", [
    ({"width_px": 0}, "width_px=0"),
    ({"height_px": 5000}, "height_px=5000"),
    ({"fov_deg": 0.0}, r"fov_deg=0.0 must be in \(0, 180\)"),
    ({"fov_deg": 180.0}, "fov_deg=180.0"),
    ({"fov_deg": float("nan")}, "fov_deg=nan"),
    ({"z_m": float("inf")}, "z_m=inf"),
    ({"kinds": ("rgb", "thermal")}, "kinds"),
])
def test_bad_camera_parameters_get_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CameraConfig(**kwargs)
