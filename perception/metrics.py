"""Perception metrics: detection mAP@0.5, segmentation mIoU, lane F1, LiDAR obstacle recall, latency.

- Detection: COCO's evaluation (pycocotools ``COCOeval``) at one IoU threshold, 0.5.
- Segmentation: a confusion matrix accumulated over frames (the torchvision
  ``references/segmentation`` ``ConfusionMatrix`` arithmetic).
- Lanes: CULane's protocol (``tools/lane_evaluation`` of XingangPan/SCNN): every lane drawn
  as a 30 px wide line at 1640x590, IoU of the masks, Hungarian matching, TP when IoU > 0.5.
- LiDAR obstacles: centre distance with one-to-one matching inside a range.

Accumulators take numpy arrays (or anything ``np.asarray`` reads) and return plain Python
values (float, int, None, dicts of them), so results go into JSON as they are. ``None``
marks a quantity that is undefined (no ground truth for it, nothing predicted), never 0.
Bad input raises ``ValueError`` naming the argument.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any

import cv2
import numpy as np
from numpy.typing import ArrayLike
from scipy.interpolate import CubicSpline
from scipy.optimize import linear_sum_assignment

from models.labels import DETECTION_CLASSES, IGNORE_INDEX, SEGMENTATION_CLASSES

# --------------------------------------------------------------------------- validation


def _boxes(name: str, value: ArrayLike) -> np.ndarray:
    boxes = np.asarray(value, dtype=np.float64)
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) (u_min, v_min, u_max, v_max), got {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise ValueError(f"{name} has non-finite coordinates")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise ValueError(f"{name} has a box with u_max < u_min or v_max < v_min")
    return boxes


def _vector(name: str, value: ArrayLike, length: int) -> np.ndarray:
    vector = np.asarray(value)
    if vector.size == 0:
        vector = vector.reshape(0)
    if vector.ndim != 1 or len(vector) != length:
        raise ValueError(f"{name} must have shape ({length},) to match the boxes, got {vector.shape}")
    return vector


def _class_indices(name: str, value: ArrayLike, num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """Integer class indices in [0, num_classes) (or ``ignore_index``), as int64."""
    values = np.asarray(value)
    if not np.issubdtype(values.dtype, np.integer):
        if values.dtype == bool or not np.issubdtype(values.dtype, np.floating):
            raise ValueError(f"{name} must hold integer class indices, got dtype {values.dtype}")
        if not np.isfinite(values).all() or (values != np.round(values)).any():
            raise ValueError(f"{name} must hold integer class indices")
    values = values.astype(np.int64)
    bad = (values < 0) | (values >= num_classes)
    if ignore_index is not None:
        bad &= values != ignore_index
    if bad.any():
        raise ValueError(f"{name} has class index {int(values[bad][0])} outside [0, {num_classes})")
    return values


def _points(name: str, value: ArrayLike) -> np.ndarray:
    points = np.asarray(value, dtype=np.float64)
    if points.size == 0:
        return points.reshape(0, 2)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2), got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError(f"{name} has non-finite coordinates")
    return points


def _ratio(numerator: int, denominator: int) -> float | None:
    return float(numerator / denominator) if denominator > 0 else None


# --------------------------------------------------------------------------- detection

DETECTION_IOU_THRESHOLD = 0.5
# The detection goal is stated for these classes; compute() reports their mean too.
VEHICLE_PEDESTRIAN: tuple[str, ...] = ("vehicle", "pedestrian")


class DetectionMetric:
    """mAP@0.5 over frames, computed by pycocotools' ``COCOeval`` (bbox).

    COCO's 101-point interpolated AP at IoU >= 0.5, area range "all", at most
    ``max_detections_per_image`` detections per frame (the highest scores). A class's AP is
    None when it has no non-ignored ground truth in any frame (COCO's -1), and ``map_50`` is
    the mean over the classes that have one; detections of a class without ground truth
    therefore cost nothing. pycocotools divides by TP + FP + eps, so a perfect AP reads
    1 - 2e-16.

    Ignored ground truth (``gt_ignore``, ``PerceptionFrame.box_ignore``: too small or mostly
    hidden) goes to COCO as ``iscrowd=1``, its ignore mechanism: an ignored object nobody
    detects is no miss, and a detection matched to one is neither TP nor FP. COCO matches a
    detection to a crowd box by intersection over the *detection's* area, not IoU, and one
    crowd box absorbs any number of detections: a detection at least half inside an ignored
    box is ignored however small it is, while one much larger than the ignored box (a box
    around a distant car, say) stays a false positive. A detection that can match a regular
    ground-truth box takes it in preference to an ignored one.
    """

    def __init__(self, max_detections_per_image: int = 100) -> None:
        if max_detections_per_image < 1:
            raise ValueError(f"max_detections_per_image must be >= 1, got {max_detections_per_image}")
        self.max_detections_per_image = max_detections_per_image
        self._frames: list[tuple[np.ndarray, ...]] = []

    def reset(self) -> None:
        self._frames.clear()

    def update(self, pred_boxes: ArrayLike, pred_scores: ArrayLike, pred_classes: ArrayLike,
               gt_boxes: ArrayLike, gt_classes: ArrayLike, gt_ignore: ArrayLike | None = None) -> None:
        """Add one frame. Boxes are pixels (u_min, v_min, u_max, v_max); classes index
        ``DETECTION_CLASSES``; ``gt_ignore`` (bool per ground-truth box) defaults to none ignored."""
        num_classes = len(DETECTION_CLASSES)
        pred = _boxes("pred_boxes", pred_boxes)
        scores = _vector("pred_scores", pred_scores, len(pred)).astype(np.float64)
        if not np.isfinite(scores).all():
            raise ValueError("pred_scores has non-finite values")
        pred_cls = _class_indices("pred_classes", _vector("pred_classes", pred_classes, len(pred)), num_classes)
        gt = _boxes("gt_boxes", gt_boxes)
        gt_cls = _class_indices("gt_classes", _vector("gt_classes", gt_classes, len(gt)), num_classes)
        if gt_ignore is None:
            ignore = np.zeros(len(gt), bool)
        else:
            ignore = _vector("gt_ignore", gt_ignore, len(gt))
            if not np.isin(ignore, (0, 1)).all():
                raise ValueError("gt_ignore must hold booleans")
            ignore = ignore.astype(bool)
        self._frames.append((pred, scores, pred_cls, gt, gt_cls, ignore))

    def compute(self) -> dict[str, Any]:
        """Keys: ``map_50`` (mean over classes with ground truth), ``map_50_vehicle_pedestrian``,
        ``ap_50`` and ``recall_50`` ({class name: float | None}; recall at the detection cap),
        ``num_gt`` ({class name: non-ignored ground-truth count}), ``num_frames``."""
        names = DETECTION_CLASSES
        num_gt = np.zeros(len(names), np.int64)
        for *_, gt_cls, ignore in self._frames:
            num_gt += np.bincount(gt_cls[~ignore], minlength=len(names))
        ap: dict[str, float | None] = dict.fromkeys(names)
        recall: dict[str, float | None] = dict.fromkeys(names)
        if num_gt.any():  # COCOeval cannot accumulate without any ground truth
            precision, max_recall = self._coco_eval()
            for k, name in enumerate(names):
                if num_gt[k] > 0:
                    ap[name] = float(precision[:, k].mean())
                    recall[name] = float(max_recall[k])
        return {
            "map_50": _mean_defined(ap.values()),
            "map_50_vehicle_pedestrian": _mean_defined(ap[name] for name in VEHICLE_PEDESTRIAN),
            "ap_50": ap,
            "recall_50": recall,
            "num_gt": {name: int(count) for name, count in zip(names, num_gt)},
            "num_frames": len(self._frames),
        }

    def _coco_eval(self) -> tuple[np.ndarray, np.ndarray]:
        """COCO's interpolated precision (R recall thresholds, K classes) and max recall (K,)."""
        # pycocotools is in the ml extra: imported here so the other metrics need only numpy, scipy, cv2.
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        # Ids start at 1: COCOeval stores a matched annotation's id and reads 0 as "unmatched".
        images = [{"id": i + 1} for i in range(len(self._frames))]
        categories = [{"id": k + 1, "name": name} for k, name in enumerate(DETECTION_CLASSES)]
        gt_annotations: list[dict[str, Any]] = []
        dt_annotations: list[dict[str, Any]] = []
        for image_id, (pred, scores, pred_cls, gt, gt_cls, ignore) in enumerate(self._frames, start=1):
            for box, cls, crowd in zip(gt, gt_cls, ignore):
                gt_annotations.append({**_coco_box(box), "id": len(gt_annotations) + 1, "image_id": image_id,
                                       "category_id": int(cls) + 1, "iscrowd": int(crowd)})
            for box, cls, score in zip(pred, pred_cls, scores):
                dt_annotations.append({**_coco_box(box), "id": len(dt_annotations) + 1, "image_id": image_id,
                                       "category_id": int(cls) + 1, "score": float(score), "iscrowd": 0})
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            coco_gt, coco_dt = COCO(), COCO()
            coco_gt.dataset = {"images": images, "categories": categories, "annotations": gt_annotations}
            coco_dt.dataset = {"images": images, "categories": categories, "annotations": dt_annotations}
            coco_gt.createIndex()
            coco_dt.createIndex()
            evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
            params = evaluator.params
            params.imgIds = [image["id"] for image in images]
            params.catIds = [category["id"] for category in categories]
            params.iouThrs = np.array([DETECTION_IOU_THRESHOLD])
            params.maxDets = [self.max_detections_per_image]
            params.areaRng, params.areaRngLbl = params.areaRng[:1], params.areaRngLbl[:1]  # "all"
            evaluator.evaluate()
            evaluator.accumulate()
        # precision: [iou threshold, recall threshold, class, area range, max detections]
        return evaluator.eval["precision"][0, :, :, 0, 0], evaluator.eval["recall"][0, :, 0, 0]


def _coco_box(box: np.ndarray) -> dict[str, Any]:
    u_min, v_min, u_max, v_max = (float(c) for c in box)
    width, height = u_max - u_min, v_max - v_min
    return {"bbox": [u_min, v_min, width, height], "area": width * height}


def _mean_defined(values: Iterable[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


# --------------------------------------------------------------------------- segmentation


class SegmentationMetric:
    """Pixel confusion matrix over frames -> IoU per class, mIoU, pixel accuracy.

    Pixels whose ground truth is ``ignore_index`` are left out entirely (whatever was
    predicted there). A class's IoU is None when its union is empty (absent from both the
    ground truth and the predictions of every frame), and mIoU is the mean over the classes
    with a non-empty union, the standard (torchvision, mmseg): a class predicted but never
    present scores 0 and counts, a class absent from both does not.
    """

    def __init__(self, num_classes: int = len(SEGMENTATION_CLASSES), ignore_index: int = IGNORE_INDEX,
                 class_names: Sequence[str] | None = None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} is a class index (num_classes {num_classes})")
        if class_names is None:
            class_names = (SEGMENTATION_CLASSES if num_classes == len(SEGMENTATION_CLASSES)
                           else tuple(str(k) for k in range(num_classes)))
        if len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = tuple(class_names)
        self._confusion = np.zeros((num_classes, num_classes), np.int64)

    def reset(self) -> None:
        self._confusion[:] = 0

    @property
    def confusion_matrix(self) -> np.ndarray:
        """(num_classes, num_classes) pixel counts: rows ground truth, columns prediction (a copy)."""
        return self._confusion.copy()

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add class-index images of one frame (or a batch): ``pred`` and ``target`` of one shape."""
        pred_array, target_array = np.asarray(pred), np.asarray(target)
        if pred_array.shape != target_array.shape:
            raise ValueError(f"pred shape {pred_array.shape} differs from target shape {target_array.shape}")
        target_index = _class_indices("target", target_array, self.num_classes, self.ignore_index)
        valid = target_index != self.ignore_index
        pred_index = _class_indices("pred (at labelled pixels)", pred_array[valid], self.num_classes)
        # One bincount over (gt, pred) pairs is the whole matrix, without a Python loop.
        pairs = target_index[valid] * self.num_classes + pred_index
        self._confusion += np.bincount(pairs, minlength=self.num_classes ** 2).reshape(
            self.num_classes, self.num_classes)

    def compute(self) -> dict[str, Any]:
        """Keys: ``miou``, ``iou`` ({class name: float | None}), ``pixel_accuracy``, ``num_pixels``."""
        intersection = np.diag(self._confusion)
        union = self._confusion.sum(axis=0) + self._confusion.sum(axis=1) - intersection
        iou = {name: _ratio(int(i), int(u)) for name, i, u in zip(self.class_names, intersection, union)}
        num_pixels = int(self._confusion.sum())
        return {
            "miou": _mean_defined(iou.values()),
            "iou": iou,
            "pixel_accuracy": _ratio(int(intersection.sum()), num_pixels),
            "num_pixels": num_pixels,
        }


# --------------------------------------------------------------------------- lanes (CULane)

# CULane's evaluation draws every lane 30 px wide on its 1640x590 images.
CULANE_IMAGE_WIDTH_PX = 1640
CULANE_LANE_WIDTH_PX = 30
# Other image sizes keep the width as this fraction of the image *width*, not of
# sqrt(W * H / (1640 * 590)): a lane runs up the image, so its drawn width is a horizontal
# tolerance, and the horizontal scale keeps it the same share of the view. Our cameras are
# taller than CULane's wide crop, where the area scale would loosen it (21 px instead of
# 15 px at 800x600).
LANE_WIDTH_FRACTION_OF_IMAGE_WIDTH = CULANE_LANE_WIDTH_PX / CULANE_IMAGE_WIDTH_PX
# splineInterpTimes(lane, 50): points sampled per spline segment before drawing.
CULANE_SPLINE_SAMPLES_PER_SEGMENT = 50
LANE_IOU_THRESHOLD = 0.5

Lanes = Mapping[int, ArrayLike] | Sequence[ArrayLike]


def lane_width_px(image_width_px: int) -> int:
    """CULane's 30 px line width scaled to an image ``image_width_px`` wide (at least 1 px)."""
    return max(1, round(LANE_WIDTH_FRACTION_OF_IMAGE_WIDTH * image_width_px))


def interpolate_lane(polyline: ArrayLike) -> np.ndarray:
    """A lane densified as CULane does before drawing: a natural cubic spline through the
    points, parameterised by chord length, sampled 50 times per segment.

    CULane splines any lane of 3 or more points (a natural spline is determined by 3) and
    draws 2-point lanes straight; we do the same. The chord-length parameter, not v, keeps
    the spline defined for lanes that are not monotonic in v (a lane seen sideways in a
    turn) and for points in any order. Repeated consecutive points are dropped first: they
    make a zero-length segment, where CULane divides by zero.
    """
    points = _points("lane polyline", polyline)
    if len(points) > 1:
        moved = np.any(np.diff(points, axis=0) != 0, axis=1)
        points = points[np.concatenate([[True], moved])]
    if len(points) < 3:
        return points
    chord = np.linalg.norm(np.diff(points, axis=0), axis=1)
    knots = np.concatenate([[0.0], np.cumsum(chord)])
    spline = CubicSpline(knots, points, bc_type="natural")
    fractions = np.arange(CULANE_SPLINE_SAMPLES_PER_SEGMENT) / CULANE_SPLINE_SAMPLES_PER_SEGMENT
    samples = (knots[:-1, None] + chord[:, None] * fractions).ravel()
    return np.concatenate([spline(samples), points[-1:]])


def draw_lane_mask(polyline: ArrayLike, image_size: tuple[int, int], width_px: int) -> np.ndarray:
    """(H, W) bool mask of one lane drawn ``width_px`` wide; ``image_size`` is (W, H)."""
    width, height = image_size
    mask = np.zeros((height, width), np.uint8)
    points = interpolate_lane(polyline)
    if len(points) < 2:
        return mask.astype(bool)
    # Far outside the image only the int32 range matters; a lane out there matches nothing anyway.
    limit = 16 * max(width, height)
    pixels = np.rint(np.clip(points, -limit, limit)).astype(np.int32)  # cv::Point(Point2f) rounds
    cv2.polylines(mask, [pixels.reshape(-1, 1, 2)], isClosed=False, color=1, thickness=width_px,
                  lineType=cv2.LINE_8)
    return mask.astype(bool)


def _lane_list(name: str, lanes: Lanes) -> list[np.ndarray]:
    """The polylines of a frame with 2 or more points: fewer draw nothing, so they are dropped
    (neither predicted nor ground-truth lanes). Positions play no part in CULane matching."""
    items = lanes.values() if isinstance(lanes, Mapping) else lanes
    polylines = [_points(f"{name}[{i}]", lane) for i, lane in enumerate(items)]
    return [lane for lane in polylines if len(lane) >= 2]


def lane_iou_matrix(pred_lanes: Lanes, gt_lanes: Lanes, image_size: tuple[int, int]) -> np.ndarray:
    """(P, G) IoU of the drawn lane masks (lanes with fewer than 2 points dropped)."""
    width_px = lane_width_px(image_size[0])
    pred_masks = [draw_lane_mask(lane, image_size, width_px) for lane in _lane_list("pred_lanes", pred_lanes)]
    gt_masks = [draw_lane_mask(lane, image_size, width_px) for lane in _lane_list("gt_lanes", gt_lanes)]
    iou = np.zeros((len(pred_masks), len(gt_masks)))
    for i, pred_mask in enumerate(pred_masks):
        for j, gt_mask in enumerate(gt_masks):
            union = np.count_nonzero(pred_mask | gt_mask)
            iou[i, j] = np.count_nonzero(pred_mask & gt_mask) / union if union else 0.0
    return iou


def match_lanes(pred_lanes: Lanes, gt_lanes: Lanes, image_size: tuple[int, int],
                iou_threshold: float = LANE_IOU_THRESHOLD) -> tuple[int, int, int]:
    """(TP, FP, FN) of one frame: Hungarian matching maximising the total IoU, as CULane,
    and a matched pair is a TP when its IoU exceeds ``iou_threshold``."""
    iou = lane_iou_matrix(pred_lanes, gt_lanes, image_size)
    num_pred, num_gt = iou.shape
    true_positives = 0
    if iou.size:
        rows, cols = linear_sum_assignment(iou, maximize=True)
        true_positives = int(np.count_nonzero(iou[rows, cols] > iou_threshold))
    return true_positives, num_pred - true_positives, num_gt - true_positives


class LaneF1Metric:
    """CULane precision, recall and F1 accumulated over frames of one image size (W, H).

    Lanes are (K, 2) pixel polylines (u, v), given as a ``PerceptionFrame.lanes_px``-style
    dict (position -> polyline; positions are not used) or a list. Each is drawn
    ``lane_width_px(W)`` wide (30 px scaled by W / 1640, see
    ``LANE_WIDTH_FRACTION_OF_IMAGE_WIDTH``) after CULane's spline interpolation.
    """

    def __init__(self, image_size: tuple[int, int], iou_threshold: float = LANE_IOU_THRESHOLD) -> None:
        width, height = image_size
        if width < 1 or height < 1:
            raise ValueError(f"image_size must be a positive (W, H), got {image_size}")
        self.image_size = (int(width), int(height))
        self.iou_threshold = iou_threshold
        self.true_positives = self.false_positives = self.false_negatives = 0

    def reset(self) -> None:
        self.true_positives = self.false_positives = self.false_negatives = 0

    def update(self, pred_lanes: Lanes, gt_lanes: Lanes) -> tuple[int, int, int]:
        """Add one frame; returns its (TP, FP, FN)."""
        counts = match_lanes(pred_lanes, gt_lanes, self.image_size, self.iou_threshold)
        self.true_positives += counts[0]
        self.false_positives += counts[1]
        self.false_negatives += counts[2]
        return counts

    def compute(self) -> dict[str, Any]:
        """Keys: ``precision`` (None without predictions), ``recall`` (None without ground
        truth), ``f1`` = 2TP / (2TP + FP + FN) (None with neither), ``tp``, ``fp``, ``fn``."""
        tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
        return {
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "tp": tp,
            "fp": fp,
            "fn": fn,
        }


# --------------------------------------------------------------------------- LiDAR obstacles


@dataclass(frozen=True)
class ObstacleMatch:
    """One frame's obstacle matching."""

    matched: int  # ground truth within range with a prediction within the match distance
    num_gt: int  # ground truth within range
    false_positives: int  # predictions within range that explain no ground truth


def _gated_assignment(distance: np.ndarray, gate: float) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the one-to-one pairs within ``gate``: as many pairs as
    possible, then the least total distance."""
    if distance.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    outside = distance > gate
    # A pair outside the gate must cost more than all feasible pairs together, so the
    # assignment never trades a match for a shorter total distance.
    forbidden_cost = gate * (min(distance.shape) + 1) + 1.0
    rows, cols = linear_sum_assignment(np.where(outside, forbidden_cost, distance))
    keep = ~outside[rows, cols]
    return rows[keep], cols[keep]


def match_obstacles(pred_centres_xy: ArrayLike, gt_centres_xy: ArrayLike, max_range_m: float = 40.0,
                    match_distance_m: float = 1.0) -> ObstacleMatch:
    """Match predicted to ground-truth obstacle centres (base_link x, y in metres).

    Ground truth farther than ``max_range_m`` from the origin is excluded. Predictions at any
    range are first matched one-to-one (Hungarian, distance <= ``match_distance_m``) to the
    in-range ground truth; the rest are then matched to the out-of-range ground truth, so a
    detection of an object just beyond the range is no false positive. A prediction beyond
    the range that matches nothing is ignored.
    """
    if match_distance_m <= 0 or max_range_m <= 0:
        raise ValueError(f"max_range_m ({max_range_m}) and match_distance_m ({match_distance_m}) must be > 0")
    pred = _points("pred_centres_xy", pred_centres_xy)
    gt = _points("gt_centres_xy", gt_centres_xy)
    gt_in_range = np.linalg.norm(gt, axis=1) <= max_range_m
    distance = np.linalg.norm(pred[:, None, :] - gt[None, :, :], axis=2)

    pred_rows, _ = _gated_assignment(distance[:, gt_in_range], match_distance_m)
    unmatched = np.setdiff1d(np.arange(len(pred)), pred_rows)
    excused_rows, _ = _gated_assignment(distance[np.ix_(unmatched, ~gt_in_range)], match_distance_m)
    unexplained = np.setdiff1d(unmatched, unmatched[excused_rows])
    false_positives = int(np.count_nonzero(np.linalg.norm(pred[unexplained], axis=1) <= max_range_m))
    return ObstacleMatch(matched=len(pred_rows), num_gt=int(np.count_nonzero(gt_in_range)),
                         false_positives=false_positives)


def obstacle_recall(pred_centres_xy: ArrayLike, gt_centres_xy: ArrayLike, max_range_m: float = 40.0,
                    match_distance_m: float = 1.0) -> tuple[int, int]:
    """(matched, total): in-range ground truth matched one-to-one, and in-range ground truth."""
    match = match_obstacles(pred_centres_xy, gt_centres_xy, max_range_m, match_distance_m)
    return match.matched, match.num_gt


class RecallMetric:
    """Obstacle recall and precision over frames (see ``match_obstacles``)."""

    def __init__(self, max_range_m: float = 40.0, match_distance_m: float = 1.0) -> None:
        self.max_range_m = max_range_m
        self.match_distance_m = match_distance_m
        self.matched = self.num_gt = self.false_positives = 0

    def reset(self) -> None:
        self.matched = self.num_gt = self.false_positives = 0

    def update(self, pred_centres_xy: ArrayLike, gt_centres_xy: ArrayLike) -> ObstacleMatch:
        """Add one frame; returns its matching."""
        match = match_obstacles(pred_centres_xy, gt_centres_xy, self.max_range_m, self.match_distance_m)
        self.matched += match.matched
        self.num_gt += match.num_gt
        self.false_positives += match.false_positives
        return match

    def compute(self) -> dict[str, Any]:
        """Keys: ``recall`` (None without ground truth in range), ``precision`` (None without
        counted predictions), ``matched``, ``num_gt``, ``false_positives``."""
        return {
            "recall": _ratio(self.matched, self.num_gt),
            "precision": _ratio(self.matched, self.matched + self.false_positives),
            "matched": self.matched,
            "num_gt": self.num_gt,
            "false_positives": self.false_positives,
        }


# --------------------------------------------------------------------------- latency


class LatencyMeter:
    """Wall-clock durations of repeated calls: ``with meter.time(): run()``.

    ``skip_first`` drops warm-up calls (lazy initialisation, the first CUDA kernels) from the
    statistics. ``clock_ns`` is injectable so tests need no real time.
    """

    def __init__(self, skip_first: int = 0, clock_ns: Callable[[], int] = perf_counter_ns) -> None:
        if skip_first < 0:
            raise ValueError(f"skip_first must be >= 0, got {skip_first}")
        self.skip_first = skip_first
        self._clock_ns = clock_ns
        self._seen = 0
        self._durations_ns: list[int] = []

    def reset(self) -> None:
        self._seen = 0
        self._durations_ns.clear()

    @contextlib.contextmanager
    def time(self) -> Iterator[None]:
        """Time the body of a ``with`` block (also when it raises)."""
        start_ns = self._clock_ns()
        try:
            yield
        finally:
            self.add_ns(self._clock_ns() - start_ns)

    def add_ns(self, duration_ns: int) -> None:
        """Record a duration measured elsewhere."""
        if duration_ns < 0:
            raise ValueError(f"duration_ns must be >= 0, got {duration_ns}")
        self._seen += 1
        if self._seen > self.skip_first:
            self._durations_ns.append(int(duration_ns))

    def summary(self) -> dict[str, Any]:
        """Keys: ``count``, ``median_ms``, ``mean_ms``, ``p90_ms``, ``max_ms`` (None when empty)."""
        if not self._durations_ns:
            return {"count": 0, "median_ms": None, "mean_ms": None, "p90_ms": None, "max_ms": None}
        durations_ms = np.asarray(self._durations_ns, np.float64) / 1e6
        return {
            "count": len(durations_ms),
            "median_ms": float(np.median(durations_ms)),
            "mean_ms": float(durations_ms.mean()),
            "p90_ms": float(np.percentile(durations_ms, 90)),
            "max_ms": float(durations_ms.max()),
        }
