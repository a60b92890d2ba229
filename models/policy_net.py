"""The behaviour-cloning policy: CILRS (Codevilla et al. 2019, "Exploring the Limitations
of Behavior Cloning for Autonomous Driving") with a waypoint head.

- Backbone: the perception net's own ``Backbone`` (so the shipped perception weights
  transfer, ``load_perception_backbone``) or a torchvision ResNet-18/34 trunk, trained from
  scratch (no pretrained weights here). Global average pooling gives the image features.
- Measurements: an MLP on the current speed, scaled by ``speed_scale_mps``; joined with the
  image features by concatenation and an MLP.
- One branch per route command (``POLICY_COMMANDS``), each an MLP to (steer, throttle,
  brake); the command picks the branch, so one command's data never trains another's.
- A speed-prediction head on the image features alone: having to read the speed from the
  image stops the net from learning "keep doing what the speedometer says" (the inertia
  problem; a car at rest would otherwise never start).
- A waypoint head: K future ego positions (x forward, y left, metres, in the ego frame at
  the current time) at ``waypoint_dt_s`` steps, one set per command, picked like the
  branches. It predicts per-step displacements and sums them, so each output is of the order
  of one step's travel.

``forward(images, speed_mps, command)`` returns ``control`` (B, 3) [steer in [-1, 1],
throttle in [0, 1], brake in [0, 1]], ``speed_mps`` (B,) and ``waypoints_m`` (B, K, 2).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from drivestack.schema import RoadOption
from models.perception_net import (INPUT_DIVISOR, Backbone, ConvBNReLU, MultiTaskNet, ResidualBlock,
                                   check_input_size)
from models.weights import load_weights

POLICY_TASK = "policy"  # the "task" of policy checkpoints and shipped weights
POLICY_COMMANDS = (RoadOption.LEFT, RoadOption.RIGHT, RoadOption.STRAIGHT, RoadOption.LANEFOLLOW,
                   RoadOption.CHANGELANELEFT, RoadOption.CHANGELANERIGHT)
BACKBONES = ("perception", "resnet18", "resnet34")
_PERCEPTION_DEFAULTS = inspect.signature(MultiTaskNet).parameters  # one source for the backbone's shape


def command_index(option: RoadOption | int) -> int:
    """The branch of a route command; VOID (no route information) drives as LANEFOLLOW."""
    option = RoadOption(option)
    if option == RoadOption.VOID:
        option = RoadOption.LANEFOLLOW
    return POLICY_COMMANDS.index(option)


class PerceptionTrunk(Backbone):
    """The perception ``Backbone`` returning only its stride-32 map; the state dict keys are
    the perception net's ``backbone.*`` keys without the prefix."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[-1]


def _perception_trunk(widths: tuple[int, ...], depths: tuple[int, ...]) -> tuple[nn.Module, int]:
    trunk = PerceptionTrunk(widths, depths)
    for module in trunk.modules():  # as MultiTaskNet: He init, residual blocks start as the identity
        if isinstance(module, ConvBNReLU):
            nn.init.kaiming_normal_(module[0].weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, ResidualBlock):
            nn.init.kaiming_normal_(module.conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.norm.weight)
    return trunk, widths[-1]


def _resnet_trunk(name: str) -> tuple[nn.Module, int]:
    resnet = getattr(torchvision.models, name)(weights=None)
    trunk = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                          resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)
    return trunk, resnet.fc.in_features


def _mlp(in_features: int, hidden: int, out_features: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                         nn.Linear(hidden, out_features))


