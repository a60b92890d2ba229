"""Training the behaviour-cloning policy on collected bags (a ``models.engine`` task), and
its evaluation against the recorded expert labels.

``--data DIR`` is a collection (``drivestack collect``): bags under ``DIR/train`` are split
by episode into training and validation (``perception.train_task.split_bags``), so
validation frames never neighbour training frames; ``DIR/test`` is left to
``drivestack eval policy``. Training frames are balanced and colour-jittered
(``models.policy_data``); validation frames are taken as recorded.

The loss is CILRS's (Codevilla et al. 2019) with a waypoint term, all L1:

- control: 0.5 steer + 0.45 throttle + 0.05 brake (CILRS's weights: steering errors
  leave the lane, a little brake error costs little);
- speed prediction: 0.05 x |predicted - measured speed| / ``speed_scale_mps`` (the
  net's own speed unit, as CILRS normalises the speed);
- waypoints: 0.2 x the mean over K points and both axes of |predicted - recorded|
  / (``speed_scale_mps`` x ``waypoint_dt_s``), i.e. in units of one step's travel at
  the scale speed (the waypoint head's own unit), so the term weighs about as much as
  the control's at ordinary speeds.

Validation reports the mean absolute error of each output; ``score`` = -(steer +
throttle + brake MAE) picks ``best.pt``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.engine import TrainingError
from models.perception_net import IMAGE_MEAN, IMAGE_STD
from models.policy_data import PolicyAugment, PolicyDataset, PolicySample
from models.policy_net import POLICY_COMMANDS, POLICY_TASK, build_policy, load_perception_backbone
from models.weights import WEIGHTS_DIR, load_weights
from ros_nodes.bag.errors import BagError

log = logging.getLogger(__name__)

PERCEPTION_WEIGHTS = WEIGHTS_DIR / "perception_multitask.pt"


@dataclass(frozen=True)
class PolicyLossWeights:
    steer: float = 0.5
    throttle: float = 0.45
    brake: float = 0.05
    speed: float = 0.05
    waypoints: float = 0.2


def collate_samples(batch: list[PolicySample]) -> dict[str, torch.Tensor]:
    """Stack samples; images stay uint8 (B, H, W, 3), a quarter of the bytes to move to the
    device, and are normalised there (``normalize_images``)."""
    return {"images": torch.from_numpy(np.stack([s.image for s in batch])),
            "speed_mps": torch.tensor([s.speed_mps for s in batch], dtype=torch.float32),
            "command": torch.tensor([s.command for s in batch], dtype=torch.int64),
            "control": torch.from_numpy(np.stack([s.control for s in batch])).float(),
            "waypoints_m": torch.from_numpy(np.stack([s.waypoints_m for s in batch])).float()}


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) on any device -> float (B, 3, H, W) as ``models.perception_net.normalize``."""
    mean = torch.tensor(IMAGE_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=images.device).view(1, 3, 1, 1)
    return (images.permute(0, 3, 1, 2).float() / 255.0 - mean) / std


