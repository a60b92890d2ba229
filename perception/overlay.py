"""The perception overlay a person looks at: the camera image with the semantic mask
blended in, detected boxes with class and score, and lane polylines."""

from __future__ import annotations

import cv2
import numpy as np

from drivestack.schema import SEMANTIC_CLASSES
from perception.camera_pipeline import CameraPerceptionResult

_PALETTE = np.zeros((256, 3), np.uint8)
for _c in SEMANTIC_CLASSES:
    _PALETTE[_c.class_id] = _c.colour_rgb
_BOX_COLOUR = {"vehicle": (0, 160, 255), "pedestrian": (255, 60, 60), "traffic_light_red": (255, 0, 0),
               "traffic_light_yellow": (255, 220, 0), "traffic_light_green": (0, 255, 0)}
_LANE_COLOUR = {-2: (255, 255, 0), -1: (255, 255, 255), 1: (255, 255, 255), 2: (255, 255, 0)}
MASK_ALPHA = 0.35


def draw_overlay(image: np.ndarray, result: CameraPerceptionResult) -> np.ndarray:
    """An (H, W, 3) uint8 RGB picture of ``result`` over ``image``."""
    out = cv2.addWeighted(image, 1.0 - MASK_ALPHA, _PALETTE[result.semantic], MASK_ALPHA, 0.0)
    for lane in result.lanes:
        px = lane.image_px.get(result.camera)
        if px is not None and len(px) >= 2:
            cv2.polylines(out, [np.round(px).astype(np.int32)], False, _LANE_COLOUR.get(lane.position, (200, 200, 200)),
                          2, cv2.LINE_AA)
    for d in result.detections:
        colour = _BOX_COLOUR.get(d.label, (255, 255, 255))
        p0, p1 = (int(round(d.u_min_px)), int(round(d.v_min_px))), (int(round(d.u_max_px)), int(round(d.v_max_px)))
        cv2.rectangle(out, p0, p1, colour, 1, cv2.LINE_AA)
        cv2.putText(out, f"{d.label.replace('traffic_light_', 'tl ')} {d.score:.2f}", (p0[0], max(p0[1] - 2, 8)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.3, colour, 1, cv2.LINE_AA)
    return out
