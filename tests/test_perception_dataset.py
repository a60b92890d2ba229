"""Training data from bags: the bag index, the perception dataset and its augmentation."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from models.augment import AugmentConfig, PerceptionAugment, crop_resize
from models.bag_index import INDEX_NAME, MessageSource, open_index
from models.labels import IGNORE_INDEX, SEMANTIC_TO_TRAIN, PerceptionFrame
from models.perception_data import (MIN_BOX_HEIGHT_PX, MIN_VISIBLE_FRACTION, PerceptionDataset, camera_topics,
                                    find_bags, resize_frame)
from recorded import record_bag
from ros_nodes import topics
from ros_nodes.bag.errors import BagError
from ros_nodes.bag.reader import iter_messages
from ros_nodes.convert_labels import boxes_2d
from ros_nodes.convert_sensors import image_array, rgb_array


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    return record_bag(tmp_path_factory.mktemp("data") / "episode")


def test_index_addresses_every_message_as_the_sequential_reader_reads_it(bag):
    index = open_index(bag)
    assert (bag / INDEX_NAME).exists()
    source = MessageSource(index)
    rgb_topic = camera_topics("front")[0]
    expected = [(m.stamp_ns, bytes(m.data)) for m in iter_messages(bag, [rgb_topic])]
    rows = index.rows(rgb_topic)
    assert len(rows) == len(expected) > 100
    for row, (stamp_ns, data) in zip(rows[::-1], expected[::-1]):  # backwards: no sequential luck
        assert index.stamps_ns[row] == stamp_ns
        assert source.raw(int(row)) == data


def test_index_is_cached_and_rebuilt_when_the_bag_changes(bag, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(bag, copy, ignore=shutil.ignore_patterns("*.npz"))
    first = open_index(copy)
    cache = copy / INDEX_NAME
    mtime = cache.stat().st_mtime_ns
    assert open_index(copy).stamps_ns.tolist() == first.stamps_ns.tolist()
    assert cache.stat().st_mtime_ns == mtime  # loaded, not rebuilt
    mcap = next(copy.glob("*.mcap"))
    os.utime(mcap, ns=(mtime + 10**9, mtime + 10**9))
    open_index(copy)
    assert cache.stat().st_mtime_ns != mtime


def test_frames_pair_topics_by_stamp_and_mark_missing_optional_ones(bag):
    index = open_index(bag)
    rgb, semantic, boxes, lanes = camera_topics("front")
    frames = index.frames(rgb, [boxes], [semantic, "/no/such/topic"])
    assert len(frames) == len(index.rows(rgb))
    for column in (1, 2):
        assert (index.stamps_ns[frames[:, column]] == index.stamps_ns[frames[:, 0]]).all()
    assert (frames[:, 3] == -1).all()
    assert len(index.frames(rgb, ["/no/such/topic"])) == 0


def test_dataset_frames_match_the_recorded_messages(bag):
    dataset = PerceptionDataset([bag])
    rgb_topic, semantic_topic, boxes_topic, _ = camera_topics("front")
    wanted = {rgb_topic, semantic_topic, boxes_topic}
    recorded: dict[int, dict] = {}
    for m in iter_messages(bag, wanted, deserialize=True):
        recorded.setdefault(m.stamp_ns, {})[m.topic] = m.data
    k = len(dataset) // 2
    frame = dataset.frame(k)
    msgs = recorded[frame.stamp_ns]
    assert np.array_equal(frame.image, rgb_array(msgs[rgb_topic]))
    assert np.array_equal(frame.semantic, SEMANTIC_TO_TRAIN[image_array(msgs[semantic_topic])])
    assert IGNORE_INDEX not in np.unique(frame.semantic)  # every simulator class is in the table
    labelled = [b for b in boxes_2d(msgs[boxes_topic], "front") if b.light_state is None or b.light_state.value < 3]
    assert len(frame.boxes_px) == len(labelled)
    for box, row, ignored in zip(labelled, frame.boxes_px, frame.box_ignore):
        assert row == pytest.approx([box.u_min_px, box.v_min_px, box.u_max_px, box.v_max_px])
        assert ignored == (box.v_max_px - box.v_min_px < MIN_BOX_HEIGHT_PX
                           or box.visible_fraction < MIN_VISIBLE_FRACTION)
    assert {-1, 1} <= set(frame.lanes_px)  # the ego lane's two edges are in view on a straight road
    for polyline in frame.lanes_px.values():
        assert polyline.shape[1] == 2 and (polyline[:, 1] <= 160).all()


def test_dataset_stride_resize_and_a_loader_with_workers(bag):
    full = PerceptionDataset([bag])
    strided = PerceptionDataset([bag], stride=4)
    assert len(strided) == (len(full) + 3) // 4
    assert strided.frame(1).stamp_ns == full.frame(4).stamp_ns
    small = PerceptionDataset([bag], image_size=(160, 96))
    a, b = full.frame(10), small.frame(10)
    assert b.image.shape == (96, 160, 3) and b.semantic.shape == (96, 160)
    assert b.boxes_px == pytest.approx(a.boxes_px * np.array([0.5, 0.6, 0.5, 0.6]), abs=1e-3)
    loader = DataLoader(strided, batch_size=8, num_workers=2, collate_fn=list)
    stamps = [f.stamp_ns for batch in loader for f in batch]
    assert stamps == [strided.frame(i).stamp_ns for i in range(len(strided))]


def _synthetic_frame() -> PerceptionFrame:
    image = np.zeros((160, 320, 3), np.uint8)
    image[60:100, 100:180] = (200, 30, 30)  # the "car" the box labels
    semantic = np.zeros((160, 320), np.uint8)
    semantic[60:100, 100:180] = 12
    lane = np.array([[40.0, 159.0], [140.0, 80.0]], np.float32)
    return PerceptionFrame(image, semantic, np.array([[100, 60, 180, 100]], np.float32), np.array([0]),
                           np.array([False]), {-1: lane}, 5, "synthetic")


def test_crop_moves_labels_with_the_pixels():
    rng = np.random.default_rng(4)
    for _ in range(20):
        out = crop_resize(_synthetic_frame(), rng, 0.8)
        (u0, v0, u1, v1), = out.boxes_px
        red = np.argwhere(out.image[..., 0] > 100)
        assert red[:, 1].min() == pytest.approx(u0, abs=1.5) and red[:, 1].max() + 1 == pytest.approx(u1, abs=1.5)
        assert red[:, 0].min() == pytest.approx(v0, abs=1.5) and red[:, 0].max() + 1 == pytest.approx(v1, abs=1.5)
        assert np.array_equal(out.semantic == 12, out.image[..., 0] > 100) or \
            np.mean((out.semantic == 12) != (out.image[..., 0] > 100)) < 0.01


def test_augmentation_keeps_sizes_and_is_reproducible_per_seed():
    frame = _synthetic_frame()
    a = [PerceptionAugment(seed=1)(frame) for _ in range(1)][0]
    b = PerceptionAugment(seed=1)(frame)
    assert np.array_equal(a.image, b.image) and a.image.shape == frame.image.shape
    photometric = PerceptionAugment(AugmentConfig(crop_probability=0.0, blur_probability=0.0), seed=2)(frame)
    assert np.array_equal(photometric.semantic, frame.semantic)
    assert not np.array_equal(photometric.image, frame.image)


def test_resize_marks_boxes_that_become_too_small():
    frame = _synthetic_frame()
    frame.boxes_px[0] = (10, 10, 20, 25)  # 15 px tall, 7.5 after halving
    out = resize_frame(frame, (160, 80))
    assert out.box_ignore.tolist() == [True]


def test_bad_data_gets_clear_errors(bag, tmp_path):
    with pytest.raises(BagError, match="no bags in it"):
        find_bags([tmp_path])
    with pytest.raises(BagError, match="no bag or directory"):
        PerceptionDataset([tmp_path / "missing"])
    with pytest.raises(BagError, match="no /carla/ego_vehicle/rgb_rear/image"):
        PerceptionDataset([bag], camera="rear")
    # a bag recorded without ground truth cannot train perception
    unlabelled = record_bag(tmp_path / "unlabelled", route_length_m=25.0, sensors="front_rgb")
    with pytest.raises(BagError, match="no labels"):
        PerceptionDataset([unlabelled])
    # a torn bag (its recorder died) must be recovered first, which keeps its data
    torn = tmp_path / "torn"
    shutil.copytree(bag, torn, ignore=shutil.ignore_patterns("*.npz"))
    mcap = next(torn.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    with pytest.raises(BagError, match="bag recover"):
        PerceptionDataset([torn])


def test_frames_carry_tensors_through_a_transform(bag):
    dataset = PerceptionDataset([bag], stride=20, transform=lambda f: torch.from_numpy(f.image))
    assert dataset[0].shape == (160, 320, 3)
    assert topics.boxes_2d_topic("front") == camera_topics("front")[2]
