"""Data collection: expert episodes recorded as bags, several at once on all cores.

Each worker process keeps one built-in simulator (town meshes are cached per process)
and drives its episodes in-process, recording through ``BagObserver`` (the bag the
ROS 2 graph would record, no rclpy). Bags use LZ4 chunks of 32 KiB: a chunk closes
after each image, so a training loader decompresses one frame's RGB and semantic image
and little else (measured: 1 MiB zstd chunks are ~3x slower to read at random, for 25 %
less disk; 128 KiB chunks, which hold the LiDAR scan or the instance image beside them,
~20 % slower; `make bench` compares them).

Who drives is a ``Driver``: the expert (default), the expert with CIL noise injection,
or a learned policy (DAgger); in the last two the expert's label of every frame is
recorded beside the executed control (``/drivestack/expert/control``).

``OUT/collection.json`` lists every episode: scenario, seed, bag, frames, bytes and its
driving result. A bag that is already complete is kept and its episode skipped, so an
interrupted collection resumes; an interrupted episode's bag is closed and readable.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

from ros_nodes.bag.contents import read_mcap
from ros_nodes.bag.errors import BagError
from ros_nodes.bag.layout import locate
from sim.demonstration import NoiseParams
from sim.scenario import Scenario

MANIFEST = "collection.json"
CHUNK_SIZE_BYTES = 32 << 10
COMPRESSION = "lz4"


@dataclass
class EpisodeRecord:
    """One line of the collection manifest."""

    bag: str  # relative to the collection directory
    scenario: str
    split: str
    town: str
    weather: str
    seed: int
    npc_vehicles: int
    pedestrians: int
    route_length_m: float
    status: str = ""
    driving_score: float = 0.0
    route_completion_pct: float = 0.0
    frames: int = 0
    bytes: int = 0
    wall_s: float = 0.0
    error: str = ""
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Driver:
    """Who drives the recorded episodes (picklable: it travels to the workers)."""

    noise: NoiseParams | None = None  # CIL noise injection on the expert's control
    policy_weights: str | None = None  # DAgger: this policy drives, the expert labels
    beta: float = 0.0  # DAgger: chance per step that the expert's own control is executed

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta={self.beta}: a probability in [0, 1]")
        if self.noise is not None and self.policy_weights is not None:
            raise ValueError("noise injection is for the expert; a policy (DAgger) makes its own mistakes")

    @property
    def labelled(self) -> bool:
        """Whether the executed control can differ from the expert's label."""
        return self.noise is not None or self.policy_weights is not None

    def describe(self) -> str:
        if self.policy_weights is not None:
            return f"policy {self.policy_weights} (expert labels, beta {self.beta:g})"
        return "expert with noise injection" if self.noise is not None else "expert"


def bag_name(scenario: Scenario) -> str:
    return f"{scenario.split}/{scenario.name}_seed{scenario.seed}"


def bag_is_complete(path: Path) -> bool:
    """A bag whose writer closed it (metadata.yaml and an MCAP summary)."""
    try:
        files = locate(path)
        return files.metadata is not None and all(read_mcap(f).complete for f in files.files)
    except BagError:
        return False


def _record(scenario: Scenario, out: Path) -> EpisodeRecord:
    return EpisodeRecord(bag_name(scenario), scenario.name, scenario.split, scenario.town, scenario.weather,
                         scenario.seed, scenario.npc_vehicles, scenario.pedestrians,
                         float(scenario.route_length_m or 0.0))


# -- worker side -------------------------------------------------------------------

_SIM = None
_POLICIES: dict[str, object] = {}  # weights path -> agent factory, loaded once per worker


