"""Shipped weights: a small state dict and its manifest, checked by hash on load.

``models/weights/<name>.pt`` holds what inference needs (task, model config, the
model's state dict); ``<name>.json`` says how it was made (command, data, seed,
commit, metrics on the held-out split) and its sha256. Loading recomputes the hash
and refuses a file that does not match, naming both hashes. Training checkpoints
(``last.pt``, ``best.pt``) load through the same function, without a manifest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from drivestack.provenance import git_commit
from models.engine import TrainingError, load_checkpoint

WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS_FORMAT = 1


class WeightsError(TrainingError):
    """Weights that are missing, damaged or not what their manifest says."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_weights(checkpoint: Path, out: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write ``out`` (.pt) with the checkpoint's model and ``out``.json with ``manifest``
    plus task, model config, epoch, training args, commit, size and sha256."""
    state = load_checkpoint(checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": WEIGHTS_FORMAT, "task": state["task"], "model_config": state["model_config"],
                "model": state["model"]}, out)
    full = {**manifest, "task": state["task"], "model_config": state["model_config"], "epoch": state["epoch"] + 1,
            "training_args": state["args"], "training_commit": state.get("commit", "unknown"),
            "commit": manifest.get("commit", git_commit()),
            "bytes": out.stat().st_size, "sha256": sha256_of(out)}
    out.with_suffix(".json").write_text(json.dumps(full, indent=2) + "\n")
    return full


def load_weights(path: str | Path, task: str) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """(model config, state dict, manifest or {}) of shipped weights or a training checkpoint."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"no weights at {path}")
    manifest_path = path.with_suffix(".json")
    manifest: dict[str, Any] = {}
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError as exc:
            raise WeightsError(f"{manifest_path} is not valid JSON ({exc})") from None
        expected, actual = manifest.get("sha256"), sha256_of(path)
        if expected != actual:
            raise WeightsError(f"{path}: sha256 {actual} does not match its manifest's {expected} "
                               f"({manifest_path.name}): the file is damaged or not the one the manifest describes")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises several types for damaged files
        raise WeightsError(f"{path} is not a readable weights file ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or "model" not in state or "model_config" not in state:
        raise WeightsError(f"{path} holds no drivestack model (neither shipped weights nor a training checkpoint)")
    if state.get("task") != task:
        raise WeightsError(f"{path} holds a {state.get('task')!r} model, not a {task!r} one")
    return state["model_config"], state["model"], manifest
