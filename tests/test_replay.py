"""`drivestack replay` as real processes: record -> replay -> record is lossless, and a
bag this project did not write (sqlite3, CompressedImage, bgr8, no camera_info, no
/clock) plays and decodes."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer

from ros_nodes.bag.info import bag_info
from ros_nodes.bag.reader import iter_messages
from ros_nodes.convert_sensors import header, image_msg, msg_class, rgb_array
from ros_nodes.typestore import leading_stamp, typestore

REFERENCE = Path(__file__).parent / "data" / "replay" / "expert_short"


def replay(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drivestack.cli", "replay", *args], capture_output=True,
                          text=True, timeout=300)


def by_topic(bag: Path, deserialize: bool = False) -> dict[str, list]:
    out = defaultdict(list)
    for m in iter_messages(bag, deserialize=deserialize):
        out[m.topic].append((m.stamp_ns, m.data if deserialize else bytes(m.data)))
    return out


def test_record_replay_round_trip_is_equal(tmp_path):
    replayed = tmp_path / "replayed"
    types = {t.name: t.msgtype for t in bag_info(REFERENCE).topics}
    done = replay(str(REFERENCE), "--rate", "max", "--record", str(replayed))
    assert done.returncode == 0, done.stdout + done.stderr
    original, again = by_topic(REFERENCE), by_topic(replayed)
    assert original.keys() == again.keys()
    for topic, messages in original.items():
        if leading_stamp(types[topic]):
            assert again[topic] == messages, topic
        else:  # logged at arrival on the recorder's sim clock, which runs a few frames apart
            assert [data for _, data in again[topic]] == [data for _, data in messages], topic


def write_foreign_bag(path: Path, frames: int = 12) -> list[np.ndarray]:
    """A bag as other tools write it: sqlite3, jpeg CompressedImage, bgr8, no camera_info or /clock."""
    store = typestore()
    # Smooth images with a little noise: what a camera sees, and what jpeg keeps.
    ramp = np.add.outer(np.linspace(0, 150, 48), np.linspace(0, 90, 64))
    images = [np.clip(np.dstack([ramp + 5 * k, ramp[::-1] + 40, np.full_like(ramp, 60.0 + k)])
                      + np.random.default_rng(k).normal(0, 3, (48, 64, 3)), 0, 255).astype(np.uint8)
              for k in range(frames)]
    with Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        jpeg = writer.add_connection("/camera/image/compressed", "sensor_msgs/msg/CompressedImage", typestore=store)
        raw = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=store)
        for k, rgb in enumerate(images):
            stamp = 1_000_000_000 + k * 100_000_000
            _, data = cv2.imencode(".jpg", rgb[..., ::-1])
            compressed = msg_class("sensor_msgs/msg/CompressedImage")(header=header(stamp, "camera"), format="jpeg",
                                                                     data=data.reshape(-1))
            writer.write(jpeg, stamp, store.serialize_cdr(compressed, "sensor_msgs/msg/CompressedImage"))
            bgr = image_msg(rgb[..., ::-1], "bgr8", stamp, "camera")
            writer.write(raw, stamp, store.serialize_cdr(bgr, "sensor_msgs/msg/Image"))
    return images


def test_foreign_sqlite_bag_replays(tmp_path):
    images = write_foreign_bag(tmp_path / "foreign")
    replayed = tmp_path / "replayed"
    done = replay(str(tmp_path / "foreign"), "--rate", "max", "--record", str(replayed))
    assert done.returncode == 0, done.stdout + done.stderr
    got = by_topic(replayed, deserialize=True)
    assert len(got["/clock"]) == len(images)  # made from the log times
    raw = [rgb_array(m) for _, m in got["/camera/image_raw"]]
    assert all(np.array_equal(a, b) for a, b in zip(raw, images, strict=True))
    jpeg = [rgb_array(m) for _, m in got["/camera/image/compressed"]]
    assert len(jpeg) == len(images) and all(np.abs(a.astype(int) - b).mean() < 12 for a, b in zip(jpeg, images))


def test_replay_of_a_missing_bag_is_a_clear_error(tmp_path):
    done = replay(str(tmp_path / "nope"))
    assert done.returncode == 2 and "error:" in done.stderr
    done = replay(str(REFERENCE), "--rate", "fast")
    assert done.returncode == 2 and "'fast'" in done.stderr