def _worker_init() -> None:
    # The parent handles Ctrl-C: it tells workers to stop by cancelling and terminating,
    # and an episode being recorded closes its bag on SIGTERM (see _drive_one).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # one core per episode


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _agent_factory(driver: Driver, scenario: Scenario, drivers: list):
    """The episode's agent factory; the agent it builds is appended to ``drivers``."""
    import numpy as np

    from sim.demonstration import ControlNoise, LabelledDriver
    from sim.expert import ExpertDriver

    def make(road_map, route, sim):
        expert = ExpertDriver(road_map, route, sim.vehicle, sim.dt_s)
        if not driver.labelled:
            agent = expert
        elif driver.noise is not None:
            agent = LabelledDriver(expert, ControlNoise(driver.noise, sim.dt_s, scenario.seed), "expert+noise")
        else:
            if driver.policy_weights not in _POLICIES:
                from drivestack.agents import agent_factory
                _POLICIES[driver.policy_weights] = agent_factory("policy", scenario,
                                                                 policy_weights=Path(driver.policy_weights))
            policy = _POLICIES[driver.policy_weights](road_map, route, sim)
            rng = np.random.default_rng([scenario.seed, 0xDA66E2])

            def act(obs, label):
                executed = policy.run_step(obs)  # always: the policy keeps its own state current
                return label if rng.random() < driver.beta else executed
            agent = LabelledDriver(expert, act, "policy")
        drivers.append(agent)
        return agent
    return make


def _drive_one(scenario: Scenario, out: str, progress, driver: Driver = Driver()) -> EpisodeRecord:
    """Drive and record one episode (in a worker process)."""
    global _SIM
    from ros_nodes.bag_observer import BagObserver
    from sim.builtin import BuiltinSimulator
    from sim.episode import run_episode

    record = _record(scenario, Path(out))
    bag = Path(out) / record.bag
    bag.parent.mkdir(parents=True, exist_ok=True)
    if _SIM is None:
        _SIM = BuiltinSimulator()
    started = time.perf_counter()
    drivers: list = []
    observer = BagObserver(bag, scenario, _SIM.dt_s, compression=COMPRESSION, chunk_size_bytes=CHUNK_SIZE_BYTES,
                           label=(lambda: drivers[0].label if drivers else None) if driver.labelled else None)
    last = [0.0]

    def on_step(pct: float) -> None:
        if pct - last[0] >= 1.0 or pct >= 100.0:
            last[0] = pct
            progress.put((record.bag, pct))

    try:
        run = run_episode(_SIM, scenario, _agent_factory(driver, scenario, drivers), on_step=on_step,
                          observers=[observer])
    except KeyboardInterrupt:
        record.error = "interrupted (the bag is closed and readable)"
        _SIM = None  # the simulator may be mid-step
        return _measured(record, bag, started)
    except Exception as exc:  # one bad episode must not end the collection
        record.error = f"{type(exc).__name__}: {exc}"
        _SIM = None
        return _measured(record, bag, started)
    result = run.result
    record.status, record.driving_score = result.status.value, result.driving_score
    record.route_completion_pct = result.route_completion_pct
    record.extra = {"distance_driven_m": result.distance_driven_m, "duration_s": result.duration_s,
                    "infractions": len(result.infractions), "driver": driver.describe()}
    noise = getattr(drivers[0].act, "active_steps", None) if drivers and driver.labelled else None
    if noise is not None:
        record.extra["noise_frames"] = noise
    return _measured(record, bag, started)


def _measured(record: EpisodeRecord, bag: Path, started: float) -> EpisodeRecord:
    record.wall_s = round(time.perf_counter() - started, 2)
    if bag.exists():
        record.bytes = sum(f.stat().st_size for f in bag.iterdir() if f.is_file())
        try:
            contents = read_mcap(locate(bag).files[0], spans=True)
            clock = next((cid for cid, ch in contents.channels.items() if ch.topic == "/clock"), None)
            record.frames = contents.spans[clock].count if clock is not None and contents.spans else 0
        except (BagError, IndexError, KeyError):
            pass
    return record


# -- parent side -------------------------------------------------------------------

