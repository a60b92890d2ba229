"""`drivestack dagger`: the policy drives, the expert labels, the data is aggregated and
the policy retrained; the DS of every iteration's policy is reported."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from drivestack.cli import app
from models.bag_index import MessageSource, open_index
from ros_nodes import topics
from test_policy_data import policy_collection


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the 2 cores are shared with the episode workers
    yield
    torch.set_num_threads(threads)


def drivestack(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture(scope="module")
def first_policy(tmp_path_factory):
    collection = policy_collection(tmp_path_factory)
    out = tmp_path_factory.mktemp("dagger_first_policy")
    result = drivestack("train", "policy", "--data", collection, "--out", out, "--epochs", "1",
                        "--max-steps-per-epoch", "3", "--batch-size", "4", "--workers", "0", "--stride", "5",
                        "--device", "cpu")
    assert result.exit_code == 0, result.output
    return collection, out / "best.pt"


def _tiny_scenario(tmp_path):
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(yaml.safe_dump({"name": "tiny", "town": "grid_town", "route_length_m": 25,
                                        "npc_vehicles": 0, "pedestrians": 0, "seed": 1}))
    return scenario


def _dagger_args(collection, weights, out, scenario, eval_suite):
    return ("dagger", "--data", collection, "--weights", weights, "--iterations", "1", "--episodes", "1",
            "--out", out, "--scenario", scenario, "--eval-suite", eval_suite, "--epochs", "1",
            "--max-steps-per-epoch", "2", "--batch-size", "4", "--stride", "5", "--device", "cpu", "--workers", "1",
            "--beta", "0.5")


def test_dagger_drives_labels_aggregates_and_retrains(first_policy, tmp_path):
    collection, weights = first_policy
    out = tmp_path / "dagger"
    # Scoring each iteration's policy closed loop is the slow test's part: an untrained
    # policy stands still until the referee calls it blocked (180 s of simulation).
    args = _dagger_args(collection, weights, out, _tiny_scenario(tmp_path), "none")
    result = drivestack(*args)
    assert result.exit_code == 0, result.output
    assert "DAgger" in result.output
    report = json.loads((out / "dagger.json").read_text())
    (row,) = report["iterations"]
    assert row["iteration"] == 1 and row["beta"] == 0.5 and "eval" not in row
    assert row["collected"]["episodes"] == 1 and row["collected"]["frames"] > 0
    assert row["weights"].endswith("iter_1/train/best.pt") and row["validation"]["frames"] > 0
    extra = torch.load(row["weights"], weights_only=False)["args"]["extra"]
    assert extra["dagger_iteration"] == 1 and extra["init_weights"] == str(weights) and len(extra["data"]) == 2
    # The policy drove half the steps; every frame carries the expert's label.
    manifest = json.loads((out / "iter_1" / "collection.json").read_text())
    (episode,) = manifest["episodes"]
    assert episode["extra"]["driver"].startswith("policy ")
    index = open_index(out / "iter_1" / episode["bag"])
    rows = index.frames(topics.CONTROL, [topics.EXPERT_CONTROL])
    assert len(rows) == len(index.rows(topics.CONTROL)) > 0
    source = MessageSource(index)
    executed = [source.message(int(r[0])).steer for r in rows]
    labels = [source.message(int(r[1])).steer for r in rows]
    assert executed != labels
    # Run again: every step is found done, nothing is redone.
    again = drivestack(*args)
    assert again.exit_code == 0, again.output
    assert json.loads((out / "dagger.json").read_text())["iterations"][0]["weights"] == row["weights"]


@pytest.mark.slow
def test_dagger_scores_the_policy_of_every_iteration(first_policy, tmp_path):
    collection, weights = first_policy
    scenario = _tiny_scenario(tmp_path)
    out = tmp_path / "dagger"
    result = drivestack(*_dagger_args(collection, weights, out, scenario, scenario))
    assert result.exit_code == 0, result.output
    first, second = json.loads((out / "dagger.json").read_text())["iterations"]
    for row in (first, second):
        assert 0.0 <= row["eval"]["driving_score"] <= 100.0 and sum(row["eval"]["statuses"].values()) == 1
    assert (out / "iter_1" / "eval" / "eval_drive.json").is_file()


def test_dagger_refuses_missing_weights(tmp_path):
    result = drivestack("dagger", "--data", tmp_path, "--weights", tmp_path / "none.pt", "--iterations", "1",
                        "--episodes", "1", "--out", tmp_path / "o")
    assert result.exit_code != 0 and "no such weights file" in result.output
