"""Training the multi-task perception net on collected bags (a ``models.engine`` task).

``--data DIR`` is a collection (``drivestack collect``): bags under ``DIR/train`` are
split by episode into training and validation (every ``val_every``-th bag, at least
one when there are two or more), so validation frames never neighbour training
frames. ``DIR/test`` (the held-out town and weather) is left to ``drivestack eval``.
A directory without a ``train`` folder is used as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.augment import PerceptionAugment
from models.engine import TrainingError
from models.labels import PerceptionFrame
from models.perception_data import PerceptionDataset, find_bags
from models.perception_loss import MultiTaskLoss
from models.perception_net import build_multitask, normalize
from models.perception_targets import encode_targets
from perception.evaluate import FrameLabels, evaluate, multitask_predictor
from ros_nodes.bag.errors import BagError


@dataclass(frozen=True)
class FrameEncoder:
    """Loader-worker transform: (normalised image, dense targets[, raw labels])."""

    net_config: dict[str, Any]
    with_labels: bool = False

    def __call__(self, frame: PerceptionFrame):
        image = normalize(frame.image)
        targets = encode_targets(frame, self.net_config, lanes_labelled=frame.lanes_labelled)
        return (image, targets, FrameLabels.of(frame)) if self.with_labels else (image, targets)


def collate_with_labels(batch: list[tuple]) -> tuple:
    """Stack images and targets; raw labels (when present) stay a list."""
    images = torch.stack([item[0] for item in batch])
    targets = {key: torch.stack([item[1][key] for item in batch]) for key in batch[0][1]}
    return images, targets, [item[2] for item in batch] if len(batch[0]) > 2 else None


def split_bags(data: Path, val_every: int) -> tuple[list[Path], list[Path]]:
    root = data / "train" if (data / "train").is_dir() else data
    bags = find_bags([root])
    if len(bags) < 2:
        return bags, []
    val = bags[val_every - 1::val_every] or bags[-1:]
    return [b for b in bags if b not in val], val


class PerceptionTask:
    name = "perception"

    def __init__(self, data: Path, net_config: dict[str, Any] | None = None, *, camera: str = "front",
                 image_size: tuple[int, int] = (320, 160), stride: int = 2, val_every: int = 10,
                 val_stride: int = 5, augment: bool = True, seed: int = 0) -> None:
        self.data, self.camera, self.image_size = Path(data), camera, image_size
        self.stride, self.val_every, self.val_stride, self.augment, self.seed = stride, val_every, val_stride, augment, seed
        self._config = build_multitask(net_config).config()
        self.criterion = MultiTaskLoss()

    def build_model(self) -> nn.Module:
        return build_multitask(self._config)

    def model_config(self) -> dict[str, Any]:
        return self._config

    def datasets(self) -> tuple[PerceptionDataset, PerceptionDataset | None]:
        try:
            train_bags, val_bags = split_bags(self.data, self.val_every)
            train = PerceptionDataset(train_bags, self.camera, image_size=self.image_size, stride=self.stride,
                                      augment=PerceptionAugment() if self.augment else None,
                                      transform=FrameEncoder(self._config))
            val = PerceptionDataset(val_bags, self.camera, image_size=self.image_size, stride=self.val_stride,
                                    transform=FrameEncoder(self._config, with_labels=True)) if val_bags else None
        except BagError as exc:
            raise TrainingError(f"training data {self.data}: {exc}") from None
        if not any(len(labels.box_classes) for labels in train.labels):
            raise TrainingError(f"training data {self.data}: no labelled objects in {len(train.bags)} bag(s)")
        return train, val

    def collate(self, batch: list) -> tuple:
        return collate_with_labels(batch)

    def loss(self, model: nn.Module, batch: tuple, device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        images, targets, _ = batch
        outputs = model(images.to(device, non_blocking=True))
        return self.criterion(outputs, {k: v.to(device, non_blocking=True) for k, v in targets.items()})

    def validate(self, model: nn.Module, loader, device: torch.device) -> dict[str, float]:
        metrics = evaluate(multitask_predictor(model, device), loader, (self.image_size[0], self.image_size[1]))
        return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) or v is None}
