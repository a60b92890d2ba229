"""Traffic-light states from camera detections placed by the map (planning/traffic_lights.py)."""

from __future__ import annotations

import numpy as np

from drivestack.frames import CameraMount, body_to_image
from drivestack.schema import EgoState, ObjectDetection
from planning.inputs import CameraDetections, CameraModel
from planning.traffic_lights import GREEN, RED, UNKNOWN, LightStateEstimator

CAMERA = CameraModel("front", np.array([[160.0, 0.0, 160.0], [0.0, 160.0, 80.0], [0.0, 0.0, 1.0]]), 320, 160,
                     CameraMount(1.5, 0.0, 1.6))
EGO = EgoState(0, 10.0, 5.0, np.pi / 2, 8.0)  # heading north (map +y)


def _lamp(x_body: float, y_body: float, colour: str, score: float = 0.9, stamp_ns: int = 0) -> ObjectDetection:
    corners = np.array([(x_body, y_body + dy, 3.0 + dz) for dy in (-0.17, 0.17) for dz in (-0.5, 0.5)])
    uv, _ = body_to_image(corners, CAMERA.intrinsics, CAMERA.mount)
    return ObjectDetection("front", f"traffic_light_{colour}", score, *uv.min(0), *uv.max(0))


def _seen(*lamps, stamp_ns: int = 0) -> CameraDetections:
    return CameraDetections(stamp_ns, CAMERA, tuple(lamps))


def _estimator() -> LightStateEstimator:
    return LightStateEstimator(lamp_height_m=3.0, gate_px=12.0, memory_s=8.0, contradiction_score=0.5)


# A signal 30 m ahead and 4 m to the right of the ego: in the map, north of it and east.
LIGHT = (7, (14.0, 35.0))


def test_the_lamp_nearest_to_the_map_position_gives_the_state():
    lights = _estimator()
    # Our lamp is red; the crossing road's lamp (green) stands 6 m to the left of it.
    assert lights.update(EGO, _seen(_lamp(30.0, -4.0, "red"), _lamp(30.0, 2.0, "green")), [LIGHT]) == []
    assert lights.state(7, 0) == RED


def test_state_is_remembered_when_the_lamp_leaves_the_view_then_forgotten():
    lights = _estimator()
    lights.update(EGO, _seen(_lamp(30.0, -4.0, "green")), [LIGHT])
    lights.update(EGO, _seen(stamp_ns=int(2e9)), [LIGHT])  # nothing detected
    assert lights.state(7, int(2e9)) == GREEN
    assert lights.state(7, int(9e9)) == UNKNOWN
    assert lights.state(8, 0) == UNKNOWN  # never seen


def test_two_confident_colours_on_one_lamp_are_a_contradiction_resolved_to_red():
    lights = _estimator()
    faults = lights.update(EGO, _seen(_lamp(30.0, -4.0, "green", 0.9), _lamp(30.0, -4.0, "red", 0.8)), [LIGHT])
    assert faults == ["contradicting light states for light 7: green, red"]
    assert lights.state(7, 0) == RED


def test_a_lamp_far_from_any_signal_is_ignored():
    lights = _estimator()
    lights.update(EGO, _seen(_lamp(30.0, 10.0, "red")), [LIGHT])
    assert lights.state(7, 0) == UNKNOWN
