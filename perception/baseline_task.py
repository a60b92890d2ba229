"""Training the torchvision baselines (SSDlite320 for detection, LR-ASPP for
segmentation) on the same data, splits and engine as the multi-task net, so the two
compare side by side (``drivestack train perception --model ssdlite|lraspp``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.augment import PerceptionAugment
from models.baselines import (build_detection_baseline, build_segmentation_baseline, detection_baseline_targets,
                              run_detection_baseline, run_segmentation_baseline)
from models.engine import TrainingError
from models.labels import IGNORE_INDEX, PerceptionFrame
from models.perception_data import PerceptionDataset
from models.perception_net import normalize
from perception.evaluate import FrameLabels, evaluate
from perception.train_task import split_bags
from ros_nodes.bag.errors import BagError

BASELINES = ("ssdlite", "lraspp")
TASK = "perception_baseline"


def build_baseline(config: dict[str, Any]) -> nn.Module:
    kind = config.get("kind")
    if kind not in BASELINES:
        raise TrainingError(f"unknown baseline {kind!r} (one of {', '.join(BASELINES)})")
    return build_detection_baseline() if kind == "ssdlite" else build_segmentation_baseline()


@dataclass(frozen=True)
class BaselineEncoder:
    """(normalised image, the baseline's target[, raw labels]) of a frame."""

    kind: str
    with_labels: bool = False

    def __call__(self, frame: PerceptionFrame):
        if self.kind == "ssdlite":
            target = detection_baseline_targets(frame)
        else:
            semantic = frame.semantic if frame.semantic is not None else np.full(frame.shape, IGNORE_INDEX, np.uint8)
            target = torch.from_numpy(semantic.astype(np.int64))
        image = normalize(frame.image)
        return (image, target, FrameLabels.of(frame)) if self.with_labels else (image, target)


def baseline_predictor(model: nn.Module, kind: str, device: torch.device):
    """Predictions in the evaluation's form: a detector gives no mask, a segmenter no boxes."""
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def predict(images: torch.Tensor):
        images = images.to(device)
        if kind == "ssdlite":
            return [(d, None, None) for d in run_detection_baseline(model, images, score_threshold=0.05)]
        return [(empty, mask, None) for mask in run_segmentation_baseline(model, images)]
    return predict


class BaselineTask:
    name = TASK

    def __init__(self, data: Path, kind: str, *, camera: str = "front", image_size: tuple[int, int] = (320, 160),
                 stride: int = 2, val_every: int = 10, val_stride: int = 5, augment: bool = True) -> None:
        if kind not in BASELINES:
            raise TrainingError(f"unknown baseline {kind!r} (one of {', '.join(BASELINES)})")
        self.data, self.kind, self.camera, self.image_size = Path(data), kind, camera, image_size
        self.stride, self.val_every, self.val_stride, self.augment = stride, val_every, val_stride, augment

    def build_model(self) -> nn.Module:
        return build_baseline(self.model_config())

    def model_config(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def datasets(self) -> tuple[PerceptionDataset, PerceptionDataset | None]:
        try:
            train_bags, val_bags = split_bags(self.data, self.val_every)
            train = PerceptionDataset(train_bags, self.camera, image_size=self.image_size, stride=self.stride,
                                      augment=PerceptionAugment() if self.augment else None,
                                      transform=BaselineEncoder(self.kind))
            val = PerceptionDataset(val_bags, self.camera, image_size=self.image_size, stride=self.val_stride,
                                    transform=BaselineEncoder(self.kind, with_labels=True)) if val_bags else None
        except BagError as exc:
            raise TrainingError(f"training data {self.data}: {exc}") from None
        return train, val

    def collate(self, batch: list) -> tuple:
        images = torch.stack([item[0] for item in batch])
        targets = [item[1] for item in batch] if self.kind == "ssdlite" else torch.stack([item[1] for item in batch])
        return images, targets, [item[2] for item in batch] if len(batch[0]) > 2 else None

    def loss(self, model: nn.Module, batch: tuple, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        images, targets, _ = batch
        images = images.to(device, non_blocking=True)
        if self.kind == "ssdlite":
            losses = model(list(images), [{k: v.to(device) for k, v in t.items()} for t in targets])
            return sum(losses.values()), {k: float(v.detach()) for k, v in losses.items()}
        logits = model(images)["out"]
        targets = targets.to(device, non_blocking=True)
        labelled = (targets != IGNORE_INDEX).sum().clamp(min=1)
        loss = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum") / labelled
        return loss, {"segmentation": float(loss.detach())}

    def validate(self, model: nn.Module, loader, device: torch.device) -> dict[str, float]:
        metrics = evaluate(baseline_predictor(model, self.kind, device), loader, self.image_size)
        metrics["score"] = metrics["map_50_vehicle_pedestrian"] if self.kind == "ssdlite" else metrics.get("miou")
        return {k: (v if v is not None else 0.0) for k, v in metrics.items() if isinstance(v, (int, float)) or v is None}