def load_manifest(out: Path) -> dict[str, EpisodeRecord]:
    path = out / MANIFEST
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return {e["bag"]: EpisodeRecord(**e) for e in data["episodes"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BagError(f"{path} is not a collection manifest ({exc}); move it away to start afresh") from None


def _save_manifest(out: Path, episodes: dict[str, EpisodeRecord], command: str) -> None:
    """Episodes, and every command that added to the collection (in order)."""
    commands = []
    if (out / MANIFEST).exists():
        try:
            commands = list(json.loads((out / MANIFEST).read_text()).get("commands", []))
        except (OSError, ValueError, AttributeError):
            commands = []
    if command and (not commands or commands[-1] != command):
        commands.append(command)
    payload = {"commands": commands,
               "episodes": [asdict(e) for e in sorted(episodes.values(), key=lambda e: e.bag)]}
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, out / MANIFEST)


@dataclass
class CollectionSummary:
    done: list[EpisodeRecord]
    skipped: list[str]
    failed: list[EpisodeRecord]
    interrupted: bool = False


def collect(scenarios: Sequence[Scenario], out: Path, *, workers: int, command: str = "",
            driver: Driver = Driver(),
            on_start: Callable[[str, str], None] | None = None,
            on_progress: Callable[[str, float], None] | None = None,
            on_done: Callable[[EpisodeRecord], None] | None = None) -> CollectionSummary:
    """Drive and record ``scenarios`` in ``workers`` processes into ``out``.

    ``driver`` says who drives (the expert by default). Complete bags already there
    are skipped; an incomplete one is an error (it may hold data: recover or move
    it). Callbacks run in this process: ``on_start(bag, label)``,
    ``on_progress(bag, route_pct)``, ``on_done(record)``.
    """
    out.mkdir(parents=True, exist_ok=True)
    episodes = load_manifest(out)
    todo, skipped = [], []
    for scenario in scenarios:
        name = bag_name(scenario)
        path = out / name
        if path.exists():
            if not bag_is_complete(path):
                raise BagError(f"{path} exists but was not closed (an earlier collection died while writing "
                               f"it): run `drivestack bag recover {path}` to keep it, or move it away")
            skipped.append(name)
            if name not in episodes:  # recorded by a run that was interrupted before its manifest
                episodes[name] = _measured(_record(scenario, out), path, time.perf_counter())
                episodes[name].status = "found on disk"
            continue
        todo.append(scenario)
    summary = CollectionSummary([], skipped, [])
    if not todo:
        return summary
    _save_manifest(out, episodes, command)
    ctx = get_context("spawn")  # panda3d and torch are not fork-safe once initialised
    pending: dict[Future, Scenario] = {}
    with ctx.Manager() as manager, ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx,
                                                       initializer=_worker_init) as pool:
        progress = manager.Queue()
        try:
            for scenario in todo:
                future = pool.submit(_drive_one, scenario, str(out), progress, driver)
                pending[future] = scenario
                if on_start:
                    on_start(bag_name(scenario), f"{scenario.town} {scenario.weather} seed {scenario.seed}")
            while pending:
                finished, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(progress, on_progress)
                for future in finished:
                    scenario = pending.pop(future)
                    try:
                        record = future.result()
                    except Exception as exc:  # the worker process died (killed, out of memory)
                        record = _measured(_record(scenario, out), out / bag_name(scenario), time.perf_counter())
                        record.error = f"worker died: {type(exc).__name__}: {exc}"
                    episodes[record.bag] = record
                    _save_manifest(out, episodes, command)
                    (summary.failed if record.error else summary.done).append(record)
                    if on_done:
                        on_done(record)
        except KeyboardInterrupt:
            summary.interrupted = True
            for future in pending:
                future.cancel()
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()  # SIGTERM: the episode closes its bag
    return summary


def _drain(progress, on_progress: Callable[[str, float], None] | None) -> None:
    while True:
        try:
            bag, pct = progress.get_nowait()
        except queue.Empty:
            return
        if on_progress:
            on_progress(bag, pct)
