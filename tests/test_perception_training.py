"""`drivestack train perception` and `drivestack eval perception` end to end on a
recorded bag: checkpoints, resume, torchrun with 2 CPU processes (gloo), evaluation,
shipped weights with their hash check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.engine import load_checkpoint
from models.weights import WeightsError, load_weights
from recorded import record_bag

TRAIN_ARGS = ("--epochs", "2", "--max-steps-per-epoch", "3", "--batch-size", "4", "--workers", "1",
              "--stride", "10", "--lr", "1e-3")


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """A collection layout: two training episodes (one becomes validation), one test."""
    root = tmp_path_factory.mktemp("collection")
    record_bag(root / "train" / "a", seed=3)
    shutil.copytree(root / "train" / "a", root / "train" / "b")  # an identical second episode
    record_bag(root / "test" / "c", seed=4, weather="sunset")
    return root


def drivestack(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drivestack.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def trained(collection, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    proc = drivestack("train", "perception", "--data", str(collection), "--out", str(out), *TRAIN_ARGS)
    assert proc.returncode == 0, proc.stderr
    return out


def test_train_writes_checkpoints_and_resumes(collection, trained, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(set(h["val"]) >= {"map_50_vehicle_pedestrian", "miou", "lane_f1", "score"} for h in history)
    assert list((out / "tensorboard").iterdir())
    state = load_checkpoint(out / "last.pt")
    assert state["epoch"] == 1 and state["step"] == 6 and state["task"] == "perception"
    assert {"model", "optimizer", "scheduler", "args"} <= set(state)
    # resume for a third epoch: continues from step 6 with the saved optimizer
    proc = drivestack("train", "perception", "--data", str(collection), "--out", str(out), *TRAIN_ARGS[2:],
                      "--epochs", "3", "--resume", str(out / "last.pt"))
    assert proc.returncode == 0, proc.stderr
    resumed = load_checkpoint(out / "last.pt")
    assert resumed["epoch"] == 2 and resumed["step"] == 9 and len(resumed["history"]) == 3
    proc = drivestack("train", "perception", "--data", str(collection), "--out", str(out), *TRAIN_ARGS[2:],
                      "--epochs", "3", "--resume", str(out / "last.pt"))
    assert proc.returncode == 2 and "finished epoch 3 of 3" in proc.stderr


def test_torchrun_trains_with_two_gloo_processes(collection, tmp_path):
    out = tmp_path / "ddp"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(29500 + os.getpid() % 1000), "-m", "drivestack.cli", "train",
                           "perception", "--data", str(collection), "--out", str(out), *TRAIN_ARGS,
                           "--device", "cpu"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = load_checkpoint(out / "last.pt")
    steps = state["history"][0]["step"]  # each rank's steps over its half of the frames
    assert state["epoch"] == 1 and state["step"] == 2 * steps and len(state["history"]) == 2
    assert not any(k.startswith("module.") for k in state["model"])  # saved unwrapped


def test_eval_reports_metrics_and_ships_weights_with_a_checked_hash(collection, trained, tmp_path):
    out = trained
    shipped = tmp_path / "weights" / "perception_test.pt"
    metrics_json = tmp_path / "eval.json"
    proc = drivestack("eval", "perception", "--weights", str(out / "best.pt"), "--data", str(collection),
                      "--out", str(metrics_json), "--stride", "10", "--ship", str(shipped))
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(metrics_json.read_text())
    assert metrics["data"].endswith("test") and metrics["frames"] > 5
    assert 0.0 <= metrics["miou"] <= 1.0 and metrics["latency_cpu_2_threads"]["median_ms"] > 0
    assert "semantic mIoU" in proc.stdout
    manifest = json.loads(shipped.with_suffix(".json").read_text())
    assert manifest["held_out_metrics"]["miou"] == metrics["miou"]
    assert {"command", "data", "commit", "training_commit", "sha256", "training_args"} <= set(manifest)
    config, state, loaded_manifest = load_weights(shipped, "perception")
    assert loaded_manifest["sha256"] == manifest["sha256"]
    best = load_checkpoint(out / "best.pt")
    assert config == best["model_config"] and state.keys() == best["model"].keys()
    assert manifest["training_commit"] == best["commit"] != "unknown"  # the commit that trained it
    assert all(torch.equal(state[k], best["model"][k]) for k in state)
    # a damaged file: the hash check names both hashes
    data = bytearray(shipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shipped.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=f"does not match its manifest's {manifest['sha256']}"):
        load_weights(shipped, "perception")
    proc = drivestack("eval", "perception", "--weights", str(shipped), "--data", str(collection))
    assert proc.returncode == 2 and "sha256" in proc.stderr


def test_training_refuses_data_without_labels(tmp_path):
    record_bag(tmp_path / "data" / "train" / "a", route_length_m=25.0, sensors="front_rgb")
    proc = drivestack("train", "perception", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "o"),
                      *TRAIN_ARGS)
    assert proc.returncode == 2 and "no labels" in proc.stderr
    proc = drivestack("train", "perception", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "no bag or directory" in proc.stderr
    assert not (tmp_path / "o" / "last.pt").exists()


def test_weights_of_another_task_or_not_weights_are_refused(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"model": {}, "model_config": {}, "task": "policy"}, path)
    with pytest.raises(WeightsError, match="a 'policy' model, not a 'perception' one"):
        load_weights(path, "perception")
    path.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="not a readable weights file"):
        load_weights(path, "perception")
    with pytest.raises(WeightsError, match="no weights at"):
        load_weights(Path(tmp_path / "none.pt"), "perception")


def test_onnx_export_matches_torch_outputs_and_metrics(collection, trained, tmp_path):
    onnx = tmp_path / "perception.onnx"
    proc = drivestack("export", "perception", "--weights", str(trained / "best.pt"), "--out", str(onnx))
    assert proc.returncode == 0, proc.stderr
    worst = float(proc.stdout.split("largest output difference")[1].split()[0])
    assert worst < 1e-3
    results = {}
    for runtime, extra in (("torch", ()), ("onnx", ("--onnx", str(onnx)))):
        out = tmp_path / f"{runtime}.json"
        proc = drivestack("eval", "perception", "--weights", str(trained / "best.pt"), "--data", str(collection),
                          "--out", str(out), "--stride", "10", "--device", "cpu", *extra)
        assert proc.returncode == 0, proc.stderr
        results[runtime] = json.loads(out.read_text())
    assert results["onnx"]["runtime"] == "onnxruntime"
    for key in ("miou", "lane_f1", "map_50"):
        assert results["onnx"][key] == pytest.approx(results["torch"][key], abs=1e-3)


@pytest.mark.parametrize("model, metric", [("ssdlite", "map_50_vehicle_pedestrian"), ("lraspp", "miou")])
def test_baselines_train_and_evaluate_on_the_same_data(collection, tmp_path, model, metric):
    out = tmp_path / model
    proc = drivestack("train", "perception", "--model", model, "--data", str(collection), "--out", str(out),
                      "--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "2", "--workers", "0",
                      "--stride", "20")
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = json.loads((out / "history.json").read_text())
    assert history[0]["val"]["score"] == history[0]["val"][metric]
    proc = drivestack("eval", "perception", "--weights", str(out / "last.pt"), "--data", str(collection),
                      "--out", str(tmp_path / "eval.json"), "--stride", "20", "--workers", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert metrics["model"] == model and metric in metrics  # None when the few frames hold no visible object
    assert metrics["latency_cpu_2_threads"]["median_ms"] > 0
