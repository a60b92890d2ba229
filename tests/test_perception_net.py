"""The multi-task perception net, its targets, loss and decoding, and the torchvision baselines.

Golden outputs live in ``tests/data/perception_net``; ``pytest tests/test_perception_net.py
--update-refs`` (or a missing file) writes them again and skips: review and commit them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from models.baselines import (build_detection_baseline, build_segmentation_baseline,  # noqa: E402
                              detection_baseline_targets, run_detection_baseline,
                              run_segmentation_baseline)
from models.labels import (DETECTION_CLASSES, IGNORE_INDEX, LANE_POSITIONS, SEGMENTATION_CLASSES,  # noqa: E402
                           PerceptionFrame)
from models.perception_decode import decode_detections, decode_lanes, decode_segmentation  # noqa: E402
from models.perception_loss import LOSS_NAMES, MultiTaskLoss  # noqa: E402
from models.perception_net import MultiTaskNet, build_multitask, lane_row_anchors_px, normalize  # noqa: E402
from models.perception_targets import (LANE_UNLABELLED, collate, encode_targets,  # noqa: E402
                                       polyline_u_at_rows)

GOLDEN_DIR = Path(__file__).parent / "data" / "perception_net"
# Relative as well as absolute: float sums differ in the last bits between CPU kernels
# (AVX2, AVX-512), and random-weight activations are not all of order 1.
GOLDEN_RTOL = GOLDEN_ATOL = 1e-4

SKY, ROAD, ROAD_LINE, CAR, PEDESTRIAN = (SEGMENTATION_CLASSES.index(name) for name in
                                         ("sky", "road", "road_line", "car", "pedestrian"))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """On a busy shared machine two OpenMP threads wait on each other at every barrier
    (a training step measured 30x slower); one thread's speed does not depend on neighbours."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def net() -> MultiTaskNet:
    torch.manual_seed(0)
    return build_multitask().eval()


