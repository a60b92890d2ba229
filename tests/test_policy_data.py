"""The behaviour-cloning dataset on bags of a real (short) collection: the per-frame table
against the recorded messages, expert labels, balancing, augmentation, and a clear error
for each kind of unusable data."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from drivestack.schema import RoadOption, VehicleControl
from models.engine import TrainingError
from models.policy_data import (GO, MAX_REPEAT, START, STOP, PolicyAugment, PolicyDataset, balance_bins,
                                balanced_indices, load_frames, motion_states)
from models.policy_net import POLICY_COMMANDS, command_index
from models.policy_task import PolicyTask
from ros_nodes import topics
from ros_nodes.bag.errors import BagError
from ros_nodes.bag.reader import iter_messages
from ros_nodes.bag.writer import BagWriter
from ros_nodes.collect import collect
from ros_nodes.convert_sensors import image_msg, quaternion_yaw, rgb_array
from ros_nodes.convert_world import control_msg, route_of
from ros_nodes.graph import encode
from sim.scenario import load_scenario
from sim.sensors.suite import load_suite

SCENARIOS = Path(__file__).parent / "data" / "scenarios"
RGB = topics.camera_image_topic("front", "rgb")


def policy_collection(tmp_path_factory) -> Path:
    """A collection of three short expert episodes of grid_town with the front_rgb suite:
    train/bc_seed5 (lane following, then a right turn at a junction), train/bc_seed8
    (straight across a junction), test/bc_seed8 (its first 30 m). Recorded once per test
    session: a second call finds the bags complete and `collect` skips them."""
    base = replace(load_scenario(str(SCENARIOS / "modular_short.yaml")), name="bc", sensors=load_suite("front_rgb"),
                   npc_vehicles=2, pedestrians=0)
    scenarios = [replace(base, seed=5, route_length_m=50.0), replace(base, seed=8, route_length_m=40.0),
                 replace(base, seed=8, route_length_m=30.0, split="test")]
    out = tmp_path_factory.getbasetemp() / "policy_collection"
    summary = collect(scenarios, out, workers=1)
    assert not summary.failed, [r.error for r in summary.failed]
    return out


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    return policy_collection(tmp_path_factory)


@pytest.fixture(scope="module")
def turn_bag(collection) -> Path:
    return collection / "train" / "bc_seed5"


def rewrite_bag(source: Path, target: Path, *, drop: Collection[str] = (), until_s: float = 8.0,
                change: Callable[[str, str, int, bytes], bytes] | None = None,
                add: Callable[[str, int, bytes], list[tuple[str, str, int, bytes]]] | None = None) -> Path:
    """A copy of the first ``until_s`` seconds of ``source`` without the ``drop`` topics;
    ``change(topic, msgtype, stamp_ns, cdr)`` rewrites a message, ``add(topic, stamp_ns, cdr)``
    returns extra (topic, msgtype, log time, cdr) messages to write after it."""
    with BagWriter(target) as writer:
        added: set[str] = set()
        for m in iter_messages(source):
            if m.topic in drop or m.stamp_ns > until_s * 1e9:
                continue
            extra = [(m.topic, m.msgtype, m.stamp_ns, change(m.topic, m.msgtype, m.stamp_ns, m.data) if change
                      else m.data)]
            extra += add(m.topic, m.stamp_ns, m.data) if add else []
            for topic, msgtype, stamp_ns, data in extra:
                if topic not in added:
                    writer.add_topic(topic, msgtype)
                    added.add(topic)
                writer.write(topic, stamp_ns, data)
    return target


def _messages(bag: Path, topic: str) -> dict[int, object]:
    return {m.stamp_ns: m.data for m in iter_messages(bag, [topic], deserialize=True)}


def test_frame_table_matches_the_recorded_odometry_speed_and_control(turn_bag):
    _, table = load_frames(turn_bag)
    odometry = _messages(turn_bag, topics.ODOMETRY)
    speedometer = _messages(turn_bag, topics.SPEEDOMETER)
    controls = {int(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec): m
                for m in _messages(turn_bag, topics.CONTROL).values()}
    last_odometry_ns = max(odometry)
    assert 200 < len(table) < len(odometry)
    assert not table.expert_labels and tuple(table.image_size) == (320, 160)
    # every frame with 2 s of future and a label is kept: the table ends 2 s before the odometry
    assert table.stamps_ns[-1] + 2 * 10**9 <= last_odometry_ns < table.stamps_ns[-1] + 2 * 10**9 + 10**8
    for f in range(0, len(table), 37):
        t = int(table.stamps_ns[f])
        pose = odometry[t].pose.pose
        yaw = quaternion_yaw(pose.orientation)
        for k in range(4):
            future = odometry[t + (k + 1) * 500_000_000].pose.pose.position
            dx, dy = future.x - pose.position.x, future.y - pose.position.y
            expected = (math.cos(yaw) * dx + math.sin(yaw) * dy, -math.sin(yaw) * dx + math.cos(yaw) * dy)
            assert table.waypoints_m[f, k] == pytest.approx(expected, abs=1e-4)
        assert table.speed_mps[f] == pytest.approx(speedometer[t].data)
        label = controls[t]
        assert table.controls[f] == pytest.approx([-label.steer, label.throttle, label.brake])  # REP 103 steer
    moving = table.speed_mps > 3.0
    assert (table.waypoints_m[moving, 0, 0] > 1.0).all()  # ahead of the car, in the direction it drives
    # the right turn: waypoints bend to the right (negative y) while the label steers right
    turning = table.controls[:, 0] < -0.1
    assert turning.sum() > 10 and np.median(table.waypoints_m[turning, -1, 1]) < -1.0


def test_the_command_announces_the_turn_before_the_junction(turn_bag):
    _, table = load_frames(turn_bag)
    route = route_of(next(iter(_messages(turn_bag, topics.ROUTE).values())))
    first_turn = next(w for w in route.waypoints if w.option == RoadOption.RIGHT)
    odometry = _messages(turn_bag, topics.ODOMETRY)
    names = [POLICY_COMMANDS[c] for c in table.commands]
    assert names[0] == RoadOption.LANEFOLLOW
    switch = names.index(RoadOption.RIGHT)
    assert set(names[switch:]) == {RoadOption.RIGHT}  # the route ends in the turn's exit
    position = odometry[int(table.stamps_ns[switch])].pose.pose.position
    before_junction_m = math.hypot(first_turn.x_m - position.x, first_turn.y_m - position.y)
    assert 15.0 < before_junction_m <= 23.0  # announced 20 m ahead (route points are 2 m apart)
    assert command_index(RoadOption.VOID) == command_index(RoadOption.LANEFOLLOW)


def test_labels_come_from_the_expert_topic_when_the_bag_has_it(turn_bag, tmp_path):
    def expert(topic: str, stamp_ns: int, cdr: bytes):
        if topic != topics.CONTROL:
            return []
        # distinct from the executed control; logged 7 ms late, as a graph records it, but
        # stamped with the frame it answers
        label = VehicleControl(throttle=0.25, steer=0.5 * math.sin(stamp_ns / 1e9), brake=0.0)
        return [(topics.EXPERT_CONTROL, "drivestack_msgs/msg/VehicleControl", stamp_ns + 7_000_000,
                 encode(control_msg(label, stamp_ns), "drivestack_msgs/msg/VehicleControl"))]
    bag = rewrite_bag(turn_bag, tmp_path / "labelled", add=expert)
    _, table = load_frames(bag)
    assert table.expert_labels and len(table) > 50
    assert table.controls[:, 1] == pytest.approx(0.25)
    assert table.controls[:, 0] == pytest.approx(0.5 * np.sin(table.stamps_ns / 1e9), abs=1e-6)
    dataset = PolicyDataset([bag], balance=False)
    sample = dataset[3]
    assert sample.control == pytest.approx([0.5 * math.sin(sample.stamp_ns / 1e9), 0.25, 0.0], abs=1e-6)


def test_samples_are_the_recorded_frames_and_the_table_is_cached(turn_bag):
    dataset = PolicyDataset([turn_bag], stride=3, balance=False)
    _, table = load_frames(turn_bag)
    assert len(dataset) == len(range(0, len(table), 3)) and dataset.image_size == (320, 160)
    images = _messages(turn_bag, RGB)
    sample = dataset[10]
    assert sample.stamp_ns == table.stamps_ns[30] and sample.command == table.commands[30]
    assert sample.image.dtype == np.uint8 and np.array_equal(sample.image, rgb_array(images[sample.stamp_ns]))
    assert sample.waypoints_m.shape == (4, 2) and sample.source.endswith("frame 30")
    cache = turn_bag / "policy_front.npz"
    mtime = cache.stat().st_mtime_ns
    load_frames(turn_bag)
    assert cache.stat().st_mtime_ns == mtime  # loaded, not decoded again
    _, other = load_frames(turn_bag, num_waypoints=2, waypoint_dt_s=1.0)  # another horizon: decoded again
    assert other.waypoints_m.shape[1:] == (2, 2) and cache.stat().st_mtime_ns != mtime
    assert other.waypoints_m[:100, 1] == pytest.approx(table.waypoints_m[:100, 3], abs=1e-5)


def test_balancing_evens_out_bins_up_to_a_cap_and_never_drops_a_frame():
    bins = np.repeat([0, 1, 2], [200, 50, 4])
    rng = np.random.default_rng(0)
    order = balanced_indices(bins, rng)
    assert np.array_equal(np.unique(order), np.arange(len(bins)))  # nothing dropped
    counts = np.bincount(bins[order])
    assert counts[0] == 200 and 150 <= counts[1] <= 250 and counts[2] == 4 * MAX_REPEAT
    assert np.array_equal(order, balanced_indices(bins, np.random.default_rng(0)))  # seeded
    # motion states: braking or holding still is STOP, still with throttle is START
    speed = np.array([0.0, 0.0, 5.0, 5.0, 0.05])
    controls = np.array([[0, 0, 1], [0, 0.6, 0], [0, 0.5, 0], [0, 0, 0.8], [0.3, 0, 0]], np.float32)
    assert motion_states(speed, controls).tolist() == [STOP, START, GO, STOP, STOP]
    assert len(set(balance_bins(np.array([3, 3, 3, 3, 0]), speed, controls).tolist())) == 4


def test_dataset_balancing_keeps_every_start_and_boosts_rare_bins(collection):
    natural = PolicyDataset([collection / "train"], balance=False)
    balanced = PolicyDataset([collection / "train"], balance=True, seed=1)
    before, after = natural.bin_counts(resampled=False), balanced.bin_counts()
    assert natural.bin_counts() == before and sum(before.values()) == len(natural)
    assert set(after) == set(before) and len(balanced) > len(natural)
    largest = max(before.values())
    for name, count in before.items():
        assert count <= after[name] <= min(largest, MAX_REPEAT * count) * 1.3 + 3
    assert after[max(before, key=before.get)] == largest
    assert max(after.values()) / min(after.values()) < largest / min(before.values())
    assert any("/start/" in name for name in before)
    starts = np.flatnonzero(motion_states(natural._column("speed_mps"), natural._column("controls")) == START)
    assert set(starts) <= set(balanced.order.tolist())
    assert np.array_equal(PolicyDataset([collection / "train"], seed=1).order, balanced.order)


def test_augmentation_changes_colours_only(turn_bag):
    augment = PolicyAugment(probability=1.0, seed=0)
    dataset = PolicyDataset([turn_bag], balance=False, augment=augment)
    plain, jittered = dataset.sample(40), dataset[40]
    assert jittered.image.shape == plain.image.shape and jittered.image.dtype == np.uint8
    assert not np.array_equal(jittered.image, plain.image)
    assert np.array_equal(jittered.control, plain.control) and np.array_equal(jittered.waypoints_m,
                                                                               plain.waypoints_m)


def _resize_images(topic: str, msgtype: str, stamp_ns: int, cdr: bytes) -> bytes:
    if topic != RGB:
        return cdr
    from ros_nodes.graph import decode
    image = rgb_array(decode(cdr, msgtype))[::2, ::2]
    return encode(image_msg(image, "rgb8", stamp_ns, "front_optical"), msgtype)


@pytest.mark.parametrize("drop, message", [
    ((topics.ROUTE,), "no /drivestack/route in this bag: the route command comes from the route"),
    ((topics.ODOMETRY,), "no /carla/ego_vehicle/odometry in this bag: the route command, the speed and the "
                         "waypoints come from the odometry"),
    ((topics.CONTROL,), "no control label in this bag (neither /drivestack/expert/control nor "
                        "/carla/ego_vehicle/vehicle_control_cmd)"),
    ((RGB,), "no /carla/ego_vehicle/rgb_front/image in this bag: the policy's camera 'front'"),
])
def test_a_bag_missing_a_topic_is_named_with_what_is_missing(turn_bag, tmp_path, drop, message):
    bag = rewrite_bag(turn_bag, tmp_path / "bag", drop=drop, until_s=3.0)
    with pytest.raises(BagError) as error:
        PolicyDataset([bag])
    assert str(error.value).startswith(f"{bag}: {message}")


def test_image_sizes_must_agree_with_each_other_and_the_net(turn_bag, tmp_path):
    small = rewrite_bag(turn_bag, tmp_path / "data" / "train" / "small", change=_resize_images, until_s=4.0)
    with pytest.raises(BagError, match=r"small: camera 'front' images are 160x80 px, those of .* 320x160"):
        PolicyDataset([turn_bag, small])
    rewrite_bag(small, tmp_path / "data" / "train" / "small2", until_s=4.0)
    task = PolicyTask(tmp_path / "data", init_from_perception=False)
    with pytest.raises(TrainingError, match="images are 160x80 px, the policy net takes 320x160 px"):
        task.datasets()


def test_data_without_usable_frames_is_refused(turn_bag, tmp_path):
    short = rewrite_bag(turn_bag, tmp_path / "data" / "train" / "short", until_s=1.5)  # under 2 s of future
    with pytest.raises(BagError, match=r"no usable frames of camera 'front' in 1 bag\(s\) \(each needs a label "
                                       r"and 2 s of odometry after it\)"):
        PolicyDataset([short])
    with pytest.raises(TrainingError, match="no usable frames"):
        PolicyTask(tmp_path / "data", init_from_perception=False).datasets()
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(TrainingError, match="empty/train: no bags in it"):
        PolicyTask(tmp_path / "empty", init_from_perception=False).datasets()
