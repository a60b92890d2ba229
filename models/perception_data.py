"""The perception dataset: camera frames with their labels, read from recorded bags.

Per bag and camera, the frames (RGB image, semantic image, 2D boxes, lanes at the same
stamp) come from the bag's index (`models.bag_index`). The labels, small but slow to
deserialise, are decoded once into flat arrays and cached beside the bag
(``perception_<camera>.npz``, keyed like the index), so a training sample costs two
image reads. A frame is a sample when it has the RGB image and the 2D boxes; the
semantic image and lanes are optional (their losses are masked where absent).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import Dataset

from models.bag_index import BagIndex, MessageSource, open_index
from models.labels import LANE_POSITIONS, SEMANTIC_TO_TRAIN, PerceptionFrame, detection_class
from ros_nodes import topics
from ros_nodes.bag.errors import BagError
from ros_nodes.convert_labels import boxes_2d, lane_boundaries
from ros_nodes.convert_sensors import MessageError, image_array, rgb_array

LABELS_VERSION = 2
# Objects the metric and the loss neither reward nor punish (the evaluation
# counts objects at least 10 px tall and 30 % visible).
MIN_BOX_HEIGHT_PX = 10.0
MIN_VISIBLE_FRACTION = 0.3


@dataclass
class BagLabels:
    """One bag's frames for one camera, with their labels as flat arrays."""

    stamps_ns: np.ndarray  # (F,)
    rgb_rows: np.ndarray  # (F,) index rows
    semantic_rows: np.ndarray  # (F,) -1: no semantic image
    box_start: np.ndarray  # (F + 1,) frame f's boxes are boxes[box_start[f]:box_start[f + 1]]
    boxes: np.ndarray  # (B, 4) float32 u_min, v_min, u_max, v_max
    box_classes: np.ndarray  # (B,) int64
    box_ignore: np.ndarray  # (B,) bool
    lane_start: np.ndarray  # (F + 1,) into lane_positions / lane_point_start
    lane_positions: np.ndarray  # (L,) int64
    lane_point_start: np.ndarray  # (L + 1,) into lane_points
    lane_points: np.ndarray  # (P, 2) float32 pixels
    lanes_labelled: np.ndarray  # (F,) bool: the bag has a lanes message at this frame

    def __len__(self) -> int:
        return len(self.stamps_ns)

    def frame_boxes(self, f: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = slice(self.box_start[f], self.box_start[f + 1])
        return self.boxes[s], self.box_classes[s], self.box_ignore[s]

    def frame_lanes(self, f: int) -> dict[int, np.ndarray]:
        out = {}
        for lane in range(self.lane_start[f], self.lane_start[f + 1]):
            out[int(self.lane_positions[lane])] = self.lane_points[self.lane_point_start[lane]:
                                                                   self.lane_point_start[lane + 1]]
        return out


def camera_topics(camera: str) -> tuple[str, str, str, str]:
    """(rgb image, semantic image, 2D boxes, lanes) topics of a camera."""
    return (topics.camera_image_topic(camera, "rgb"), topics.camera_image_topic(camera, "semantic"),
            topics.boxes_2d_topic(camera), topics.LANES)


def _decode_labels(index: BagIndex, camera: str) -> BagLabels:
    rgb, semantic, boxes_topic, lanes_topic = camera_topics(camera)
    if index.channel_of(rgb) is None:
        raise BagError(f"{index.mcap_path.parent}: no {rgb} (camera {camera!r}) in this bag")
    if index.channel_of(boxes_topic) is None:
        raise BagError(f"{index.mcap_path.parent}: no labels ({boxes_topic}) for camera {camera!r}: record with "
                       "ground truth on (sensor suite `full`, as `drivestack collect` does)")
    rows = index.frames(rgb, [boxes_topic], [semantic, lanes_topic])
    source = MessageSource(index)
    box_start, boxes, classes, ignore = [0], [], [], []
    lane_start, positions, point_start, points = [0], [], [0], []
    try:
        for _, box_row, _, lane_row in rows:
            for b in boxes_2d(source.message(box_row), camera):
                cls = detection_class(b.object_class, b.light_state)
                if cls is None:
                    continue
                boxes.append((b.u_min_px, b.v_min_px, b.u_max_px, b.v_max_px))
                classes.append(cls)
                ignore.append(b.v_max_px - b.v_min_px < MIN_BOX_HEIGHT_PX or b.visible_fraction < MIN_VISIBLE_FRACTION)
            box_start.append(len(boxes))
            if lane_row >= 0:
                for lane in lane_boundaries(source.message(lane_row)):
                    px = lane.image_px.get(camera)
                    if lane.position in LANE_POSITIONS and px is not None and len(px) >= 2:
                        positions.append(lane.position)
                        points.extend(px.tolist())
                        point_start.append(len(points))
            lane_start.append(len(positions))
    except MessageError as exc:
        raise BagError(f"{index.mcap_path.parent}: a label message is malformed: {exc}") from None
    finally:
        source.close()
    return BagLabels(index.stamps_ns[rows[:, 0]], rows[:, 0].astype(np.int64), rows[:, 2].astype(np.int64),
                     np.array(box_start, np.int64), np.array(boxes, np.float32).reshape(-1, 4),
                     np.array(classes, np.int64), np.array(ignore, bool), np.array(lane_start, np.int64),
                     np.array(positions, np.int64), np.array(point_start, np.int64),
                     np.array(points, np.float32).reshape(-1, 2), rows[:, 3] >= 0)


def load_labels(bag: str | Path, camera: str, index: BagIndex | None = None) -> tuple[BagIndex, BagLabels]:
    """The bag's index and its labels for ``camera``, cached beside the bag."""
    index = index or open_index(bag)
    cache = index.mcap_path.parent / f"perception_{camera}.npz"
    stat = index.mcap_path.stat()
    key = (LABELS_VERSION, stat.st_size, stat.st_mtime_ns)
    try:
        with np.load(cache) as data:
            if tuple(int(v) for v in data["key"]) == key:
                return index, BagLabels(**{k: data[k] for k in BagLabels.__dataclass_fields__})
    except (OSError, KeyError, ValueError, EOFError):
        pass
    labels = _decode_labels(index, camera)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, key=np.array(key, np.int64), **labels.__dict__)
        os.replace(tmp, cache)
    except OSError:
        tmp.unlink(missing_ok=True)  # a read-only bag: decoded again next time
    return index, labels


def find_bags(paths: Sequence[str | Path]) -> list[Path]:
    """Bags named directly, or found (by their metadata.yaml or .mcap file) under directories."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise BagError(f"no bag or directory at {p}")
        if p.is_file() or (p / "metadata.yaml").exists() or any(p.glob("*.mcap")):
            out.append(p)
            continue
        found = sorted({m.parent for m in p.rglob("*.mcap")})
        if not found:
            raise BagError(f"{p}: no bags in it (looked for .mcap files)")
        out.extend(found)
    return out


class PerceptionDataset(Dataset):
    """Frames of many bags for one camera, as ``PerceptionFrame`` (or what ``transform``
    makes of one), resized to ``image_size`` (W, H) when a bag's camera differs.

    ``stride`` keeps every n-th frame of each bag (frames 50 ms apart are near copies).
    ``augment`` (train only) and ``transform`` (e.g. target encoding) run in the loader
    worker, in that order.
    """

    def __init__(self, bags: Sequence[str | Path], camera: str = "front", *, image_size: tuple[int, int] = (320, 160),
                 stride: int = 1, augment: Callable[[PerceptionFrame], PerceptionFrame] | None = None,
                 transform: Callable[[PerceptionFrame], object] | None = None) -> None:
        if stride < 1:
            raise ValueError(f"stride={stride} must be >= 1")
        paths = find_bags(bags) if bags else []
        if not paths:
            raise BagError("the dataset has no bags")
        self.camera, self.image_size, self.augment, self.transform = camera, image_size, augment, transform
        self.bags: list[Path] = []
        self.sources: list[MessageSource] = []
        self.labels: list[BagLabels] = []
        frames = []
        for path in paths:
            index, labels = load_labels(path, camera)
            self.bags.append(path)
            self.sources.append(MessageSource(index))
            self.labels.append(labels)
            keep = np.arange(0, len(labels), stride)
            frames.append(np.stack([np.full(len(keep), len(self.bags) - 1), keep], axis=1))
        self.frames = np.concatenate(frames) if frames else np.zeros((0, 2), np.int64)
        if len(self.frames) == 0:
            raise BagError(f"the dataset has no labelled frames of camera {camera!r} in {len(paths)} bag(s)")

    def __len__(self) -> int:
        return len(self.frames)

    def bag_of(self, i: int) -> Path:
        return self.bags[int(self.frames[i, 0])]

    def frame(self, i: int) -> PerceptionFrame:
        """Sample ``i`` decoded, before augmentation."""
        b, f = (int(v) for v in self.frames[i])
        labels, source = self.labels[b], self.sources[b]
        where = f"{self.bags[b]} frame {f}"
        try:
            image = rgb_array(source.message(int(labels.rgb_rows[f])))
            semantic = None
            if labels.semantic_rows[f] >= 0:
                ids = image_array(source.message(int(labels.semantic_rows[f])))
                if ids.ndim != 2 or ids.dtype != np.uint8:
                    raise MessageError(f"semantic image of shape {ids.shape} and type {ids.dtype} (mono8 wanted)")
                semantic = cv2.LUT(ids, SEMANTIC_TO_TRAIN)
        except MessageError as exc:
            raise BagError(f"{where}: {exc}") from None
        boxes, classes, ignore = labels.frame_boxes(f)
        frame = PerceptionFrame(image, semantic, boxes.copy(), classes.copy(), ignore.copy(), labels.frame_lanes(f),
                                int(labels.stamps_ns[f]), where, bool(labels.lanes_labelled[f]))
        return resize_frame(frame, self.image_size)

    def __getitem__(self, i: int):
        frame = self.frame(i)
        if self.augment is not None:
            frame = self.augment(frame)
        return frame if self.transform is None else self.transform(frame)


def resize_frame(frame: PerceptionFrame, size: tuple[int, int]) -> PerceptionFrame:
    """``frame`` scaled to ``size`` (W, H), labels with it (no-op when it matches)."""
    height, width = frame.shape
    if (width, height) == tuple(size):
        return frame
    sx, sy = size[0] / width, size[1] / height
    image = cv2.resize(frame.image, size, interpolation=cv2.INTER_AREA if sx < 1 else cv2.INTER_LINEAR)
    semantic = None if frame.semantic is None else cv2.resize(frame.semantic, size, interpolation=cv2.INTER_NEAREST)
    boxes = frame.boxes_px * np.array([sx, sy, sx, sy], np.float32)
    lanes = {k: v * np.array([sx, sy], np.float32) for k, v in frame.lanes_px.items()}
    ignore = frame.box_ignore | (boxes[:, 3] - boxes[:, 1] < MIN_BOX_HEIGHT_PX)
    return PerceptionFrame(image, semantic, boxes, frame.box_classes, ignore, lanes, frame.stamp_ns, frame.source,
                           frame.lanes_labelled)
