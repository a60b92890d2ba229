"""The behaviour-cloning dataset: camera frames with the expert's control, read from bags.

Per bag, the frames of one RGB camera come from the bag's index (`models.bag_index`).
What a sample needs besides the image is small but slow to deserialise, so it is decoded
once into a per-frame table cached beside the bag (``policy_<camera>.npz``, keyed on the
MCAP file, the number of waypoints and their spacing):

- ``speed_mps``: the speedometer, else the norm of the odometry twist;
- ``commands``: the route command (an index into ``models.policy_net.POLICY_COMMANDS``),
  from the bag's route and the odometry with ``sim.route_progress.RouteProgress`` in time
  order, exactly as the policy agent computes it when driving;
- ``controls``: the label (steer positive left, throttle, brake): the expert's control
  (``/drivestack/expert/control``) when the bag has it (noise injection, DAgger), else the
  executed control, matched to the frame by header stamp (or log time);
- ``waypoints_m``: the ego's odometry positions at t + k * waypoint_dt_s (k = 1..K) in the
  ego frame at t (x forward, y left, REP 103). Frames whose future runs past the end of
  the odometry are dropped.

Balancing (``balance=True``): most frames drive straight on at speed; the rare ones
(junction turns, stopping, starting) decide whether a clone works. Each frame falls in a
bin (command, motion, turning) and frames of rarer bins are repeated, up to
``MAX_REPEAT`` times, towards the count of the largest bin; nothing is ever dropped, so the
"start" frames (stopped, the label says go), which teach the clone to move off again
(the inertia problem, Codevilla et al. 2019), are always in, and boosted as a bin of
their own.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from models.augment import AugmentConfig, colour_jitter
from models.bag_index import BagIndex, MessageSource, open_index
from models.perception_data import find_bags
from models.policy_net import POLICY_COMMANDS, command_index
from ros_nodes import topics
from ros_nodes.bag.errors import BagError
from ros_nodes.convert_sensors import MessageError, quaternion_yaw, rgb_array, stamp_ns_of
from ros_nodes.convert_world import route_of, vehicle_control
from sim.route_progress import RouteProgress

FRAMES_VERSION = 1
STOPPED_SPEED_MPS = 0.1  # below this the car counts as standing still
BRAKE_LABEL = 0.5  # a label braking harder than this means "stop"
TURNING_STEER = 0.1  # |steer| above this is a turn
MAX_REPEAT = 5.0  # the most a frame is repeated by balancing

MOTIONS = ("stop", "start", "go")  # start: stopped while the label says go (throttle > 0)
STOP, START, GO = range(len(MOTIONS))


@dataclass
class PolicyFrames:
    """One bag's frames of one camera, with what the policy learns from, as flat arrays."""

    stamps_ns: np.ndarray  # (F,) int64 log time of the image
    image_rows: np.ndarray  # (F,) int64 index rows of the images
    speed_mps: np.ndarray  # (F,) float32
    commands: np.ndarray  # (F,) int64 indices into POLICY_COMMANDS
    controls: np.ndarray  # (F, 3) float32 label: steer [-1, 1] (positive left), throttle, brake [0, 1]
    waypoints_m: np.ndarray  # (F, K, 2) float32 future ego positions, ego frame at the frame's time
    image_size: np.ndarray  # (2,) int64 (width, height) px of the camera's images
    expert_labels: np.ndarray  # () bool: labels from the expert topic (else the executed control)

    def __len__(self) -> int:
        return len(self.stamps_ns)


@dataclass(eq=False)
class PolicySample:
    """One training sample: what the policy sees and what it should answer."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    speed_mps: float
    command: int  # index into POLICY_COMMANDS
    control: np.ndarray  # (3,) float32 steer, throttle, brake
    waypoints_m: np.ndarray  # (K, 2) float32
    stamp_ns: int
    source: str  # bag and frame, for error messages


class _Odometry:
    """A bag's odometry as arrays: log time, position, heading, speed."""

    def __init__(self, stamps_ns: np.ndarray, xy_m: np.ndarray, yaw_rad: np.ndarray, speed_mps: np.ndarray) -> None:
        self.stamps_ns, self.xy_m, self.yaw_rad, self.speed_mps = stamps_ns, xy_m, yaw_rad, speed_mps

    def positions_at(self, stamps_ns: np.ndarray) -> np.ndarray:
        """(N, 2) positions linearly interpolated in time (stamps within the odometry's span)."""
        t = (stamps_ns - self.stamps_ns[0]).astype(np.float64)
        t_odo = (self.stamps_ns - self.stamps_ns[0]).astype(np.float64)
        return np.stack([np.interp(t, t_odo, self.xy_m[:, 0]), np.interp(t, t_odo, self.xy_m[:, 1])], axis=-1)


def future_waypoints(xy_m: np.ndarray, yaw_rad: np.ndarray, future_xy_m: np.ndarray) -> np.ndarray:
    """Future positions (N, K, 2, map frame) in the ego frame of each (N,) pose: x forward,
    y left."""
    delta = future_xy_m - xy_m[:, None, :]
    cos, sin = np.cos(yaw_rad)[:, None], np.sin(yaw_rad)[:, None]
    return np.stack([cos * delta[..., 0] + sin * delta[..., 1], -sin * delta[..., 0] + cos * delta[..., 1]], axis=-1)


def _require(index: BagIndex, topic: str, what: str) -> None:
    if index.channel_of(topic) is None:
        raise BagError(f"{index.mcap_path.parent}: no {topic} in this bag: {what}")


def _topics(index: BagIndex, camera: str) -> tuple[str, str]:
    """(image topic, label topic) of the bag, or a BagError naming what is missing."""
    image_topic = topics.camera_image_topic(camera, "rgb")
    _require(index, image_topic, f"the policy's camera {camera!r} (record with a suite that has it, e.g. "
                                 "--sensors front_rgb or full)")
    _require(index, topics.ROUTE, "the route command comes from the route (and the odometry)")
    _require(index, topics.ODOMETRY, "the route command, the speed and the waypoints come from the odometry")
    label_topic = topics.EXPERT_CONTROL if index.channel_of(topics.EXPERT_CONTROL) is not None else topics.CONTROL
    if index.channel_of(label_topic) is None:
        raise BagError(f"{index.mcap_path.parent}: no control label in this bag (neither {topics.EXPERT_CONTROL} "
                       f"nor {topics.CONTROL})")
    return image_topic, label_topic


