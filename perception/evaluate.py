"""Evaluate a perception network on labelled frames: detection mAP@0.5, semantic mIoU,
CULane lane F1 and latency per frame.

Used by training (validation after each epoch) and by ``drivestack eval perception``
(the held-out split). The detection metric counts objects at least 10 px tall and 30 %
visible; the others are ignored (``PerceptionFrame.box_ignore``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.labels import PerceptionFrame
from models.perception_decode import decode_detections, decode_lanes, decode_segmentation
from perception.metrics import DetectionMetric, LaneF1Metric, SegmentationMetric

DETECTION_SCORE_THRESHOLD = 0.05  # low: AP integrates over the whole score range


@dataclass(frozen=True)
class FrameLabels:
    """The raw labels the metrics compare against (encoded targets lose the polylines)."""

    boxes_px: np.ndarray
    box_classes: np.ndarray
    box_ignore: np.ndarray
    semantic: np.ndarray | None
    lanes_px: dict[int, np.ndarray]
    lanes_labelled: bool = True

    @classmethod
    def of(cls, frame: PerceptionFrame) -> FrameLabels:
        return cls(frame.boxes_px, frame.box_classes, frame.box_ignore, frame.semantic, frame.lanes_px,
                   frame.lanes_labelled)


# Predictions of one batch: per image (detections, segmentation or None, lanes or None).
Predictor = Callable[[torch.Tensor], list[tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray | None,
                                                dict[int, np.ndarray] | None]]]


def multitask_predictor(model: nn.Module, device: torch.device,
                        score_threshold: float = DETECTION_SCORE_THRESHOLD) -> Predictor:
    def predict(images: torch.Tensor):
        outputs = model(images.to(device))
        height, width = images.shape[-2:]
        return list(zip(decode_detections(outputs, score_threshold), decode_segmentation(outputs),
                        decode_lanes(outputs, (height, width))))
    return predict


class PerceptionScores:
    """The three metrics accumulated over frames."""

    def __init__(self, image_size: tuple[int, int]) -> None:
        self.detection = DetectionMetric()
        self.segmentation = SegmentationMetric()
        self.lanes = LaneF1Metric(image_size)
        self.has_segmentation = self.has_lanes = False

    def update(self, prediction, labels: FrameLabels) -> None:
        (boxes, scores, classes), semantic, lanes = prediction
        self.detection.update(boxes, scores, classes, labels.boxes_px, labels.box_classes, labels.box_ignore)
        if semantic is not None and labels.semantic is not None:
            self.has_segmentation = True
            self.segmentation.update(semantic, labels.semantic)
        if lanes is not None and labels.lanes_labelled:
            self.has_lanes = True
            self.lanes.update(lanes, labels.lanes_px)

    def compute(self) -> dict:
        det = self.detection.compute()
        out = {"map_50": det["map_50"], "map_50_vehicle_pedestrian": det["map_50_vehicle_pedestrian"],
               "ap_50": det["ap_50"], "num_gt": det["num_gt"], "frames": det["num_frames"]}
        if self.has_segmentation:
            seg = self.segmentation.compute()
            out.update(miou=seg["miou"], iou=seg["iou"], pixel_accuracy=seg["pixel_accuracy"])
        if self.has_lanes:
            lanes = self.lanes.compute()
            out.update(lane_f1=lanes["f1"], lane_precision=lanes["precision"], lane_recall=lanes["recall"])
        parts = [out.get(k) for k in ("map_50_vehicle_pedestrian", "miou", "lane_f1")]
        out["score"] = float(np.mean([p if p is not None else 0.0 for p in parts]))
        return out


@torch.no_grad()
def evaluate(predict: Predictor, loader: Iterable, image_size: tuple[int, int]) -> dict:
    """Metrics over a loader of (images, targets, labels) batches (``collate_with_labels``)."""
    scores = PerceptionScores(image_size)
    for images, _, labels in loader:
        for prediction, frame_labels in zip(predict(images), labels):
            scores.update(prediction, frame_labels)
    return scores.compute()


@torch.no_grad()
def latency_ms(predict: Predictor, images: torch.Tensor, runs: int = 30, warmup: int = 5) -> dict:
    """Per-frame time of ``predict`` (network and decoding) on single images."""
    times = []
    for k in range(warmup + runs):
        image = images[k % len(images)].unsqueeze(0)
        started = time.perf_counter()
        predict(image)
        if k >= warmup:
            times.append((time.perf_counter() - started) * 1e3)
    return {"median_ms": statistics.median(times), "p90_ms": float(np.percentile(times, 90)), "runs": runs,
            "threads": torch.get_num_threads()}