def _forward(model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return model(normalize_images(batch["images"].to(device, non_blocking=True)),
                 batch["speed_mps"].to(device, non_blocking=True), batch["command"].to(device, non_blocking=True))


def _check_data(dataset: PolicyDataset, config: dict[str, Any], data: str) -> None:
    width, height = config["image_width_px"], config["image_height_px"]
    if dataset.image_size != (width, height):
        raise TrainingError(f"training data {data}: camera {dataset.camera!r} images are "
                            f"{dataset.image_size[0]}x{dataset.image_size[1]} px, the policy net takes "
                            f"{width}x{height} px (record with the front_rgb suite, or build the net for that size)")


class PolicyTask:
    """``data``: one collection directory or several (e.g. expert demonstrations plus DAgger
    iterations), each split by episode. ``init_weights``: start the whole net from a trained
    policy (shipped weights or a checkpoint; the net is built as its config says), else the
    backbone from the perception weights (``init_from_perception``, default on for the
    perception backbone)."""

    name = POLICY_TASK

    def __init__(self, data: Path | Sequence[Path], net_config: dict[str, Any] | None = None, *,
                 camera: str = "front", stride: int = 2, val_every: int = 10, val_stride: int = 2,
                 balance: bool = True, augment: bool = True, init_weights: Path | None = None,
                 init_from_perception: bool | None = None, perception_weights: Path = PERCEPTION_WEIGHTS,
                 loss_weights: PolicyLossWeights = PolicyLossWeights(), seed: int = 0) -> None:
        self.data = [Path(data)] if isinstance(data, (str, Path)) else [Path(d) for d in data]
        self.camera, self.stride, self.val_every, self.val_stride = camera, stride, val_every, val_stride
        self.balance, self.augment, self.seed = balance, augment, seed
        self._init_state: dict[str, torch.Tensor] | None = None
        try:
            self._config = build_policy(net_config).config()
            if init_weights is not None:
                config, self._init_state, _ = load_weights(init_weights, POLICY_TASK)
                config = build_policy(config).config()
                if net_config is not None and config != self._config:
                    differ = ", ".join(f"{k} {config[k]!r} there, {v!r} asked" for k, v in self._config.items()
                                       if config.get(k) != v)
                    raise TrainingError(f"--init-weights {init_weights} holds another net: {differ}")
                self._config = config
        except TrainingError:
            raise
        except ValueError as exc:
            raise TrainingError(f"policy net: {exc}") from None
        if init_from_perception is None:
            init_from_perception = self._config["backbone"] == "perception" and init_weights is None
        if init_from_perception and init_weights is not None:
            raise TrainingError("start from --init-weights or from the perception backbone, not both")
        if init_from_perception and self._config["backbone"] != "perception":
            raise TrainingError(f"--init-from-perception needs the perception backbone, not "
                                f"{self._config['backbone']!r}")
        if init_from_perception and not Path(perception_weights).is_file():
            raise TrainingError(f"no perception weights at {perception_weights} to start the backbone from (train "
                                "them with `drivestack train perception`, or pass --no-init-from-perception)")
        self.init_from_perception, self.perception_weights = init_from_perception, Path(perception_weights)
        self.weights = loss_weights
        self.bin_counts: dict[str, int] = {}  # the training samples per balancing bin, once datasets() ran

    @property
    def _data_name(self) -> str:
        return ", ".join(map(str, self.data))

    def build_model(self) -> nn.Module:
        net = build_policy(self._config)
        if self._init_state is not None:
            net.load_state_dict(self._init_state)
        elif self.init_from_perception:
            try:
                copied = load_perception_backbone(net, self.perception_weights)
            except ValueError as exc:
                raise TrainingError(str(exc)) from None
            log.info("backbone: %d tensors from %s", copied, self.perception_weights)
        return net

    def model_config(self) -> dict[str, Any]:
        return self._config

    def datasets(self) -> tuple[PolicyDataset, PolicyDataset | None]:
        from perception.train_task import split_bags
        config = self._config
        common = {"num_waypoints": config["num_waypoints"], "waypoint_dt_s": config["waypoint_dt_s"]}
        try:
            train_bags, val_bags = [], []
            for data in self.data:
                train_part, val_part = split_bags(data, self.val_every)
                train_bags += train_part
                val_bags += val_part
            train = PolicyDataset(train_bags, self.camera, stride=self.stride, balance=self.balance,
                                  augment=PolicyAugment() if self.augment else None, seed=self.seed, **common)
            val = PolicyDataset(val_bags, self.camera, stride=self.val_stride, balance=False,
                                **common) if val_bags else None
        except BagError as exc:
            raise TrainingError(f"training data {self._data_name}: {exc}") from None
        for dataset in (train, val):
            if dataset is not None:
                _check_data(dataset, config, self._data_name)
        self.bin_counts = train.bin_counts()
        log.info("policy data: %d training frames (%d samples balanced), %d validation frames; bins %s",
                 len(train.frames), len(train), len(val) if val is not None else 0, self.bin_counts)
        return train, val

    def collate(self, batch: list[PolicySample]) -> dict[str, torch.Tensor]:
        return collate_samples(batch)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor],
             device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        out = _forward(model, batch, device)
        w, config = self.weights, self._config
        control = (out["control"].float() - batch["control"].to(device)).abs().mean(0)
        speed = (out["speed_mps"].float() - batch["speed_mps"].to(device)).abs().mean() / config["speed_scale_mps"]
        step_m = config["speed_scale_mps"] * config["waypoint_dt_s"]
        waypoints = (out["waypoints_m"].float() - batch["waypoints_m"].to(device)).abs().mean() / step_m
        total = (w.steer * control[0] + w.throttle * control[1] + w.brake * control[2] + w.speed * speed
                 + w.waypoints * waypoints)
        parts = {"steer": control[0], "throttle": control[1], "brake": control[2], "speed": speed,
                 "waypoints": waypoints}
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def validate(self, model: nn.Module, loader: Iterable, device: torch.device) -> dict[str, float]:
        sums = torch.zeros(5, dtype=torch.float64)
        frames = 0
        for batch in loader:
            out = _forward(model, batch, device)
            control = (out["control"].float().cpu() - batch["control"]).abs().sum(0)
            speed = (out["speed_mps"].float().cpu() - batch["speed_mps"]).abs().sum()
            waypoints = (out["waypoints_m"].float().cpu() - batch["waypoints_m"]).abs().mean((1, 2)).sum()
            sums += torch.stack([*control, speed, waypoints]).double()
            frames += len(batch["command"])
        mae = (sums / max(frames, 1)).tolist()
        metrics = dict(zip(("steer_mae", "throttle_mae", "brake_mae", "speed_mae_mps", "waypoints_mae_m"), mae))
        metrics["frames"] = frames
        metrics["score"] = -(metrics["steer_mae"] + metrics["throttle_mae"] + metrics["brake_mae"])
        return metrics


# -- evaluation against recorded labels ------------------------------------------------

def evaluate_policy(policy, dataset: PolicyDataset) -> dict[str, Any]:
    """Mean absolute error of steer, throttle and brake of ``policy`` (a
    ``models.driving_policy.DrivingPolicy``) against the dataset's labels, frame by frame
    as the car runs it: overall and per route command."""
    if dataset.image_size != policy.image_size:
        raise TrainingError(f"the bags' {dataset.camera!r} images are {dataset.image_size[0]}x"
                            f"{dataset.image_size[1]} px, the policy takes {policy.image_size[0]}x"
                            f"{policy.image_size[1]} px")
    errors = np.zeros((len(dataset), 3))
    commands = np.zeros(len(dataset), np.int64)
    for i in range(len(dataset)):
        sample = dataset.sample(i)
        out = policy(sample.image, sample.speed_mps, POLICY_COMMANDS[sample.command])
        errors[i] = np.abs(np.array([out.steer, out.throttle, out.brake]) - sample.control)
        commands[i] = sample.command

    def summary(rows: np.ndarray) -> dict[str, float]:
        mae = errors[rows].mean(0) if rows.any() else np.full(3, math.nan)
        return {"frames": int(rows.sum()), "steer_mae": float(mae[0]), "throttle_mae": float(mae[1]),
                "brake_mae": float(mae[2])}
    return {**summary(np.ones(len(dataset), bool)), "bags": len(dataset.bags),
            "per_command": {POLICY_COMMANDS[c].name: summary(commands == c) for c in np.unique(commands)}}