def _decode_frames(index: BagIndex, camera: str, num_waypoints: int, waypoint_dt_s: float) -> PolicyFrames:
    bag = index.mcap_path.parent
    image_topic, label_topic = _topics(index, camera)
    frames = index.frames(image_topic, [topics.ODOMETRY], [topics.SPEEDOMETER])
    if len(frames) == 0:
        raise BagError(f"{bag}: no {image_topic} image has odometry at its time")
    odometry_rows, control_rows = index.rows(topics.ODOMETRY), index.rows(label_topic)
    route_row = int(index.rows(topics.ROUTE)[0])
    wanted = np.unique(np.concatenate([odometry_rows, control_rows, frames[frames[:, 2] >= 0, 2],
                                       [route_row, frames[0, 0]]]))
    source = MessageSource(index)
    try:
        messages = {int(row): source.message(int(row)) for row in wanted}  # in file order: each chunk read once
        route = route_of(messages[route_row])
        first_image = rgb_array(messages[int(frames[0, 0])])
        by_header, by_log_time = {}, {}
        for row in control_rows:
            msg = messages[int(row)]
            control = vehicle_control(msg)
            by_header[stamp_ns_of(msg.header.stamp)] = by_log_time[int(index.stamps_ns[row])] = (
                control.steer, control.throttle, control.brake)
    except MessageError as exc:
        raise BagError(f"{bag}: a message is malformed: {exc}") from None
    finally:
        source.close()
    if len(route.waypoints) < 2:
        raise BagError(f"{bag}: the route ({topics.ROUTE}) has {len(route.waypoints)} waypoint(s); a command needs "
                       "a route of two or more")
    odometry = _odometry(index, odometry_rows, messages)
    frame_odometry = np.searchsorted(odometry.stamps_ns, index.stamps_ns[frames[:, 1]])
    stamps = index.stamps_ns[frames[:, 0]]
    # The header stamp names the frame a control answers (a graph logs it when it
    # arrives, later); the log time serves bags whose controls carry no stamp.
    labels = by_header if not by_header.keys().isdisjoint(stamps.tolist()) else by_log_time
    speed = np.array([messages[int(row)].data if row >= 0 else odometry.speed_mps[k]
                      for row, k in zip(frames[:, 2], frame_odometry)], np.float32)
    if not np.isfinite(speed).all():
        raise BagError(f"{bag}: a speedometer reading is NaN or infinite")
    progress = RouteProgress(route)
    commands = np.array([command_index(progress.command_ahead(progress.update(*odometry.xy_m[k])))
                         for k in frame_odometry], np.int64)
    offsets_ns = np.array([round(k * waypoint_dt_s * 1e9) for k in range(1, num_waypoints + 1)], np.int64)
    futures = stamps[:, None] + offsets_ns[None, :]
    label_of = [labels.get(int(t)) for t in stamps]
    keep = (futures[:, -1] <= odometry.stamps_ns[-1]) & np.array([v is not None for v in label_of], bool)
    keep_at = np.flatnonzero(keep)
    waypoints = future_waypoints(odometry.xy_m[frame_odometry[keep_at]], odometry.yaw_rad[frame_odometry[keep_at]],
                                 odometry.positions_at(futures[keep_at]))
    controls = np.array([label_of[k] for k in keep_at], np.float32).reshape(-1, 3)
    height, width = first_image.shape[:2]
    return PolicyFrames(stamps[keep_at].astype(np.int64), frames[keep_at, 0].astype(np.int64), speed[keep_at],
                        commands[keep_at], controls, waypoints.astype(np.float32).reshape(-1, num_waypoints, 2),
                        np.array([width, height], np.int64), np.array(label_topic == topics.EXPERT_CONTROL))


def _odometry(index: BagIndex, rows: np.ndarray, messages: dict) -> _Odometry:
    xy, yaw, speed = np.zeros((len(rows), 2)), np.zeros(len(rows)), np.zeros(len(rows))
    for k, row in enumerate(rows):
        msg = messages[int(row)]
        pose, twist = msg.pose.pose, msg.twist.twist
        values = (pose.position.x, pose.position.y, twist.linear.x, twist.linear.y)
        if not all(math.isfinite(v) for v in values):
            raise BagError(f"{index.mcap_path.parent}: odometry at t={index.stamps_ns[row]} ns has a NaN or "
                           f"infinite value")
        xy[k] = values[:2]
        yaw[k] = quaternion_yaw(pose.orientation)
        speed[k] = math.hypot(values[2], values[3])
    return _Odometry(index.stamps_ns[rows], xy, yaw, speed)


def load_frames(bag: str | Path, camera: str = "front", *, num_waypoints: int = 4, waypoint_dt_s: float = 0.5,
                index: BagIndex | None = None) -> tuple[BagIndex, PolicyFrames]:
    """The bag's index and its policy frames for ``camera``, cached beside the bag."""
    if num_waypoints < 1 or not waypoint_dt_s > 0:
        raise ValueError(f"num_waypoints={num_waypoints} and waypoint_dt_s={waypoint_dt_s} must be positive")
    index = index or open_index(bag)
    cache = index.mcap_path.parent / f"policy_{camera}.npz"
    stat = index.mcap_path.stat()
    key = (FRAMES_VERSION, stat.st_size, stat.st_mtime_ns, num_waypoints, round(waypoint_dt_s * 1e9))
    try:
        with np.load(cache) as data:
            if tuple(int(v) for v in data["key"]) == key:
                return index, PolicyFrames(**{k: data[k] for k in PolicyFrames.__dataclass_fields__})
    except (OSError, KeyError, ValueError, EOFError):
        pass
    frames = _decode_frames(index, camera, num_waypoints, waypoint_dt_s)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, key=np.array(key, np.int64), **frames.__dict__)
        os.replace(tmp, cache)  # atomic: parallel readers never see a half file
    except OSError:
        tmp.unlink(missing_ok=True)  # a read-only bag: decoded again next time
    return index, frames


