"""Training targets of ``MultiTaskNet`` from a labelled ``PerceptionFrame``, and batching.

``encode_targets`` returns (h, w = H/4, W/4; R row anchors, G grid cells):

- ``heatmap`` (5, h, w) float: a Gaussian per box of its class, 1 at the centre cell.
- ``heatmap_weight`` (5, h, w) float: 0 over ignored boxes of that class (neither a peak
  nor a negative there), 1 elsewhere.
- ``box_log_size`` (2, h, w) float: ln(width, height in px) at centre cells.
- ``box_offset`` (2, h, w) float: centre (u, v) / 4 minus its cell, at centre cells.
- ``box_mask`` (h, w) float: 1 at centre cells, where the two above count.
- ``segmentation`` (H, W) int64: training indices, ``IGNORE_INDEX`` where unlabelled.
- ``lanes`` (4, R) int64: the cell where each slot's polyline crosses each anchor row,
  G ("absent") where it does not cross it or leaves the image there; ``LANE_UNLABELLED``
  everywhere for a frame whose lanes were not labelled (no loss, rather than "absent").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from models.labels import DETECTION_CLASSES, IGNORE_INDEX, LANE_POSITIONS, PerceptionFrame
from models.perception_net import DETECTION_STRIDE, check_input_size, lane_row_anchors_px

# TTFNet's elliptical Gaussian: sigma = alpha * side / 6 follows the box's shape, which
# suits tall thin pedestrians and traffic lights better than CenterNet's round one.
_GAUSSIAN_ALPHA = 0.54
_MIN_BOX_SIZE_PX = 1.0
LANE_UNLABELLED = -100  # cross_entropy's default ignore_index


def encode_targets(frame: PerceptionFrame, net_config: dict[str, Any], *,
                   lanes_labelled: bool = True) -> dict[str, torch.Tensor]:
    """The dense targets of one frame for a net built with ``net_config``; see the module docstring.

    An empty ``frame.lanes_px`` means "no lane visible"; pass ``lanes_labelled=False`` when
    the recording simply had no lane labels. A missing ``frame.semantic`` is unlabelled.
    """
    height, width = frame.shape
    check_input_size(height, width)
    targets = _detection_targets(frame, height // DETECTION_STRIDE, width // DETECTION_STRIDE)
    if frame.semantic is None:
        segmentation = np.full((height, width), IGNORE_INDEX, np.int64)
    elif frame.semantic.shape != (height, width):
        raise ValueError(f"{frame.source}: semantic {frame.semantic.shape} does not match image {(height, width)}")
    else:
        segmentation = frame.semantic.astype(np.int64)
    targets["segmentation"] = segmentation
    rows_px = lane_row_anchors_px(height, net_config["lane_rows"], net_config["lane_row_start"]).numpy()
    targets["lanes"] = lane_targets(frame.lanes_px, rows_px, width, net_config["lane_cells"])
    if not lanes_labelled:
        targets["lanes"][:] = LANE_UNLABELLED
    return {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in targets.items()}


def _detection_targets(frame: PerceptionFrame, out_height: int, out_width: int) -> dict[str, np.ndarray]:
    num_classes = len(DETECTION_CLASSES)
    heatmap = np.zeros((num_classes, out_height, out_width), np.float32)
    weight = np.ones_like(heatmap)
    log_size = np.zeros((2, out_height, out_width), np.float32)
    offset = np.zeros((2, out_height, out_width), np.float32)
    mask = np.zeros((out_height, out_width), np.float32)
    boxes = np.asarray(frame.boxes_px, np.float64).reshape(-1, 4)
    classes = np.asarray(frame.box_classes, np.int64)
    ignore = np.asarray(frame.box_ignore, bool) if len(frame.box_ignore) else np.zeros(len(boxes), bool)
    height, width = frame.shape
    boxes = np.clip(boxes, 0.0, [width, height, width, height])
    sizes = boxes[:, 2:] - boxes[:, :2]
    valid = np.all(sizes > 0, axis=1)
    for box, cls in zip(boxes[valid & ignore], classes[valid & ignore]):
        u0, v0 = np.floor(box[:2] / DETECTION_STRIDE).astype(int)
        u1, v1 = np.ceil(box[2:] / DETECTION_STRIDE).astype(int)
        weight[cls, v0:v1, u0:u1] = 0.0
    cells_u = np.arange(out_width, dtype=np.float64)
    cells_v = np.arange(out_height, dtype=np.float64)[:, None]
    # Large boxes first, so a small box sharing a centre cell keeps its size and offset.
    order = np.argsort(-(sizes[:, 0] * sizes[:, 1]), kind="stable")
    for index in order:
        if not valid[index] or ignore[index]:
            continue
        box, cls = boxes[index], classes[index]
        centre = (box[:2] + box[2:]) / (2 * DETECTION_STRIDE)
        cell = np.minimum(np.floor(centre).astype(int), [out_width - 1, out_height - 1])
        sigma = np.maximum(_GAUSSIAN_ALPHA * sizes[index] / (6 * DETECTION_STRIDE), 1e-3)
        gaussian = np.exp(-((cells_u - cell[0]) ** 2) / (2 * sigma[0] ** 2)
                          - ((cells_v - cell[1]) ** 2) / (2 * sigma[1] ** 2))
        np.maximum(heatmap[cls], gaussian, out=heatmap[cls])
        weight[cls, cell[1], cell[0]] = 1.0  # a real object inside an ignored one still counts
        log_size[:, cell[1], cell[0]] = np.log(np.maximum(sizes[index], _MIN_BOX_SIZE_PX))
        offset[:, cell[1], cell[0]] = centre - cell
        mask[cell[1], cell[0]] = 1.0
    return {"heatmap": heatmap, "heatmap_weight": weight, "box_log_size": log_size, "box_offset": offset,
            "box_mask": mask}


def lane_targets(lanes_px: dict[int, np.ndarray], rows_px: np.ndarray, width: int, num_cells: int) -> np.ndarray:
    """(4, R) cell index per slot and anchor row; ``num_cells`` where the lane is absent."""
    targets = np.full((len(LANE_POSITIONS), len(rows_px)), num_cells, np.int64)
    for slot, position in enumerate(LANE_POSITIONS):
        polyline = lanes_px.get(position)
        if polyline is None or len(polyline) < 2:
            continue
        u = polyline_u_at_rows(np.asarray(polyline, np.float64), rows_px)
        inside = np.isfinite(u) & (u >= 0.0) & (u < width)
        targets[slot, inside] = np.floor(u[inside] * num_cells / width).astype(np.int64)
    return targets


def polyline_u_at_rows(polyline: np.ndarray, rows_px: np.ndarray) -> np.ndarray:
    """u where the (K, 2) polyline first crosses each row (in polyline order); NaN where it does not.

    Works for any direction of travel; a horizontal segment has no single crossing and is
    skipped (its end points are covered by the neighbouring segments).
    """
    start, end = polyline[:-1], polyline[1:]
    dv = end[:, 1] - start[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (rows_px[:, None] - start[None, :, 1]) / dv[None, :]  # (R, K-1)
    crosses = (dv[None, :] != 0) & (t >= 0.0) & (t <= 1.0)
    first = np.argmax(crosses, axis=1)
    rows = np.arange(len(rows_px))
    u = start[first, 0] + t[rows, first] * (end[first, 0] - start[first, 0])
    return np.where(crosses[rows, first], u, np.nan)


def collate(batch: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DataLoader ``collate_fn``: (image (3, H, W), targets) pairs -> stacked images and targets."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    images = torch.stack([image for image, _ in batch])
    keys = batch[0][1].keys()
    return images, {key: torch.stack([targets[key] for _, targets in batch]) for key in keys}
