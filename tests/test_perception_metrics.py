"""Perception metrics on hand-made cases whose answers are worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.labels import DETECTION_CLASSES
from perception.metrics import (
    DetectionMetric,
    LaneF1Metric,
    LatencyMeter,
    RecallMetric,
    SegmentationMetric,
    interpolate_lane,
    lane_iou_matrix,
    lane_width_px,
    match_obstacles,
    obstacle_recall,
)

VEHICLE, PEDESTRIAN, RED = 0, 1, 2
NO_BOXES = np.zeros((0, 4))
NO_INTS = np.zeros(0, np.int64)


def _frame(metric: DetectionMetric, preds: list[tuple[list[float], float, int]],
           gts: list[tuple[list[float], int, bool]]) -> None:
    metric.update(np.array([p[0] for p in preds]).reshape(-1, 4), np.array([p[1] for p in preds]),
                  np.array([p[2] for p in preds], np.int64), np.array([g[0] for g in gts]).reshape(-1, 4),
                  np.array([g[1] for g in gts], np.int64), np.array([g[2] for g in gts], bool))


CAR_A = [100.0, 200.0, 180.0, 260.0]
CAR_B = [400.0, 210.0, 470.0, 250.0]
WALKER = [300.0, 180.0, 320.0, 240.0]

# --------------------------------------------------------------------------- detection


def test_perfect_detections_give_map_one():
    metric = DetectionMetric()
    _frame(metric, [(CAR_A, 0.9, VEHICLE), (WALKER, 0.8, PEDESTRIAN)],
           [(CAR_A, VEHICLE, False), (WALKER, PEDESTRIAN, False)])
    _frame(metric, [(CAR_B, 0.7, VEHICLE)], [(CAR_B, VEHICLE, False)])
    result = metric.compute()
    # pycocotools divides by tp + fp + eps: a perfect AP is 1 - 1e-16, hence approx.
    assert result["map_50"] == pytest.approx(1.0, abs=1e-12)
    assert result["map_50_vehicle_pedestrian"] == pytest.approx(1.0, abs=1e-12)
    assert result["ap_50"] == {"vehicle": pytest.approx(1.0, abs=1e-12), "pedestrian": pytest.approx(1.0, abs=1e-12),
                               "traffic_light_red": None, "traffic_light_yellow": None, "traffic_light_green": None}
    assert result["num_gt"]["vehicle"] == 2 and result["num_frames"] == 2
    json.dumps(result)  # plain Python values only


def test_one_of_two_missed_gives_coco_101_point_ap():
    metric = DetectionMetric()
    _frame(metric, [(CAR_A, 0.9, VEHICLE)], [(CAR_A, VEHICLE, False)])
    _frame(metric, [], [(CAR_B, VEHICLE, False)])
    result = metric.compute()
    # One TP out of two GT: the precision/recall curve is the single point (R 0.5, P 1).
    # COCO samples the interpolated precision at the 101 recall levels 0, 0.01, ..., 1:
    # levels 0..0.50 (51 of them) see precision 1, levels 0.51..1 (50) are unreachable and
    # count 0, so AP = 51 / 101 = 0.50495..., not VOC's 0.5.
    assert result["ap_50"]["vehicle"] == pytest.approx(51 / 101, abs=1e-12)
    assert result["recall_50"]["vehicle"] == 0.5
    assert result["map_50"] == pytest.approx(51 / 101, abs=1e-12)


def test_false_positive_ranked_first_halves_precision():
    metric = DetectionMetric()
    # Sorted by score: FP (0.9) then TP (0.8): precision 0 then 0.5 at recall 0 then 1; the
    # interpolated (right-maximum) precision is 0.5 at every recall level, so AP = 0.5.
    _frame(metric, [(CAR_B, 0.9, VEHICLE), (CAR_A, 0.8, VEHICLE)], [(CAR_A, VEHICLE, False)])
    assert metric.compute()["ap_50"]["vehicle"] == pytest.approx(0.5, abs=1e-12)


def test_detection_on_ignored_ground_truth_is_not_a_false_positive():
    def ap(gts: list[tuple[list[float], int, bool]]) -> float:
        metric = DetectionMetric()
        # The detection of CAR_B scores highest: as a false positive it would put
        # precision 0 before the true positive.
        _frame(metric, [(CAR_B, 0.95, VEHICLE), (CAR_A, 0.9, VEHICLE)], gts)
        return metric.compute()["ap_50"]["vehicle"]

    assert ap([(CAR_A, VEHICLE, False), (CAR_B, VEHICLE, True)]) == pytest.approx(1.0)
    assert ap([(CAR_A, VEHICLE, False)]) == pytest.approx(0.5)  # control: no CAR_B label, a FP


def test_missed_ignored_ground_truth_does_not_lower_recall():
    metric = DetectionMetric()
    _frame(metric, [(CAR_A, 0.9, VEHICLE)], [(CAR_A, VEHICLE, False), (CAR_B, VEHICLE, True)])
    result = metric.compute()
    assert result["ap_50"]["vehicle"] == pytest.approx(1.0)
    assert result["recall_50"]["vehicle"] == 1.0
    assert result["num_gt"]["vehicle"] == 1


def test_ignored_box_matching_uses_the_detections_area():
    # COCO crowd matching: intersection / detection area. A small detection inside the
    # ignored box is ignored; a detection four times the ignored box's size is a FP.
    small_inside = [410.0, 215.0, 430.0, 235.0]
    huge_around = [385.0, 190.0, 485.0, 270.0]  # CAR_B covers 2800 of its 8000 px^2
    for box, expected in ((small_inside, 1.0), (huge_around, 0.5)):
        metric = DetectionMetric()
        _frame(metric, [(box, 0.95, VEHICLE), (CAR_A, 0.9, VEHICLE)],
               [(CAR_A, VEHICLE, False), (CAR_B, VEHICLE, True)])
        assert metric.compute()["ap_50"]["vehicle"] == pytest.approx(expected)


def test_class_confusion():
    metric = DetectionMetric()
    # The car is detected as a pedestrian with the top score: a miss for vehicles and a
    # FP ranked first for pedestrians (AP 0.5 as above). A red-light detection without any
    # red-light ground truth changes nothing.
    _frame(metric, [(CAR_A, 0.9, PEDESTRIAN), (WALKER, 0.8, PEDESTRIAN), (CAR_B, 0.99, RED)],
           [(CAR_A, VEHICLE, False), (WALKER, PEDESTRIAN, False)])
    result = metric.compute()
    assert result["ap_50"]["vehicle"] == 0.0
    assert result["ap_50"]["pedestrian"] == pytest.approx(0.5)
    assert result["ap_50"]["traffic_light_red"] is None
    assert result["map_50"] == pytest.approx(0.25)
    assert result["map_50_vehicle_pedestrian"] == pytest.approx(0.25)


def test_map_is_over_classes_with_ground_truth():
    metric = DetectionMetric()
    _frame(metric, [(CAR_A, 0.9, VEHICLE), (WALKER, 0.9, RED)],
           [(CAR_A, VEHICLE, False), (WALKER, RED, False), (CAR_B, PEDESTRIAN, True)])
    result = metric.compute()
    assert result["ap_50"]["pedestrian"] is None  # only ignored ground truth
    assert result["map_50"] == pytest.approx(1.0)
    assert result["map_50_vehicle_pedestrian"] == pytest.approx(1.0)  # the vehicle AP alone


def test_empty_frames():
    metric = DetectionMetric()
    metric.update(NO_BOXES, [], NO_INTS, NO_BOXES, NO_INTS, np.zeros(0, bool))
    result = metric.compute()
    assert result["map_50"] is None and result["map_50_vehicle_pedestrian"] is None
    assert set(result["ap_50"]) == set(DETECTION_CLASSES) and result["num_frames"] == 1
    # Empty frames beside real ones: no predictions at all still evaluates (AP 0).
    metric.update(NO_BOXES, [], NO_INTS, [CAR_A], [VEHICLE], [False])
    assert metric.compute()["ap_50"]["vehicle"] == 0.0
    metric.update([CAR_A], [0.5], [VEHICLE], NO_BOXES, NO_INTS)  # a FP in a frame without objects
    assert metric.compute()["ap_50"]["vehicle"] == 0.0


@pytest.mark.parametrize("arguments, message", [
    (dict(pred_scores=[0.9, 0.8]), "pred_scores"),
    (dict(pred_boxes=[[0, 0, np.nan, 10]]), "pred_boxes has non-finite"),
    (dict(pred_boxes=[[10, 0, 0, 10]]), "u_max < u_min"),
    (dict(pred_classes=[7]), "pred_classes has class index 7"),
    (dict(pred_classes=[0.5]), "pred_classes must hold integer"),
    (dict(gt_ignore=[False, True]), "gt_ignore"),
    (dict(gt_boxes=[[0, 0, 10]]), "gt_boxes must have shape"),
])
def test_detection_bad_input(arguments, message):
    frame = dict(pred_boxes=[CAR_A], pred_scores=[0.9], pred_classes=[0], gt_boxes=[CAR_A], gt_classes=[0],
                 gt_ignore=[False])
    if "gt_boxes" in arguments:
        frame["gt_classes"], frame["gt_ignore"] = [0], [False]
    with pytest.raises(ValueError, match=message):
        DetectionMetric().update(**{**frame, **arguments})

# --------------------------------------------------------------------------- segmentation


def test_known_confusion_matrix_gives_known_ious():
    metric = SegmentationMetric(num_classes=4, ignore_index=255)
    target = np.array([[0, 0, 1, 1, 2, 255]], np.uint8)
    pred = np.array([[0, 1, 1, 1, 0, 3]], np.uint8)  # the last pixel is ignored: its 3 never counts
    metric.update(pred, target)
    np.testing.assert_array_equal(metric.confusion_matrix,
                                  [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    result = metric.compute()
    # IoU = diagonal / (row sum + column sum - diagonal): 1/(2+2-1), 2/(2+3-2), 0/(1+0-0);
    # class 3 is in neither ground truth nor prediction (empty union): None, not averaged.
    assert result["iou"] == {"0": pytest.approx(1 / 3), "1": pytest.approx(2 / 3), "2": 0.0, "3": None}
    assert result["miou"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert result["pixel_accuracy"] == pytest.approx(3 / 5)
    assert result["num_pixels"] == 5
    json.dumps(result)


def test_segmentation_accumulates_and_names_classes():
    metric = SegmentationMetric()
    target = np.zeros((4, 5), np.uint8)
    metric.update(target, target)
    metric.update(target, np.full((4, 5), 255, np.uint8))  # all ignored: adds nothing
    result = metric.compute()
    assert result["num_pixels"] == 20 and result["miou"] == 1.0 and result["pixel_accuracy"] == 1.0
    assert len(result["iou"]) == 15 and sum(v is not None for v in result["iou"].values()) == 1
    assert SegmentationMetric().compute()["miou"] is None


def test_segmentation_bad_input():
    metric = SegmentationMetric(num_classes=3)
    with pytest.raises(ValueError, match="shape"):
        metric.update(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="target has class index 7"):
        metric.update(np.zeros((1, 1), np.uint8), np.full((1, 1), 7, np.uint8))
    with pytest.raises(ValueError, match="pred"):
        metric.update(np.full((1, 1), 3, np.uint8), np.zeros((1, 1), np.uint8))

# --------------------------------------------------------------------------- lanes

SIZE = (1640, 590)  # CULane's resolution: lanes 30 px wide


def _lane(shift_px: float = 0.0) -> np.ndarray:
    """A slanted lane from the bottom of the image up (direction about 16 degrees off vertical)."""
    v = np.linspace(590, 250, 6)
    return np.stack([800 + (590 - v) * 100 / 340 + shift_px, v], axis=1)


def test_lane_width_scales_with_image_width():
    assert lane_width_px(1640) == 30
    assert lane_width_px(820) == 15
    assert lane_width_px(800) == 15  # 14.6 rounded
    assert lane_width_px(10) == 1


def test_identical_lanes_give_f1_one():
    metric = LaneF1Metric(SIZE)
    assert metric.update({-1: _lane(), 1: _lane(300)}, [_lane(), _lane(300)]) == (2, 0, 0)
    assert metric.compute() == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "tp": 2, "fp": 0, "fn": 0}


def test_small_shift_matches_large_shift_does_not():
    iou = lane_iou_matrix([_lane(2), _lane(40)], [_lane()], SIZE)
    assert iou[0, 0] > 0.8  # about (30 - 2) / (30 + 2) across the line
    # 40 px sideways is 38 px across a line 30 px wide: the masks do not touch.
    assert iou[1, 0] == 0.0
    metric = LaneF1Metric(SIZE)
    assert metric.update([_lane(2)], [_lane()]) == (1, 0, 0)
    assert metric.update([_lane(40)], [_lane()]) == (0, 1, 1)
    result = metric.compute()
    assert result["precision"] == 0.5 and result["recall"] == 0.5 and result["f1"] == 0.5


def test_two_predictions_for_one_lane_give_one_tp_one_fp():
    assert LaneF1Metric(SIZE).update([_lane(3), _lane(1)], [_lane()]) == (1, 1, 0)


def test_hungarian_matching_beats_greedy():
    # Prediction 0 lies between the lanes, nearer lane 0; prediction 1 overlaps only lane 0,
    # less than prediction 0 does. Greedy "best IoU first" gives 1 TP; the assignment 2.
    pred = [_lane(7), _lane(-8)]
    gt = [_lane(0), _lane(16)]
    iou = lane_iou_matrix(pred, gt, SIZE)
    assert iou[0, 0] > iou[1, 0] > 0.5 and iou[0, 1] > 0.5 > iou[1, 1]
    assert LaneF1Metric(SIZE).update(pred, gt) == (2, 0, 0)


def test_empty_frames_and_short_lanes():
    metric = LaneF1Metric(SIZE)
    assert metric.update([], []) == (0, 0, 0)
    assert metric.compute() == {"precision": None, "recall": None, "f1": None, "tp": 0, "fp": 0, "fn": 0}
    assert metric.update({}, {-1: _lane(), 1: _lane(300)}) == (0, 0, 2)
    assert metric.update([_lane()], []) == (0, 1, 0)
    assert metric.update([np.array([[800.0, 590.0]])], []) == (0, 0, 0)  # fewer than 2 points: dropped
    assert metric.compute()["f1"] == 0.0


def test_spline_interpolation_follows_a_curve():
    def bend(v: np.ndarray) -> np.ndarray:
        """Half a sine wave up the image: straight (zero curvature) at both ends, as the
        natural spline CULane uses assumes."""
        return np.stack([800 + 60 * np.sin(np.pi * (590 - v) / 340), v], axis=1)

    def largest_distance_to_curve(points: np.ndarray) -> float:
        curve = bend(np.linspace(590, 250, 5001))
        return float(np.linalg.norm(points[:, None] - curve[None], axis=2).min(axis=1).max())

    sparse = bend(np.linspace(590, 250, 5))
    interpolated = interpolate_lane(sparse)
    assert len(interpolated) == 4 * 50 + 1
    assert largest_distance_to_curve(interpolated) < 0.5  # straight chords: 4 px
    assert lane_iou_matrix([sparse], [bend(np.linspace(590, 250, 60))], SIZE)[0, 0] > 0.95  # chords: 0.89
    # Repeated points are dropped; 2-point lanes stay straight.
    np.testing.assert_array_equal(interpolate_lane([[1, 2], [1, 2], [5, 6]]), [[1, 2], [5, 6]])


def test_lane_bad_input():
    with pytest.raises(ValueError, match=r"pred_lanes\[0\] has non-finite"):
        LaneF1Metric(SIZE).update([[[0, 0], [np.inf, 1]]], [])
    with pytest.raises(ValueError, match=r"gt_lanes\[0\] must have shape"):
        LaneF1Metric(SIZE).update([], [[[0, 0, 0]]])

# --------------------------------------------------------------------------- LiDAR obstacles


def test_obstacle_recall_range_and_match_distance():
    gt = [[10.0, 0.0], [50.0, 0.0]]  # the second lies beyond 40 m: excluded
    assert obstacle_recall([[11.2, 0.0]], gt) == (0, 1)  # 1.2 m off: no match
    assert obstacle_recall([[10.0, 0.9]], gt) == (1, 1)
    assert obstacle_recall(np.zeros((0, 2)), np.zeros((0, 2))) == (0, 0)


def test_obstacle_matching_is_one_to_one_and_maximal():
    # Greedy nearest-first would pair p0 with g0 (0.6 m) and leave p1 (2.2 m from g1)
    # unmatched; the assignment pairs p1-g0 (0.7 m) and p0-g1 (0.9 m).
    gt = [[10.0, 0.0], [11.5, 0.0]]
    pred = [[10.6, 0.0], [9.3, 0.0]]
    assert obstacle_recall(pred, gt) == (2, 2)
    assert obstacle_recall([[10.7, 0.0]], gt) == (1, 2)  # one prediction, two objects near it


def test_obstacle_precision_ignores_far_predictions():
    match = match_obstacles([[10.2, 0.0], [60.0, 0.0], [40.5, 0.0], [20.0, 5.0]], [[10.0, 0.0], [40.8, 0.0]])
    # [60, 0] is far and unmatched (ignored); [40.5, 0] finds the object just beyond range
    # (excused); [20, 5] is a false positive.
    assert (match.matched, match.num_gt, match.false_positives) == (1, 1, 1)
    metric = RecallMetric()
    metric.update([[10.2, 0.0], [20.0, 5.0]], [[10.0, 0.0], [30.0, 0.0]])
    metric.update([], [])
    assert metric.compute() == {"recall": 0.5, "precision": 0.5, "matched": 1, "num_gt": 2, "false_positives": 1}
    with pytest.raises(ValueError, match="gt_centres_xy"):
        obstacle_recall([[0.0, 0.0]], [[np.nan, 0.0]])

# --------------------------------------------------------------------------- latency


def test_latency_meter():
    ticks = iter([0, 5_000_000, 10_000_000, 11_000_000, 20_000_000, 23_000_000])
    meter = LatencyMeter(skip_first=1, clock_ns=lambda: next(ticks))
    for _ in range(3):
        with meter.time():
            pass
    meter.add_ns(2_000_000)
    summary = meter.summary()  # the 5 ms warm-up call is skipped: 1, 3, 2 ms
    assert summary["count"] == 3
    assert summary["median_ms"] == 2.0 and summary["mean_ms"] == 2.0 and summary["max_ms"] == 3.0
    assert summary["p90_ms"] == pytest.approx(2.8)
    assert LatencyMeter().summary()["median_ms"] is None
    json.dumps(summary)
