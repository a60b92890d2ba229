"""Which colour the lights on the route show, as the camera classifies them.

The HD map says where each signal stands and which stop line it controls; the camera
net detects lamps and classifies them (``traffic_light_red|yellow|green``). A signal
ahead is projected into the image from the ego pose and the camera mount, and the
detections near that point are its observations. The last seen state is remembered
for a while: near the stop line the lamp leaves the camera's view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from drivestack.frames import body_to_image
from drivestack.schema import EgoState
from planning.inputs import CameraDetections

RED, YELLOW, GREEN, UNKNOWN = "red", "yellow", "green", "unknown"
_LABEL_STATE = {"traffic_light_red": RED, "traffic_light_yellow": YELLOW, "traffic_light_green": GREEN}


@dataclass(frozen=True)
class LightObservation:
    state: str
    stamp_ns: int
    score: float


def map_to_body(points_xy: np.ndarray, ego: EgoState) -> np.ndarray:
    """(N, 2) map points -> (N, 2) base_link points."""
    c, s = math.cos(ego.yaw_rad), math.sin(ego.yaw_rad)
    d = np.asarray(points_xy, np.float64).reshape(-1, 2) - (ego.x_m, ego.y_m)
    return np.column_stack([d[:, 0] * c + d[:, 1] * s, -d[:, 0] * s + d[:, 1] * c])


class LightStateEstimator:
    def __init__(self, lamp_height_m: float, gate_px: float, memory_s: float, contradiction_score: float) -> None:
        self.lamp_height_m, self.gate_px = lamp_height_m, gate_px
        self.memory_ns = int(memory_s * 1e9)
        self.contradiction_score = contradiction_score
        self.seen: dict[int, LightObservation] = {}

    def update(self, ego: EgoState, detections: CameraDetections | None,
               lights: list[tuple[int, tuple[float, float]]]) -> list[str]:
        """Observe the signals ``(light_id, pole xy in map)`` ahead; returns faults
        (contradicting colours on one lamp)."""
        faults: list[str] = []
        if detections is None or not lights:
            return faults
        lamps = [d for d in detections.detections if d.label in _LABEL_STATE]
        if not lamps:
            return faults
        camera = detections.camera
        body = map_to_body(np.array([xy for _, xy in lights]), ego)
        points = np.column_stack([body, np.full(len(body), self.lamp_height_m)])
        uv, depth = body_to_image(points, camera.intrinsics, camera.mount)
        centres = np.array([((d.u_min_px + d.u_max_px) / 2, (d.v_min_px + d.v_max_px) / 2) for d in lamps])
        sizes = np.array([max(d.u_max_px - d.u_min_px, d.v_max_px - d.v_min_px) for d in lamps])
        for (light_id, _), p, z in zip(lights, uv, depth):
            if not z > 0.5:
                continue
            distance = np.hypot(*(centres - p).T)
            near = distance < self.gate_px + sizes
            if not near.any():
                continue
            # The lamp is the detection nearest to where the map puts it; another
            # confident colour on the same spot (overlapping boxes) is a contradiction,
            # a neighbouring signal's lamp is not.
            chosen = lamps[int(np.argmin(np.where(near, distance, np.inf)))]
            best = _LABEL_STATE[chosen.label]
            score = chosen.score
            others = {_LABEL_STATE[d.label] for d in lamps if d.score >= self.contradiction_score
                      and _LABEL_STATE[d.label] != best and _iou(d, chosen) > 0.3}
            if others and score >= self.contradiction_score:
                strong = sorted({best, *others})
                faults.append(f"contradicting light states for light {light_id}: {', '.join(strong)}")
                best = RED if RED in strong else YELLOW
            self.seen[light_id] = LightObservation(best, detections.stamp_ns, score)
        return faults

    def state(self, light_id: int, stamp_ns: int) -> str:
        seen = self.seen.get(light_id)
        if seen is None or stamp_ns - seen.stamp_ns > self.memory_ns:
            return UNKNOWN
        return seen.state


def _iou(a, b) -> float:
    w = min(a.u_max_px, b.u_max_px) - max(a.u_min_px, b.u_min_px)
    h = min(a.v_max_px, b.v_max_px) - max(a.v_min_px, b.v_min_px)
    if w <= 0 or h <= 0:
        return 0.0
    area = (a.u_max_px - a.u_min_px) * (a.v_max_px - a.v_min_px) + (b.u_max_px - b.u_min_px) * (b.v_max_px - b.v_min_px)
    return w * h / (area - w * h)
