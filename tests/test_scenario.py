"""Scenario files: shipped ones load, the benchmark splits towns, bad files are explained."""

import pytest

from sim.scenario import ScenarioError, benchmark_suite, load_scenario, shipped_scenarios
from sim.towns import HELDOUT_TOWNS, TRAINING_TOWNS


def test_shipped_scenarios_load_and_the_benchmark_covers_train_and_heldout_towns():
    assert load_scenario("default").town == "grid_town"
    suite = benchmark_suite()
    assert {s.town for s in suite} == set(TRAINING_TOWNS) | set(HELDOUT_TOWNS)
    for s in suite:
        assert s.split == ("test" if s.town in HELDOUT_TOWNS else "train")
    # The held-out town appears in no training scenario.
    assert not [s for s in shipped_scenarios() if s.split == "train" and s.town in HELDOUT_TOWNS]


def test_unknown_scenario_names_the_known_ones():
    with pytest.raises(ScenarioError, match=r"unknown scenario 'nope' \(known: .*default"):
        load_scenario("nope")


@pytest.mark.parametrize("text, message", [
    ("town: grid_town\nroute_length_m: 100\nspeed: 3\n", "unknown key"),
    ("route_length_m: 100\n", "missing key 'town'"),
    ("town: grid_town\n", "give start and goal"),
    ("town: grid_town\nstart: [0, 0]\ngoal: [1, 1]\n", "start .* must be a list of 3 numbers"),
    ("town: grid_town\nstart: [0, .nan, 0]\ngoal: [1, 1]\n", "non-finite"),
    ("town: grid_town\nroute_length_m: 100\nweather: snow\n", "unknown weather 'snow'"),
    ("town: grid_town\nroute_length_m: 100\nnpc_vehicles: -1\n", "npc_vehicles=-1 must be a whole number"),
    ("town: grid_town\nroute_length_m: 100\nseed: 1.5\n", "seed=1.5 must be a whole number"),
    ("town: grid_town\nroute_length_m: .inf\n", "route_length_m=inf must be a finite number > 0"),
    ("town: grid_town\ngoal: [1, 1]\n", "goal or waypoints given without start"),
    ("town: grid_town\nstart: [0, 0, 0]\ngoal: [1, 1]\nroute_length_m: 100\n", "not both"),
    ("town: grid_town\nroute_length_m: 100\npedestrian_crossings: [{route_distance_m: abc}]\n", "is not a number"),
    ("town: grid_town\nroute_length_m: 100\npedestrian_crossings: [{route_distance_m: 50, speed_mps: 0}]\n",
     "speed_mps must be > 0"),
    ("- a\n- b\n", "must be a mapping"),
    ("town: [unclosed\n", "invalid YAML"),
])
def test_bad_scenario_files(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=message):
        load_scenario(str(path))