# -- balancing ------------------------------------------------------------------------

def motion_states(speed_mps: np.ndarray, controls: np.ndarray) -> np.ndarray:
    """STOP (the label brakes, or holds the car still), START (still, the label says go) or GO."""
    still = speed_mps < STOPPED_SPEED_MPS
    braking = controls[:, 2] > BRAKE_LABEL
    start = still & ~braking & (controls[:, 1] > 0)
    return np.where(braking | (still & ~start), STOP, np.where(start, START, GO))


def balance_bins(commands: np.ndarray, speed_mps: np.ndarray, controls: np.ndarray) -> np.ndarray:
    """Each frame's bin: (command, motion, turning) as one integer."""
    turning = np.abs(controls[:, 0]) > TURNING_STEER
    return (commands * len(MOTIONS) + motion_states(speed_mps, controls)) * 2 + turning


def bin_name(bin_id: int) -> str:
    rest, turning = divmod(int(bin_id), 2)
    command, motion = divmod(rest, len(MOTIONS))
    return f"{POLICY_COMMANDS[command].name}/{MOTIONS[motion]}/{'turn' if turning else 'straight'}"


def balanced_indices(bins: np.ndarray, rng: np.random.Generator, max_repeat: float = MAX_REPEAT) -> np.ndarray:
    """Frame indices, each repeated about min(largest bin / its bin, max_repeat) times (at
    least once: nothing is dropped), in frame order. The fractional part of a repeat count
    is drawn from ``rng``, so the expected count of a bin is its target exactly."""
    if len(bins) == 0:
        return np.zeros(0, np.int64)
    ids, inverse, counts = np.unique(bins, return_inverse=True, return_counts=True)
    repeat = np.minimum(counts.max() / counts, max_repeat)[inverse]
    whole = np.floor(repeat)
    times = (whole + (rng.random(len(bins)) < repeat - whole)).astype(np.int64)
    return np.repeat(np.arange(len(bins)), times)


# -- augmentation ---------------------------------------------------------------------

# Light colour changes only: a geometric change (crop, shift, flip) would move the road
# in the image without changing the steering label.
POLICY_JITTER = AugmentConfig(brightness=0.2, contrast=0.2, saturation=0.2, hue_deg=5.0)


class PolicyAugment:
    """Colour jitter on a uint8 RGB image. Each loader worker draws from its own generator,
    seeded from torch's per-worker seed (reproducible under a fixed torch seed)."""

    def __init__(self, config: AugmentConfig = POLICY_JITTER, probability: float = 0.8,
                 seed: int | None = None) -> None:
        self.config, self.probability, self._seed = config, probability, seed
        self._rng: np.random.Generator | None = None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self._rng is None:
            if self._seed is None:
                import torch
                self._seed = torch.initial_seed() % 2**63
            self._rng = np.random.default_rng(self._seed)
        return colour_jitter(image, self._rng, self.config) if self._rng.random() < self.probability else image


# -- the dataset ----------------------------------------------------------------------

