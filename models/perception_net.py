"""The multi-task camera network: one backbone and neck, three heads (YOLOP/HybridNets style).

- Backbone: a plain stack of 3x3 conv + BatchNorm + ReLU with residual blocks, strides
  2..32. Dense 3x3 convolutions run near peak speed in oneDNN on a CPU, while the
  depthwise layers of MobileNetV3 are memory bound (``mobilenet_v3_small.features``
  measured 12 ms for 0.11 GFLOP at 320x160 on 2 cores); plain BN+ReLU also trains from
  scratch without the care that squeeze-excite and hard-swish need, and no pretrained
  weights exist here.
- Neck: an FPN from stride 32 down to stride 4.
- Heads: CenterNet detection at stride 4, segmentation logits upsampled from stride 4 to
  the input size, and an Ultra-Fast-Lane-Detection row-anchor lane head on the
  stride-16 level.

``forward`` returns a dict (``B`` batch, ``H, W`` input size, ``R`` row anchors, ``G``
grid cells):

- ``heatmap`` (B, 5, H/4, W/4): class centre logits (sigmoid focal loss).
- ``box_log_size`` (B, 2, H/4, W/4): natural log of the box (width, height) in input px.
- ``box_offset`` (B, 2, H/4, W/4): the centre's (u, v) position inside its cell, in cells.
- ``segmentation`` (B, 15, H, W): logits over ``SEGMENTATION_CLASSES``.
- ``lanes`` (B, 4, R, G + 1): per ``LANE_POSITIONS`` slot and row anchor, logits over the
  G horizontal cells and a last "absent" class.
- ``lane_row_anchors_px`` (R,): the rows (v, input px) of the anchors, top to bottom.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.labels import DETECTION_CLASSES, LANE_POSITIONS, SEGMENTATION_CLASSES

DETECTION_STRIDE = 4
INPUT_DIVISOR = 32  # the coarsest stride: every FPN level must line up with the one above
IMAGE_MEAN = (0.485, 0.456, 0.406)  # ImageNet's, the torchvision baselines' convention
IMAGE_STD = (0.229, 0.224, 0.225)
_HEATMAP_PRIOR = 0.1  # CenterNet starts every cell at p = 0.1 so the focal loss starts calm
_INITIAL_BOX_SIZE_PX = 32.0  # a mid-size object: the size head starts near typical sizes


def normalize(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 RGB (..., H, W, 3) -> float32 (..., 3, H, W) scaled by the fixed mean and std."""
    tensor = torch.as_tensor(image)
    if tensor.dtype != torch.uint8 or tensor.ndim < 3 or tensor.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB images (..., H, W, 3), got {tuple(tensor.shape)} {tensor.dtype}")
    mean = torch.tensor(IMAGE_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(3, 1, 1)
    return (tensor.movedim(-1, -3).float() / 255.0 - mean) / std


def lane_row_anchors_px(height: int, num_rows: int, row_start: float) -> torch.Tensor:
    """The lane head's anchor rows (v, px): evenly from ``row_start * height`` to the last row."""
    return torch.linspace(row_start * height, height - 1, num_rows)


def check_input_size(height: int, width: int) -> None:
    if height % INPUT_DIVISOR or width % INPUT_DIVISOR or height <= 0 or width <= 0:
        raise ValueError(f"image size {height}x{width} (HxW): both must be positive multiples of "
                         f"{INPUT_DIVISOR}; resize or pad the images first")


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """relu(x + bn(conv3x3(x))): one conv per block keeps the stack cheap, the skip keeps it trainable."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.norm(self.conv(x)))


class Backbone(nn.Module):
    """Stem (stride 2) and four stages (strides 4, 8, 16, 32); returns the last four."""

    def __init__(self, widths: tuple[int, ...], depths: tuple[int, ...]) -> None:
        super().__init__()
        if len(widths) != 5 or len(depths) != 4:
            raise ValueError(f"widths needs 5 entries (stem + 4 stages), depths 4; got {widths}, {depths}")
        self.stem = ConvBNReLU(3, widths[0], stride=2)
        self.stages = nn.ModuleList(
            nn.Sequential(ConvBNReLU(c_in, c_out, stride=2), *(ResidualBlock(c_out) for _ in range(depth)))
            for c_in, c_out, depth in zip(widths[:-1], widths[1:], depths))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class FeaturePyramid(nn.Module):
    """FPN top-down path: 1x1 laterals, nearest upsampling, a 3x3 smoothing conv per level."""

    def __init__(self, in_channels: tuple[int, ...], channels: int) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(ConvBNReLU(c, channels, kernel_size=1) for c in in_channels)
        self.smooth = nn.ModuleList(ConvBNReLU(channels, channels) for _ in in_channels[:-1])

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        x = self.laterals[-1](features[-1])
        outputs = [x]
        for level in range(len(features) - 2, -1, -1):
            x = self.laterals[level](features[level]) + F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = self.smooth[level](x)
            outputs.insert(0, x)
        return outputs


class CenterNetHead(nn.Module):
    """One 3x3 conv per output then a 1x1 projection, as in CenterNet."""

    def __init__(self, in_channels: int, head_channels: int) -> None:
        super().__init__()

        def branch(out_channels: int) -> nn.Sequential:
            return nn.Sequential(ConvBNReLU(in_channels, head_channels), nn.Conv2d(head_channels, out_channels, 1))

        self.heatmap = branch(len(DETECTION_CLASSES))
        self.box = branch(4)  # log size (2) and centre offset (2) share a branch: both are geometry
        nn.init.constant_(self.heatmap[-1].bias, -math.log((1 - _HEATMAP_PRIOR) / _HEATMAP_PRIOR))
        nn.init.normal_(self.box[-1].weight, std=0.01)
        with torch.no_grad():
            self.box[-1].bias.copy_(torch.tensor([math.log(_INITIAL_BOX_SIZE_PX)] * 2 + [0.5, 0.5]))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        box = self.box(x)
        return {"heatmap": self.heatmap(x), "box_log_size": box[:, :2], "box_offset": box[:, 2:]}


class SegmentationHead(nn.Module):
    def __init__(self, in_channels: int, head_channels: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_channels, head_channels)
        self.classify = nn.Conv2d(head_channels, len(SEGMENTATION_CLASSES), 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        # Upsampling logits rather than features keeps the full-resolution work at 15 channels.
        return F.interpolate(self.classify(self.conv(x)), size=size, mode="bilinear", align_corners=False)


class RowAnchorLaneHead(nn.Module):
    """UFLD: squeeze channels, pool to a fixed grid, two fully connected layers to row-anchor logits.

    The global layers see the whole road at once, which is what tells the ego lane's left
    boundary from its neighbour's; pooling to a fixed grid lets any input size through.
    """

    def __init__(self, in_channels: int, num_rows: int, num_cells: int, pool_hw: tuple[int, int],
                 squeeze_channels: int = 8, hidden: int = 256) -> None:
        super().__init__()
        self.num_rows, self.num_cells = num_rows, num_cells
        self.squeeze = ConvBNReLU(in_channels, squeeze_channels, kernel_size=1)
        self.pool = nn.AdaptiveAvgPool2d(pool_hw)
        self.classify = nn.Sequential(
            nn.Linear(squeeze_channels * pool_hw[0] * pool_hw[1], hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, len(LANE_POSITIONS) * num_rows * (num_cells + 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classify(self.pool(self.squeeze(x)).flatten(1))
        return logits.view(-1, len(LANE_POSITIONS), self.num_rows, self.num_cells + 1)


class MultiTaskNet(nn.Module):
    """Detection, segmentation and lanes from one shared backbone; see the module docstring."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 96, 128), depths: tuple[int, ...] = (1, 2, 2, 1),
                 neck_channels: int = 32, head_channels: int = 32, lane_rows: int = 18,
                 lane_cells: int = 64, lane_row_start: float = 0.45,
                 lane_pool_hw: tuple[int, int] = (10, 20)) -> None:
        super().__init__()
        if not 0.0 <= lane_row_start < 1.0:
            raise ValueError(f"lane_row_start {lane_row_start} must be in [0, 1)")
        self._config = {"widths": list(widths), "depths": list(depths), "neck_channels": neck_channels,
                        "head_channels": head_channels, "lane_rows": lane_rows, "lane_cells": lane_cells,
                        "lane_row_start": lane_row_start, "lane_pool_hw": list(lane_pool_hw)}
        self.backbone = Backbone(tuple(widths), tuple(depths))
        self.neck = FeaturePyramid(tuple(widths[1:]), neck_channels)
        self.detection = CenterNetHead(neck_channels, head_channels)
        self.segmentation = SegmentationHead(neck_channels, head_channels)
        self.lanes = RowAnchorLaneHead(neck_channels, lane_rows, lane_cells, tuple(lane_pool_hw))
        self._init_convs()

    def _init_convs(self) -> None:
        """He init for every conv followed by ReLU; the heads' projections keep their own."""
        for module in self.modules():
            if isinstance(module, ConvBNReLU):
                nn.init.kaiming_normal_(module[0].weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, ResidualBlock):
                nn.init.kaiming_normal_(module.conv.weight, mode="fan_out", nonlinearity="relu")
                # The residual branch starts at zero (Goyal et al.): each block starts as the identity.
                nn.init.zeros_(module.norm.weight)

    def config(self) -> dict[str, Any]:
        """The constructor arguments (plain lists and numbers), for checkpoints."""
        return {key: list(value) if isinstance(value, list) else value for key, value in self._config.items()}

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected normalised images (B, 3, H, W), got {tuple(images.shape)}")
        height, width = images.shape[-2:]
        check_input_size(height, width)
        stride4, _, stride16, _ = self.neck(self.backbone(images))
        outputs = self.detection(stride4)
        outputs["segmentation"] = self.segmentation(stride4, (height, width))
        outputs["lanes"] = self.lanes(stride16)
        outputs["lane_row_anchors_px"] = lane_row_anchors_px(
            height, self._config["lane_rows"], self._config["lane_row_start"]).to(images.device)
        return outputs


def build_multitask(config: dict[str, Any] | None = None) -> MultiTaskNet:
    """A MultiTaskNet from ``MultiTaskNet.config()`` (as saved in a checkpoint); None: defaults."""
    config = dict(config or {})
    for key in ("widths", "depths", "lane_pool_hw"):
        if key in config:
            config[key] = tuple(config[key])
    return MultiTaskNet(**config)
