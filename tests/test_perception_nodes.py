"""The perception and lidar_obstacles nodes on a replayed bag: one output per input
frame with its stamp, decodable messages, obstacles where the ground truth has
objects, and bad frames skipped without the node dying."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from models.perception_net import build_multitask
from perception.metrics import obstacle_recall
from recorded import record_bag
from ros_nodes import topics
from ros_nodes.bag.reader import iter_messages
from ros_nodes.bag.writer import BagWriter
from ros_nodes.bag.info import bag_info
from ros_nodes.convert_labels import boxes_3d
from ros_nodes.convert_perception import detections_of, obstacles_of
from ros_nodes.convert_sensors import image_array, rgb_array
from ros_nodes.typestore import typestore

OUTPUTS = [t.name for t in topics.camera_perception_topics("front")] + [topics.OBSTACLES]


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    return record_bag(tmp_path_factory.mktemp("nodes") / "episode", route_length_m=35.0)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Untrained weights in the shipped format: the round trip, not accuracy, is tested."""
    torch.manual_seed(0)
    model = build_multitask()
    path = tmp_path_factory.mktemp("weights") / "perception.pt"
    torch.save({"format": 1, "task": "perception", "model_config": model.config(), "model": model.state_dict()}, path)
    return path


def replay(bag, weights, out) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drivestack.cli", "replay", str(bag), "--rate", "max",
                           "--nodes", "perception", "--nodes", "lidar_obstacles", "--perception-weights", str(weights),
                           "--record", str(out)], capture_output=True, text=True, timeout=600)


def damage(bag, out):
    """A copy of ``bag`` with one RGB image re-labelled with an encoding it does not have
    and that frame's LiDAR cloud holding NaNs; returns the damaged frame's stamp."""
    store = typestore()
    rgb, cloud = "/carla/ego_vehicle/rgb_front/image", topics.LIDAR
    messages = list(iter_messages(bag))
    stamps = sorted({m.stamp_ns for m in messages if m.topic == rgb})
    bad_stamp = stamps[len(stamps) // 2]
    writer = BagWriter(out)
    for topic, msgtype in sorted({(m.topic, m.msgtype) for m in messages}):
        writer.add_topic(topic, msgtype)
    for m in messages:
        data = m.data
        if m.stamp_ns == bad_stamp and m.topic in (rgb, cloud):
            msg = store.deserialize_cdr(data, m.msgtype)
            if m.topic == rgb:
                msg.encoding = "32FC1"  # 3 bytes a pixel cannot be 4-byte floats
            else:
                points = msg.data.view(np.float32).copy()
                points[::7] = np.nan
                msg.data = points.view(np.uint8)
            data = store.serialize_cdr(msg, m.msgtype)
        writer.write(m.topic, m.stamp_ns, data)
    writer.close()
    return bad_stamp


def test_nodes_answer_every_frame_and_skip_a_bad_one(bag, weights, tmp_path):
    bad_stamp = damage(bag, tmp_path / "damaged")
    proc = replay(tmp_path / "damaged", weights, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped" in proc.stderr and "32FC1" in proc.stderr  # logged, and the node went on
    counts = {t.name: t.count for t in bag_info(tmp_path / "out").topics}
    frames = counts["/carla/ego_vehicle/rgb_front/image"]
    assert frames > 50
    camera_outputs = [t.name for t in topics.camera_perception_topics("front")]
    assert all(counts[name] == frames - 1 for name in camera_outputs), {n: counts.get(n) for n in OUTPUTS}
    assert counts[topics.OBSTACLES] == frames  # NaN points dropped, the scan still counts
    by_stamp: dict[int, dict] = {}
    for m in iter_messages(tmp_path / "out", [*OUTPUTS, topics.BOXES_3D, "/carla/ego_vehicle/rgb_front/image"],
                           deserialize=True):
        by_stamp.setdefault(m.stamp_ns, {})[m.topic] = m.data
    matched = total = 0
    for stamp, msgs in by_stamp.items():
        expected = set(OUTPUTS) - (set(camera_outputs) if stamp == bad_stamp else set())
        assert expected <= msgs.keys(), f"t={stamp}: missing {expected - msgs.keys()}"
        obstacles = obstacles_of(msgs[topics.OBSTACLES])
        truth = np.array([(b.x_m, b.y_m) for b in boxes_3d(msgs[topics.BOXES_3D])
                          if b.object_class.value in ("vehicle", "pedestrian")]).reshape(-1, 2)
        m, n = obstacle_recall(np.array([(o.x_m, o.y_m) for o in obstacles]).reshape(-1, 2), truth,
                               max_range_m=20.0, match_distance_m=1.0)
        matched, total = matched + m, total + n
        if stamp == bad_stamp:
            continue
        semantic = image_array(msgs[topics.semantic_topic("front")])
        assert semantic.shape == (160, 320) and semantic.dtype == np.uint8
        overlay = rgb_array(msgs[topics.overlay_topic("front")])
        assert overlay.shape == rgb_array(msgs["/carla/ego_vehicle/rgb_front/image"]).shape
        for d in detections_of(msgs[topics.detections_topic("front")], "front"):
            assert 0 <= d.u_min_px <= d.u_max_px <= 320 and 0.3 <= d.score <= 1.0
    assert total > 0 and matched / total >= 0.8, (matched, total)
