"""The perception nodes live in the driving graph: `drivestack drive --ros --perception
--lidar-obstacles` records, for every frame the bridge published, the camera outputs
stamped like its RGB image and the obstacles stamped like its LiDAR scan (the bridge
waits for them before stepping, so slow models lose no frame).

The weights are untrained and smaller than the shipped net's: the plumbing is tested,
not accuracy, and a small net keeps the episode short on a loaded CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.perception_net import build_multitask
from ros_nodes import topics
from ros_nodes.bag.reader import iter_messages

SCENARIO = """\
name: perception_short
town: grid_town
route_length_m: 40
npc_vehicles: 5
pedestrians: 5
seed: 11
"""
RGB = topics.camera_image_topic("front", "rgb")
CAMERA_OUTPUTS = tuple(t.name for t in topics.camera_perception_topics("front"))


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Untrained weights in the shipped format (see tests/test_perception_nodes.py)."""
    torch.manual_seed(0)
    model = build_multitask({"widths": (8, 16, 16, 24, 32), "depths": (1, 1, 1, 1), "neck_channels": 16,
                             "head_channels": 16})
    path = tmp_path_factory.mktemp("weights") / "perception.pt"
    torch.save({"format": 1, "task": "perception", "model_config": model.config(), "model": model.state_dict()}, path)
    return path


def stamps_by_topic(bag: Path, names: list[str]) -> dict[str, list[int]]:
    stamps: dict[str, list[int]] = {name: [] for name in names}
    for message in iter_messages(bag, names):
        stamps[message.topic].append(message.stamp_ns)
    return stamps


def test_drive_ros_records_perception_and_obstacles_for_every_frame(tmp_path, weights):
    scenario = tmp_path / "perception_short.yaml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "ros"
    # One OpenMP thread per node: five processes with a pool each would oversubscribe a 2-core machine.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "drivestack.cli", "drive", "--ros", "--scenario", str(scenario),
                           "--sensors", "full", "--perception", "--perception-weights", str(weights),
                           "--lidar-obstacles", "--out", str(out)], capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    extra = json.loads((out / "results.json").read_text())["routes"][0]["extra"]
    # A frame the bridge stepped past (a perception timeout on a starved machine) must still be recorded.
    why = f"perception timeouts {extra['perception_timeouts']}: {done.stderr[-3000:]}"
    stamps = stamps_by_topic(out / "bag", [RGB, topics.LIDAR, *CAMERA_OUTPUTS, topics.OBSTACLES])
    assert len(stamps[RGB]) == len(set(stamps[RGB])) == extra["frames_published"] > 20
    for name in CAMERA_OUTPUTS:
        assert sorted(stamps[name]) == sorted(stamps[RGB]), (name, why)
    assert sorted(stamps[topics.OBSTACLES]) == sorted(stamps[topics.LIDAR]), why


@pytest.mark.parametrize("flags, message", [
    (["--ros", "--sensors", "front_rgb", "--lidar-obstacles"], "--lidar-obstacles needs a LiDAR"),
    (["--ros", "--sensors", "full", "--perception", "--perception-weights", "missing.pt"], "no perception weights at"),
    (["--sensors", "full", "--lidar-obstacles"], "need --ros"),
])
def test_drive_refuses_perception_nodes_it_cannot_run(tmp_path, flags, message):
    done = subprocess.run([sys.executable, "-m", "drivestack.cli", "drive", "--scenario", "default", *flags,
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr
