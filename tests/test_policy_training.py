"""`drivestack train policy` and `drivestack eval policy` end to end on a short real
collection: checkpoints, history, resume, transfer from the perception backbone, the
evaluation table, clear errors; and the CILRS loss learning a fixed batch."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from drivestack.cli import app
from models.engine import TrainingError, load_checkpoint
from models.perception_net import normalize
from models.policy_data import PolicyDataset
from models.policy_task import PERCEPTION_WEIGHTS, PolicyTask, collate_samples, normalize_images
from models.weights import load_weights
from ros_nodes import topics
from test_policy_data import policy_collection, rewrite_bag

TRAIN_ARGS = ("--epochs", "1", "--max-steps-per-epoch", "3", "--batch-size", "4", "--workers", "1",
              "--stride", "5", "--device", "cpu")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The machine's 2 cores are shared: with another process busy, torch's two threads
    wait on each other (a CPU forward pass measured 460 ms instead of 7 ms)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    return policy_collection(tmp_path_factory)


def drivestack(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture(scope="module")
def trained(collection, tmp_path_factory):
    out = tmp_path_factory.mktemp("policy_run")
    result = drivestack("train", "policy", "--data", collection, "--out", out, *TRAIN_ARGS)
    assert result.exit_code == 0, result.output
    assert "validation steer/throttle/brake MAE" in result.output
    return out


def test_train_writes_checkpoints_and_history_and_resumes(collection, trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1]
    val = history[0]["val"]
    assert val["frames"] > 20 and val["score"] == pytest.approx(-(val["steer_mae"] + val["throttle_mae"]
                                                                   + val["brake_mae"]))
    assert {"speed_mae_mps", "waypoints_mae_m"} <= set(val)
    assert set(history[0]["train_loss"]) == {"total", "steer", "throttle", "brake", "speed", "waypoints"}
    state = load_checkpoint(out / "last.pt")
    assert state["task"] == "policy" and state["epoch"] == 0 and state["step"] == 3
    assert state["model_config"]["backbone"] == "perception" and (out / "best.pt").exists()
    # the backbone started from the perception weights (3 small steps moved it a little)
    _, perception, _ = load_weights(PERCEPTION_WEIGHTS, "perception")
    key = "backbone.stages.0.0.0.weight"
    assert torch.allclose(state["model"][key], perception[key], atol=0.02)
    result = drivestack("train", "policy", "--data", collection, "--out", out, *TRAIN_ARGS[2:], "--epochs", "2",
                        "--resume", out / "last.pt")
    assert result.exit_code == 0, result.output
    resumed = load_checkpoint(out / "last.pt")
    assert resumed["epoch"] == 1 and resumed["step"] == 6 and len(resumed["history"]) == 2


def test_eval_reports_errors_per_command_on_the_held_out_bags(collection, trained, tmp_path):
    metrics_json = tmp_path / "eval" / "policy.json"
    result = drivestack("eval", "policy", "--weights", trained / "last.pt", "--data", collection, "--stride", "4",
                        "--json", metrics_json)
    assert result.exit_code == 0, result.output
    metrics = json.loads(metrics_json.read_text())
    assert metrics["data"].endswith("test") and metrics["bags"] == 1 and metrics["frames"] > 10
    assert "STRAIGHT" in metrics["per_command"]  # the route crosses a junction
    assert sum(m["frames"] for m in metrics["per_command"].values()) == metrics["frames"]
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("steer_mae", "throttle_mae", "brake_mae"))
    for word in ("command", "steer", "throttle", "brake", "STRAIGHT", "all"):
        assert word in result.output
    result = drivestack("eval", "policy", "--weights", trained / "nope.pt", "--data", collection)
    assert result.exit_code == 2 and "no weights at" in result.output


def test_ship_writes_weights_with_offline_and_closed_loop_metrics(collection, trained, tmp_path):
    from sim.evaluation import evaluate
    from sim.scenario import load_scenario
    scenario = load_scenario("tests/data/scenarios/eval_short.yaml")
    evaluate(["expert"], [scenario], episodes=1, workers=1, out=tmp_path / "drive", png=False)
    shipped = tmp_path / "weights" / "policy.pt"
    result = drivestack("eval", "policy", "--weights", trained / "best.pt", "--data", collection, "--stride", "6",
                        "--ship", shipped, "--closed-loop", tmp_path / "drive" / "eval_drive.json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(shipped.with_suffix(".json").read_text())
    assert manifest["task"] == "policy" and len(manifest["sha256"]) == 64 and manifest["commit"]
    assert manifest["held_out_offline_metrics"]["frames"] > 0 and "steer_mae" in manifest["held_out_offline_metrics"]
    assert manifest["closed_loop"]["agents"]["expert"]["global"]["driving_score"] >= 0.0
    assert manifest["training_args"]["extra"]["data"] and manifest["command"].startswith("drivestack ")
    assert load_weights(shipped, "policy")[2]["sha256"] == manifest["sha256"]  # the loader checks it
    bad = drivestack("eval", "policy", "--weights", trained / "best.pt", "--data", collection,
                     "--closed-loop", tmp_path / "drive" / "eval_drive.json")
    assert bad.exit_code == 2 and "--closed-loop and --dagger are for --ship" in bad.output


def test_train_refuses_bad_data_and_options_with_a_clear_message(collection, tmp_path):
    rewrite_bag(collection / "train" / "bc_seed5", tmp_path / "data" / "train" / "a", drop=(topics.ROUTE,),
                until_s=3.0)
    result = drivestack("train", "policy", "--data", tmp_path / "data", "--out", tmp_path / "o", *TRAIN_ARGS)
    assert result.exit_code == 2 and "no /drivestack/route in this bag" in result.output
    result = drivestack("train", "policy", "--data", collection, "--out", tmp_path / "o", "--backbone", "vgg")
    assert result.exit_code == 2 and "unknown backbone 'vgg'" in result.output
    result = drivestack("train", "policy", "--data", collection, "--out", tmp_path / "o", "--backbone", "resnet18",
                        "--init-from-perception")
    assert result.exit_code == 2 and "--init-from-perception needs the perception backbone" in result.output
    assert not (tmp_path / "o" / "last.pt").exists()


def test_resnet_backbone_trains_without_balance_or_augmentation(collection, tmp_path):
    out = tmp_path / "resnet"
    result = drivestack("train", "policy", "--data", collection, "--out", out, "--backbone", "resnet18",
                        "--no-balance", "--no-augment", *TRAIN_ARGS[:2], "--max-steps-per-epoch", "1",
                        "--batch-size", "2", "--workers", "0", "--stride", "20", "--device", "cpu")
    assert result.exit_code == 0, result.output
    state = load_checkpoint(out / "last.pt")
    assert state["model_config"]["backbone"] == "resnet18"
    assert state["args"]["extra"]["balance"] is False and state["args"]["extra"]["augment"] is False


def test_images_are_normalised_on_the_device_as_at_run_time():
    images = torch.randint(0, 256, (2, 16, 32, 3), dtype=torch.uint8)
    assert torch.allclose(normalize_images(images), normalize(images), atol=1e-6)


def test_the_loss_learns_a_fixed_batch(collection):
    torch.manual_seed(0)
    task = PolicyTask(collection, init_from_perception=False)
    dataset = PolicyDataset([collection / "train"], stride=20, balance=False)
    batch = task.collate([dataset[i] for i in range(0, len(dataset), max(1, len(dataset) // 8))][:8])
    assert batch["images"].dtype == torch.uint8 and batch["waypoints_m"].shape == (8, 4, 2)
    model = task.build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def evaluated() -> float:
        model.eval()
        with torch.no_grad():
            loss, parts = task.loss(model, batch, torch.device("cpu"))
        model.train()
        assert set(parts) == {"steer", "throttle", "brake", "speed", "waypoints"}
        return float(loss)
    before = evaluated()
    for _ in range(30):
        loss, _ = task.loss(model, batch, torch.device("cpu"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert evaluated() < 0.5 * before
    assert collate_samples([dataset[0]])["control"].shape == (1, 3) and np.isfinite(before)


def test_training_on_several_collections_from_a_trained_policy(collection, trained, tmp_path):
    extra = tmp_path / "dagger_iter_1"
    rewrite_bag(collection / "train" / "bc_seed5", extra / "train" / "bc_seed50000", until_s=6.0)
    task = PolicyTask([collection, extra], init_weights=trained / "last.pt")
    train, val = task.datasets()
    assert [b.name for b in train.bags] == ["bc_seed5", "bc_seed50000"] and [b.name for b in val.bags] == ["bc_seed8"]
    checkpoint = load_checkpoint(trained / "last.pt")
    assert task.model_config() == checkpoint["model_config"] and not task.init_from_perception
    model = task.build_model()
    assert all(torch.equal(value, checkpoint["model"][key]) for key, value in model.state_dict().items())
    with pytest.raises(TrainingError, match="holds another net: backbone 'perception' there, 'resnet18' asked"):
        PolicyTask(collection, {"backbone": "resnet18"}, init_weights=trained / "last.pt")
    with pytest.raises(TrainingError, match="not both"):
        PolicyTask(collection, init_weights=trained / "last.pt", init_from_perception=True)