class PolicyDataset(Dataset):
    """Frames of many bags for one camera, as ``PolicySample``.

    ``stride`` keeps every n-th frame of each bag (20 Hz frames are near copies);
    ``balance`` resamples them as the module docstring says (seeded by ``seed``);
    ``augment`` (train only) maps a uint8 image to another of the same size, in the loader
    worker. Every image of the dataset has one size (``image_size``, (W, H)).
    """

    def __init__(self, bags: Sequence[str | Path], camera: str = "front", *, stride: int = 1,
                 num_waypoints: int = 4, waypoint_dt_s: float = 0.5, balance: bool = True,
                 augment: Callable[[np.ndarray], np.ndarray] | None = None, seed: int = 0) -> None:
        if stride < 1:
            raise ValueError(f"stride={stride} must be >= 1")
        paths = find_bags(bags) if bags else []
        if not paths:
            raise BagError("the dataset has no bags")
        self.camera, self.augment = camera, augment
        self.num_waypoints, self.waypoint_dt_s = num_waypoints, waypoint_dt_s
        self.bags: list[Path] = []
        self.sources: list[MessageSource] = []
        self.tables: list[PolicyFrames] = []
        self.image_size: tuple[int, int] | None = None
        kept = []
        for path in paths:
            index, table = load_frames(path, camera, num_waypoints=num_waypoints, waypoint_dt_s=waypoint_dt_s)
            size = (int(table.image_size[0]), int(table.image_size[1]))
            if self.image_size is None:
                self.image_size, first = size, path
            elif size != self.image_size:
                raise BagError(f"{path}: camera {camera!r} images are {size[0]}x{size[1]} px, those of {first} "
                               f"{self.image_size[0]}x{self.image_size[1]}: a dataset needs one image size")
            self.bags.append(path)
            self.sources.append(MessageSource(index))
            self.tables.append(table)
            keep = np.arange(0, len(table), stride)
            kept.append(np.stack([np.full(len(keep), len(self.bags) - 1), keep], axis=1))
        self.frames = np.concatenate(kept).astype(np.int64)
        if len(self.frames) == 0:
            raise BagError(f"no usable frames of camera {camera!r} in {len(paths)} bag(s) (each needs a label and "
                           f"{num_waypoints * waypoint_dt_s:g} s of odometry after it)")
        self.bins = balance_bins(self._column("commands"), self._column("speed_mps"), self._column("controls"))
        self.order = (balanced_indices(self.bins, np.random.default_rng(seed)) if balance
                      else np.arange(len(self.frames)))

    def __len__(self) -> int:
        return len(self.order)

    def _column(self, name: str) -> np.ndarray:
        """A per-frame table column for every kept frame, in ``self.frames`` order."""
        return np.concatenate([getattr(table, name)[self.frames[self.frames[:, 0] == b, 1]]
                               for b, table in enumerate(self.tables)])

    def bin_counts(self, resampled: bool = True) -> dict[str, int]:
        """Samples per bin ("COMMAND/motion/turn|straight"): after balancing, or of the
        frames as recorded (``resampled=False``)."""
        bins = self.bins[self.order] if resampled else self.bins
        ids, counts = np.unique(bins, return_counts=True)
        return {bin_name(i): int(n) for i, n in zip(ids, counts)}

    def frame_of(self, i: int) -> tuple[int, int]:
        """(bag number, frame number in its table) of sample ``i``."""
        b, f = self.frames[self.order[i]]
        return int(b), int(f)

    def sample(self, i: int) -> PolicySample:
        """Sample ``i`` decoded, before augmentation."""
        b, f = self.frame_of(i)
        table, where = self.tables[b], f"{self.bags[b]} frame {f}"
        try:
            image = rgb_array(self.sources[b].message(int(table.image_rows[f])))
        except MessageError as exc:
            raise BagError(f"{where}: {exc}") from None
        if (image.shape[1], image.shape[0]) != self.image_size:
            raise BagError(f"{where}: a {image.shape[1]}x{image.shape[0]} px image in a bag of "
                           f"{self.image_size[0]}x{self.image_size[1]} px ones")
        return PolicySample(image, float(table.speed_mps[f]), int(table.commands[f]), table.controls[f].copy(),
                            table.waypoints_m[f].copy(), int(table.stamps_ns[f]), where)

    def __getitem__(self, i: int) -> PolicySample:
        sample = self.sample(i)
        if self.augment is not None:
            sample.image = self.augment(sample.image)
        return sample

