"""`drivestack collect`: the episode plan, parallel recording, resuming and Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ros_nodes.bag.info import bag_info
from ros_nodes.collect import bag_is_complete
from sim.collection import SPLITS, collection_scenarios
from sim.scenario import ScenarioError
from sim.sensors.suite import load_suite


def test_splits_hold_out_a_town_and_a_weather():
    train, test = SPLITS["train"], SPLITS["test"]
    assert not set(train.towns) & set(test.towns)
    assert not set(train.weathers) & set(test.weathers)


def test_plan_cycles_every_town_and_weather_and_is_reproducible():
    suite = load_suite("full")
    plan = collection_scenarios("train", 10, suite, seed=40)
    assert {(s.town, s.weather) for s in plan} == {(t, w) for t in SPLITS["train"].towns
                                                   for w in SPLITS["train"].weathers}
    assert [s.seed for s in plan] == list(range(40, 50))
    assert plan == collection_scenarios("train", 10, suite, seed=40)
    assert all(s.sensors.randomize and s.sensors.ground_truth and s.split == "train" for s in plan)
    assert len({(s.npc_vehicles, s.pedestrians, s.route_length_m) for s in plan}) == 10
    for s in plan:
        for crossing in s.pedestrian_crossings:
            assert 60.0 <= crossing.route_distance_m <= s.route_length_m - 60.0
    test = collection_scenarios("test", 3, suite)
    assert {(s.town, s.weather, s.sensors.randomize) for s in test} == {("holdout_town", "sunset", False)}
    with pytest.raises(ScenarioError, match="unknown split 'val'"):
        collection_scenarios("val", 1, suite)


def _short_scenario(tmp_path: Path, route_length_m: float = 40.0) -> Path:
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump({"name": "short", "town": "grid_town", "route_length_m": route_length_m,
                                    "npc_vehicles": 5, "pedestrians": 5, "seed": 1}))
    return path


def _collect(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "drivestack.cli", "collect", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_collect_records_episodes_in_parallel_and_resumes(tmp_path):
    out = tmp_path / "data"
    scenario = _short_scenario(tmp_path)
    proc = _collect("--scenarios", str(scenario), "--episodes", "2", "--out", str(out), "--workers", "2",
                    "--seed", "5")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    manifest = json.loads((out / "collection.json").read_text())
    episodes = manifest["episodes"]
    assert [e["seed"] for e in episodes] == [5, 6]
    for e in episodes:
        bag = out / e["bag"]
        assert bag_is_complete(bag) and e["status"] == "Completed" and e["error"] == ""
        info = bag_info(bag)
        counts = {t.name: t.count for t in info.topics}
        assert counts["/clock"] == e["frames"] > 50
        assert counts["/carla/ego_vehicle/rgb_front/image"] == e["frames"]
        assert counts["/drivestack/ground_truth/front/boxes_2d"] == e["frames"]
        assert info.custom_data["seed"] == str(e["seed"])
    # run again with one more episode: the two bags are kept, only the third is driven
    proc = _collect("--scenarios", str(scenario), "--episodes", "3", "--out", str(out), "--workers", "2",
                    "--seed", "5")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "1 episodes recorded" in err and "2 already there" in err
    assert len(json.loads((out / "collection.json").read_text())["episodes"]) == 3


def test_ctrl_c_closes_the_bags_being_recorded(tmp_path):
    out = tmp_path / "data"
    proc = _collect("--scenarios", str(_short_scenario(tmp_path, 400.0)), "--episodes", "2", "--out", str(out),
                    "--workers", "2")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("*/*/*.mcap"))) < 2:
        time.sleep(0.5)
    time.sleep(3.0)  # both episodes are recording
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    bags = sorted({p.parent for p in out.glob("*/*/*.mcap")})
    assert len(bags) == 2
    for bag in bags:
        assert bag_is_complete(bag), f"{bag} was left open"
        assert {t.name: t.count for t in bag_info(bag).topics}["/clock"] > 10


def test_collect_user_errors(tmp_path):
    proc = _collect("--scenarios", "nowhere", "--episodes", "1", "--out", str(tmp_path))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "unknown scenario 'nowhere'" in err
    proc = _collect("--scenarios", "train", "--episodes", "1", "--out", str(tmp_path), "--sensors", "nope")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "unknown sensor suite 'nope'" in err
    torn = tmp_path / "torn" / "train"
    (torn / "train_grid_town_clear_noon_seed0").mkdir(parents=True)
    proc = _collect("--scenarios", "train", "--episodes", "1", "--out", str(tmp_path / "torn"))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "was not closed" in err and "bag recover" in err