def _images(batch: int, height: int, width: int) -> torch.Tensor:
    rng = np.random.default_rng(0)
    return normalize(rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("height, width", [(160, 320), (128, 256)])
def test_output_shapes(net, height, width):
    config = net.config()
    rows, cells = config["lane_rows"], config["lane_cells"]
    with torch.no_grad():
        outputs = net(_images(2, height, width))
    expected = {
        "heatmap": (2, len(DETECTION_CLASSES), height // 4, width // 4),
        "box_log_size": (2, 2, height // 4, width // 4),
        "box_offset": (2, 2, height // 4, width // 4),
        "segmentation": (2, len(SEGMENTATION_CLASSES), height, width),
        "lanes": (2, len(LANE_POSITIONS), rows, cells + 1),
        "lane_row_anchors_px": (rows,),
    }
    assert {key: tuple(value.shape) for key, value in outputs.items()} == expected
    assert all(torch.isfinite(value).all() for value in outputs.values())
    anchors = outputs["lane_row_anchors_px"]
    assert anchors[0] == pytest.approx(config["lane_row_start"] * height) and anchors[-1] == height - 1


def test_config_round_trip(net):
    config = json.loads(json.dumps(net.config()))
    rebuilt = build_multitask(config)
    assert rebuilt.config() == net.config()
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}


def test_normalize_layouts():
    image = np.full((64, 96, 3), 255, np.uint8)
    single, batch = normalize(image), normalize(np.stack([image, image]))
    assert single.shape == (3, 64, 96) and single.dtype == torch.float32
    assert batch.shape == (2, 3, 64, 96) and torch.equal(batch[1], single)
    with pytest.raises(ValueError, match="uint8 RGB"):
        normalize(image.astype(np.float32))


def test_input_size_must_be_multiple_of_32(net):
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.zeros(1, 3, 100, 320))
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.zeros(1, 3, 160, 330))
    frame = PerceptionFrame(image=np.zeros((100, 320, 3), np.uint8), semantic=None)
    with pytest.raises(ValueError, match="multiples of 32"):
        encode_targets(frame, net.config())


def _hand_made_frame() -> PerceptionFrame:
    height, width = 160, 320
    semantic = np.full((height, width), SKY, np.uint8)
    semantic[64:] = ROAD
    semantic[100:130, 40:90] = CAR
    semantic[90:140, 200:212] = PEDESTRIAN
    return PerceptionFrame(
        image=np.zeros((height, width, 3), np.uint8), semantic=semantic,
        boxes_px=np.array([[40.0, 100.0, 90.0, 130.0], [200.5, 90.0, 211.5, 140.0]], np.float32),
        box_classes=np.array([0, 1]), box_ignore=np.array([False, False]),
        # The ego lane's edges, one drawn bottom-up and one top-down, the right one bending.
        lanes_px={-1: np.array([[60.0, 159.0], [150.0, 70.0]]),
                  1: np.array([[170.0, 65.0], [200.0, 110.0], [290.0, 159.0]])})


def _perfect_outputs(targets: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """Network outputs that say exactly what the targets say."""
    heat = targets["heatmap"].clamp(1e-6, 1 - 1e-6)
    height = targets["segmentation"].shape[-2]
    return {
        "heatmap": torch.log(heat / (1 - heat))[None],
        "box_log_size": targets["box_log_size"][None],
        "box_offset": targets["box_offset"][None],
        "segmentation": 20.0 * torch.nn.functional.one_hot(targets["segmentation"], len(SEGMENTATION_CLASSES))
        .permute(2, 0, 1)[None].float(),
        "lanes": 20.0 * torch.nn.functional.one_hot(targets["lanes"], config["lane_cells"] + 1)[None].float(),
        "lane_row_anchors_px": lane_row_anchors_px(height, config["lane_rows"], config["lane_row_start"]),
    }


def test_targets_round_trip(net):
    frame, config = _hand_made_frame(), net.config()
    outputs = _perfect_outputs(encode_targets(frame, config), config)

    boxes, scores, classes = decode_detections(outputs, score_threshold=0.5, max_detections=10)[0]
    order = np.argsort(classes)
    assert classes[order].tolist() == [0, 1]
    np.testing.assert_allclose(boxes[order], frame.boxes_px, atol=1e-3)
    assert np.all(scores > 0.99)

    np.testing.assert_array_equal(decode_segmentation(outputs)[0], frame.semantic)

    lanes = decode_lanes(outputs, frame.shape)[0]
    assert sorted(lanes) == [-1, 1]
    cell_px = frame.shape[1] / config["lane_cells"]
    for position, polyline in lanes.items():
        assert np.all(np.diff(polyline[:, 1]) < 0), "polylines run from the bottom up"
        true_u = polyline_u_at_rows(frame.lanes_px[position], polyline[:, 1].astype(np.float64))
        assert np.max(np.abs(polyline[:, 0] - true_u)) <= cell_px / 2 + 0.1
    # Every anchor row the lane crosses is found: the right edge starts at v = 65.
    assert len(lanes[1]) == config["lane_rows"]
    assert len(lanes[-1]) == int(np.sum(outputs["lane_row_anchors_px"].numpy() >= 70.0))


def test_lane_targets_absent_outside_image_and_span():
    frame = PerceptionFrame(image=np.zeros((160, 320, 3), np.uint8), semantic=None,
                            lanes_px={2: np.array([[330.0, 159.0], [250.0, 100.0]]), -2: np.array([[5.0, 150.0]])})
    config = build_multitask().config()
    targets = encode_targets(frame, config)
    lanes, cells = targets["lanes"].numpy(), config["lane_cells"]
    rows = lane_row_anchors_px(160, config["lane_rows"], config["lane_row_start"]).numpy()
    u = polyline_u_at_rows(frame.lanes_px[2], rows)
    slot = LANE_POSITIONS.index(2)
    assert np.all((lanes[slot] < cells) == (np.isfinite(u) & (u < 320)))
    assert np.all(lanes[LANE_POSITIONS.index(-2)] == cells), "a single point is no lane"
    assert torch.all(targets["segmentation"] == IGNORE_INDEX), "no semantic labels: all ignored"


def test_unlabelled_lanes_and_segmentation_cost_nothing(net):
    frame = _hand_made_frame()
    frame.semantic = None
    targets = encode_targets(frame, net.config(), lanes_labelled=False)
    assert torch.all(targets["lanes"] == LANE_UNLABELLED)
    batch = {key: value[None] for key, value in targets.items()}
    outputs = _perfect_outputs(encode_targets(_hand_made_frame(), net.config()), net.config())
    outputs = {key: value.clone().requires_grad_(value.is_floating_point()) for key, value in outputs.items()}
    total, parts = MultiTaskLoss()(outputs, batch)
    assert parts["segmentation"] == 0.0 and parts["lanes"] == 0.0 and np.isfinite(float(total))
    total.backward()
    assert float(outputs["segmentation"].grad.abs().sum()) == 0.0


def test_ignored_boxes_create_no_peaks(net):
    frame = _hand_made_frame()
    frame.box_ignore = np.array([False, True])
    targets = encode_targets(frame, net.config())
    pedestrian = 1
    u0, v0 = np.floor(frame.boxes_px[1, :2] / 4).astype(int)
    u1, v1 = np.ceil(frame.boxes_px[1, 2:] / 4).astype(int)
    assert float(targets["heatmap"][pedestrian].max()) == 0.0
    assert float(targets["heatmap_weight"][pedestrian, v0:v1, u0:u1].max()) == 0.0
    assert float(targets["heatmap_weight"][pedestrian].sum()) == targets["heatmap_weight"][0].numel() - (
        (v1 - v0) * (u1 - u0)), "only the ignored box's cells are masked"
    assert float(targets["heatmap_weight"][0].min()) == 1.0, "other classes are unaffected"
    assert float(targets["box_mask"].sum()) == 1.0

    outputs = _perfect_outputs(targets, net.config())
    boxes, _, classes = decode_detections(outputs, score_threshold=0.5, max_detections=10)[0]
    assert classes.tolist() == [0]
    # A confident detection of the ignored object costs nothing in the focal loss.
    loss = MultiTaskLoss()
    outputs_with_peak = dict(outputs, heatmap=outputs["heatmap"].clone())
    outputs_with_peak["heatmap"][0, pedestrian, (v0 + v1) // 2, (u0 + u1) // 2] = 10.0
    batch = {key: value[None] for key, value in targets.items()}
    assert loss(outputs_with_peak, batch)[1]["heatmap"] == pytest.approx(loss(outputs, batch)[1]["heatmap"])

    assert detection_baseline_targets(frame)["labels"].tolist() == [1], "ignored boxes are dropped, labels + 1"


def _check_golden(request, name: str, values: dict[str, np.ndarray]) -> None:
    path = GOLDEN_DIR / f"{name}.npz"
    if request.config.getoption("--update-refs") or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **values)
        pytest.skip(f"accepted new golden outputs {path}: review and commit it")
    expected = np.load(path)
    assert sorted(expected.files) == sorted(values)
    for key, value in values.items():
        np.testing.assert_allclose(value, expected[key], rtol=GOLDEN_RTOL, atol=GOLDEN_ATOL, err_msg=key)


def _summary(prefix: str, tensor: torch.Tensor) -> dict[str, np.ndarray]:
    """Mean, std and 16 values spread over the tensor: a change anywhere moves some of them."""
    flat = tensor.detach().double().flatten()
    picks = torch.linspace(0, flat.numel() - 1, 16).long()
    return {f"{prefix}_mean": flat.mean().numpy(), f"{prefix}_std": flat.std().numpy(),
            f"{prefix}_values": flat[picks].numpy()}


def test_golden_outputs(request):
    torch.manual_seed(0)
    model = build_multitask().eval()
    with torch.no_grad():
        outputs = model(_images(1, 160, 320))
    values = {}
    for key, tensor in outputs.items():
        values.update(_summary(key, tensor))
    _check_golden(request, "golden", values)


def test_golden_detection_baseline(request):
    torch.manual_seed(0)
    model = build_detection_baseline()
    # Backbone and head only: the raw anchor outputs, before score thresholds and NMS,
    # which would turn tiny numeric differences into different box lists. Training-mode
    # batch norm: with fresh running statistics SSDlite's small initial weights shrink the
    # activations layer by layer to ~1e-15, where the comparison would mean nothing.
    model.train()
    with torch.no_grad():
        head = model.head(list(model.backbone(_images(2, 320, 320)).values()))
    model.eval()
    detections = run_detection_baseline(model, _images(2, 160, 320), score_threshold=0.0, max_detections=7)
    for boxes, scores, classes in detections:
        assert boxes.shape == (7, 4) and scores.shape == (7,) and classes.shape == (7,)
        assert np.all(np.diff(scores) <= 0) and np.all((classes >= 0) & (classes < len(DETECTION_CLASSES)))
        assert np.all(boxes[:, 2:] <= [320, 160])
    _check_golden(request, "ssdlite", {**_summary("cls_logits", head["cls_logits"]),
                                       **_summary("bbox_regression", head["bbox_regression"])})


def test_golden_segmentation_baseline(request):
    torch.manual_seed(0)
    model = build_segmentation_baseline().eval()
    images = _images(1, 160, 320)
    with torch.no_grad():
        logits = model(images)["out"]
    assert logits.shape == (1, len(SEGMENTATION_CLASSES), 160, 320)
    indices = run_segmentation_baseline(model, images)
    assert indices.shape == (1, 160, 320) and indices.dtype == np.uint8
    _check_golden(request, "lraspp", _summary("logits", logits))


def _synthetic_frame(rng: np.random.Generator, height: int = 64, width: int = 128) -> PerceptionFrame:
    """A grey road under a blue sky with the ego lane's edges painted, blue cars, yellow
    pedestrians and a green or red light in the sky, labelled consistently."""
    image = np.empty((height, width, 3), np.uint8)
    semantic = np.empty((height, width), np.uint8)
    horizon = int(0.4 * height)
    image[:horizon], semantic[:horizon] = (110, 160, 220), SKY
    image[horizon:], semantic[horizon:] = (90, 90, 90), ROAD
    vanishing_u = width / 2 + rng.uniform(-10, 10)
    lanes = {}
    for position, bottom_u in ((-1, rng.uniform(0.1, 0.3) * width), (1, rng.uniform(0.7, 0.9) * width)):
        rows = np.arange(horizon, height)
        u = vanishing_u + (bottom_u - vanishing_u) * (rows - horizon) / (height - 1 - horizon)
        for v, centre in zip(rows, np.round(u).astype(int)):
            image[v, max(centre - 1, 0):centre + 1], semantic[v, max(centre - 1, 0):centre + 1] = 240, ROAD_LINE
        lanes[position] = np.array([[bottom_u, height - 1.0], [vanishing_u, float(horizon)]])
    boxes, classes = [], []

    def paint(box: tuple[int, int, int, int], colour: tuple[int, int, int], seg_class: int, det_class: int) -> None:
        u0, v0, u1, v1 = box
        image[v0:v1, u0:u1], semantic[v0:v1, u0:u1] = colour, seg_class
        boxes.append(box)
        classes.append(det_class)

    for _ in range(rng.integers(1, 3)):
        w, h = rng.integers(16, 28), rng.integers(10, 16)
        u0, v1 = rng.integers(0, width - w), rng.integers(horizon + h + 2, height)
        paint((u0, v1 - h, u0 + w, v1), (40, 60, 200), CAR, DETECTION_CLASSES.index("vehicle"))
    w, h = rng.integers(4, 7), rng.integers(12, 18)
    u0, v1 = rng.integers(0, width - w), rng.integers(horizon + h, height)
    paint((u0, v1 - h, u0 + w, v1), (240, 200, 40), PEDESTRIAN, DETECTION_CLASSES.index("pedestrian"))
    red = bool(rng.integers(2))
    u0, v0 = rng.integers(0, width - 4), rng.integers(2, horizon - 10)
    paint((u0, v0, u0 + 4, v0 + 8), (230, 40, 40) if red else (40, 230, 40),
          SEGMENTATION_CLASSES.index("traffic_light"),
          DETECTION_CLASSES.index("traffic_light_red" if red else "traffic_light_green"))
    return PerceptionFrame(image=image, semantic=semantic, boxes_px=np.array(boxes, np.float32),
                           box_classes=np.array(classes), box_ignore=np.zeros(len(boxes), bool), lanes_px=lanes)


def test_tiny_training_run_reduces_every_loss():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_multitask().train()
    frames = [_synthetic_frame(rng) for _ in range(8)]
    images, targets = collate([(normalize(f.image), encode_targets(f, model.config())) for f in frames])
    criterion = MultiTaskLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)

    def evaluate() -> tuple[float, dict[str, float]]:
        with torch.no_grad():  # train-mode batch norm: the same batch statistics before and after
            total, parts = criterion(model(images), targets)
        return float(total), parts

    start_total, start_parts = evaluate()
    for _ in range(30):
        optimizer.zero_grad()
        total, _ = criterion(model(images), targets)
        total.backward()
        optimizer.step()
    end_total, end_parts = evaluate()
    assert set(end_parts) == set(LOSS_NAMES)
    assert end_total < 0.5 * start_total, (start_parts, end_parts)
    for name in LOSS_NAMES:
        assert end_parts[name] < start_parts[name], (name, start_parts, end_parts)
