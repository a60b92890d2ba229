"""Short episodes recorded as bags the way `drivestack collect` records them (full
sensor suite, LZ4 chunks of 32 KiB): the data the dataset and training tests read."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ros_nodes.bag_observer import BagObserver
from ros_nodes.collect import CHUNK_SIZE_BYTES, COMPRESSION
from sim.builtin import BuiltinSimulator
from sim.episode import run_episode
from sim.expert import ExpertDriver
from sim.scenario import resolve_scenario


def record_bag(path: Path, *, route_length_m: float = 45.0, seed: int = 3, weather: str = "clear_noon",
               sensors: str = "full") -> Path:
    """The default town with traffic, a short seeded route, recorded to ``path``."""
    scenario = replace(resolve_scenario("default", sensors=sensors, weather=weather), route_length_m=route_length_m,
                       pedestrian_crossings=(), seed=seed)
    sim = BuiltinSimulator()
    run_episode(sim, scenario, lambda m, r, s: ExpertDriver(m, r, s.vehicle, s.dt_s),
                observers=[BagObserver(path, scenario, sim.dt_s, compression=COMPRESSION,
                                       chunk_size_bytes=CHUNK_SIZE_BYTES)])
    sim.close()
    return path
