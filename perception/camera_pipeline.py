"""Camera perception: one RGB image in, detections, a semantic mask and lanes out.

The multi-task net sees the image at its training size; results are returned in the
pixels of the image that came in. Lane polylines are also placed on the ground in
``base_link`` (flat-ground assumption: each pixel's ray meets z = 0), which is what
the planner needs. No ROS here: the perception node and offline tools share it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from drivestack.frames import CameraMount, image_to_ground
from drivestack.schema import LaneBoundary, ObjectDetection
from models.labels import DETECTION_CLASSES, TRAIN_TO_SEMANTIC
from models.perception_decode import decode_detections, decode_lanes, decode_segmentation
from models.perception_net import build_multitask, normalize
from models.weights import WEIGHTS_DIR, load_weights

DEFAULT_WEIGHTS = WEIGHTS_DIR / "perception_multitask.pt"
DEFAULT_INPUT_SIZE = (320, 160)  # (W, H) the shipped net was trained at
@dataclass(frozen=True, eq=False)
class CameraPerceptionResult:
    stamp_ns: int
    camera: str
    detections: tuple[ObjectDetection, ...]
    semantic: np.ndarray  # (H, W) uint8 schema class ids, at the input image's size
    lanes: tuple[LaneBoundary, ...]  # points_m on the ground in base_link, image_px[camera] in pixels
    latency_ms: float


class CameraPerception:
    """Runs a multi-task net on one camera's images."""

    def __init__(self, model: nn.Module, *, camera: str = "front", intrinsics: np.ndarray | None = None,
                 mount: CameraMount = CameraMount(), input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
                 device: str | torch.device = "cpu", score_threshold: float = 0.3) -> None:
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.camera, self.intrinsics, self.mount = camera, intrinsics, mount
        self.input_size, self.score_threshold = input_size, score_threshold

    @classmethod
    def from_weights(cls, path: str | Path = DEFAULT_WEIGHTS, **kwargs) -> CameraPerception:
        config, state, _ = load_weights(path, "perception")
        model = build_multitask(config)
        model.load_state_dict(state)
        return cls(model, **kwargs)

    @torch.no_grad()
    def __call__(self, image: np.ndarray, stamp_ns: int = 0) -> CameraPerceptionResult:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"camera {self.camera}: expected an (H, W, 3) uint8 RGB image, got {image.shape} "
                             f"{image.dtype}")
        started = time.perf_counter()
        height, width = image.shape[:2]
        net_w, net_h = self.input_size
        resized = image if (width, height) == (net_w, net_h) else cv2.resize(image, (net_w, net_h),
                                                                             interpolation=cv2.INTER_AREA)
        outputs = self.model(normalize(resized).unsqueeze(0).to(self.device))
        (boxes, scores, classes), = decode_detections(outputs, self.score_threshold)
        scale = np.array([width / net_w, height / net_h] * 2, np.float32)
        detections = tuple(ObjectDetection(self.camera, DETECTION_CLASSES[c], float(s), *(b * scale).tolist())
                           for b, s, c in zip(boxes, scores, classes))
        semantic = TRAIN_TO_SEMANTIC[decode_segmentation(outputs)[0]]
        if semantic.shape != (height, width):
            semantic = cv2.resize(semantic, (width, height), interpolation=cv2.INTER_NEAREST)
        lanes = []
        for position, polyline in decode_lanes(outputs, (height, width))[0].items():
            ground = image_to_ground(polyline, self.intrinsics, self.mount) if self.intrinsics is not None else \
                np.zeros((0, 3))
            lanes.append(LaneBoundary(position, "", ground[~np.isnan(ground[:, 0])], {self.camera: polyline}))
        return CameraPerceptionResult(stamp_ns, self.camera, detections, semantic, tuple(lanes),
                                      (time.perf_counter() - started) * 1e3)
