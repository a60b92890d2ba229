"""The camera pipeline: ground projection of lane pixels, resizing, bad images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drivestack.schema import SEMANTIC_CLASSES
from models.perception_net import build_multitask
from drivestack.frames import CameraMount, image_to_ground
from perception.camera_pipeline import CameraPerception
from perception.overlay import draw_overlay
from sim.sensors.camera_model import CameraConfig


@pytest.mark.parametrize("pitch_rad, yaw_rad", [(0.0, 0.0), (0.08, 0.0), (0.05, 0.3)])
def test_ground_points_project_back_to_their_pixels(pitch_rad, yaw_rad):
    camera = CameraConfig(x_m=1.5, y_m=0.2, z_m=1.6, pitch_rad=pitch_rad, yaw_rad=yaw_rad)
    mount = CameraMount(camera.x_m, camera.y_m, camera.z_m, camera.roll_rad, camera.pitch_rad, camera.yaw_rad)
    ground = np.array([[8.0, 1.75, 0.0], [15.0, -1.75, 0.0], [30.0, 3.5, 0.0], [6.0, 0.0, 0.0]])
    uv, depth = camera.project(ground)
    assert (depth > 0).all()
    back = image_to_ground(uv, camera.intrinsics, mount)
    assert back == pytest.approx(ground, abs=1e-6)
    sky = image_to_ground(np.array([[160.0, 10.0]]), camera.intrinsics, mount)  # above the horizon
    assert np.isnan(sky).all()


@pytest.fixture(scope="module")
def pipeline():
    torch.manual_seed(0)
    return CameraPerception(build_multitask(), intrinsics=CameraConfig().intrinsics, score_threshold=0.0)


def test_results_come_back_in_the_input_images_pixels(pipeline):
    image = np.random.default_rng(0).integers(0, 255, (240, 480, 3), np.uint8)  # 1.5x the net's input
    result = pipeline(image, stamp_ns=42)
    assert result.stamp_ns == 42 and result.semantic.shape == (240, 480)
    assert result.detections and all(0 <= d.u_max_px <= 480 and 0 <= d.v_max_px <= 240 for d in result.detections)
    assert set(np.unique(result.semantic).tolist()) <= {c.class_id for c in SEMANTIC_CLASSES}
    overlay = draw_overlay(image, result)
    assert overlay.shape == image.shape and overlay.dtype == np.uint8


def test_a_bad_image_is_a_clear_error(pipeline):
    with pytest.raises(ValueError, match=r"expected an \(H, W, 3\) uint8 RGB image"):
        pipeline(np.zeros((160, 320), np.float32))
