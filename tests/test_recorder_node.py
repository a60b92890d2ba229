"""The recorder node as real processes: this test publishes an Image and the episode
result (std_msgs/String, latched) with rclpy; three recorders take them down and end by
SIGTERM, SIGINT and SIGKILL. The first two leave complete bags with their metadata, the
last one a bag that `recover_bag` gives back whole (it was killed > 1 s after the data).
A fourth recorder gets SIGINT right after a burst of images: it records all of them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rclpy
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String

from ros_nodes.bag.info import bag_info
from ros_nodes.bag.reader import iter_messages
from ros_nodes.bag.recover import recover_bag

IMAGE = f"/recorder_test_{os.getpid()}/camera/image"  # not another run's topic, should domains meet
BURST = f"/recorder_test_{os.getpid()}/burst"
BURST_COUNT = 100  # the recorder's subscription depth (KEEP_LAST 100): all fit in its reader's queue
RESULT = "/drivestack/episode/result"
RESULT_JSON = json.dumps({"driving_score": 0.5, "status": "Completed"})
ENDINGS = {"term": signal.SIGTERM, "int": signal.SIGINT, "kill": signal.SIGKILL}
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def image(i: int) -> Image:
    msg = Image(height=2, width=3, encoding="mono8", step=3, data=bytes(range(i, i + 6)))
    msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = 10 + i, 500, "cam"
    return msg


def start_recorder(name: str, out: Path, topics: tuple[str, ...] = (IMAGE, RESULT)) -> subprocess.Popen:
    metadata = json.dumps({"scenario": "recorder_test", "seed": 3})
    listed = ", ".join(f"'{t}'" for t in topics)
    return subprocess.Popen(
        [sys.executable, "-m", "ros_nodes.recorder_node", "--ros-args", "-r", f"__node:=recorder_{name}",
         "-p", f"out:={out}", "-p", f"topics:=[{listed}]", "-p", f"metadata_json:='{metadata}'"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=Path(__file__).parents[1])


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """Bags of three recorders that saw the same messages: name -> (path, exit code, output)."""
    out = tmp_path_factory.mktemp("recordings")
    context = rclpy.Context()
    rclpy.init(context=context)  # own context: other tests may use rclpy's default one
    node = rclpy.create_node("recorder_test_publisher", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    procs: dict[str, subprocess.Popen] = {}
    try:
        images = node.create_publisher(Image, IMAGE, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        result = node.create_publisher(String, RESULT, LATCHED)
        ready: set[str] = set()
        node.create_subscription(String, "/drivestack/ready", lambda m: ready.add(json.loads(m.data)["node"]),
                                 QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        procs = {name: start_recorder(name, out / name) for name in ENDINGS}
        names = {f"recorder_{name}" for name in ENDINGS}
        deadline = time.monotonic() + 60
        while (not names <= ready or images.get_subscription_count() < 3 or result.get_subscription_count() < 3) \
                and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
            assert all(p.poll() is None for p in procs.values()), [p.stdout.read() for p in procs.values()]
        assert names <= ready, f"recorders ready: {ready}"
        for i in range(10):
            images.publish(image(i))
        result.publish(String(data=RESULT_JSON))
        published_at = time.monotonic()
        # Every recorder has it on disk (the bags are still open: read by scanning).
        while any(bag_info(out / name).message_count < 11 for name in ENDINGS):
            assert time.monotonic() < published_at + 30, {name: bag_info(out / name).topics for name in ENDINGS}
            time.sleep(0.05)
        time.sleep(max(0.0, published_at + 1.1 - time.monotonic()))  # kill -9 more than 1 s after
        for name, ending in ENDINGS.items():
            procs[name].send_signal(ending)
        outputs = {name: p.communicate(timeout=20)[0] for name, p in procs.items()}
        yield {name: (out / name, procs[name].returncode, outputs[name]) for name in ENDINGS}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def _check_bag(path: Path) -> None:
    info = bag_info(path)
    assert info.complete, info.problems
    assert {t.name: (t.msgtype, t.count) for t in info.topics} == {
        IMAGE: ("sensor_msgs/msg/Image", 10), RESULT: ("std_msgs/msg/String", 1)}
    assert info.custom_data["scenario"] == "recorder_test" and info.custom_data["seed"] == "3"
    assert info.custom_data["episode_result"] == RESULT_JSON
    read = list(iter_messages(path, topics=[IMAGE], deserialize=True))
    assert [m.stamp_ns for m in read] == [(10 + i) * 1_000_000_000 + 500 for i in range(10)]  # header stamps
    assert [bytes(m.data.data) for m in read] == [bytes(range(i, i + 6)) for i in range(10)]


@pytest.mark.parametrize("ending", ["term", "int"])
def test_sigterm_and_sigint_close_a_complete_bag(recordings, ending):
    path, returncode, output = recordings[ending]
    assert returncode == 0, output
    assert (path / "metadata.yaml").exists() and "11 messages" in output
    _check_bag(path)


def test_sigkill_bag_is_recovered_whole(recordings):
    path, returncode, output = recordings["kill"]
    assert returncode == -signal.SIGKILL
    assert not (path / "metadata.yaml").exists() and not bag_info(path).complete
    report = recover_bag(path)
    assert report.messages_per_topic == {IMAGE: 10, RESULT: 1}, report
    _check_bag(path)


def test_sigint_right_after_a_burst_loses_no_message(tmp_path):
    """Messages the recorder's DDS reader has (acknowledged) when SIGINT comes are recorded."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("recorder_burst_publisher", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    proc = None
    try:
        burst = node.create_publisher(Image, BURST, QoSProfile(depth=BURST_COUNT,
                                                               reliability=ReliabilityPolicy.RELIABLE))
        ready: set[str] = set()
        node.create_subscription(String, "/drivestack/ready", lambda m: ready.add(json.loads(m.data)["node"]),
                                 QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        proc = start_recorder("burst", tmp_path / "burst", topics=(BURST,))
        deadline = time.monotonic() + 60
        while ("recorder_burst" not in ready or burst.get_subscription_count() < 1) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
            assert proc.poll() is None, proc.stdout.read()
        assert "recorder_burst" in ready
        frame = Image(height=240, width=320, encoding="rgb8", step=320 * 3, data=bytes(320 * 240 * 3))
        for i in range(BURST_COUNT):
            frame.header.stamp.sec = 100 + i  # log times 100 s, 101 s, ...
            burst.publish(frame)
        assert burst.wait_for_all_acked(Duration(seconds=10))  # all in the recorder's reader
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=20)[0]
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    assert proc.returncode == 0, output
    info = bag_info(tmp_path / "burst")
    assert info.complete and {t.name: t.count for t in info.topics} == {BURST: BURST_COUNT}, output
