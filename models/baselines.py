"""torchvision single-task baselines to measure ``MultiTaskNet`` against, built without weights.

- Detection: SSDlite320 (MobileNetV3-Large). Faster R-CNN's mobilenet_v3_large_320_fpn
  took ~225 ms per frame on 2 CPU cores, far outside the real-time budget.
- Segmentation: LR-ASPP (MobileNetV3-Large).

Both take images normalised by ``perception_net.normalize`` and give results in the shapes
of ``perception_decode``.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.models.detection import ssdlite320_mobilenet_v3_large
from torchvision.models.detection.ssd import SSD
from torchvision.models.segmentation import LRASPP, lraspp_mobilenet_v3_large

from models.labels import DETECTION_CLASSES, SEGMENTATION_CLASSES, PerceptionFrame
from models.perception_decode import Detections


def build_detection_baseline() -> SSD:
    """SSDlite320 for ``DETECTION_CLASSES`` (+ background as label 0), random weights."""
    model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
                                          num_classes=len(DETECTION_CLASSES) + 1)
    # The inputs arrive normalised already; torchvision's transform would normalise again.
    # (Its builder passes extra kwargs to the backbone too, so they are set afterwards.)
    model.transform.image_mean = [0.0, 0.0, 0.0]
    model.transform.image_std = [1.0, 1.0, 1.0]
    return model


def build_segmentation_baseline() -> LRASPP:
    """LR-ASPP for ``SEGMENTATION_CLASSES``, random weights; ``model(x)["out"]`` is (B, 15, H, W)."""
    return lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=len(SEGMENTATION_CLASSES))


def detection_baseline_targets(frame: PerceptionFrame) -> dict[str, torch.Tensor]:
    """torchvision's detection target: ``boxes`` (N, 4) float32 px, ``labels`` (N,) int64 = class + 1.

    Ignored boxes are dropped (torchvision has no ignore label), and so are boxes without
    area inside the image, which torchvision rejects.
    """
    height, width = frame.shape
    boxes = np.clip(np.asarray(frame.boxes_px, np.float32).reshape(-1, 4), 0.0, [width, height, width, height])
    ignore = np.asarray(frame.box_ignore, bool) if len(frame.box_ignore) else np.zeros(len(boxes), bool)
    keep = ~ignore & np.all(boxes[:, 2:] > boxes[:, :2], axis=1)
    return {"boxes": torch.from_numpy(boxes[keep].astype(np.float32)),
            "labels": torch.from_numpy(np.asarray(frame.box_classes, np.int64)[keep] + 1)}


@torch.no_grad()
def run_detection_baseline(model: SSD, images: torch.Tensor, score_threshold: float = 0.3,
                           max_detections: int = 100) -> list[Detections]:
    """Per image (boxes (N, 4) px, scores (N,), classes (N,) into ``DETECTION_CLASSES``), best first."""
    if model.training:
        raise ValueError("run_detection_baseline needs model.eval(): in training mode SSD wants targets")
    results = []
    for prediction in model(list(images)):
        keep = prediction["scores"] >= score_threshold
        order = prediction["scores"][keep].argsort(descending=True)[:max_detections]
        results.append((prediction["boxes"][keep][order].cpu().numpy().astype(np.float32),
                        prediction["scores"][keep][order].cpu().numpy().astype(np.float32),
                        (prediction["labels"][keep][order] - 1).cpu().numpy().astype(np.int64)))
    return results


@torch.no_grad()
def run_segmentation_baseline(model: LRASPP, images: torch.Tensor) -> np.ndarray:
    """(B, H, W) uint8 training indices."""
    return model(images)["out"].max(dim=1).indices.to(torch.uint8).cpu().numpy()
