"""Which episodes a data collection drives: varied towns, weather, traffic, pedestrians.

The split decides towns and weather so that the test split is a town and a weather
that training never sees (the held-out town at sunset), as the benchmark suite does.
Within a split, episode k cycles through every town x weather pair before repeating
one, and draws its route length, traffic and crossing pedestrians from its own seed,
so a collection of N episodes is the same on every machine and any episode can be
re-driven alone from its scenario.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from sim.scenario import PedestrianCrossing, Scenario, ScenarioError
from sim.sensors.suite import SensorSuite


@dataclass(frozen=True)
class Split:
    name: str
    towns: tuple[str, ...]
    weathers: tuple[str, ...]
    randomize_look: bool  # domain randomisation (textures, colours, light) per episode


SPLITS = {
    "train": Split("train", ("grid_town", "multilane_town"), ("clear_noon", "overcast", "rain", "night", "fog"), True),
    "test": Split("test", ("holdout_town",), ("sunset",), False),
}

ROUTE_LENGTH_M = (300.0, 600.0)
NPC_VEHICLES = (10, 40)
PEDESTRIANS = (10, 40)
MAX_CROSSINGS = 2


def collection_scenarios(split: str, episodes: int, sensors: SensorSuite, seed: int = 0) -> list[Scenario]:
    """``episodes`` scenarios of ``split``; episode k's seed is ``seed + k``."""
    if split not in SPLITS:
        raise ScenarioError(f"unknown split {split!r} (one of {', '.join(SPLITS)})")
    if episodes < 1:
        raise ScenarioError(f"episodes={episodes}: collect at least one")
    s = SPLITS[split]
    out = []
    for k in range(episodes):
        episode_seed = seed + k
        rng = np.random.default_rng([episode_seed, 0xC011EC7])
        weather = s.weathers[k % len(s.weathers)]
        town = s.towns[(k // len(s.weathers)) % len(s.towns)]
        route_length_m = float(rng.uniform(*ROUTE_LENGTH_M))
        crossings = tuple(PedestrianCrossing(route_distance_m=float(d), trigger_distance_m=float(rng.uniform(15, 35)),
                                             speed_mps=float(rng.uniform(1.0, 1.8)))
                          for d in np.sort(rng.uniform(60.0, route_length_m - 60.0,
                                                       size=int(rng.integers(0, MAX_CROSSINGS + 1)))))
        out.append(Scenario(
            name=f"{split}_{town}_{weather}", town=town, route_length_m=round(route_length_m, 1),
            npc_vehicles=int(rng.integers(NPC_VEHICLES[0], NPC_VEHICLES[1] + 1)),
            pedestrians=int(rng.integers(PEDESTRIANS[0], PEDESTRIANS[1] + 1)),
            weather=weather, seed=episode_seed, split=split, pedestrian_crossings=crossings,
            description=f"data collection, {split} split, episode {k}",
            sensors=replace(sensors, randomize=s.randomize_look and sensors.renders)))
    return out
