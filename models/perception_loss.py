"""The multi-task loss of ``MultiTaskNet`` against ``encode_targets`` targets (batched by ``collate``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.labels import IGNORE_INDEX
from models.perception_targets import LANE_UNLABELLED

LOSS_NAMES = ("heatmap", "box_size", "box_offset", "segmentation", "lanes")


def centernet_focal_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (alpha 2, beta 4), summed and divided by the peak count.

    ``weight`` 0 removes a cell from both terms (ignored objects).
    """
    # logsigmoid keeps the log terms finite where a logit saturates.
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    prob = log_p.exp()
    positive = (target >= 1.0).float() * weight
    negative = (target < 1.0).float() * weight
    positive_loss = -(log_p * (1 - prob) ** 2 * positive).sum()
    negative_loss = -(log_not_p * prob ** 2 * (1 - target) ** 4 * negative).sum()
    return (positive_loss + negative_loss) / positive.sum().clamp(min=1.0)


def masked_l1(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean L1 over the (B, C, h, w) cells where the (B, h, w) mask is 1, per channel averaged."""
    mask = mask.unsqueeze(1)
    return (F.l1_loss(prediction, target, reduction="none") * mask).sum() / (
        mask.sum() * prediction.shape[1]).clamp(min=1.0)


class MultiTaskLoss(nn.Module):
    """Weighted sum of the heads' losses; ``forward`` returns (total, {name: float}).

    Defaults follow CenterNet (size 0.1, offset 1); the size is regressed in log space here,
    where errors are a tenth of CenterNet's pixel ones, so it gets weight 1.
    """

    def __init__(self, heatmap_weight: float = 1.0, box_size_weight: float = 1.0, box_offset_weight: float = 1.0,
                 segmentation_weight: float = 1.0, lanes_weight: float = 1.0) -> None:
        super().__init__()
        self.weights = {"heatmap": heatmap_weight, "box_size": box_size_weight, "box_offset": box_offset_weight,
                        "segmentation": segmentation_weight, "lanes": lanes_weight}

    def forward(self, outputs: dict[str, torch.Tensor],
                targets: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        losses = {
            "heatmap": centernet_focal_loss(outputs["heatmap"], targets["heatmap"], targets["heatmap_weight"]),
            "box_size": masked_l1(outputs["box_log_size"], targets["box_log_size"], targets["box_mask"]),
            "box_offset": masked_l1(outputs["box_offset"], targets["box_offset"], targets["box_mask"]),
            "segmentation": _masked_cross_entropy(outputs["segmentation"], targets["segmentation"], IGNORE_INDEX),
            # (B, slots, R, G + 1) -> classes on dim 1, as cross_entropy wants.
            "lanes": _masked_cross_entropy(outputs["lanes"].permute(0, 3, 1, 2), targets["lanes"], LANE_UNLABELLED),
        }
        total = sum(self.weights[name] * loss for name, loss in losses.items())
        return total, {name: float(loss.detach()) for name, loss in losses.items()}


def _masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    # The mean over labelled entries, written out: cross_entropy's own mean is NaN for a
    # batch without any labelled entry, which must add nothing instead.
    labelled = (target != ignore_index).sum().clamp(min=1)
    return F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum") / labelled