class PolicyNet(nn.Module):
    """Conditional imitation network; see the module docstring."""

    def __init__(self, backbone: str = "perception", image_width_px: int = 320, image_height_px: int = 160,
                 num_waypoints: int = 4, waypoint_dt_s: float = 0.5, speed_scale_mps: float = 10.0,
                 perception_widths: tuple[int, ...] = _PERCEPTION_DEFAULTS["widths"].default,
                 perception_depths: tuple[int, ...] = _PERCEPTION_DEFAULTS["depths"].default,
                 speed_hidden: int = 128, joint_hidden: int = 512, branch_hidden: int = 256,
                 dropout: float = 0.5) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone {backbone!r}: expected one of {', '.join(BACKBONES)}")
        if backbone == "perception":
            check_input_size(image_height_px, image_width_px)
        elif image_width_px < INPUT_DIVISOR or image_height_px < INPUT_DIVISOR:
            raise ValueError(f"image size {image_width_px}x{image_height_px} (WxH): {backbone} needs at least "
                             f"{INPUT_DIVISOR} px each way")
        if num_waypoints < 1 or waypoint_dt_s <= 0 or speed_scale_mps <= 0:
            raise ValueError(f"num_waypoints {num_waypoints}, waypoint_dt_s {waypoint_dt_s} and speed_scale_mps "
                             f"{speed_scale_mps} must all be positive")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout {dropout} must be in [0, 1)")
        self._config = {"backbone": backbone, "image_width_px": int(image_width_px),
                        "image_height_px": int(image_height_px), "num_waypoints": int(num_waypoints),
                        "waypoint_dt_s": float(waypoint_dt_s), "speed_scale_mps": float(speed_scale_mps),
                        "perception_widths": list(perception_widths), "perception_depths": list(perception_depths),
                        "speed_hidden": speed_hidden, "joint_hidden": joint_hidden, "branch_hidden": branch_hidden,
                        "dropout": float(dropout)}
        if backbone == "perception":
            self.backbone, feature_channels = _perception_trunk(tuple(perception_widths), tuple(perception_depths))
        else:
            self.backbone, feature_channels = _resnet_trunk(backbone)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.speed_encoder = nn.Sequential(nn.Linear(1, speed_hidden), nn.ReLU(inplace=True),
                                           nn.Linear(speed_hidden, speed_hidden), nn.ReLU(inplace=True))
        self.join = nn.Sequential(nn.Linear(feature_channels + speed_hidden, joint_hidden), nn.ReLU(inplace=True))
        # Dropout 0.5 in the branches and the speed head, as in CILRS.
        self.branches = nn.ModuleList(_mlp(joint_hidden, branch_hidden, 3, dropout) for _ in POLICY_COMMANDS)
        self.speed_head = _mlp(feature_channels, branch_hidden, 1, dropout)
        self.waypoint_head = _mlp(joint_hidden, branch_hidden, len(POLICY_COMMANDS) * num_waypoints * 2, dropout)

    def config(self) -> dict[str, Any]:
        """The constructor arguments (plain lists and numbers), for checkpoints."""
        return {key: list(value) if isinstance(value, list) else value for key, value in self._config.items()}

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) in px of the images the net takes."""
        return self._config["image_width_px"], self._config["image_height_px"]

    def _check_inputs(self, images: torch.Tensor, speed_mps: torch.Tensor, command: torch.Tensor) -> None:
        width, height = self.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, height, width) or not images.is_floating_point():
            raise ValueError(f"expected normalised float images (B, 3, {height}, {width}), got "
                             f"{tuple(images.shape)} {images.dtype}")
        batch = images.shape[0]
        if tuple(speed_mps.shape) != (batch,) or not speed_mps.is_floating_point():
            raise ValueError(f"expected float speed_mps of shape ({batch},), got {tuple(speed_mps.shape)} "
                             f"{speed_mps.dtype}")
        if tuple(command.shape) != (batch,) or command.dtype != torch.int64:
            raise ValueError(f"expected int64 command indices of shape ({batch},), got {tuple(command.shape)} "
                             f"{command.dtype}")
        if batch and (int(command.min()) < 0 or int(command.max()) >= len(POLICY_COMMANDS)):
            raise ValueError(f"command indices must be in [0, {len(POLICY_COMMANDS)}) (POLICY_COMMANDS), got "
                             f"{command.tolist()}")

    def forward(self, images: torch.Tensor, speed_mps: torch.Tensor,
                command: torch.Tensor) -> dict[str, torch.Tensor]:
        self._check_inputs(images, speed_mps, command)
        scale_mps = self._config["speed_scale_mps"]
        features = self.pool(self.backbone(images)).flatten(1)
        joint = self.join(torch.cat([features, self.speed_encoder((speed_mps / scale_mps).unsqueeze(1))], 1))
        # Every branch runs (six small MLPs, a loop over commands, not frames); the gather keeps
        # each frame's own, so the others get zero gradient from it.
        all_controls = torch.stack([branch(joint) for branch in self.branches], 1)  # (B, C, 3)
        raw = all_controls.gather(1, command.view(-1, 1, 1).expand(-1, 1, 3)).squeeze(1)
        control = torch.cat([torch.tanh(raw[:, :1]), torch.sigmoid(raw[:, 1:])], 1)
        num_waypoints = self._config["num_waypoints"]
        all_steps = self.waypoint_head(joint).view(-1, len(POLICY_COMMANDS), num_waypoints, 2)
        steps = all_steps.gather(1, command.view(-1, 1, 1, 1).expand(-1, 1, num_waypoints, 2)).squeeze(1)
        # One unit of output = one step's travel at the scale speed.
        step_m = scale_mps * self._config["waypoint_dt_s"]
        return {"control": control, "speed_mps": self.speed_head(features).squeeze(1) * scale_mps,
                "waypoints_m": steps.cumsum(1) * step_m}


def build_policy(config: dict[str, Any] | None = None) -> PolicyNet:
    """A PolicyNet from ``PolicyNet.config()`` (as saved in a checkpoint); missing keys take the
    defaults, None: all defaults."""
    config = dict(config or {})
    known = set(inspect.signature(PolicyNet).parameters)
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown policy config keys {unknown}; known: {sorted(known)}")
    for key in ("perception_widths", "perception_depths"):
        if key in config:
            config[key] = tuple(config[key])
    return PolicyNet(**config)


def load_perception_backbone(net: PolicyNet, weights_path: str | Path) -> int:
    """Copy the backbone of perception weights (shipped or a training checkpoint) into a
    "perception"-backbone policy; returns the number of tensors copied."""
    config = net.config()
    if config["backbone"] != "perception":
        raise ValueError(f"the policy's backbone is {config['backbone']!r}; perception weights fit only the "
                         f"'perception' backbone")
    _, state, _ = load_weights(weights_path, "perception")
    prefix = "backbone."
    source = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    target = net.backbone.state_dict()
    if source.keys() != target.keys():
        missing, extra = sorted(target.keys() - source.keys()), sorted(source.keys() - target.keys())
        raise ValueError(f"{weights_path}: perception backbone does not match the policy's (widths "
                         f"{config['perception_widths']}, depths {config['perception_depths']}): missing "
                         f"{missing[:5]}, unexpected {extra[:5]}")
    mismatched = [f"{key} {tuple(source[key].shape)} vs {tuple(value.shape)}" for key, value in target.items()
                  if source[key].shape != value.shape]
    if mismatched:
        raise ValueError(f"{weights_path}: perception backbone shapes differ from the policy's (widths "
                         f"{config['perception_widths']}, depths {config['perception_depths']}): "
                         f"{'; '.join(mismatched[:5])}")
    net.backbone.load_state_dict(source)
    return len(source)
